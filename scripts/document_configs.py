"""Comment every knob of the shipped YAML configs from the schemas that check them: what it does, its type, its
default (the schemas are the one place each is defined). Each file's own leading comment block is kept.

    python scripts/document_configs.py           # rewrite configs/**/*.yaml
    python scripts/document_configs.py --check   # exit 1 if a file is not as the schemas document it (the tests)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vllm_i2v.models.spec import BuildSpec
from vllm_i2v.schema import document_yaml
from vllm_i2v.train.config import TrainConfig
from vllm_i2v.train.image_text import PretrainConfig

ROOT = Path(__file__).resolve().parents[1]


def shipped() -> dict[Path, type]:
    """Each shipped YAML config and the schema that reads it."""
    files = {path: BuildSpec for path in sorted((ROOT / "configs" / "model").glob("*.yaml"))}
    files |= {path: TrainConfig for path in sorted((ROOT / "configs" / "train").glob("*.yaml"))}
    shapes = ROOT / "configs" / "shapes"
    files |= {
        shapes / "model.yaml": BuildSpec,
        shapes / "video.yaml": TrainConfig,
        shapes / "tower.yaml": PretrainConfig,
    }
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args()
    stale = []
    for path, schema in shipped().items():
        text = document_yaml(path, schema)
        if text != path.read_text():
            stale.append(path)
            if not args.check:
                path.write_text(text)
    for path in stale:
        print(f"{path.relative_to(ROOT)}: {'not documented as its schema says' if args.check else 'rewritten'}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
