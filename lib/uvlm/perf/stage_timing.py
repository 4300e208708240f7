"""How long one train stage takes, and where the time goes, eager against compiled.

    python -m uvlm.perf.stage_timing --runs u_base --settings eager,compile,compile --out DIR --set preset=gpu

Each (run, setting) trains the run from scratch the way its `dvc repro` stage does
(:func:`uvlm.train.loop.launch_seeds`: with ``train.parallel_seeds`` the seeds side by side), and
records per seed: the whole launch (``stage_s``), the seed's set-up (data, model, device),
its first step (which carries compilation), its summed step time and its mean steady step.
A repeated setting shows what a warm compile cache buys.

The runs train under ``DIR/data/runs`` beside links to the project's ``world`` and
``tokenizer``, so a trained run of the project is never touched. Writes
``DIR/stage_timing.json`` and ``DIR/stage_timing.md``.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

from uvlm.core.errors import ConfigError, MissingInputError, UVLMError
from uvlm.core.io import write_json, write_text

SETTINGS = {"eager": ("train.compile=false",), "compile": ("train.compile=true", "train.cuda_graphs=false"),
            "graphs": ("train.compile=true", "train.cuda_graphs=true")}
FIELDS = ("run", "setting", "repeat", "seed", "stage_s", "setup_s", "first_step_s", "train_time_s",
          "mean_step_ms", "best_val")


def scratch_data(data: Path, out: Path) -> Path:
    """``out/data`` holding links to the project's world and tokenizer (never copies)."""
    scratch = out / "data"
    scratch.mkdir(parents=True, exist_ok=True)
    for sub, stage in (("world", "data"), ("tokenizer", "tokenizer")):
        source = (data / sub).resolve()
        if not source.is_dir():
            raise MissingInputError(source, stage)
        link = scratch / sub
        if link.is_symlink() or link.exists():
            if link.resolve() == source:
                continue
            raise UVLMError(f"'{link}' exists and is not a link to '{source}': choose another --out")
        link.symlink_to(source, target_is_directory=True)
    return scratch


def seed_row(run_dir: Path, **keys) -> dict:
    """What one seed spent, from the files its training wrote."""
    summary = json.loads((run_dir / "train_summary.json").read_text())
    first = next(csv.DictReader((run_dir / "train_log.csv").open()))
    return {**keys, "seed": summary["seed"],
            "setup_s": round(summary["setup_s_this_call"], 2),
            "first_step_s": round(float(first["step_time_s"]), 2),
            "train_time_s": round(summary["train_time_s"], 2),
            "mean_step_ms": round(1e3 * summary["mean_step_time_s"], 2),
            "best_val": {t: round(b["val_loss"], 4) for t, b in summary["best"].items()}}


def time_stage(params_path, runs, settings, out, sets=(), progress: bool = False) -> list[dict]:
    """Train each run of ``runs`` once per entry of ``settings`` (names of :data:`SETTINGS`);
    ``sets`` are ``KEY=VALUE`` overrides for every one. Returns one row per seed."""
    from uvlm.core.config import load_config
    from uvlm.train.loop import launch_seeds
    from uvlm.core.overrides import parse_sets

    for name in settings:
        if name not in SETTINGS:
            raise ConfigError("--settings", name, f"a comma-separated list of {sorted(SETTINGS)}")
    base = load_config(params_path, sets=parse_sets(sets))
    for run in runs:
        base.run(run)  # a misspelt run name fails before anything trains
    out = Path(out)
    scratch = scratch_data(base.paths.data, out)
    where = (f"paths.data={scratch.resolve()}", f"paths.figures={(out / 'figures').resolve()}")
    rows = []
    for run in runs:
        for i, name in enumerate(settings):
            run_sets = (*sets, *SETTINGS[name], *where)
            cfg = load_config(params_path, sets=parse_sets(run_sets))
            shutil.rmtree(scratch / "runs" / run, ignore_errors=True)  # from scratch, in the scratch root only
            t0 = time.perf_counter()
            launch_seeds(cfg, run, str(params_path), progress=progress, sets=run_sets)
            stage = round(time.perf_counter() - t0, 2)
            for seed in cfg.train.seeds:
                rows.append(seed_row(scratch / "runs" / run / f"seed{seed}", run=run, setting=name,
                                     repeat=settings[:i].count(name), stage_s=stage))
    write_json(out / "stage_timing.json", rows)
    write_text(out / "stage_timing.md", markdown(rows))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    lines += ["| " + " | ".join(str(r[k]) for k in FIELDS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m uvlm.perf.stage_timing", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    ap.add_argument("--runs", default="u_base", help="comma-separated run names of runs: (default u_base)")
    ap.add_argument("--settings", default="eager,compile,compile",
                    help=f"comma-separated, each one of {sorted(SETTINGS)} (default eager,compile,compile)")
    ap.add_argument("--out", default="data/stage_timing", help="output folder (default: data/stage_timing, "
                                                                  "outside git)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override one params key for every setting, e.g. preset=gpu (repeatable)")
    ap.add_argument("--progress", action="store_true", help="progress bars")
    a = ap.parse_args(argv)
    try:
        rows = time_stage(a.params, a.runs.split(","), a.settings.split(","), a.out, a.sets, a.progress)
    except (UVLMError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
