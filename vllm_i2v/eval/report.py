"""A run's ``report.md`` and ``scores.png``, and ``compare``: several runs side by side in one table and plot."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_path, write_text_atomic
from ..errors import ConfigError

SETTINGS = ("task", "model", "frames", "visual_tokens", "max_new_tokens", "temperature")


def headline(metrics: dict) -> dict[str, float | None]:
    """Column -> number: each judge's accuracy and mean score, each judge-free metric's mean."""
    out = {}
    for judge, entry in metrics["judges"].items():
        if entry["accuracy"] is not None:  # score-only prompts have none
            out[f"{judge}: accuracy"] = entry["accuracy"]
        out[f"{judge}: score"] = entry["mean_score"]
    for metric, entry in metrics["judge_free"].items():
        out[metric] = entry["mean"]
    return out


def _cell(value) -> str:
    return "–" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _by_type_columns(metrics: dict) -> tuple[list[str], dict[str, dict]]:
    """(question types, column -> {type: value}) over every judge and judge-free metric."""
    columns: dict[str, dict] = {}
    for judge, entry in metrics["judges"].items():
        for t, v in entry.get("by_type", {}).items():
            if entry["accuracy"] is not None:
                columns.setdefault(f"{judge}: accuracy", {})[t] = v["accuracy"]
            columns.setdefault(f"{judge}: score", {})[t] = v["mean_score"]
    for metric, entry in metrics["judge_free"].items():
        for t, v in entry.get("by_type", {}).items():
            columns.setdefault(metric, {})[t] = v["mean"]
    return sorted({t for values in columns.values() for t in values}), columns


def _by_type_table(metrics: dict) -> str | None:
    types, columns = _by_type_columns(metrics)
    if not types:
        return None
    counts = next(iter(metrics["judge_free"].values()), {}).get("by_type", {})
    rows = [[t, counts.get(t, {}).get("n", "")] + [columns[c].get(t) for c in columns] for t in types]
    return _table(["type", "n", *columns], rows)


def plot_bars(path, groups: list[str], series: dict[str, list[float | None]], title: str) -> None:
    """A grouped bar chart (one group per x label, one bar per series), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups) * max(1, len(series)) ** 0.5 + 2), 4))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + i * width - 0.4 + width / 2 for g in range(len(groups))]
        ax.bar(xs, [v or 0 for v in values], width, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the bars, not on them
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_report(run_dir, metrics: dict) -> None:
    """``report.md`` (settings, headline table, breakdown by type, missing videos) and ``scores.png``."""
    run_dir = Path(run_dir)
    lines = [f"# {metrics['task']}: {metrics['model']}", "", metrics.get("description", ""), ""]
    lines += [
        _table(
            ["setting", "value"],
            [[k, metrics.get(k)] for k in SETTINGS]
            + [
                ["task file", metrics.get("task_file")],
                ["questions answered", f"{metrics['answered']} / {metrics['questions']}"],
                ["missing videos", metrics["missing"]],
            ],
        )
    ]
    numbers = headline(metrics)
    lines += ["", "## Scores", "", _table(list(numbers), [list(numbers.values())])]
    for judge, entry in metrics["judges"].items():
        lines.append(
            f"\n{judge}: {entry['n']} judged, {entry['parse_failures']} parse failures (not scored), "
            f"served model {', '.join(entry['served_models'])}, temperature 0."
        )
    by_type = _by_type_table(metrics)
    if by_type:
        lines += ["", "## By question type", "", by_type]
    if metrics["missing_videos"]:
        lines += ["", f"## Missing videos ({metrics['missing']})", ""] + [f"- {m}" for m in metrics["missing_videos"]]
    lines += ["", "![scores](scores.png)", ""]
    write_text_atomic(run_dir / "report.md", "\n".join(lines))
    types, columns = _by_type_columns(metrics)
    percent = [c for c in (columns if types else numbers) if not c.endswith(": score")]
    if types:  # one group per question type, one bar per judge or metric
        series = {c: [columns[c].get(t) for t in types] for c in percent}
        plot_bars(run_dir / "scores.png", types, series, f"{metrics['task']}: {metrics['model']}")
    else:
        plot_bars(run_dir / "scores.png", percent, {metrics["model"]: [numbers[c] for c in percent]}, metrics["task"])


def load_metrics(run_dir) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no metrics.json (not a finished `vllm-i2v eval` run)")
    return json.loads(path.read_text())


COMPARED_SETTINGS = ("task", "model", "data", "frames", "visual_tokens", "max_new_tokens", "bf16", "decoding")


def compare(run_dirs: list[str], out=None) -> str:
    """Tables (and, with ``out``, ``out/compare.md`` + ``out/compare.png``) of several runs: their headline numbers
    (a column belongs to one judge or metric; a cell is empty where a run lacks it), every setting in which the
    runs differ, and each metric by question type where the runs have types."""
    runs = [(str(d), load_metrics(d)) for d in run_dirs]
    columns: list[str] = []
    for _, metrics in runs:
        columns += [c for c in headline(metrics) if c not in columns]
    rows = [[d] + [headline(m).get(c) for c in columns] for d, m in runs]
    table = _table(["run", *columns], rows)
    differing = [k for k in COMPARED_SETTINGS if len({json.dumps(m.get(k)) for _, m in runs}) > 1]
    shared = [k for k in COMPARED_SETTINGS if k not in differing and runs[0][1].get(k) is not None]
    table += "\n\nSettings that differ between the runs:\n\n" + (
        _table(["run", *differing], [[d] + [str(m.get(k)) for k in differing] for d, m in runs])
        if differing
        else "none"
    )
    table += "\n\nShared: " + ", ".join(f"{k} {runs[0][1].get(k)}" for k in shared)
    for metric in columns:
        types = sorted({t for _, m in runs for t in _by_type_columns(m)[1].get(metric, {})})
        if types:
            cells = [[d] + [_by_type_columns(m)[1].get(metric, {}).get(t) for t in types] for d, m in runs]
            table += f"\n\n{metric} by question type:\n\n" + _table(["run", *types], cells)
    if out:
        write_text_atomic(Path(out) / "compare.md", table + "\n")
        percent = [c for c in columns if not c.endswith(": score")]
        plot_bars(
            Path(out) / "compare.png",
            percent,
            {d: [headline(m).get(c) for c in percent] for d, m in runs},
            "runs compared",
        )
    return table
