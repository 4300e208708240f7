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
import zipfile
from pathlib import Path

import numpy as np

from .errors import CheckpointError, MissingInputError, UVLMError


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


def read_jsonl(path, stage: str | None = None) -> list[dict]:
    """One JSON record per line; a bad line is named by file and line number."""
    path = Path(path)
    if not path.exists():
        if stage:
            raise MissingInputError(path, stage)
        raise FileNotFoundError(path)
    out = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UVLMError(f"'{path}' line {i} is not a JSON record ({e}): the file is corrupt"
                                + (f"; re-run `dvc repro {stage}`" if stage else "")) from e
    return out


def load_npz(path, stage: str | None = None, keys=None) -> dict:
    """The arrays of an .npz file (only ``keys`` where given; absent ones are left out), never
    unpickling; a truncated or foreign file is named. An archive reads each array on demand, so
    asking for one split (or the metadata entry) does not read the others."""
    path = Path(path)
    if not path.exists():
        if stage:
            raise MissingInputError(path, stage)
        raise FileNotFoundError(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):  # a bare .npy, not an archive of named arrays
                raise ValueError("a single array, not an .npz archive")
            return {k: z[k] for k in (z.files if keys is None else [k for k in keys if k in z.files])}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        # numpy's own message for bytes that are no archive advises allow_pickle=True, which is
        # never the fix here: the file is damaged or is not what the stage wrote.
        why = "not a numpy file" if "pickle" in str(e) else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise UVLMError(f"'{path}' is not a readable .npz archive of arrays, truncated or corrupt ({why})"
                        + (f"; re-run `dvc repro {stage}`" if stage else "")) from None


def save_tensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write a safetensors file atomically. Metadata values are stored as JSON strings."""
    from safetensors.torch import save

    meta = {k: json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    blob = _canonical_header(save(tensors, metadata=meta))
    with atomic_path(path, suffix=".safetensors") as tmp:
        tmp.write_bytes(blob)


def _canonical_header(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted.

    safetensors writes the metadata from a hash map, in an order that changes from one process
    to the next, so the same weights gave files of other bytes, and DVC re-ran every stage
    downstream of an unchanged checkpoint. Tensor offsets count from the end of the header, so
    only the header is rewritten (padded with spaces to 8 bytes, as the format allows).
    """
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + blob[8 + n:]


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
