"""The shapes world: a synthetic image and video world, deterministic from a seed, with captions and QA.

Scenes hold 1–3 filled objects (circle, square, triangle, star in red, green, blue, yellow, purple or white, with
small colour jitter; distinct shapes and distinct colours within a scene, so every reference is unambiguous) on a
uniform black or dark-grey background. In a video each object is still or moves in a straight line at constant
speed (left, right, up or down) over at least 40% of the canvas, and may enter after the first frame. Stills
(the image world) come with captions that also say where each object is, and attribute and counting QA; videos
come with a caption and QA of five types: attribute, counting, motion (direction; moving or still), temporal
order, and a free caption.

A ``together`` split draws training clips of 2–3 objects all in view from the first frame: no object enters late,
so which colour goes with which shape cannot be read off when each appears, only off where it is.

Held-out splits: ``HELD_OUT_COMBOS`` (colour–shape pairs never in a training clip) and clips longer than any
training clip (``LONG_DURATIONS``). Stills show the training pairs, or with ``every_pair`` every pair: the image
world then stands for what an image-pretrained encoder has seen, and the held-out pairs test whether the video stage
carries it over to pairs its clips never show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

COLORS = {
    "red": (230, 30, 30),
    "green": (30, 200, 30),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 30),
    "purple": (160, 50, 200),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "star")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
HELD_OUT_COMBOS = {("red", "star"), ("green", "triangle"), ("blue", "square"), ("yellow", "circle")}
TRAIN_DURATIONS = (2.0, 6.0)  # seconds, training clips
LONG_DURATIONS = (7.0, 8.0)  # seconds, the held-out long clips
FPS = 8
MOTION_WORDS = {"left": "from right to left", "right": "from left to right", "up": "upwards", "down": "downwards"}


@dataclass
class ShapeObject:
    shape: str
    color: str
    rgb: tuple[int, int, int]
    size: int  # bounding-box side, pixels
    start: tuple[float, float]  # top-left corner at ``enter`` seconds
    direction: str | None = None  # None: still
    speed: float = 0.0  # pixels per second
    enter: float = 0.0  # seconds: first visible

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def named(self, naming: str = "both") -> str:
        """What a still's caption or region calls it: ``both`` "red square", ``color`` "red object", ``shape``
        "square"."""
        return {"both": self.name, "color": f"{self.color} object", "shape": self.shape}[naming]

    def doing(self) -> str:
        """What a clip's caption says of it: "red square moves from left to right", "blue circle appears later and
        stays still"."""
        action = f"moves {MOTION_WORDS[self.direction]}" if self.direction else "stays still"
        return f"{self.name} appears later and {action}" if self.enter > 0 else f"{self.name} {action}"

    def place(self, canvas: int, t: float = 0.0) -> str:
        """Where the object's centre is at time ``t``, in words: "at the top left", "in the centre", ..."""
        x, y = (c + self.size / 2 for c in self.corner(t))
        column = ("left", "centre", "right")[min(int(3 * x / canvas), 2)]
        row = ("top", "middle", "bottom")[min(int(3 * y / canvas), 2)]
        if row == "middle":
            return "in the centre" if column == "centre" else f"on the {column}"
        return f"at the {row}" if column == "centre" else f"at the {row} {column}"

    def corner(self, t: float) -> tuple[float, float] | None:
        """Top-left corner at time ``t``, or None before the object enters."""
        if t < self.enter:
            return None
        dx, dy = DIRECTIONS[self.direction] if self.direction else (0, 0)
        travelled = self.speed * (t - self.enter)
        return self.start[0] + dx * travelled, self.start[1] + dy * travelled


