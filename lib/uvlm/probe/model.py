"""Attribute probe: a small CNN that reads a rendered scene back into its scene graph.

It predicts, for every grid cell, whether it holds an object and that object's
shape, colour and size. It is the measuring device of the project, so it trains on
freshly rendered scenes over *all* combos with a uniform prior (never on test
images) and is reported with its own held-out accuracy. Uses:

- ``features``: penultimate per-cell activations, flattened, for a Fréchet
  distance between generated and real images (our MJHQ-FID analogue);
- ``attribute_agreement``: do two images (original, VQ reconstruction) read the same;
- ``prompt_attribute_accuracy``: does a generated image contain what its prompt
  names (GenEval-like).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from uvlm.core.devices import resolve_device
from uvlm.core.errors import MissingInputError
from uvlm.core.schema import rule
from uvlm.core.threads import available_cores, cpu_threads
from uvlm.world.scenes import World, WorldConfig, render_scenes, stream

_INFER_BATCH = 256


@dataclass
class ProbeConfig:
    steps: int = field(default=2000, metadata=rule(ge=1))
    batch_size: int = field(default=256, metadata=rule(ge=2))  # cell crops per step
    lr: float = field(default=3e-3, metadata=rule(gt=0.0))
    width: int = field(default=8, metadata=rule(ge=1))  # conv channels
    hidden: int = field(default=128, metadata=rule(ge=4))  # first dense layer
    feature_width: int = field(default=16, metadata=rule(ge=2))  # per-cell feature size
    n_train: int = field(default=8000, metadata=rule(ge=8))  # freshly rendered scenes
    n_eval: int = field(default=1000, metadata=rule(ge=8))
    # One thread: on a shared 2-core machine, 2 OpenMP threads were measured 10x
    # slower than one for this small net (spin-waiting under contention).
    threads: int = field(default=1, metadata=rule(ge=1))
    # Where the probe trains: "auto" = a GPU if there is one. The probe is tiny, so on a GPU its
    # 2000 steps take seconds instead of ~15 s on a CPU core; the saved probe is on the CPU.
    device: str = field(default="cpu", metadata=rule(choices=("cpu", "cuda", "auto")))


def crop_layout(image_size: int, grid: int) -> tuple[int, list[int]]:
    """(crop side, crop starts) covering each grid cell with one fixed-size window.

    Cells may be fractional (32 px / 3); every window is ceil(cell) px so one network
    reads every cell, overlapping its neighbours by at most a pixel.
    """
    side = image_size / grid
    k = int(np.ceil(side - 1e-9))
    return k, [min(int(np.floor(g * side + 1e-9)), image_size - k) for g in range(grid)]


def _make_net(meta: dict):
    import torch
    from torch import nn

    w, fw, grid = meta["width"], meta["feature_width"], meta["grid"]
    n_out = 2 + len(meta["shapes"]) + len(meta["colours"]) + len(meta["sizes"])
    k, starts = crop_layout(meta["image_size"], grid)

    # Large cells (64 px images) are pooled once so the dense layer stays small.
    pool = 2 if k >= 16 else 1
    flat = w * (k // pool) ** 2

    class ProbeNet(nn.Module):
        """Reads every cell crop with one shared network (objects never leave their cell).

        A conv layer, then dense layers over the whole (flattened) crop: shape identity
        at 5-10 px lives in the spatial arrangement, which global pooling would discard
        (a pooled CNN reached only ~0.8 shape accuracy on 32 px scenes).
        """

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(pool), nn.Flatten(),
                nn.Linear(flat, meta["hidden"]), nn.ReLU(),
                nn.Linear(meta["hidden"], 4 * fw), nn.ReLU(),
                nn.Linear(4 * fw, fw), nn.ReLU())
            self.head = nn.Linear(fw, n_out)

        def crops(self, x):
            """(B, 3, H, W) -> (B * grid * grid, 3, k, k), cells in reading order."""
            cs = [x[:, :, r:r + k, c:c + k] for r in starts for c in starts]
            return torch.stack(cs, 1).flatten(0, 1)

        def cell_features(self, x):
            """(B, 3, H, W) floats -> (B, grid * grid, fw) penultimate features."""
            return self.body(self.crops(x)).view(x.shape[0], grid * grid, fw)

        def forward(self, x):
            """-> (B, n_out, grid, grid) logits."""
            h = self.head(self.cell_features(x))
            return h.permute(0, 2, 1).reshape(x.shape[0], n_out, grid, grid)

    return ProbeNet()


def _to_input(images: np.ndarray):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _targets(scenes, meta):
    """Per-cell integer targets (N, g, g): occupancy, shape, colour, size (-100 = empty)."""
    g, n = meta["grid"], len(scenes)
    occ = np.zeros((n, g, g), np.int64)
    attrs = {k: np.full((n, g, g), -100, np.int64) for k in ("shape", "colour", "size")}
    index = {k: {v: i for i, v in enumerate(meta[k + "s"])} for k in ("shape", "colour", "size")}
    for i, s in enumerate(scenes):
        for o in s["objects"]:
            r, c = o["cell"]
            occ[i, r, c] = 1
            for k in attrs:
                attrs[k][i, r, c] = index[k][o[k]]
    return {"occupied": occ, **attrs}


class Probe:
    """A trained probe network plus the world vocabulary it reads."""

    def __init__(self, net, meta: dict, metrics: dict | None = None):
        self.net, self.meta, self.metrics = net.eval(), dict(meta), dict(metrics or {})

    @property
    def grid(self) -> int:
        return self.meta["grid"]

    def _split(self, logits):
        s, c = len(self.meta["shapes"]), len(self.meta["colours"])
        return {"occupied": logits[:, :2], "shape": logits[:, 2:2 + s],
                "colour": logits[:, 2 + s:2 + s + c], "size": logits[:, 2 + s + c:]}

    def _check(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        n = self.meta["image_size"]
        if images.ndim != 4 or images.shape[1:] != (n, n, 3):
            raise ValueError(f"probe expects images of shape (N, {n}, {n}, 3), got {images.shape}")
        return images

    def to(self, device) -> "Probe":
        """Score on ``device`` (inputs and results stay numpy on the host)."""
        self.net.to(device)
        return self

    def _run(self, images, fn):
        import torch

        images = self._check(images)
        device = next(self.net.parameters()).device
        outs = []
        with torch.no_grad():
            for i in range(0, len(images), _INFER_BATCH):
                out = fn(_to_input(images[i:i + _INFER_BATCH]).to(device))
                outs.append({k: v.cpu() for k, v in out.items()} if isinstance(out, dict) else out.cpu())
        return outs

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, feature_width * grid * grid) float64 features."""
        outs = self._run(images, lambda x: self.net.cell_features(x).flatten(1))
        if not outs:
            return np.zeros((0, self.meta["feature_width"] * self.grid ** 2))
        return np.concatenate([o.numpy() for o in outs]).astype(np.float64)

    def predict_cells(self, images: np.ndarray) -> dict:
        """name -> (N, grid, grid) int array of argmax predictions."""
        outs = self._run(images, lambda x: {k: v.argmax(1) for k, v in self._split(self.net(x)).items()})
        g = self.grid
        return {k: (np.concatenate([o[k].numpy() for o in outs]) if outs else
                    np.zeros((0, g, g), np.int64)) for k in ("occupied", "shape", "colour", "size")}

    def predict_scene(self, images: np.ndarray) -> list[list[tuple]]:
        """Per image: [((row, col), shape, colour, size)] for every cell read as occupied."""
        p, out = self.predict_cells(images), []
        for i in range(len(p["occupied"])):
            objs = []
            for r, c in zip(*np.nonzero(p["occupied"][i])):
                objs.append(((int(r), int(c)), self.meta["shapes"][p["shape"][i, r, c]],
                             self.meta["colours"][p["colour"][i, r, c]],
                             self.meta["sizes"][p["size"][i, r, c]]))
            out.append(objs)
        return out


