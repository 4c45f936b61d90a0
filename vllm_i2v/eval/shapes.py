"""The shapes-world benchmark: a fixed number of questions per column from a ``{split}_qa.json`` file (written
by ``vllm-i2v data shapes``), scored by normalized exact match."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from .answers import exact_match

COLUMNS = ("attribute", "counting", "direction", "moving-or-still", "temporal")


def column_of(row: dict) -> str | None:
    """The benchmark column of a QA row (motion questions split into direction and moving-or-still); None
    for free captions, which exact match cannot score."""
    if row["type"] == "motion":
        return row.get("subtype", "direction" if row["question"].startswith("Which direction") else "moving-or-still")
    return row["type"] if row["type"] in COLUMNS else None


def benchmark_rows(qa_path, per_column: int = 500) -> list[dict]:
    """The first ``per_column`` questions of each column in ``qa_path``, as prediction rows
    (``question_id``, ``video``, ``question``, ``answer``, ``column``)."""
    rows, taken = [], dict.fromkeys(COLUMNS, 0)
    try:
        listed = json.loads(Path(qa_path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{qa_path}: no such file (vllm-i2v data shapes DIR --split SPLIT writes it)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{qa_path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    for row in listed:
        column = column_of(row)
        if column is None or taken[column] >= per_column:
            continue
        taken[column] += 1
        rows.append(
            {
                "question_id": row["id"],
                "video": row["video"],
                "question": row["question"],
                "answer": row["answer"],
                "column": column,
            }
        )
    return rows


def score(predictions_path) -> dict:
    """Per column: ``{"accuracy": %, "n": questions}`` over a predictions JSONL file."""
    hits, counts = dict.fromkeys(COLUMNS, 0), dict.fromkeys(COLUMNS, 0)
    for line in Path(predictions_path).read_text().splitlines():
        row = json.loads(line)
        counts[row["column"]] += 1
        hits[row["column"]] += exact_match(row["pred"], row["answer"])
    return {
        c: {"accuracy": round(100 * hits[c] / counts[c], 1) if counts[c] else None, "n": counts[c]} for c in COLUMNS
    }
