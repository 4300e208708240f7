"""Host-side costs on the critical path of the gpu preset's pipeline, each as an A/B in one process
or in alternating fresh processes on one machine:

* a train process's set-up, step by step (the gpu preset's ug_base run, one process alone);
* writing and reading an image split as a compressed or a plain .npz (the 8000 u_train images);
* loading the text tokenizer through AutoTokenizer or PreTrainedTokenizerFast, three fresh
  processes each, alternating (torch already imported in each, as in a train process).

Run from the repository root after `dvc repro tokenizer` at the gpu preset:

    PYTHONPATH=lib python scripts/gpu/host_costs.py       # on the GPU machine

Output: records/bench/host-costs-nvidia-h100.txt.
"""
import os
import subprocess
import sys
import time

import numpy as np
import torch


def setup_breakdown(run: str = "ug_base") -> dict:
    from accelerate import Accelerator

    from uvlm.core.config import load_config
    from uvlm.train.setup import build_model, load_task_data, run_plans, vocab_for
    from uvlm.train.loop import device_and_precision, make_optimizer

    marks, t = {}, time.perf_counter()

    def mark(name):
        nonlocal t
        now = time.perf_counter()
        marks[name], t = round(now - t, 2), now
    cfg = load_config("params.yaml")
    spec = cfg.run(run)
    device, precision = device_and_precision(cfg.train)
    torch.zeros(1, device=device)
    mark("config + CUDA init")
    acc = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if precision == "bf16" else "no")
    vocab, tok = vocab_for(cfg)
    mark("text tokenizer + vocabulary")
    data = load_task_data(cfg, spec, tok, vocab)
    mark("load_task_data")
    run_plans(cfg, spec)
    model = build_model(cfg, vocab, spec, 0)
    mark("build_model")
    opt = make_optimizer(model, cfg.train, device)  # fused AdamW: its first use imports torch._dynamo
    mark("optimizer")
    acc.prepare(model, opt)
    mark("accelerator.prepare")
    return marks


def npz_costs() -> None:
    from uvlm.core.config import load_config
    from uvlm.world.scenes import render_scenes
    from uvlm.world.build import make_splits

    cfg = load_config("params.yaml").world
    _, splits = make_splits(cfg, 0)
    images = render_scenes([r["scene"] for r in splits["u_train"]], cfg, os.cpu_count())
    for name, save in (("savez_compressed", np.savez_compressed), ("savez", np.savez)):
        path = f"/tmp/host_costs_{name}.npz"
        t = time.perf_counter()
        save(path, images=images)
        w = time.perf_counter() - t
        t = time.perf_counter()
        np.load(path)["images"]
        r = time.perf_counter() - t
        print(f"{name}: write {w:.2f} s, read {r:.2f} s, {os.path.getsize(path) / 1e6:.1f} MB ({len(images)} images)")
        os.remove(path)


def tokenizer_costs(repeats: int = 3) -> None:
    code = {"AutoTokenizer": "from transformers import AutoTokenizer as T",
            "PreTrainedTokenizerFast": "from transformers import PreTrainedTokenizerFast as T"}
    times = {k: [] for k in code}
    for _ in range(repeats):
        for k, imp in code.items():
            src = (f"import time, torch; t = time.perf_counter(); {imp}; "
                   "T.from_pretrained('data/world/text_tokenizer', local_files_only=True); print(time.perf_counter() - t)")
            out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, check=True).stdout
            times[k].append(float(out))
    for k, v in times.items():
        print(f"load the text tokenizer via {k}: " + ", ".join(f"{x:.2f}" for x in v) + " s")


if __name__ == "__main__":
    print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    print("train process set-up, s:", setup_breakdown())
    npz_costs()
    tokenizer_costs()
