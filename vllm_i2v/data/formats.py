"""Video–text datasets in the field's own JSON layouts, read into one :class:`Sample` form and written back.

Layouts (a JSON list of records, or JSONL with one record a line; the layout is found per record):

- ``vcg``  — Video-ChatGPT's VideoInstruct-100K: ``{"video_id": "v_abc", "q": "...", "a": "..."}``; the video is
  the file ``video_id`` (with any video suffix) under the video root.
- ``videochat2`` — VideoChat2 / PLLaVA: ``{"video": "dir/clip.mp4", "QA": [{"i": "...", "q": "...", "a": "..."}]}``;
  ``i`` is an instruction, kept as the system message.
- ``llava`` — LLaVA / Video-LLaVA / VideoLLaMA2: ``{"id": "...", "video": "dir/clip.mp4", "conversations":
  [{"from": "human", "value": "<video>\\n..."}, {"from": "gpt", "value": "..."}]}`` (``image`` instead of
  ``video`` for an image row; no visual key for a text-only row).

A :class:`Sample` holds chat ``messages`` (role/content, with the ``<video>`` / ``<image>`` placeholder in the text)
and where it came from (``file:line`` or ``file[index]``), so every problem can name its row.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, VllmI2VError

FORMATS = ("llava", "vcg", "videochat2")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".gif", ".m4v")
ROLE_FROM = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
FROM_ROLE = {"user": "human", "assistant": "gpt", "system": "system"}


class DataError(VllmI2VError):
    """A dataset row that cannot be read or used; the message starts with the row's location."""


@dataclass
class Sample:
    """One training or evaluation conversation about at most one video or image."""

    id: str | None  # the row's id as written (None: the row has none)
    messages: list[dict]
    video: str | None = None  # path (or VCG video id) as written in the file, relative to the video root
    image: str | None = None
    source: str = ""  # "file:line" or "file[index]"
    extra: dict = field(default_factory=dict)  # fields of the record no layout field holds (kept by convert)

    @property
    def visual(self) -> str | None:
        return self.video or self.image

    @property
    def media(self) -> str | None:
        """What the row is about: "video", "image", or None for a text-only row."""
        return "video" if self.video is not None else "image" if self.image is not None else None


def detect_format(record: dict) -> str:
    """The layout of one record: ``llava``, ``videochat2`` or ``vcg``."""
    if "conversations" in record:
        return "llava"
    if "QA" in record:
        return "videochat2"
    if "q" in record and "a" in record:
        return "vcg"
    raise ValueError(f"not a known layout (keys {sorted(record)}; expected conversations, QA, or q/a)")


def _from_llava(record: dict) -> Sample:
    messages = []
    for turn in record["conversations"]:
        role = ROLE_FROM.get(turn.get("from"))
        if role is None:
            raise ValueError(f"unknown speaker {turn.get('from')!r} (known: {', '.join(ROLE_FROM)})")
        messages.append({"role": role, "content": turn.get("value", "")})
    extra = {k: v for k, v in record.items() if k not in ("id", "video", "image", "conversations")}
    return Sample(record.get("id"), messages, record.get("video"), record.get("image"), extra=extra)


def _from_vcg(record: dict) -> Sample:
    video_id = str(record.get("video_id", record.get("video", "")))
    messages = [{"role": "user", "content": f"<video>\n{record['q']}"}, {"role": "assistant", "content": record["a"]}]
    extra = {k: v for k, v in record.items() if k not in ("id", "video_id", "video", "q", "a")}
    return Sample(record.get("id"), messages, video_id, extra=extra)


def _from_videochat2(record: dict) -> Sample:
    messages = []
    instruction = next((qa.get("i") for qa in record["QA"] if qa.get("i")), "")
    if instruction:
        messages.append({"role": "system", "content": instruction})
    for n, qa in enumerate(record["QA"]):
        question = f"<video>\n{qa['q']}" if n == 0 else qa["q"]
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": qa["a"]}]
    extra = {k: v for k, v in record.items() if k not in ("video", "QA", "id")}
    return Sample(record.get("id"), messages, record.get("video"), extra=extra)


