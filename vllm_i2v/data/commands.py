"""``vllm-i2v data check`` and ``vllm-i2v data convert``: whole-file operations on datasets."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..atomic import write_text_atomic
from ..errors import VllmI2VError
from .formats import DataError, media_file, parse_record, read_records, to_records
from .validate import Problem, check_length, check_sample


@dataclass
class CheckReport:
    """What ``data check`` found: the rows read, one ``location: problem`` line per problem, and how many rows
    have each kind of problem."""

    rows: int
    problems: list[str] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)

    @property
    def bad_rows(self) -> int:
        return len({line.split(": ", 1)[0] for line in self.problems})

    def summary(self, path) -> str:
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.kinds.most_common())
        return f"{path}: {self.rows} rows, {self.bad_rows} with problems" + (f" ({kinds})" if kinds else "")


def check_file(
    path,
    video_root=None,
    fmt: str = "auto",
    processor=None,
    num_frames: int = 8,
    decode: bool = True,
    image_root=None,
) -> CheckReport:
    """Every problem of every row that training would skip, each line starting with the row's location (files
    under ``video_root``, images under ``image_root`` when one is given).

    With ``decode`` (default), ``num_frames`` frames of each row's video are decoded, as training does, so an
    empty, truncated or non-video file is found (each file once, however many rows name it).
    """
    from ..video import UniformSampler, read_video

    records = read_records(path)
    report = CheckReport(len(records))
    decoded: dict[Path, str | None] = {}  # file -> why it cannot be decoded (None: fine)
    video_dir, image_dir = (Path(root) if root else None for root in (video_root, image_root))
    bar = tqdm(records, desc="checking rows", unit="row", dynamic_ncols=True, disable=not decode or len(records) < 50)
    for location, record in bar:
        try:
            sample = parse_record(location, record, fmt)
        except DataError as exc:
            report.problems.append(str(exc))
            report.kinds["unreadable row"] += 1
            continue
        found = check_sample(sample, video_dir, image_root=image_dir)
        if processor is not None and not found:
            too_long = check_length(sample, processor, num_frames)
            found += [too_long] if too_long else []
        if decode and not found and sample.visual is not None:
            file = media_file(sample, video_dir, image_dir)
            if file not in decoded:
                try:
                    read_video(file, UniformSampler(num_frames if sample.video is not None else 1), timeout=60)
                    decoded[file] = None
                except VllmI2VError as exc:
                    decoded[file] = str(exc)
            if decoded[file]:
                found.append(Problem(f"{sample.media} not decodable", decoded[file]))
        report.problems += [f"{location}: {p}" for p in found]
        report.kinds.update({p.kind for p in found})
    return report


def convert_file(
    src, dst, to: str, fmt: str = "auto", split_turns: bool = False, overwrite: bool = False
) -> tuple[int, int]:
    """Convert a dataset between layouts, losslessly or not at all (a row the target cannot hold is an error).

    Writes JSONL when ``dst`` ends in ``.jsonl``, else a JSON list; atomically. An existing ``dst`` is refused
    unless ``overwrite``; the source itself never. Returns (rows read, rows written).
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise DataError(f"{dst}: is the source file; write the conversion to another file")
    if dst.exists() and not overwrite:
        raise DataError(f"{dst}: exists; pass --overwrite to replace it")
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
