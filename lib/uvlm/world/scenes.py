"""A procedural scene world: objects on a grid, rendered with numpy.

This replaces the paper's image-text corpora (ShareGPT-4V for understanding,
JourneyDB for generation) with scenes whose every fact is known, so that every
answer and every attribute of a generated image can be checked exactly.

A *scene* is a JSON-serialisable dict::

    {"background": 100,                 # grey level of the canvas
     "noise_seed": 123456,              # fixes the background noise
     "objects": [{"shape": "circle", "colour": "red", "size": "large",
                  "cell": [row, col],   # grid cell, distinct per object
                  "xy": [x, y],         # centre in pixels (jittered inside the cell)
                  "tint": [dr, dg, db]}]}

``render_scene(scene, cfg)`` is a pure function of the scene, so a record on disk
fully determines its image. Several sources of variation (jitter, size when a
caption omits it, tint, background, noise, free cells) make text -> image a
distribution rather than a lookup: with a fully determined render, generation
collapses to memorising one picture per prompt and teaches nothing.

Language (captions, questions, answers) lives in ``world_language.py``.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from uvlm.core.errors import ConfigError
from uvlm.core.schema import rule

# Shapes the renderer can draw; a config may use any subset.
SHAPES = ("square", "circle", "triangle", "cross", "diamond", "ring")
# Saturated colours, all far from the grey backgrounds and from each other.
PALETTE = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230),
    "yellow": (235, 215, 40), "magenta": (210, 50, 210), "cyan": (40, 210, 220),
    "orange": (245, 140, 25), "white": (245, 245, 245),
}
# Object diameter as a fraction of the cell side.
SIZE_FRACTIONS = {"small": 0.6, "medium": 0.75, "large": 0.9}
# Understanding families (instruction kinds); "caption" is the detailed description.
FAMILIES = ("caption", "attribute", "existence", "count", "spatial", "comparison")
SUPERSAMPLE = 4  # anti-aliasing factor: crisp edges without staircase artefacts


def _default_family_weights() -> dict:
    return {"caption": 0.5, "attribute": 0.1, "existence": 0.1, "count": 0.1,
            "spatial": 0.1, "comparison": 0.1}


@dataclass
class WorldConfig:
    image_size: int = field(default=32, metadata=rule(ge=8, le=256))
    grid: int = field(default=3, metadata=rule(ge=1, le=4))
    min_objects: int = field(default=1, metadata=rule(ge=1))
    max_objects: int = field(default=3, metadata=rule(ge=1))
    shapes: list[str] = field(default_factory=lambda: ["square", "circle", "triangle", "cross"],
                              metadata=rule(each_in=SHAPES))
    colours: list[str] = field(default_factory=lambda: ["red", "green", "blue", "yellow",
                                                        "magenta", "cyan"],
                               metadata=rule(each_in=tuple(PALETTE)))
    sizes: list[str] = field(default_factory=lambda: ["small", "large"],
                             metadata=rule(each_in=tuple(SIZE_FRACTIONS)))
    # Split sizes (number of records; one image per record).
    n_u_train: int = field(default=2000, metadata=rule(ge=1))
    n_g_train: int = field(default=2000, metadata=rule(ge=1))
    n_val: int = field(default=200, metadata=rule(ge=1))
    n_test: int = field(default=400, metadata=rule(ge=1))
    n_bench: int = field(default=300, metadata=rule(ge=4))
    # Cross-task transfer: (colour, shape) combos seen by only one task in training.
    transfer_split: bool = True
    n_transfer_combos: int = field(default=2, metadata=rule(ge=0))
    p_transfer_test: float = field(default=0.3, metadata=rule(ge=0.0, le=1.0))
    # Zipf exponent of the prior over (colour, shape) combos; 0 = uniform. A skewed
    # prior gives POPE's "popular" negatives something to be about.
    popularity_skew: float = field(default=0.7, metadata=rule(ge=0.0, le=4.0))
    system_prompt: str = ("a chat between a curious user and an artificial intelligence "
                          "assistant . the assistant answers questions about images .")
    u_family_weights: dict[str, float] = field(default_factory=_default_family_weights)
    # Generation prompts underspecify: each object's size / position is omitted with
    # these probabilities (colour and shape are always named).
    p_omit_size: float = field(default=0.5, metadata=rule(ge=0.0, le=1.0))
    p_omit_position: float = field(default=0.5, metadata=rule(ge=0.0, le=1.0))
    # Render variation.
    jitter: float = field(default=2.0, metadata=rule(ge=0.0))  # max centre offset, px
    colour_jitter: int = field(default=12, metadata=rule(ge=0, le=60))  # per-channel tint
    background_levels: list[int] = field(default_factory=lambda: [70, 100, 130])
    background_noise: float = field(default=4.0, metadata=rule(ge=0.0, le=40.0))

    def validate(self, prefix: str = "world") -> None:
        p = f"{prefix}." if prefix else ""
        cells = self.grid * self.grid
        if self.max_objects > cells:
            raise ConfigError(f"{p}max_objects", self.max_objects,
                              f"at most grid*grid = {cells} (one object per cell)")
        if self.min_objects > self.max_objects:
            raise ConfigError(f"{p}min_objects", self.min_objects,
                              f"at most max_objects = {self.max_objects}")
        if self.image_size < 5 * self.grid:
            raise ConfigError(f"{p}image_size", self.image_size,
                              f"at least 5 px per grid cell (>= {5 * self.grid})")
        for name in ("shapes", "colours", "sizes"):
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"{p}{name}", values, "a non-empty list")
            for i, v in enumerate(values):
                if v in values[:i]:
                    raise ConfigError(f"{p}{name}[{i}]", v, "a list without duplicates")
        if self.transfer_split:
            limit = min(len(self.colours), len(self.shapes)) // 2
            if self.n_transfer_combos > limit:
                raise ConfigError(
                    f"{p}n_transfer_combos", self.n_transfer_combos,
                    f"at most min(#colours, #shapes) // 2 = {limit}, so held-out combos use "
                    "distinct colours and shapes and both tasks still see every colour and shape")
        if not self.background_levels:
            raise ConfigError(f"{p}background_levels", self.background_levels, "a non-empty list")
        for i, v in enumerate(self.background_levels):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 255:
                raise ConfigError(f"{p}background_levels[{i}]", v, "an integer in [0, 255]")
        for k, w in self.u_family_weights.items():
            if k not in FAMILIES:
                raise ConfigError(f"{p}u_family_weights.{k}", w, f"a key in {list(FAMILIES)}")
            if w < 0:
                raise ConfigError(f"{p}u_family_weights.{k}", w, "a weight >= 0")
        if sum(self.u_family_weights.values()) <= 0:
            raise ConfigError(f"{p}u_family_weights", self.u_family_weights,
                              "at least one positive weight")
        if not self.system_prompt.split():
            raise ConfigError(f"{p}system_prompt", self.system_prompt, "a non-empty string")


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent generator per named purpose: adding a split never shifts another."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


# ---------------------------------------------------------------- geometry

def cell_box(cell, cfg: WorldConfig):
    """(x0, y0, side) of a grid cell in pixels (cells may be fractional)."""
    side = cfg.image_size / cfg.grid
    row, col = cell
    return col * side, row * side, side


def object_diameter(size: str, cfg: WorldConfig) -> float:
    return SIZE_FRACTIONS[size] * cfg.image_size / cfg.grid


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean inside-test on offsets from the centre; r = radius in px."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "square":
        return np.maximum(ax, ay) <= 0.82 * r
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "triangle":  # apex up, base down
        top, bottom = -r, 0.8 * r
        t = (dy - top) / (bottom - top)
        return (dy >= top) & (dy <= bottom) & (ax <= t * r)
    if shape == "cross":
        arm = 0.32 * r
        return ((ax <= r) & (ay <= arm)) | ((ay <= r) & (ax <= arm))
    if shape == "diamond":
        return ax + ay <= r
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.5 * r) ** 2)
    raise ConfigError("world.shapes", shape, f"one of {list(SHAPES)}")


def render_scene(scene: dict, cfg: WorldConfig) -> np.ndarray:
    """Scene dict -> uint8 (H, W, 3). Pure: same scene, same pixels."""
    n = cfg.image_size
    noise = np.random.default_rng(scene["noise_seed"]).normal(0.0, cfg.background_noise, (n, n))
    img = np.repeat((scene["background"] + noise)[:, :, None], 3, axis=2)
    ss = SUPERSAMPLE
    sub = (np.arange(n * ss) + 0.5) / ss  # sub-pixel centres
    for obj in scene["objects"]:
        r = object_diameter(obj["size"], cfg) / 2
        cx, cy = obj["xy"]
        x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, n)
        y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, n)
        xs, ys = sub[x0 * ss:x1 * ss] - cx, sub[y0 * ss:y1 * ss] - cy
        mask = _shape_mask(obj["shape"], xs[None, :], ys[:, None], r).astype(np.float64)
        cover = mask.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))[:, :, None]
        colour = np.asarray(PALETTE[obj["colour"]], float) + np.asarray(obj["tint"], float)
        patch = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = patch * (1 - cover) + colour * cover
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


RENDER_CHUNK = 1000  # scenes per task when rendering in parallel


def render_scenes(scenes, cfg: WorldConfig, workers: int = 1) -> np.ndarray:
    """(N, H, W, 3) uint8 images of ``scenes``. Every scene carries its own noise seed, so the
    images are the same for any number of ``workers`` (processes, in chunks)."""
    n = cfg.image_size
    out = np.empty((len(scenes), n, n, 3), np.uint8)
    chunks = [range(i, min(len(scenes), i + RENDER_CHUNK)) for i in range(0, len(scenes), RENDER_CHUNK)]
    if workers > 1 and len(chunks) > 1:
        import multiprocessing
        import warnings
        from concurrent.futures import ProcessPoolExecutor

        # fork where there is one: unlike spawn it does not re-run the caller's __main__ (a
        # script without a __main__ guard, or one read from stdin) in every worker. The
        # workers run numpy only, so torch's OpenMP pool, which a fork inherits broken, is
        # never touched; hence the fork-with-threads warning is silenced.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context(method)) as pool:
                parts = pool.map(render_scenes, [[scenes[i] for i in c] for c in chunks], [cfg] * len(chunks))
                for c, part in zip(chunks, parts):
                    out[c.start:c.stop] = part
        return out
    for i, s in enumerate(scenes):
        out[i] = render_scene(s, cfg)
    return out


# ---------------------------------------------------------------- the world

class World:
    """Combos, their popularity prior and the cross-task transfer split, fixed by the seed.

    ``unseen_by_u``: combos absent from understanding training (present in generation
    training); ``unseen_by_g``: the reverse. Every other combo is seen by both.
    """

    def __init__(self, cfg: WorldConfig, seed: int):
        self.cfg, self.seed = cfg, int(seed)
        self.combos = [(c, s) for c in cfg.colours for s in cfg.shapes]
        rng = stream(seed, "combos")
        ranks = rng.permutation(len(self.combos)) + 1
        w = ranks.astype(float) ** -cfg.popularity_skew
        self.prior = w / w.sum()
        self.unseen_by_u: list[tuple] = []
        self.unseen_by_g: list[tuple] = []
        k = cfg.n_transfer_combos if cfg.transfer_split else 0
        if k:
            # Held-out combos use distinct colours and shapes, so each task still sees
            # every colour and every shape, only not in these pairings.
            colours = [cfg.colours[i] for i in rng.permutation(len(cfg.colours))[:2 * k]]
            shapes = [cfg.shapes[i] for i in rng.permutation(len(cfg.shapes))[:2 * k]]
            held = list(zip(colours, shapes))
            self.unseen_by_u, self.unseen_by_g = held[:k], held[k:]

    def allowed(self, task: str) -> np.ndarray:
        """Boolean mask over combos a task's training scenes may contain ('u', 'g', 'all')."""
        banned = {"u": self.unseen_by_u, "g": self.unseen_by_g, "all": []}[task]
        return np.array([c not in banned for c in self.combos])

    def unseen(self, task: str) -> list:
        return {"u": self.unseen_by_u, "g": self.unseen_by_g}[task]

    def sample_scene(self, rng: np.random.Generator, task: str = "all",
                     force_combo: tuple | None = None) -> dict:
        cfg = self.cfg
        n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        cells = rng.choice(cfg.grid * cfg.grid, size=n_obj, replace=False)
        p = self.prior * self.allowed(task)
        idx = rng.choice(len(self.combos), size=n_obj, p=p / p.sum())
        combos = [self.combos[i] for i in idx]
        if force_combo is not None:
            combos[int(rng.integers(n_obj))] = tuple(force_combo)
        objects = []
        for (colour, shape), cell in zip(combos, cells):
            size = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
            objects.append(self.place(rng, colour, shape, size, (int(cell) // cfg.grid,
                                                                 int(cell) % cfg.grid)))
        objects.sort(key=lambda o: tuple(o["cell"]))  # reading order: canonical captions
        return {"background": int(rng.choice(cfg.background_levels)),
                "noise_seed": int(rng.integers(2**31 - 1)), "objects": objects}

    def place(self, rng, colour: str, shape: str, size: str, cell) -> dict:
        """An object in a cell, its centre jittered so the object stays inside the cell."""
        cfg = self.cfg
        x0, y0, side = cell_box(cell, cfg)
        slack = max((side - object_diameter(size, cfg)) / 2 - 0.25, 0.0)
        j = min(cfg.jitter, slack)
        dx, dy = rng.uniform(-j, j, size=2) if j > 0 else (0.0, 0.0)
        cj = cfg.colour_jitter
        tint = rng.integers(-cj, cj + 1, size=3) if cj else np.zeros(3, int)
        return {"shape": shape, "colour": colour, "size": size, "cell": [int(cell[0]), int(cell[1])],
                "xy": [round(x0 + side / 2 + float(dx), 3), round(y0 + side / 2 + float(dy), 3)],
                "tint": [int(t) for t in tint]}

    def scene_combos(self, scene: dict) -> set:
        return {(o["colour"], o["shape"]) for o in scene["objects"]}

    def touches_unseen(self, combos, task: str) -> bool:
        return any(tuple(c) in self.unseen(task) for c in combos)

    def sample_eval_scene(self, rng, task: str) -> dict:
        """A held-out scene: with p_transfer_test it holds a combo the task never trained on."""
        unseen = self.unseen(task)
        if unseen and rng.random() < self.cfg.p_transfer_test:
            return self.sample_scene(rng, task, force_combo=unseen[int(rng.integers(len(unseen)))])
        return self.sample_scene(rng, task)
