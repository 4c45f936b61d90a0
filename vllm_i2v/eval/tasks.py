"""Evaluation tasks: YAML files in the repository's ``eval/tasks/`` (or any path) that say where a benchmark's
questions, answers and videos are in the layout its users have, how to prompt, and how to score.

A task's rows share one schema: ``question_id``, ``video`` (a file name under the task's video folder),
``question``, ``answer``, ``type`` (the dataset's question type, named; ``None`` where it has none).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..data.formats import VIDEO_SUFFIXES, find_video
from ..errors import ConfigError
from ..schema import Problems, knob, read
from .files import load_named_yaml
from .shapes import benchmark_rows

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("question_id", "video", "question", "answer")
LETTERS = "ABCDEFGH"


@dataclass
class EvalTask:
    """One benchmark as a task file describes it (see ``eval/README.md``)."""

    name: str = knob("", "the task's name (reports and metrics say it)")
    description: str = knob("", "one line on what it measures")
    layout: Literal["qa-pairs", "qa-list", "multiple-choice", "captions", "vcgbench", "shapes"] = knob(
        "qa-pairs",
        "qa-pairs: questions + answers joined on question_id; qa-list; multiple-choice; captions; vcgbench; shapes",
    )
    questions: str = knob("", "file under the data root (multiple-choice: a glob, one file per question type)")
    videos: str = knob("", "folder under the data root")
    answers: str | None = knob(None, "qa-pairs: the answers file under the data root")
    data: str | None = knob(None, "default data root (--data overrides it)")
    video_file: str = knob("{video}", "a row's video id -> its file name; video suffixes are tried when it has none")
    video_map: str | None = knob(None, 'a file under the data root of "NAME KEY" lines; video_file gives a KEY')
    fields: dict = knob(factory=dict, doc="qa-list: our field -> the file's field")
    type_names: dict = knob(factory=dict, doc="the dataset's type codes -> names")
    per_type: int | None = knob(None, "shapes: the first N questions of each column", minimum=1)
    shapes_split: str | None = knob(None, "shapes: the split the questions file holds, written when it is missing")
    shapes_clips: int = knob(
        1500, "shapes: clips to write for that split (enough for per_type of every column)", minimum=1
    )
    prompt: str = knob("{question}", "what the model is asked ({question} and, for multiple choice, {options})")
    question: str = knob("Describe the video in one sentence.", "captions: what every video is asked")
    max_new_tokens: int = knob(64, "answer length cap (at most 256)", minimum=1)
    judge_prompt: str | None = knob(None, "eval/prompts/<name>.yaml for the LLM judge, over every question")
    judge_prompts: dict = knob(factory=dict, doc="or several: prompt -> the question types it judges")
    metrics: list = knob(doc="judge-free metrics", factory=lambda: ["exact-match", "token-f1", "embedding-similarity"])
    source: Path | None = None  # the task file (set when loaded)


def load_task(name_or_path: str) -> EvalTask:
    """A task by file path or by name (``eval/tasks/<name>.yaml``); every problem of the file at once."""
    path, raw = load_named_yaml(name_or_path, "tasks", {"name", "description", "layout", "questions", "videos"})
    problems = Problems()
    if "source" in raw:
        problems.add("source", "set by the loader, not in a task file")
    task = read(EvalTask, {k: v for k, v in raw.items() if k != "source"}, "", problems)
    problems.raise_if_any(path)
    task.type_names = {str(k): v for k, v in task.type_names.items()}
    task.source = path
    return task


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (is --data the dataset's folder?)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def _video_map(path: Path) -> dict[str, str]:
    """KEY -> NAME from "NAME KEY" lines (MSVD's youtube_mapping.txt: ``-4wsuPCjDBc_5_15 vid1``)."""
    try:
        lines = path.read_text().split("\n")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (the task's video_map)") from None
    pairs = [line.split() for line in lines if line.strip()]
    bad = next((n for n, pair in enumerate(pairs) if len(pair) != 2), None)
    if bad is not None:
        raise ConfigError(f"{path}: line {bad + 1} is not 'NAME KEY'")
    return {key: name for name, key in pairs}


def _video_files(task: EvalTask, root: Path, ids: list[str], data_root: Path) -> dict[str, str]:
    """Each video id's file name under ``root``: ``video_file`` filled in (and looked up in ``video_map``), with
    the first video suffix that exists when it names none (``.mp4`` when no file exists: the row is then counted
    missing)."""
    names = _video_map(data_root / task.video_map) if task.video_map else None
    files = {}
    for video_id in ids:
        stem = task.video_file.format(video=video_id)
        if names is not None:
            if stem not in names:
                raise ConfigError(f"{data_root / task.video_map}: no entry for video {stem}")
            stem = names[stem]
        found = find_video(root, stem)
        files[video_id] = found.name if found else stem if Path(stem).suffix else stem + VIDEO_SUFFIXES[0]
    return files


def load_rows(task: EvalTask, data_root) -> list[dict]:
    """The task's rows, in file order (shared schema above)."""
    root = Path(data_root)
    if task.layout == "shapes":
        if task.shapes_split and not (root / task.questions).is_file():
            from ..data.shapes import write_split

            logger.warning(
                "writing the shapes-world %s split (%d clips) into %s (once)",
                task.shapes_split,
                task.shapes_clips,
                root,
            )
            write_split(root, task.shapes_split, task.shapes_clips, seed=0)
        rows = benchmark_rows(root / task.questions, task.per_type or 10**9)
        return [{**{k: v for k, v in row.items() if k != "column"}, "type": row["column"]} for row in rows]
    readers = {"multiple-choice": _choice_rows, "captions": _caption_rows, "vcgbench": _generative_rows}
    read = readers.get(task.layout, _qa_rows)
    try:
        rows = read(task, root)
    except KeyError as exc:
        raise ConfigError(
            f"{root}: a row of {task.name}'s files has no {exc.args[0]!r} field (layout {task.layout})"
        ) from None
    files = _video_files(task, root / task.videos, sorted({r["video"] for r in rows}), root)
    for row in rows:
        row["video"] = files[row["video"]]
        if row["type"] is not None:
            row["type"] = task.type_names.get(str(row["type"]), str(row["type"]))
    return rows


def _choice_rows(task: EvalTask, root: Path) -> list[dict]:
    """MVBench's layout: one JSON list per question type (``video``, ``question``, ``candidates``, ``answer``:
    the right candidate's text). Rows get ``options`` (lettered, one per line) and the right letter as answer."""
    paths = sorted(root.glob(task.questions))
    if not paths:
        raise ConfigError(f"{root / task.questions}: no such files (is --data the dataset's folder?)")
    rows = []
    for path in paths:
        for n, q in enumerate(_read_json(path)):
            candidates = [str(c) for c in q.get("candidates", [])]
            if str(q.get("answer")) not in candidates or len(candidates) > len(LETTERS):
                raise ConfigError(f"{path}: row {n}: the answer must be one of its (at most {len(LETTERS)}) candidates")
            options = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(candidates))
            rows.append(
                {
                    "question_id": f"{path.stem}_{n}",
                    "video": str(q["video"]),
                    "question": q["question"],
                    "options": options,
                    "answer": LETTERS[candidates.index(str(q["answer"]))],
                    "type": path.stem,
                }
            )
    return rows


def _caption_rows(task: EvalTask, root: Path) -> list[dict]:
    """One row per video with every reference caption: a list of ``{"video", "captions": [...]}``, or MSR-VTT's
    ``*_videodatainfo.json`` (``sentences`` of ``video_id`` + ``caption``; with ``videos``, the test split)."""
    data = _read_json(root / task.questions)
    references: dict[str, list[str]] = {}
    if isinstance(data, dict) and "sentences" in data:
        keep = {v["video_id"] for v in data.get("videos", []) if v.get("split", "test") == "test"} or None
        for sentence in data["sentences"]:
            if keep is None or sentence["video_id"] in keep:
                references.setdefault(str(sentence["video_id"]), []).append(sentence["caption"])
    elif isinstance(data, list):
        for n, item in enumerate(data):
            if "video" not in item or not item.get("captions"):
                raise ConfigError(f"{root / task.questions}: row {n} needs 'video' and a non-empty 'captions' list")
            references.setdefault(str(item["video"]), []).extend(map(str, item["captions"]))
    else:
        raise ConfigError(f"{root / task.questions}: expected a list of {{video, captions}} or MSR-VTT's videodatainfo")
    return [
        {
            "question_id": video,
            "video": video,
            "question": task.question,
            "answer": captions[0],
            "references": captions,
            "type": None,
        }
        for video, captions in references.items()
    ]


def _generative_rows(task: EvalTask, root: Path) -> list[dict]:
    """Video-ChatGPT's video-based generative benchmark, as released: ``generic_qa.json`` and
    ``temporal_qa.json`` (``video_name``, ``Q``, ``A``) and ``consistency_qa.json`` (``Q1``, ``Q2``, ``A``: two
    phrasings of one question; both become rows of one ``pair``, ``turn`` 1 and 2), under ``questions``."""
    rows = []
    for kind in ("generic", "temporal"):
        for n, q in enumerate(_read_json(root / task.questions / f"{kind}_qa.json")):
            rows.append(
                {
                    "question_id": f"{kind}_{n}",
                    "video": str(q["video_name"]),
                    "question": q["Q"],
                    "answer": q["A"],
                    "type": kind,
                }
            )
    for n, q in enumerate(_read_json(root / task.questions / "consistency_qa.json")):
        for turn in (1, 2):
            rows.append(
                {
                    "question_id": f"consistency_{n}_{turn}",
                    "video": str(q["video_name"]),
                    "question": q[f"Q{turn}"],
                    "answer": q["A"],
                    "type": "consistency",
                    "pair": f"consistency_{n}",
                    "turn": turn,
                }
            )
    return rows


def _qa_rows(task: EvalTask, root: Path) -> list[dict]:
    questions = _read_json(root / task.questions)
    if task.layout == "qa-pairs":  # ActivityNet-QA; Video-LLaVA's MSVD/MSRVTT/TGIF test_q.json + test_a.json
        answers = {str(a["question_id"]): a for a in _read_json(root / task.answers)}
        rows = []
        for q in questions:
            qid = str(q["question_id"])
            if qid not in answers:
                raise ConfigError(f"{root / task.answers}: no answer for question_id {qid}")
            a = answers[qid]
            rows.append(
                {
                    "question_id": qid,
                    "video": str(q["video_name"]),
                    "question": q["question"],
                    "answer": str(a["answer"]),
                    "type": a.get("type", q.get("type")),
                }
            )
    else:  # qa-list: one list of rows with renamable fields (MSVD-QA / MSRVTT-QA's {split}_qa.json)
        names = {key: key for key in REQUIRED_FIELDS + ("type",)} | task.fields
        rows = []
        for n, q in enumerate(questions):
            missing = [names[key] for key in REQUIRED_FIELDS if names[key] not in q]
            if missing:
                raise ConfigError(f"{root / task.questions}: row {n} has no {missing[0]!r} field")
            rows.append({key: str(q[names[key]]) for key in REQUIRED_FIELDS} | {"type": q.get(names["type"])})
    return rows
