"""What a conversation's earlier turns do to a model's answers: of the first N clips of a shapes-world split, every
question about a clip (its caption request included, in the split's own order) asked twice, in one conversation and
each on its own (a new conversation about the same video, as `vllm-i2v eval` and training with independent turns
ask them), scored by exact match per question type (captions are asked, not scored).

Both ways run through the chat CLI's `ChatSession` (`independent_turns` set either way), greedy. Prints a markdown
table, and with --readme writes it between the README's shapes-turns markers.

    python scripts/shapes_turns.py --model vllm_i2v/bundled/shapes-smollm2 --clips 100 --readme README.md
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from readme_table import publish
from tqdm import tqdm

from vllm_i2v.chat.cli import load_chat_model
from vllm_i2v.chat.session import ChatSession
from vllm_i2v.eval.answers import exact_match
from vllm_i2v.eval.shapes import COLUMNS, column_of

WAYS = {"in one conversation": False, "each on its own": True}  # name: independent_turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vllm_i2v/bundled/shapes-smollm2", help="a checkpoint or bundle")
    parser.add_argument("--data", default="data/shapes", help="the folder holding SPLIT_qa.json and videos/")
    parser.add_argument("--split", default="test", choices=("test", "heldout-combos", "long"))
    parser.add_argument("--clips", type=int, default=100, help="the first N clips of the split")
    parser.add_argument("--readme", help="rewrite the shapes-turns block in this file")
    args = parser.parse_args()

    rows_file = Path(args.data) / f"{args.split}_qa.json"
    if not rows_file.is_file():
        raise SystemExit(f"{rows_file}: missing; write it with `vllm-i2v data shapes {args.data} --split {args.split}`")
    by_clip: dict[str, list[dict]] = defaultdict(list)
    for row in json.loads(rows_file.read_text()):
        if row["video"] in by_clip or len(by_clip) < args.clips:
            by_clip[row["video"]].append(row)

    session = ChatSession(*load_chat_model(args.model), num_frames=8, max_new_tokens=48)
    hits, counts = Counter(), Counter()
    for video, rows in tqdm(by_clip.items(), desc="asking", unit="clip"):
        session.set_video(Path(args.data) / "videos" / video)  # decoded and encoded once for both ways
        for way, alone in WAYS.items():
            session.independent_turns = alone
            session.reset()
            for row in rows:
                answer, _ = session.ask(row["question"])
                column = column_of(row)
                if column:
                    hits[way, column] += exact_match(answer, row["answer"])
                    counts[way, column] += 1

    columns = [c for c in COLUMNS if counts[next(iter(WAYS)), c]]
    lines = [
        f"| {args.split} split, clips: {len(by_clip)} | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for way in WAYS:
        cells = [f"{100 * hits[way, c] / counts[way, c]:.1f} ({counts[way, c]})" for c in columns]
        lines.append(f"| {way} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    publish(table, args.readme, "shapes-turns")


if __name__ == "__main__":
    main()
