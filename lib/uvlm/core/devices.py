"""Which device and precision a stage runs with: one rule for every ``*.device`` and ``*.precision`` key."""
from __future__ import annotations

import contextlib
import platform
import re
import warnings
from pathlib import Path
from typing import Optional

from .errors import ConfigError


def resolve_device(name: str, key: str, hint: str = "") -> str:
    """'cpu', 'cuda' or 'auto' (a GPU if there is one) -> 'cpu' or 'cuda'. Asking for a GPU on a
    machine without CUDA is an error naming ``key``, never a silent crawl on the CPU."""
    import torch

    has_cuda = torch.cuda.is_available()
    if name == "cuda" and not has_cuda:
        raise ConfigError(key, name, "'cpu' or 'auto' on a machine without CUDA" + hint)
    return "cuda" if name == "cuda" or (name == "auto" and has_cuda) else "cpu"


def bf16_supported(device: str) -> bool:
    """Whether ``device`` ('cpu' or 'cuda') computes bf16 in hardware (on a CPU: oneDNN's bf16 kernels)."""
    import torch

    return torch.cuda.is_bf16_supported() if device == "cuda" else torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(precision: str, device: str, key: str, notes: Optional[list] = None) -> str:
    """'auto', 'fp32' or 'bf16' -> 'fp32' or 'bf16' on ``device``.

    'auto' is bf16 on a GPU with bf16 and fp32 elsewhere: a CPU computes bf16 slowly and, for
    training, not bit-reproducibly, so only an explicit 'bf16' asks for it there. 'bf16' where the
    hardware has none falls back to fp32 with a warning, also appended to ``notes`` (a record's)."""
    if precision == "auto":
        return "bf16" if device == "cuda" and bf16_supported(device) else "fp32"
    if precision == "bf16" and not bf16_supported(device):
        note = f"{key}=bf16 but this {device} has no bf16 support: fp32 was used"
        if notes is not None:
            notes.append(note)
        warnings.warn(note)
        return "fp32"
    return precision


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo), else what the platform module knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """The card's or the processor's name, as a record states where it was measured."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return f"CPU {cpu_name()}"


def machine() -> dict:
    """What a committed result was computed on. The cpu preset's scores depend on it: the CPU's
    vector units and math library change the float rounding of every stage from the tokenizer
    on (docs/testing.md, "Robustness")."""
    import os

    import torch

    out = {"cpu": cpu_name(),
           "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def device_slug(name: str) -> str:
    """A device name as a file name: 'NVIDIA H200' -> 'nvidia-h200'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("(r)", "").replace("(tm)", "")).strip("-")
