"""Time one train stage of the gpu preset, the way the stage runs it (uvlm.train.launch_seeds:
the run's seeds side by side on one GPU), once per setting, and write what each seed spent.

    python figures/gpu/train_speed.py --runs u_base --settings eager,compile,compile --out DIR

Each setting trains the run from scratch (its folder is removed first); a repeated setting
shows what a warm compile cache buys. Writes DIR/train_speed.json and DIR/train_speed.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import yaml

SETTINGS = {"eager": {"compile": False}, "compile": {"compile": True}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="u_base")
    ap.add_argument("--settings", default="eager,compile,compile")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="figures/gpu/train_speed")
    ap.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                    help="override a train key for every setting, e.g. seeds=[0] (read as YAML)")
    a = ap.parse_args()
    from uvlm.config import load_config
    from uvlm.train import launch_seeds, run_dir

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_config(a.params)  # the copies below live elsewhere: pin their paths
    paths = {"data": str(base.paths.data.resolve()), "figures": str(base.paths.figures.resolve())}
    rows = []
    for run in a.runs.split(","):
        for i, name in enumerate(a.settings.split(",")):
            params = yaml.safe_load(Path(a.params).read_text())
            params.setdefault("train", {}).update(SETTINGS[name])
            params["train"].update({k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in a.train)})
            params["paths"] = paths
            path = out / f"params_{name}.yaml"
            path.write_text(yaml.safe_dump(params, sort_keys=False))
            cfg = load_config(path)
            shutil.rmtree(run_dir(cfg, run, cfg.train.seeds[0]).parent, ignore_errors=True)
            t0 = time.perf_counter()
            summaries = launch_seeds(cfg, run, str(path), progress=False)
            stage = time.perf_counter() - t0
            for s in summaries:
                # the summary file, not the return value: one seed trains in this process and
                # returns the bare summary
                s = json.loads((run_dir(cfg, run, s["seed"]) / "train_summary.json").read_text())
                log = list(csv.DictReader((run_dir(cfg, run, s["seed"]) / "train_log.csv").open()))
                rows.append({"run": run, "setting": name, "repeat": a.settings.split(",")[:i].count(name),
                             "seed": s["seed"], "stage_s": round(stage, 1),
                             "setup_s": round(s.get("setup_s_this_call", float("nan")), 1),
                             "first_step_s": round(float(log[0]["step_time_s"]), 2),
                             "train_time_s": round(s["train_time_s"], 1),
                             "mean_step_ms": round(1e3 * s["mean_step_time_s"], 1),
                             "best_val": {t: round(b["val_loss"], 4) for t, b in s["best"].items()}})
                print(json.dumps(rows[-1]), flush=True)
    (out / "train_speed.json").write_text(json.dumps(rows, indent=1))
    keys = list(rows[0])
    md = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    md += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    (out / "train_speed.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
