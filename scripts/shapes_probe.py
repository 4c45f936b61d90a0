"""Whether a shapes-world vision tower keeps colour and shape apart: linear probes on lone stills.

Each still holds one object (the shapes world's stills of every colour–shape pair, seed --seed, those with a single
object). A tower reads it at its last layer, and the mean of its patch features is the still's feature. Two linear
probes, one for colour and one for shape, are fitted on stills of the colour–shape pairs the video stage trains on.
They are then scored on fresh stills of those pairs and on stills of the held-out pairs (`HELD_OUT_COMBOS`). A tower
whose features factorize colour and shape reads a held-out pair as well as a seen one; one that entangles them reads
its shape as a seen pair's.

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
from vllm_i2v.models.vision import VisionTower, load_pretrained_vision


def lone_stills(seed: int, count: int) -> list:
    """The first ``count`` stills of every pair (seed ``seed``) that hold a single object."""
    stills, index = [], 0
    while len(stills) < count:
        scene = scene_for(seed, index, video=False, every_pair=True)
        if len(scene.objects) == 1:
            stills.append(scene)
        index += 1
    return stills


@torch.no_grad()
def features(tower_dir: str, stills: list, batch: int = 64) -> torch.Tensor:
    """(N, D): each still's patch features at the tower's last layer (the bundle's ``vision_feature_layer``),
    averaged over the patches."""
    model, spec = load_pretrained_vision(tower_dir)
    tower = VisionTower(model.config, spec, feature_layer=-1, model=model).eval()
    preprocess = FramePreprocessor(spec)
    out = []
    for start in tqdm(range(0, len(stills), batch), desc=f"reading {tower_dir}", unit="batch", leave=False):
        out.append(tower(preprocess(np.stack([s.render() for s in stills[start : start + batch]]))).mean(1))
    return torch.cat(out).float()


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


def probe_tower(tower_dir: str, seed: int, count: int) -> dict[str, float]:
    """Colour and shape accuracy (%) of probes fitted on seen pairs: on other seen-pair stills and on held-out ones."""
    stills = lone_stills(seed, count)
    x = features(tower_dir, stills)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    colors = torch.tensor([list(COLORS).index(s.objects[0].color) for s in stills])
    shapes = torch.tensor([SHAPES.index(s.objects[0].shape) for s in stills])
    unseen = torch.tensor([(s.objects[0].color, s.objects[0].shape) in HELD_OUT_COMBOS for s in stills])
    seen = (~unseen).nonzero().squeeze(1)
    train, held = seen[: len(seen) // 2], seen[len(seen) // 2 :]
    result = {}
    for name, labels, classes in (("colour", colors, len(COLORS)), ("shape", shapes, len(SHAPES))):
        probe = fit_probe(x[train], labels[train], classes)
        for split, rows in (("seen", held), ("held-out", unseen.nonzero().squeeze(1))):
            result[f"{name}, {split} pairs"] = 100 * (probe(x[rows]).argmax(1) == labels[rows]).float().mean().item()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tower", action="append", required=True, help="a vision tower folder (repeatable)")
    parser.add_argument("--stills", type=int, default=1200, help="lone stills to read (about 1 in 6 is held out)")
    parser.add_argument("--seed", type=int, default=1, help="the stills' seed (stage 0 trains on seed 0)")
    args = parser.parse_args()
    rows = {tower: probe_tower(tower, args.seed, args.stills) for tower in args.tower}
    columns = list(next(iter(rows.values())))
    print("| tower | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for tower, result in rows.items():
        print(f"| `{tower}` | " + " | ".join(f"{result[c]:.1f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
