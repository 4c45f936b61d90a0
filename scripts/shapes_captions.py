"""How well a model describes shapes-world clips: of the first N held-out clips with 1, 2 and 3 objects, how often its
answer to "Describe the video." names every object with its colour and shape, every object with its colour, shape
and motion (the README's caption target), and is the reference caption word for word.

Each clip's objects come from its scene, rebuilt from the seed (`vllm_i2v.data.shapes.scene_for`); answers are
greedy, one conversation per clip (`ChatSession`). Prints a markdown table, and with --readme writes it between the
README's shapes-captions markers.

    python scripts/shapes_captions.py --model vllm_i2v/bundled/shapes-smollm2 --per-count 50 --readme README.md
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from readme_table import publish
from tqdm import tqdm

from vllm_i2v.chat.cli import load_chat_model
from vllm_i2v.chat.session import ChatSession
from vllm_i2v.data.shapes import ShapeObject, scene_of_file

QUESTION = "Describe the video."
COLUMNS = ("every object's colour and shape", "every object's colour, shape and motion", "the reference, word for word")


def score(objects: list[ShapeObject], reference: str, caption: str) -> tuple[bool, bool, bool]:
    """The three columns for one clip: every object named, every object named with what it does (its motion, and
    that it appears later if it does, as :meth:`ShapeObject.doing` words it), the reference word for word."""
    lowered = caption.lower()
    named = all(obj.name in lowered for obj in objects)
    return named, all(obj.doing() in lowered for obj in objects), caption.strip() == reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vllm_i2v/bundled/shapes-smollm2", help="a checkpoint or bundle")
    parser.add_argument("--data", default="data/shapes", help="the folder holding SPLIT.json and videos/")
    parser.add_argument("--split", default="test", choices=("test", "heldout-combos", "long"))
    parser.add_argument("--per-count", type=int, default=50, help="clips per number of objects")
    parser.add_argument("--seed", type=int, default=0, help="the seed the split was written with")
    parser.add_argument("--readme", help="rewrite the shapes-captions block in this file")
    args = parser.parse_args()

    rows_file = Path(args.data) / f"{args.split}.json"
    if not rows_file.is_file():
        raise SystemExit(f"{rows_file}: missing; write it with `vllm-i2v data shapes {args.data} --split {args.split}`")
    clips: dict[int, list] = {1: [], 2: [], 3: []}
    for row in json.loads(rows_file.read_text()):
        scene = scene_of_file(row["video"], args.split, args.seed)
        if len(clips[len(scene.objects)]) < args.per_count:
            clips[len(scene.objects)].append((Path(args.data) / "videos" / row["video"], scene))

    session = ChatSession(*load_chat_model(args.model), num_frames=8, max_new_tokens=48)
    hits, counts = Counter(), Counter()
    with tqdm(total=sum(map(len, clips.values())), desc="describing", unit="clip") as bar:
        for count, pairs in clips.items():
            for video, scene in pairs:
                session.set_video(video)
                caption, _ = session.ask(QUESTION)
                counts[count] += 1
                for column, right in zip(COLUMNS, score(scene.objects, scene.caption(), caption)):
                    hits[count, column] += right
                bar.update()

    lines = ["| objects in the clip | clips | " + " | ".join(COLUMNS) + " |", "|---|---:|" + "---:|" * len(COLUMNS)]
    for count in clips:
        cells = [f"{100 * hits[count, column] / counts[count]:.0f}%" for column in COLUMNS] if counts[count] else []
        lines.append(f"| {count} | {counts[count]} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    publish(table, args.readme, "shapes-captions")


if __name__ == "__main__":
    main()
