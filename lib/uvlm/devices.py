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


def machine() -> dict:
    """What a committed result was computed on. The cpu preset's scores depend on it: the CPU's
    vector units and math library change the float rounding of every stage from the tokenizer
    on (docs/testing.md, "Robustness")."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    out = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out