@dataclass
class Scene:
    canvas: int
    background: int  # grey level, 0..64
    objects: list[ShapeObject]
    duration: float = 0.0  # 0: a still image
    fps: int = FPS
    questions: list[dict] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.duration * self.fps)))

    def render(self, t: float = 0.0) -> np.ndarray:
        """The frame at time ``t`` (H, W, 3) uint8."""
        frame = np.full((self.canvas, self.canvas, 3), self.background, dtype=np.uint8)
        for obj in self.objects:
            corner = obj.corner(t)
            if corner is not None:
                _draw(frame, obj.shape, corner, obj.size, obj.rgb)
        return frame

    def frames(self):
        """Every frame of the clip, in order (a generator, so long clips need not sit in memory)."""
        return (self.render(i / self.fps) for i in range(self.num_frames))

    def regions(self, namings: Sequence[str] = ("both",)) -> list[dict]:
        """A still's objects as region descriptions in Visual Genome's layout: each one's box (pixels, clipped to
        the canvas) with a phrase per naming in ``namings``, naming it as :meth:`caption` does (``both``: "a red
        square", ``color``: "a red object", ``shape``: "a square")."""
        out = []
        for obj in self.objects:
            (x, right), (y, bottom) = ((max(c, 0), min(c + obj.size, self.canvas)) for c in map(round, obj.start))
            for naming in namings:
                out.append(
                    {"x": x, "y": y, "width": right - x, "height": bottom - y, "phrase": f"a {obj.named(naming)}"}
                )
        return out

    def caption(self, naming: str = "both") -> str:
        """One sentence naming every object and what it does, in order of appearance. A still's caption says where
        each object is and names it by ``naming``: ``both`` (a red square), ``color`` (a red object) or ``shape``
        (a square): captions that name one attribute alone teach a tower colour and shape apart."""
        parts = []
        for obj in sorted(self.objects, key=lambda o: o.enter):
            if self.duration == 0:
                parts.append(f"a {obj.named(naming)} {obj.place(self.canvas)}")
                continue
            parts.append(f"a {obj.doing()}")
        if self.duration == 0:
            sentence = _join(parts, "and") + f" on a {'black' if self.background < 16 else 'dark grey'} background."
        else:
            sentence = _join(parts, "while") + "."
        return sentence[0].upper() + sentence[1:]


def _join(parts: list[str], pair_word: str) -> str:
    """``a``; ``a <pair_word> b``; ``a, b and c``."""
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 2 else f"{parts[0]} {pair_word} {parts[1]}"


def _draw(frame: np.ndarray, shape: str, corner: tuple[float, float], size: int, rgb) -> None:
    x0, y0 = int(round(corner[0])), int(round(corner[1]))
    h, w = frame.shape[:2]
    xs, ys = np.arange(max(x0, 0), min(x0 + size, w)), np.arange(max(y0, 0), min(y0 + size, h))
    if not len(xs) or not len(ys):
        return
    u = (xs[None, :] - x0 + 0.5) / size  # 0..1 inside the bounding box
    v = (ys[:, None] - y0 + 0.5) / size
    if shape == "square":
        mask = np.ones((len(ys), len(xs)), dtype=bool)
    elif shape == "circle":
        mask = (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    elif shape == "triangle":  # apex at the top centre
        mask = np.abs(u - 0.5) <= v / 2
    elif shape == "star":
        mask = _inside(u, v, _star_vertices())
    else:
        raise ValueError(f"unknown shape {shape!r}")
    frame[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1][mask] = rgb


def _star_vertices(points: int = 5, inner: float = 0.4) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 0.5, 0.5 * inner)
    return np.stack([0.5 + radii * np.cos(angles), 0.5 + radii * np.sin(angles)], axis=1)


