"""Train one run of the grid at one seed from the command line, on any number of processes.

    python -m uvlm.train.cli --run u_base --seed 0
    python -m uvlm.train.cli --run u_base --seed 0 --set preset=gpu --set train.epochs=2
    accelerate launch --num_processes 2 --mixed_precision bf16 -m uvlm.train.cli --run u_base --seed 0

The same ``uvlm.train.loop.train_run`` the train stage calls: every process runs this file, and
``train_run`` gives each its share of every global batch, so ``train.batch_size`` means the
same model update on one GPU or N. ``--set KEY=VALUE`` overrides params.yaml the way
``dvc exp run -S`` does (the value is read as YAML: ``true``, ``3e-4``, ``[0, 1]``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from uvlm.core.errors import ConfigError, UVLMError
from uvlm.core.overrides import parse_sets, read_value  # noqa: F401  (re-exported)


def is_main_process() -> bool:
    # accelerate launch (torchrun underneath) numbers the processes in RANK.
    return int(os.environ.get("RANK", "0")) == 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m uvlm.train.cli", description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a run name of params.yaml's runs: grid")
    ap.add_argument("--seed", type=int, default=None, help="training seed (default: the first of train.seeds)")
    ap.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override one params key, e.g. train.device=cuda (repeatable)")
    ap.add_argument("--out", default=None, help="run folder (default: <paths.data>/runs/RUN/seedS); "
                                                "an existing checkpoint there is resumed")
    ap.add_argument("--stop-after", type=int, default=None, help="stop after this many steps (resumable)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)

    from uvlm.core.config import load_config
    try:
        cfg = load_config(a.params, sets=parse_sets(a.sets))
        cfg.run(a.run)  # a misspelt run name fails here, before any data is read
        seed = cfg.train.seeds[0] if a.seed is None else a.seed
        if seed < 0:
            raise ConfigError("--seed", seed, "a non-negative integer")
        from .loop import train_run
        summary = train_run(cfg, a.run, seed, out_dir=a.out, stop_after=a.stop_after, progress=not a.no_progress)
    except (UVLMError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if is_main_process():
        print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
