"""Training checkpoints: model + optimiser + loop state, safetensors only.

A checkpoint is a directory written under a temporary name and swapped in, so a
run killed mid-write still has its previous checkpoint. Optimiser state is
flattened into tensors plus JSON metadata: nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from uvlm.core.errors import CheckpointError
from uvlm.core.io import load_tensors, save_tensors, write_json


def _swap_in(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def check_finite(model, path) -> None:
    """Refuse to write weights holding NaN or inf: the swap would replace a good checkpoint
    with one that every resume or evaluation inherits."""
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise CheckpointError(f"refusing to write '{path}': {len(bad)} weight tensor(s) hold NaN or inf "
                              f"(first: {bad[0]}); the checkpoint already there is kept")


def save_model_dir(model, path) -> None:
    """``model.save_pretrained`` into a fresh dir, swapped in atomically (finite weights only)."""
    path = Path(path)
    check_finite(model, path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    _swap_in(tmp, path)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training_state(path, model, opt, state: dict) -> None:
    """Write ``path/`` = model/ + optim.safetensors + state.json, atomically as a whole.

    ``opt`` None leaves the optimizer state out: a finished run is never stepped again, and
    AdamW's two moments are two thirds of the bytes that DVC would hash and cache.
    """
    path = Path(path)
    check_finite(model, path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model")
    if opt is not None:
        tensors, meta = optimizer_tensors(opt)
        save_tensors(tmp / "optim.safetensors", tensors, {"optim": meta})
    write_json(tmp / "state.json", state)
    _swap_in(tmp, path)


def read_training_state(path) -> dict | None:
    """The loop state of a checkpoint dir, or None if there is none to resume."""
    path = Path(path)
    if not path.exists():
        old = path.with_name(path.name + ".old")
        if not old.exists():
            return None
        path = old
    state_file = path / "state.json"
    if not state_file.exists():
        raise CheckpointError(f"checkpoint '{path}' has no state.json: it is incomplete; delete it to start over")
    try:
        state = json.loads(state_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint file '{state_file}' is corrupt: {e}") from e
    state["_dir"] = str(path)
    return state


def restore_optimizer(path, opt) -> None:
    tensors, meta = load_tensors(Path(path) / "optim.safetensors")
    try:
        load_optimizer_tensors(opt, tensors, meta["optim"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"optimiser state in '{path}' does not match the model: {e}") from e


def diff_settings(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ between two nested dicts (for refusing a changed resume)."""
    out = []
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k), current.get(k)
        key = f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_settings(a, b, key + ".")
        elif a != b:
            out.append(f"{key}: checkpoint {a!r} != now {b!r}")
    return out
