"""VQ image tokenizer: conv encoder -> vector quantiser -> conv decoder.

An image of H x W pixels becomes an (H/ds) x (W/ds) grid of integer codes in
[0, codebook_size); those codes are the image tokens of the unified model.

The codebook is learned with exponential moving averages (EMA) of the encoder
outputs assigned to each code, not by gradient descent: EMA codebooks converge
in a few hundred steps, which is what a CPU budget of about a minute allows.
Codes that stop being used are restarted on random encoder outputs so that the
whole vocabulary stays alive (high codebook usage means more informative
tokens). Gradients reach the encoder through the straight-through estimator.

Public API: :class:`VQConfig`, :class:`VQModel`, :func:`train_vq`,
:func:`evaluate_vq`, :func:`save_vq`, :func:`load_vq`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from uvlm.core import devices
from uvlm.core.errors import CheckpointError, ConfigError
from uvlm.core.io import load_tensors, save_tensors
from uvlm.core.schema import build, rule
from uvlm.core.threads import cpu_threads

FORMAT = "uvlm.tokens.vq/1"
STAGE = "tokenizer"


@dataclass
class VQConfig:
    """Tokenizer hyper-parameters (defaults = the ``cpu`` preset, 32 px images)."""

    codebook_size: int = field(default=256, metadata=rule(ge=2, le=32768))  # codes stored as int16
    downsample: int = field(default=4, metadata=rule(choices=(2, 4, 8)))  # pixels per code side
    hidden_channels: int = field(default=64, metadata=rule(ge=4))
    res_blocks: int = field(default=1, metadata=rule(ge=0))  # per side, at code resolution
    code_dim: int = field(default=32, metadata=rule(ge=1))
    steps: int = field(default=2000, metadata=rule(ge=1))
    batch_size: int = field(default=32, metadata=rule(ge=1))
    lr: float = field(default=3e-3, metadata=rule(gt=0))
    beta: float = field(default=0.25, metadata=rule(ge=0))  # commitment weight
    ema_decay: float = field(default=0.95, metadata=rule(ge=0, lt=1))
    # A code whose EMA count of assignments per batch falls below this is restarted.
    dead_code_threshold: float = field(default=1.0, metadata=rule(ge=0))
    device: str = field(default="auto", metadata=rule(choices=("auto", "cpu", "cuda")))
    # CPU threads; 0 = every core this process may use. 1 is the safe default: when other
    # processes share the cores, several OpenMP threads wait on each other and run ~10x slower.
    threads: int = field(default=1, metadata=rule(ge=0))


# ---------------------------------------------------------------- network
class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def _encoder(cfg: VQConfig) -> nn.Sequential:
    # Patchify first (kernel = stride = downsample): all further compute runs at code
    # resolution, which is what makes a CPU budget of a minute enough. Flat-coloured shapes
    # need little full-resolution processing; 3x3 convs give each code its neighbours' context.
    h = cfg.hidden_channels
    layers: list[nn.Module] = [nn.Conv2d(3, h, cfg.downsample, stride=cfg.downsample)]
    layers += [ResBlock(h) for _ in range(cfg.res_blocks)]
    layers += [nn.SiLU(), nn.Conv2d(h, cfg.code_dim, 1)]
    return nn.Sequential(*layers)


def _decoder(cfg: VQConfig) -> nn.Sequential:
    h = cfg.hidden_channels
    h_full = max(8, h // 4)  # thin full-resolution head: smooths edges across patch borders
    layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, h, 3, padding=1)]
    layers += [ResBlock(h) for _ in range(cfg.res_blocks)]
    layers += [nn.SiLU(), nn.ConvTranspose2d(h, h_full, cfg.downsample, stride=cfg.downsample),
               nn.SiLU(), nn.Conv2d(h_full, 3, 3, padding=1)]
    return nn.Sequential(*layers)


class EMAQuantizer(nn.Module):
    """Nearest-neighbour codebook whose entries are EMA means of their assigned vectors."""

    def __init__(self, codebook_size: int, code_dim: int):
        super().__init__()
        self.register_buffer("codebook", torch.zeros(codebook_size, code_dim))
        self.register_buffer("ema_count", torch.zeros(codebook_size))
        self.register_buffer("ema_sum", torch.zeros(codebook_size, code_dim))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        # ||z - e||^2 without the constant ||z||^2 term.
        dist = (self.codebook * self.codebook).sum(1) - 2.0 * flat @ self.codebook.t()
        return dist.argmin(1)

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, idx: torch.Tensor, decay: float,
                   dead_threshold: float, gen: torch.Generator) -> None:
        k = self.codebook.shape[0]
        if not bool(self.initialised):
            # Data-dependent init: every code starts on a real encoder output.
            pick = torch.randint(len(flat), (k,), generator=gen).to(flat.device)
            self.codebook.copy_(flat[pick])
            self.ema_count.fill_(len(flat) / k)
            self.ema_sum.copy_(self.codebook * self.ema_count[:, None])
            self.initialised.fill_(True)
            idx = self.nearest(flat)
        counts = torch.bincount(idx, minlength=k).to(flat.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat)
        self.ema_count.mul_(decay).add_(counts, alpha=1 - decay)
        self.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
        # Laplace smoothing keeps the division safe for codes with ~0 count.
        n = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (n + k * 1e-5) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        dead = (self.ema_count < dead_threshold).nonzero().squeeze(1)
        if len(dead):
            # Restart on random current encoder outputs: a dead code re-enters where the data is.
            pick = torch.randint(len(flat), (len(dead),), generator=gen).to(flat.device)
            self.codebook[dead] = flat[pick]
            self.ema_count[dead] = dead_threshold
            self.ema_sum[dead] = flat[pick] * dead_threshold


class VQModel(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = _encoder(cfg)
        self.quantizer = EMAQuantizer(cfg.codebook_size, cfg.code_dim)
        self.decoder = _decoder(cfg)

    @property
    def device(self) -> torch.device:
        return self.codebook_tensor.device

    @property
    def codebook_tensor(self) -> torch.Tensor:
        return self.quantizer.codebook

    def forward(self, x: torch.Tensor):
        """x: float (B,3,H,W) in [-1,1] -> (reconstruction, z, quantised z, codes (B,h,w))."""
        z = self.encoder(x)
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        idx = self.quantizer.nearest(flat)
        q = self.codebook_tensor[idx].view(b, h, w, d).permute(0, 3, 1, 2)
        q_st = z + (q - z).detach()  # straight-through: decoder grads flow into the encoder
        return self.decoder(q_st), z, q, idx.view(b, h, w)

    # -------------------------------------------------------- numpy API
    @torch.no_grad()
    def encode(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 (N,H,W,3) -> int64 codes (N, H/ds, W/ds)."""
        _check_images(images, self.cfg.downsample)
        out = []
        for i in range(0, len(images), batch_size):
            x = to_tensor(images[i:i + batch_size], self.device)
            z = self.encoder(x)
            b, d, h, w = z.shape
            idx = self.quantizer.nearest(z.permute(0, 2, 3, 1).reshape(-1, d))
            out.append(idx.view(b, h, w).cpu().numpy())
        if not out:
            return np.zeros((0,) + tuple(s // self.cfg.downsample for s in images.shape[1:3]), np.int64)
        return np.concatenate(out).astype(np.int64)

    @torch.no_grad()
    def decode(self, codes: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """int codes (N,h,w) -> uint8 images (N, h*ds, w*ds, 3)."""
        codes = np.asarray(codes)
        if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"decode expects integer codes of shape (N, h, w), got "
                             f"{codes.dtype} {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.cfg.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.cfg.codebook_size}), got "
                             f"[{codes.min()}, {codes.max()}]")
        out = []
        for i in range(0, len(codes), batch_size):
            idx = torch.as_tensor(codes[i:i + batch_size].astype(np.int64), device=self.device)
            q = self.codebook_tensor[idx].permute(0, 3, 1, 2)
            out.append(to_uint8(self.decoder(q)))
        if not out:
            s = self.cfg.downsample
            return np.zeros((0, codes.shape[1] * s, codes.shape[2] * s, 3), np.uint8)
        return np.concatenate(out)

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(images))


def _check_images(images, downsample: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[-1] != 3:
        desc = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images)
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {desc}")
    h, w = images.shape[1:3]
    if h % downsample or w % downsample:
        raise ConfigError("tokenizer.downsample", downsample,
                          f"a divisor of the image size {h}x{w}")


def to_tensor(images: np.ndarray, device) -> torch.Tensor:
    x = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    x = ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


# ---------------------------------------------------------------- training
def init_model(cfg: VQConfig, seed: int) -> VQModel:
    """Fresh weights fixed by ``seed``, without disturbing the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VQModel(cfg)


def _lr_at(step: int, steps: int, lr: float) -> float:
    # Short linear warm-up, then cosine decay to 10%: stable for a few hundred steps.
    warm = max(1, steps // 20)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train_vq(cfg: VQConfig, images: np.ndarray, seed: int, val_images: np.ndarray | None = None,
             progress: bool = True) -> tuple[VQModel, dict]:
    """Train a tokenizer on uint8 images (N,H,W,3) -> (model in eval mode, metrics).

    The model stays on the device it trained on, so encoding many images afterwards is fast
    there too; :func:`save_vq` writes CPU tensors and :func:`load_vq` loads onto the CPU.
    """
    _check_images(images, cfg.downsample)
    if len(images) == 0:
        raise ValueError("train_vq needs at least one training image")
    with cpu_threads(cfg.threads):
        return _train(cfg, images, seed, val_images, progress)


def _check_dead_code_threshold(cfg: VQConfig, image_shape) -> None:
    # A threshold above the mean assignments per code would restart every code every step.
    grid = (image_shape[0] // cfg.downsample) * (image_shape[1] // cfg.downsample)
    mean_count = cfg.batch_size * grid / cfg.codebook_size
    if cfg.dead_code_threshold >= mean_count:
        raise ConfigError("tokenizer.dead_code_threshold", cfg.dead_code_threshold,
                          f"a value < {mean_count:g} (batch_size x codes per image / codebook_size)")


def _train(cfg, images, seed, val_images, progress):
    _check_dead_code_threshold(cfg, images.shape[1:3])
    device = torch.device(devices.resolve_device(cfg.device, "tokenizer.device"))
    model = init_model(cfg, seed).to(device)
    opt = torch.optim.Adam(list(model.encoder.parameters()) + list(model.decoder.parameters()),
                           lr=cfg.lr, betas=(0.9, 0.99))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    data = torch.as_tensor(images, device=device)  # uint8 on device; batches converted on the fly
    order, pos = rng.permutation(len(images)), 0
    losses = []
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="tokenizer", mininterval=5.0, disable=not progress)
    model.train()
    for step in bar:
        if pos + cfg.batch_size > len(order):
            order, pos = rng.permutation(len(images)), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        x = data[torch.as_tensor(idx, device=device)].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        recon, z, q, codes = model(x)
        if step == 0:  # codebook needs data before the first loss means anything
            flat = z.detach().permute(0, 2, 3, 1).reshape(-1, cfg.code_dim)
            model.quantizer.ema_update(flat, codes.flatten(), cfg.ema_decay,
                                       cfg.dead_code_threshold, gen)
            recon, z, q, codes = model(x)
        rec_loss = F.mse_loss(recon, x)
        loss = rec_loss + cfg.beta * F.mse_loss(z, q.detach())
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg.steps, cfg.lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, cfg.code_dim)
        model.quantizer.ema_update(flat, codes.flatten(), cfg.ema_decay, cfg.dead_code_threshold, gen)
        losses.append(float(rec_loss.detach()))
        if step % 20 == 0 or step == cfg.steps - 1:
            bar.set_postfix(mse=f"{losses[-1] / 4:.4f}", refresh=False)  # /4: [-1,1] -> [0,1] pixel scale
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    metrics = {
        "train_seconds": round(time.perf_counter() - start, 2),
        "steps": cfg.steps,
        "train_images": int(len(images)),
        "train_device": str(device),
        "train_mse_final": float(np.mean(tail)) / 4,
        "train_mse_first": losses[0] / 4,
    }
    if val_images is not None and len(val_images):
        metrics.update(evaluate_vq(model, val_images))
    return model, metrics


# ---------------------------------------------------------------- evaluation
def evaluate_vq(model: VQModel, images: np.ndarray, probe=None) -> dict:
    """Reconstruction quality and codebook statistics on held-out uint8 images.

    ``probe`` (optional): an attribute probe from :mod:`uvlm.probe.model`; if given, also the
    fraction of grid cells whose predicted attributes agree between original and reconstruction.
    """
    codes = model.encode(images)
    recon = model.decode(codes)
    err = (recon.astype(np.float64) - images.astype(np.float64)) / 255.0
    mse = float(np.mean(err ** 2))
    k = model.cfg.codebook_size
    freq = np.bincount(codes.ravel(), minlength=k) / codes.size
    nz = freq[freq > 0]
    out = {
        "eval_images": int(len(images)),
        "tokens_per_image": int(codes.shape[1] * codes.shape[2]),
        "grid": [int(codes.shape[1]), int(codes.shape[2])],
        "mse": mse,
        "psnr": float(10 * np.log10(1.0 / max(mse, 1e-12))),
        "codebook_usage": float((freq > 0).mean()),
        "perplexity": float(np.exp(-(nz * np.log(nz)).sum())),
    }
    if probe is not None:
        from uvlm.probe.model import attribute_agreement  # optional dependency, only when a probe is given

        out["probe_agreement"] = float(attribute_agreement(probe, images, recon))
    return out


# ---------------------------------------------------------------- checkpoints
def save_vq(model: VQModel, path) -> None:
    meta = {"format": FORMAT, "config": dataclasses.asdict(model.cfg)}
    save_tensors(path, dict(model.state_dict()), metadata=meta)


def load_vq(path) -> VQModel:
    """Load a tokenizer saved by :func:`save_vq` (safetensors only, never pickle)."""
    tensors, meta = load_tensors(path, stage=STAGE)
    if meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"'{path}' is not a VQ tokenizer checkpoint (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    try:
        cfg = build(VQConfig, meta["config"], prefix="tokenizer")
    except ConfigError as e:
        raise CheckpointError(f"'{path}' holds an unusable tokenizer config: {e}") from e
    model = VQModel(cfg)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"'{path}' does not match the VQ model it declares: {e}") from e
    return model.eval()
