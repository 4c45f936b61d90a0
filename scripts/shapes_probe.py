"""Whether a shapes-world vision tower keeps colour and shape apart: linear probes, read two ways.

`whole still`: stills holding one object (the shapes world's stills of every colour–shape pair, seed --seed), each
read as the mean of its patch features at the tower's last layer. `each object`: stills of 1–3 objects, each object
read as the mean of the patches its box covers (each weighted by the share of it the box covers, as stage 0's region
loss pools them): what a projector reading the patch grid hands the LLM about that one object. Two linear probes,
one for colour and one for shape, are fitted on objects of the colour–shape pairs the video stage trains on, then
scored on other objects of those pairs and on objects of the held-out pairs (`HELD_OUT_COMBOS`). A tower whose
features factorize colour and shape reads a held-out pair as well as a seen one; one that entangles them reads its
shape as a seen pair's. The last column fits the shape probe on objects of every pair, held-out ones too, and scores
other objects of the held-out pairs: whether their shape is in the features at all.

    python scripts/shapes_probe.py --tower vllm_i2v/bundled/shapes-smollm2/tower --tower outputs/shapes/stage0/tower
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vllm_i2v.data.shapes import COLORS, HELD_OUT_COMBOS, SHAPES, scene_for
from vllm_i2v.models.preprocess import FramePreprocessor
from vllm_i2v.models.vision import VisionTower, feature_geometry, load_pretrained_vision
from vllm_i2v.train.image_text import pool_region

READINGS = ("whole still", "each object")
COLUMNS = (
    "colour, seen pairs",
    "colour, held-out pairs",
    "shape, seen pairs",
    "shape, held-out pairs",
    "shape, held-out pairs, probe fitted on every pair",
)


def stills(seed: int, count: int, lone: bool) -> list:
    """The first ``count`` stills of every pair (seed ``seed``), or with ``lone`` the first that hold one object."""
    out, index = [], 0
    while len(out) < count:
        scene = scene_for(seed, index, video=False, every_pair=True)
        if not lone or len(scene.objects) == 1:
            out.append(scene)
        index += 1
    return out


@torch.no_grad()
def object_features(tower_dir: str, scenes: list, reading: str, batch: int = 64):
    """``(features (M, D), objects)``: one row per object of ``scenes``, read as ``reading`` says."""
    model, spec = load_pretrained_vision(tower_dir)
    tower = VisionTower(model.config, spec, feature_layer=-1, model=model).eval()
    preprocess = FramePreprocessor(spec)
    grid = feature_geometry(model, spec)[0]
    rows, objects = [], []
    for start in tqdm(range(0, len(scenes), batch), desc=f"reading {tower_dir}", unit="batch", leave=False):
        chunk = scenes[start : start + batch]
        for scene, patches in zip(chunk, tower(preprocess(np.stack([s.render() for s in chunk]))).float()):
            if reading == "whole still":
                rows.append(patches.mean(0))
                objects.append(scene.objects[0])
                continue
            for region, obj in zip(scene.regions(), scene.objects):
                rows.append(pool_region(region, scene.canvas, scene.canvas, preprocess, grid) @ patches)
                objects.append(obj)
    return torch.stack(rows), objects


def fit_probe(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 500) -> torch.nn.Linear:
    """A softmax-regression probe fitted by L-BFGS (weight decay 1e-3) on standardized features."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(x), y) + 1e-3 * probe.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


def probe_tower(tower_dir: str, reading: str, seed: int, count: int) -> dict[str, float]:
    """Each of ``COLUMNS`` (accuracy, %) for one tower read one way."""
    x, objects = object_features(tower_dir, stills(seed, count, lone=reading == "whole still"), reading)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    colours = torch.tensor([list(COLORS).index(o.color) for o in objects])
    shapes = torch.tensor([SHAPES.index(o.shape) for o in objects])
    unseen = torch.tensor([(o.color, o.shape) in HELD_OUT_COMBOS for o in objects])
    seen = (~unseen).nonzero().squeeze(1)
    train, held = seen[: len(seen) // 2], seen[len(seen) // 2 :]

    def accuracy(probe, rows, labels) -> float:
        return 100 * (probe(x[rows]).argmax(1) == labels[rows]).float().mean().item()

    result = {}
    for name, labels, classes in (("colour", colours, len(COLORS)), ("shape", shapes, len(SHAPES))):
        probe = fit_probe(x[train], labels[train], classes)
        result[f"{name}, seen pairs"] = accuracy(probe, held, labels)
        result[f"{name}, held-out pairs"] = accuracy(probe, unseen.nonzero().squeeze(1), labels)
    even = torch.arange(len(x)) % 2 == 0
    probe = fit_probe(x[even], shapes[even], len(SHAPES))
    result[COLUMNS[-1]] = accuracy(probe, (~even & unseen).nonzero().squeeze(1), shapes)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tower", action="append", required=True, help="a vision tower folder (repeatable)")
    parser.add_argument("--stills", type=int, default=1200, help="stills to read each way (about 1 in 6 is held out)")
    parser.add_argument("--seed", type=int, default=1, help="the stills' seed (stage 0 trains on seed 0)")
    args = parser.parse_args()
    print("| tower | read | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---:|" * len(COLUMNS))
    for tower in args.tower:
        for reading in READINGS:
            result = probe_tower(tower, reading, args.seed, args.stills)
            print(f"| `{tower}` | {reading} | " + " | ".join(f"{result[c]:.1f}" for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