READERS = {"llava": _from_llava, "vcg": _from_vcg, "videochat2": _from_videochat2}


class BadRecord:
    """A row that could not even be read (invalid JSON, not UTF-8); :func:`parse_record` reports it."""

    def __init__(self, reason: str):
        self.reason = reason


def read_records(path) -> list[tuple[str, object]]:
    """``(location, record)`` pairs of a JSON list or a JSONL file. In a JSONL file a line that is not UTF-8
    or not valid JSON is a :class:`BadRecord` (a row with a problem; the others still read); a JSON list that
    cannot be read is a :class:`DataError` for the whole file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such dataset file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a dataset file") from None
    if data.lstrip().startswith(b"["):
        try:
            records = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        return [(f"{path}[{i}]", r) for i, r in enumerate(records)]
    pairs: list[tuple[str, object]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            pairs.append((f"{path}:{number}", json.loads(raw.decode("utf-8"))))
        except UnicodeDecodeError as exc:
            pairs.append((f"{path}:{number}", BadRecord(f"not UTF-8 text (byte {exc.start} of the line)")))
        except json.JSONDecodeError as exc:
            pairs.append((f"{path}:{number}", BadRecord(f"not valid JSON ({exc.msg})")))
    if not pairs:
        raise DataError(f"{path}: no rows (an empty file)")
    return pairs


def _check_fields(sample: Sample) -> None:
    """Field types a layout reader cannot check: paths are non-empty strings, turns are strings."""
    for key in ("video", "image"):
        value = getattr(sample, key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a file name (a string), got {json.dumps(value)}")
        if value.strip() in ("", "."):
            raise ValueError(f"{key} is {json.dumps(value)}, not a file name")
    for n, message in enumerate(sample.messages, start=1):
        if not isinstance(message["content"], str):
            raise ValueError(f"turn {n} ({message['role']}) is {json.dumps(message['content'])[:40]}, not text")


def parse_record(location: str, record, fmt: str = "auto") -> Sample:
    """One record as a :class:`Sample`; a malformed record is a :class:`DataError` naming its location."""
    try:
        if isinstance(record, BadRecord):
            raise ValueError(record.reason)
        if not isinstance(record, dict):
            raise ValueError(f"a record is a JSON object, got {type(record).__name__}")
        layout = detect_format(record) if fmt == "auto" else fmt
        if layout not in READERS:
            raise ConfigError(f"unknown dataset format {fmt!r}; known: auto, {', '.join(FORMATS)}")
        sample = READERS[layout](record)
        _check_fields(sample)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        missing = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise DataError(f"{location}: {missing}") from None
    sample.source = location
    return sample


def load_samples(path, fmt: str = "auto") -> list[Sample]:
    """Every row of a dataset file; the first malformed row is a :class:`DataError`."""
    return [parse_record(location, record, fmt) for location, record in read_records(path)]


# --- writing ---------------------------------------------------------------------------------------------


def _identified(sample: Sample) -> dict:
    """``{"id": ...}`` when the row has an id, else nothing (a conversion adds no field)."""
    return {} if sample.id is None else {"id": sample.id}


def _to_llava(sample: Sample) -> list[dict]:
    record = _identified(sample)
    if sample.video is not None:
        record["video"] = sample.video
    if sample.image is not None:
        record["image"] = sample.image
    record["conversations"] = [{"from": FROM_ROLE[m["role"]], "value": m["content"]} for m in sample.messages]
    return [{**record, **sample.extra}]


def _qa_pairs(sample: Sample) -> tuple[str, list[tuple[str, str]]]:
    """(system instruction, [(question without the leading placeholder, answer)]) of a user/assistant dialogue."""
    messages = list(sample.messages)
    system = messages.pop(0)["content"] if messages and messages[0]["role"] == "system" else ""
    if len(messages) % 2 or any(m["role"] != r for m, r in zip(messages, ["user", "assistant"] * len(messages))):
        raise ValueError("turns do not alternate user/assistant, which this layout cannot hold")
    pairs = []
    for n in range(0, len(messages), 2):
        question = messages[n]["content"]
        if n == 0:
            if not question.startswith("<video>"):
                raise ValueError("the <video> placeholder is not at the start of the first question")
            question = question.removeprefix("<video>").removeprefix("\n")
        if "<video>" in question or "<image>" in question:
            raise ValueError("a placeholder inside a later question cannot be held by this layout")
        pairs.append((question, messages[n + 1]["content"]))
    return system, pairs


def _to_videochat2(sample: Sample) -> list[dict]:
    if sample.video is None:
        raise ValueError("videochat2 rows need a video")
    system, pairs = _qa_pairs(sample)
    qa = [{"i": system if n == 0 else "", "q": q, "a": a} for n, (q, a) in enumerate(pairs)]
    return [{**_identified(sample), "video": sample.video, "QA": qa, **sample.extra}]


def _to_vcg(sample: Sample, split_turns: bool = False) -> list[dict]:
    if sample.video is None:
        raise ValueError("vcg rows need a video")
    system, pairs = _qa_pairs(sample)
    if system:
        raise ValueError("vcg rows cannot hold a system instruction")
    if len(pairs) > 1 and not split_turns:
        raise ValueError(
            f"{len(pairs)} turns: vcg rows hold one question each (use --split-turns to write one row per turn)"
        )
    return [{**_identified(sample), "video_id": sample.video, "q": q, "a": a, **sample.extra} for q, a in pairs]


def to_records(sample: Sample, fmt: str, split_turns: bool = False) -> list[dict]:
    """The sample in layout ``fmt``; a :class:`DataError` where that layout cannot hold it losslessly."""
    try:
        if fmt == "llava":
            return _to_llava(sample)
        if fmt == "videochat2":
            return _to_videochat2(sample)
        if fmt == "vcg":
            return _to_vcg(sample, split_turns)
    except ValueError as exc:
        raise DataError(f"{sample.source}: cannot convert to {fmt}: {exc}") from None
    raise ConfigError(f"unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")


def find_video(root: Path, name: str) -> Path | None:
    """The file ``name`` names under ``root`` (a VCG video id may lack its suffix), or None."""
    candidate = root / name
    if candidate.exists():
        return candidate
    if not Path(name).suffix:
        for suffix in VIDEO_SUFFIXES:
            if (with_suffix := root / f"{name}{suffix}").exists():
                return with_suffix
    return None


def media_file(sample: Sample, video_root=None, image_root=None) -> Path:
    """The file of a row's video or image: inside ``image_root`` for an image when one is given (a dataset that
    keeps its stills apart from its clips, as LLaVA's image and video folders), else inside ``video_root``, else
    the path as written."""
    kind = "image" if sample.image is not None and image_root is not None else "video"
    root = image_root if kind == "image" else video_root
    return resolve_inside(Path(root), sample.visual, sample.source, kind) if root is not None else Path(sample.visual)


def resolve_inside(root: Path, name: str, source: str, kind: str = "video") -> Path:
    """The existing file ``name`` names under ``root`` (the ``kind`` root: video or image); a name that leads
    outside ``root`` is refused.

    The check is on the path as written (absolute paths and ``..`` escapes are refused); symbolic links that a
    user placed inside the root are followed.
    """
    root = Path(os.path.abspath(root))
    target = Path(os.path.normpath(root / name))
    if not target.is_relative_to(root):
        raise DataError(f"{source}: {kind} {name!r} leads outside the {kind} root {root}")
    if target == root:
        raise DataError(f"{source}: {kind} {name!r} names the {kind} root itself, not a file in it")
    found = find_video(root, name)
    if found is None:
        raise DataError(f"{source}: {kind} {name!r} not found under {root}")
    return found
