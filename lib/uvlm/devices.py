"""Which device a stage runs on: one rule for every ``*.device`` key."""
from __future__ import annotations

def resolve_device(name: str, key: str, hint: str = "") -> str:
    """'cpu', 'cuda' or 'auto' (a GPU if there is one) -> 'cpu' or 'cuda'. Asking for a GPU on a
    machine without CUDA is an error naming ``key``, never a silent crawl on the CPU."""
    import torch

    has_cuda = torch.cuda.is_available()
    if name == "cuda" and not has_cuda:
        from .errors import ConfigError
        raise ConfigError(key, name, "'cpu' or 'auto' on a machine without CUDA" + hint)
    return "cuda" if name == "cuda" or (name == "auto" and has_cuda) else "cpu"