def _accuracy(pred: dict, target: dict) -> dict:
    occ = target["occupied"] == 1
    acc = {"occupancy": float((pred["occupied"] == target["occupied"]).mean())}
    for k in ("shape", "colour", "size"):
        acc[k] = float((pred[k][occ] == target[k][occ]).mean()) if occ.any() else 1.0
    cell_ok = (pred["occupied"] == target["occupied"]) & (
        ~occ | ((pred["shape"] == target["shape"]) & (pred["colour"] == target["colour"])
                & (pred["size"] == target["size"])))
    acc["scene_exact"] = float(cell_ok.all(axis=(1, 2)).mean())
    return acc


def train_probe(world_cfg: WorldConfig, probe_cfg: ProbeConfig, seed: int, progress: bool = True):
    """Train on fresh renders; -> (Probe, metrics with held-out per-attribute accuracy)."""
    import torch

    with cpu_threads(probe_cfg.threads):
        return _train(world_cfg, probe_cfg, seed, progress)


def _train(world_cfg, probe_cfg, seed, progress):
    import torch
    from tqdm.auto import tqdm

    t0 = time.time()
    # Uniform prior over every combo: the probe must read held-out combos too.
    world = World(dataclasses.replace(world_cfg, popularity_skew=0.0, transfer_split=False), seed)
    rng_train, rng_eval = stream(seed, "probe_train"), stream(seed, "probe_eval")
    train_scenes = [world.sample_scene(rng_train) for _ in range(probe_cfg.n_train)]
    eval_scenes = [world.sample_scene(rng_eval) for _ in range(probe_cfg.n_eval)]
    meta = {"image_size": world_cfg.image_size, "grid": world_cfg.grid,
            "shapes": list(world_cfg.shapes), "colours": list(world_cfg.colours),
            "sizes": list(world_cfg.sizes), "width": probe_cfg.width,
            "hidden": probe_cfg.hidden, "feature_width": probe_cfg.feature_width}
    device = resolve_device(probe_cfg.device, "probe.device")
    torch.manual_seed(seed)
    net = _make_net(meta).to(device)
    probe = Probe(net, meta)
    # Train on cell crops directly; half of each batch is drawn from occupied cells so
    # the attribute heads see objects often (most cells are empty).
    with torch.no_grad():
        x_train = net.crops(_to_input(render_scenes(train_scenes, world_cfg, available_cores()))).to(device)
    y_train = {k: torch.from_numpy(v.reshape(-1)) for k, v in _targets(train_scenes, meta).items()}
    occupied = torch.nonzero(y_train["occupied"]).flatten()  # on the CPU, like the sampled indices
    y_train = {k: v.to(device) for k, v in y_train.items()}
    opt = torch.optim.AdamW(net.parameters(), lr=probe_cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=probe_cfg.lr, total_steps=probe_cfg.steps,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    ce = torch.nn.functional.cross_entropy
    half = probe_cfg.batch_size // 2
    net.train()
    bar = tqdm(range(probe_cfg.steps), desc="probe", mininterval=5, disable=not progress)
    for _ in bar:
        idx = torch.cat([torch.randint(0, len(x_train), (probe_cfg.batch_size - half,), generator=gen),
                         occupied[torch.randint(0, len(occupied), (half,), generator=gen)]])
        out = probe._split(net.head(net.body(x_train[idx])))
        loss = ce(out["occupied"], y_train["occupied"][idx])
        for k in ("shape", "colour", "size"):
            loss = loss + ce(out[k], y_train[k][idx], ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval().cpu()
    pred = probe.predict_cells(render_scenes(eval_scenes, world_cfg, available_cores()))
    metrics = _accuracy(pred, _targets(eval_scenes, meta))
    metrics.update({"final_loss": float(loss.detach()), "n_train": probe_cfg.n_train,
                    "n_eval": probe_cfg.n_eval, "steps": probe_cfg.steps,
                    "feature_dim": probe_cfg.feature_width * world_cfg.grid ** 2})
    probe.metrics = metrics  # saved with the weights: no timing, so data/probe's hash is the probe's
    return probe, metrics | {"seconds": round(time.time() - t0, 2)}


def save_probe(probe: Probe, path) -> None:
    from uvlm.core.io import save_tensors

    save_tensors(path, probe.net.state_dict(), metadata={"probe": probe.meta, "metrics": probe.metrics})


def load_probe(path) -> Probe:
    from pathlib import Path

    from uvlm.core.io import load_tensors

    if not Path(path).exists():
        raise MissingInputError(path, "probe")
    tensors, meta = load_tensors(path, stage="probe")
    net = _make_net(meta["probe"])
    net.load_state_dict(tensors)
    return Probe(net, meta["probe"], meta.get("metrics"))


# The scoring helpers live beside the probe so callers need one import.
from .scores import attribute_agreement, prompt_attribute_accuracy, prompt_attribute_report  # noqa: E402,F401
