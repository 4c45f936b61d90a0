"""``vllm-i2v data check`` and ``vllm-i2v data convert``: whole-file operations on datasets."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text_atomic
from .formats import DataError, parse_record, read_records, to_records
from .validate import check_length, check_sample


def check_file(path, video_root=None, fmt: str = "auto", processor=None, num_frames: int = 8) -> tuple[int, list[str]]:
    """``(rows, problems)``: every problem of every row, each line starting with the row's location."""
    records = read_records(path)
    problems = []
    for location, record in records:
        try:
            sample = parse_record(location, record, fmt)
        except DataError as exc:
            problems.append(str(exc))
            continue
        found = check_sample(sample, Path(video_root) if video_root else None)
        if processor is not None and not found:
            too_long = check_length(sample, processor, num_frames)
            found += [too_long] if too_long else []
        problems += [f"{location}: {p}" for p in found]
    return len(records), problems


def convert_file(src, dst, to: str, fmt: str = "auto", split_turns: bool = False) -> tuple[int, int]:
    """Convert a dataset between layouts, losslessly or not at all (a row the target cannot hold is an error).

    Writes JSONL when ``dst`` ends in ``.jsonl``, else a JSON list; atomically. Returns (rows read, rows written).
    """
    records = read_records(src)
    out = []
    for location, record in records:
        out += to_records(parse_record(location, record, fmt), to, split_turns)
    if str(dst).endswith(".jsonl"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
    else:
        text = json.dumps(out, ensure_ascii=False, indent=1) + "\n"
    write_text_atomic(dst, text)
    return len(records), len(out)
