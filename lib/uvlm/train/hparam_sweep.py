"""The once-per-preset sweep that chose the training hyper-parameters of a preset.

    python -m uvlm.train.hparam_sweep --lr 1e-3 2e-3 4e-3 --width 96 128 160

Each point trains the isolated baselines (``u_base``, ``g_base``) on the world and
tokenizer that ``dvc repro data tokenizer`` built, and keeps the best validation loss per
task and the step it was reached (the validation split only: test splits stay unseen). The
learning rate is swept at the preset's width, then the width at the preset's learning rate.
The table it writes (figures/sweeps/hparams_<preset>.{json,md}; the cpu one is committed in
records/sweeps/) is the record behind the preset's values; every run of the grid then uses those
same settings.

Why it matters: a learning rate that suits one width can ruin another, so the preset's
values are chosen here, on held-out loss, once, and never per run.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from uvlm.core.config import load_config
from uvlm.core.io import write_json, write_text

RUNS = ("u_base", "g_base")


def width_overrides(d_model: int, base) -> dict:
    """Scale heads and FFN with the width, keeping the head size and FFN ratio of the preset."""
    head = base.d_model // base.n_heads
    if d_model % head:
        raise ValueError(f"--width {d_model} is not a multiple of the preset's head size {head}")
    heads = d_model // head
    ratio = base.ffn_hidden / base.d_model
    return {"d_model": d_model, "n_heads": heads, "n_kv_heads": heads,
            "ffn_hidden": int(round(ratio * d_model / 16)) * 16}


def sweep_points(cfg, lrs, widths) -> list[dict]:
    points = [{"lr": lr, "d_model": cfg.model.d_model} for lr in lrs]
    points += [{"lr": cfg.train.lr, "d_model": w} for w in widths if w != cfg.model.d_model]
    seen, unique = set(), []
    for p in points:
        key = (p["lr"], p["d_model"])
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def run_point(params: str, point: dict, seed: int, work: Path, progress: bool) -> list[dict]:
    from .loop import train_run

    base = load_config(params)
    overrides = {"train": {"lr": point["lr"]}, "model": width_overrides(point["d_model"], base.model)}
    cfg = load_config(params, overrides)
    rows = []
    for run in RUNS:
        out = work / f"{run}_lr{point['lr']:g}_d{point['d_model']}"
        t0 = time.perf_counter()
        summary = train_run(cfg, run, seed, out_dir=out, progress=progress)
        task = cfg.run(run).task
        best = summary["best"][task]
        rows.append({"run": run, "lr": point["lr"], "d_model": point["d_model"],
                     "best_val_loss": round(best["val_loss"], 5), "best_step": best["step"],
                     "steps": summary["steps"], "wall_s": round(time.perf_counter() - t0, 1)})
        shutil.rmtree(out, ignore_errors=True)
    return rows


def best_point(rows: list[dict]) -> tuple | None:
    """The (lr, width) whose validation losses, each relative to the best of its run, average lowest.

    One setting serves every run (a unified run trains both tasks with one learning rate), so the
    two tasks' losses are put on a common scale before they are averaged.
    """
    best = {}
    for r in rows:
        best[r["run"]] = min(best.get(r["run"], float("inf")), r["best_val_loss"])
    scores = {}
    for r in rows:
        scores.setdefault((r["lr"], r["d_model"]), []).append(r["best_val_loss"] / best[r["run"]])
    complete = {k: sum(v) / len(v) for k, v in scores.items() if len(v) == len(best)}
    return min(complete, key=complete.get) if complete else None


def to_markdown(result: dict) -> str:
    lines = [f"# Hyper-parameter sweep, preset `{result['preset']}`", "",
             f"Seed {result['seed']}; best validation loss per task (lower is better) and the step it was "
             f"reached, of {result['rows'][0]['steps'] if result['rows'] else '?'} steps. "
             f"Preset values: lr {result['preset_lr']:g}, width {result['preset_width']}.", "",
             "| run | lr | width | best val loss | best step | steps | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        mark = " **(preset)**" if (r["lr"], r["d_model"]) == (result["preset_lr"], result["preset_width"]) else ""
        lines.append(f"| {r['run']} | {r['lr']:g} | {r['d_model']}{mark} | {r['best_val_loss']:.4f} | "
                     f"{r['best_step']} | {r['steps']} | {r['wall_s']} |")
    choice = best_point(result["rows"])
    if choice:
        lines += ["", f"Lowest mean relative validation loss (each run's loss over the best of that run): "
                  f"lr {choice[0]:g}, width {choice[1]}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m uvlm.train.hparam_sweep", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--lr", type=float, nargs="+", default=[])
    ap.add_argument("--width", type=int, nargs="+", default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="output folder (default: figures/sweeps)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_config(args.params)
    out = Path(args.out) if args.out else cfg.paths.figures / "sweeps"
    rows = []
    with tempfile.TemporaryDirectory(prefix="uvlm-sweep-") as tmp:
        for point in sweep_points(cfg, args.lr or [cfg.train.lr], args.width):
            rows += run_point(args.params, point, args.seed, Path(tmp), not args.no_progress)
            print(rows[-2:], flush=True)
    result = {"preset": cfg.preset, "seed": args.seed, "preset_lr": cfg.train.lr,
              "preset_width": cfg.model.d_model, "rows": rows}
    write_json(out / f"hparams_{cfg.preset}.json", result)
    write_text(out / f"hparams_{cfg.preset}.md", to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
