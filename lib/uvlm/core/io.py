"""Atomic file writes and safe (pickle-free) checkpoint IO.

Every output of the pipeline is written to a temporary file in the same
directory and then renamed, so an interrupted stage never leaves a half-written
file that a later stage would trust.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import CheckpointError, MissingInputError


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temp path next to ``path``; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs should be readable like any file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_json(path, stage: str | None = None):
    path = Path(path)
    if not path.exists():
        if stage:
            raise MissingInputError(path, stage)
        raise FileNotFoundError(path)
    return json.loads(path.read_text())


def save_npz(path, compress: bool = True, **arrays) -> None:
    """``np.savez_compressed`` (or ``np.savez``) atomically. Load with :func:`load_npz`
    (allow_pickle=False)."""
    with atomic_path(path, suffix=".npz") as tmp:
        (np.savez_compressed if compress else np.savez)(tmp, **arrays)


def load_npz(path, stage: str | None = None) -> dict:
    path = Path(path)
    if not path.exists():
        if stage:
            raise MissingInputError(path, stage)
        raise FileNotFoundError(path)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_tensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write a safetensors file atomically. Metadata values are stored as JSON strings."""
    from safetensors.torch import save_file

    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_tensors(path, stage: str | None = None, device="cpu"):
    """Load a safetensors file -> (tensors, metadata). Never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        if stage:
            raise MissingInputError(path, stage)
        raise CheckpointError(f"checkpoint file '{path}' does not exist")
    try:
        tensors = load_file(str(path), device=str(device))
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint file '{path}' is corrupt or not safetensors: {e}") from e
    meta = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    return tensors, meta