def _inside(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorized over the grid ``(u, v)``."""
    u, v = np.broadcast_arrays(u, v)
    inside = np.zeros(u.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0)):
        crosses = (y1 > v) != (y2 > v)
        x_at = x1 + (v - y1) * (x2 - x1) / np.where(y2 == y1, 1e-9, y2 - y1)
        inside ^= crosses & (u < x_at)
    return inside


def _combos(split: str) -> list[tuple[str, str]]:
    every = [(c, s) for c in COLORS for s in SHAPES]
    if split == "heldout-combos":
        return sorted(HELD_OUT_COMBOS)
    if split == "every-pair":
        return every
    return [combo for combo in every if combo not in HELD_OUT_COMBOS]


def sample_scene(
    rng: np.random.Generator, split: str = "train", video: bool = True, canvas: int = 224, every_object: bool = False
) -> Scene:
    """One random scene. ``split``: ``train`` / ``test`` (seen combinations, training durations),
    ``heldout-combos`` (at least one object of an unseen colour–shape pair), ``long`` (clips of 7–8 s),
    ``every-pair`` (every colour–shape pair, the held-out ones too), ``together`` (training pairs and durations,
    2–3 objects, all in view from the first frame).
    ``every_object``: see :func:`questions` (the scene itself is the same either way)."""
    durations = LONG_DURATIONS if split == "long" else TRAIN_DURATIONS
    duration = float(rng.uniform(*durations)) if video else 0.0
    together = split == "together"
    count = int(rng.integers(2 if together else 1, 4))
    objects: list[ShapeObject] = []
    seen = _combos("every-pair" if split == "every-pair" else "train")
    pool = _combos("heldout-combos") if split == "heldout-combos" else seen  # there the first object is unseen
    for _ in range(count):
        taken_colors = {o.color for o in objects}
        taken_shapes = {o.shape for o in objects}
        choices = [(c, s) for c, s in pool if c not in taken_colors and s not in taken_shapes]
        if not choices:
            break
        color, shape = choices[int(rng.integers(len(choices)))]
        pool = seen
        objects.append(_sample_object(rng, color, shape, duration, canvas, objects, late_entries=not together))
    scene = Scene(canvas=canvas, background=int(rng.integers(0, 65)), objects=objects, duration=duration)
    scene.questions = questions(scene, rng, every_object)
    return scene


def _sample_object(
    rng, color: str, shape: str, duration: float, canvas: int, others: list[ShapeObject], late_entries: bool = True
) -> ShapeObject:
    size = int(rng.uniform(0.20, 0.30) * canvas)
    rgb = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in COLORS[color])
    moving = duration > 0 and rng.random() < 0.6
    enter = 0.0
    latest_others = max((o.enter for o in others), default=0.0)
    if late_entries and duration > 0 and others and rng.random() < 0.7 and latest_others + 0.5 <= duration / 2:
        enter = round(float(rng.uniform(latest_others + 0.5, duration / 2)), 3)  # late: ≥ 0.5 s after the others
    span = canvas - size
    for _ in range(50):  # place it away from the others where possible
        if moving:
            direction = list(DIRECTIONS)[int(rng.integers(4))]
            distance = float(rng.uniform(0.4 * canvas, span))
            along = float(rng.uniform(0, span - distance))
            across = float(rng.uniform(0, span))
            dx, dy = DIRECTIONS[direction]
            start_along = along if (dx + dy) > 0 else along + distance
            start = (start_along, across) if dx else (across, start_along)
            last_frame = (max(1, int(round(duration * FPS))) - 1) / FPS  # the whole distance is seen by the last frame
            obj = ShapeObject(shape, color, rgb, size, start, direction, distance / (last_frame - enter), enter)
        else:
            obj = ShapeObject(
                shape, color, rgb, size, (float(rng.uniform(0, span)), float(rng.uniform(0, span))), enter=enter
            )
        if all(not _overlap(obj, other) for other in others if other.direction is None and obj.direction is None):
            break
    return obj


def _overlap(a: ShapeObject, b: ShapeObject) -> bool:
    (ax, ay), (bx, by) = a.start, b.start
    return ax < bx + b.size and bx < ax + a.size and ay < by + b.size and by < ay + a.size


def questions(scene: Scene, rng: np.random.Generator, every_object: bool = False) -> list[dict]:
    """QA pairs about a scene. A video: attribute, counting, motion (``subtype`` direction or moving-or-still),
    temporal order, caption, in a random order. A still: its captions first (what stage-0 pretraining reads: one
    naming colour and shape, one colour alone, one shape alone), counting, attribute. Attribute and motion
    questions are about one object drawn at random, or with
    ``every_object`` about each object in turn (both attribute questions, each mover's direction, each object's
    state): more supervision per clip for training, where every question is trained on its own."""
    qa = []
    objects = scene.objects
    chosen = objects if every_object else [objects[int(rng.integers(len(objects)))]]
    for obj in chosen:
        asks = ("color", "shape") if every_object else (("color",) if rng.random() < 0.5 else ("shape",))
        for ask in asks:
            if ask == "color":
                qa.append({"type": "attribute", "question": f"What color is the {obj.shape}?", "answer": obj.color})
            else:
                qa.append(
                    {"type": "attribute", "question": f"What shape is the {obj.color} object?", "answer": obj.shape}
                )
    qa.append({"type": "counting", "question": "How many objects are there?", "answer": str(len(objects))})
    if scene.duration == 0:
        captions = [
            {"type": "caption", "question": question, "answer": scene.caption(naming)}
            for question, naming in (
                ("Describe the image.", "both"),
                ("Describe the colors in the image.", "color"),
                ("Describe the shapes in the image.", "shape"),
            )
        ]
        return [*captions, *qa[::-1]]
    movers = [o for o in objects if o.direction]
    if movers:
        for mover in movers if every_object else [movers[int(rng.integers(len(movers)))]]:
            qa.append(
                {
                    "type": "motion",
                    "subtype": "direction",
                    "question": f"Which direction does the {mover.name} move?",
                    "answer": mover.direction,
                }
            )
    for other in objects if every_object else [objects[int(rng.integers(len(objects)))]]:
        state = "moving" if other.direction else "still"
        qa.append(
            {
                "type": "motion",
                "subtype": "moving-or-still",
                "question": f"Is the {other.name} moving or still?",
                "answer": state,
            }
        )
    entries = sorted(o.enter for o in objects)
    if len(objects) > 1 and entries[1] - entries[0] >= 0.5:
        first = min(objects, key=lambda o: o.enter)
        qa.append({"type": "temporal", "question": "Which object appears first?", "answer": f"the {first.name}"})
    qa.append({"type": "caption", "question": "Describe the video.", "answer": scene.caption()})
    return [qa[i] for i in rng.permutation(len(qa))]  # in a random order: a model must read the question


def scene_for(
    seed: int,
    index: int,
    split: str = "train",
    video: bool = True,
    canvas: int = 224,
    every_object: bool = False,
    every_pair: bool = False,
) -> Scene:
    """Scene ``index`` of a split, reproducible from ``seed`` alone (splits draw from separate streams). A still
    (``video`` false) shows training pairs, or with ``every_pair`` any colour–shape pair."""
    stream = {"train": 0, "test": 1, "heldout-combos": 2, "long": 3, "images": 4, "together": 5}[
        split if video else "images"
    ]
    rng = np.random.default_rng([seed, stream, index])
    pairs = split if video else ("every-pair" if every_pair else "train")
    return sample_scene(rng, pairs, video=video, canvas=canvas, every_object=every_object)


def _record_drawing(record, first_file, drawn: dict) -> None:
    """Write ``record`` (how a split's files are drawn), or check that the files already there were drawn the same
    way: kept files must show the scenes their captions describe. ``first_file``: the split's scene 0."""
    import json

    from ..atomic import write_text_atomic
    from ..errors import ConfigError

    if record.is_file():
        recorded = json.loads(record.read_text())
        if recorded != drawn:
            raise ConfigError(
                f"{record}: files here were drawn with {recorded}, not {drawn}; write into a fresh folder"
            )
        return
    if first_file.exists():
        raise ConfigError(
            f"{first_file}: written with no {record.name} to say how it was drawn (by an older vllm_i2v); "
            "write into a fresh folder"
        )
    write_text_atomic(record, json.dumps(drawn) + "\n")


def clip_name(split: str, index: int, video: bool = True) -> str:
    """The file name :func:`write_split` gives scene ``index`` of ``split``."""
    return f"{split if video else 'images'}_{index:05d}.{'mp4' if video else 'png'}"


def scene_of_file(name, split: str, seed: int = 0) -> Scene:
    """The scene a clip written by :func:`write_split` shows (its index is in its file ``name``)."""
    from pathlib import Path

    return scene_for(seed, int(Path(name).stem.rsplit("_", 1)[1]), split)


def write_split(
    out_dir,
    split: str,
    count: int,
    seed: int = 0,
    video: bool = True,
    canvas: int = 224,
    single_turn: bool = False,
    every_object: bool = False,
    every_pair: bool = False,
    region_namings: Sequence[str] = ("both",),
) -> dict:
    """Write ``count`` scenes of ``split`` under ``out_dir``: clips (mp4, through :func:`write_video`) or stills
    (png), ``{split}.json`` (LLaVA layout: every question of a clip as one multi-turn conversation, or with
    ``single_turn`` one conversation per question, so no answer can be read off an earlier turn) and
    ``{split}_qa.json`` (one row per question with its type, for evaluation). ``every_object``: questions about
    each object (:func:`questions`), for training. ``every_pair``: stills of any colour–shape pair, the held-out
    ones too (:func:`scene_for`). A still's row also lists its objects' regions, each named in each of
    ``region_namings`` (:meth:`Scene.regions`). Existing clips are kept, so an interrupted run resumes; the
    same seed writes the same files, and ``{split}_scenes.json`` records how they were drawn, so that files drawn
    otherwise (another seed, canvas or set of pairs) are an error, not kept beside captions they do not show.
    Returns counts per question type."""
    import json
    from pathlib import Path

    from PIL import Image
    from tqdm.auto import tqdm

    from ..atomic import write_text_atomic
    from ..video.writer import write_video

    out_dir = Path(out_dir)
    media = out_dir / ("videos" if video else "images")
    media.mkdir(parents=True, exist_ok=True)
    name = split if video else "images"
    drawn = {"seed": seed, "canvas": canvas, **({} if video else {"every_pair": every_pair})}
    _record_drawing(out_dir / f"{name}_scenes.json", media / clip_name(split, 0, video), drawn)
    conversations, rows, counts = [], [], {}
    for index in tqdm(range(count), desc=f"shapes {name}", dynamic_ncols=True):
        scene = scene_for(seed, index, split, video, canvas, every_object, every_pair)
        relative = clip_name(split, index, video)
        if not (media / relative).exists():
            if video:
                write_video(media / relative, scene.frames(), fps=scene.fps)
            else:
                Image.fromarray(scene.render()).save(media / relative)
        key = "video" if video else "image"
        regions = {} if video else {"regions": scene.regions(region_namings)}
        turns = []
        for n, qa in enumerate(scene.questions):
            prefix = f"<{key}>\n" if n == 0 or single_turn else ""
            turn = [{"from": "human", "value": prefix + qa["question"]}, {"from": "gpt", "value": qa["answer"]}]
            if single_turn:
                conversations.append({"id": f"{name}_{index:05d}_{n}", key: relative, "conversations": turn, **regions})
            turns += turn
            rows.append({"id": f"{name}_{index:05d}_{n}", key: relative, **qa})
            counts[qa["type"]] = counts.get(qa["type"], 0) + 1
        if not single_turn:
            conversations.append({"id": f"{name}_{index:05d}", key: relative, "conversations": turns, **regions})
    write_text_atomic(out_dir / f"{name}.json", json.dumps(conversations, indent=1) + "\n")
    write_text_atomic(out_dir / f"{name}_qa.json", json.dumps(rows, indent=1) + "\n")
    return counts
