"""Does a run trained on N processes match the same run on one? Compare their logs.

    python -m uvlm.train.ddp_check data/runs/u_base/seed0 runs/u_base_2gpu [--noise runs/u_base_seed1 ...] [--out ...]

Both folders hold ``train_log.csv`` and ``val_log.csv`` of ``uvlm.train.loop.train_run`` at the
same seed and global batch, so every step sees the same samples and only the split across
processes (and reduction order) differs. Reported: the largest gap between the two
smoothed training-loss curves and between the validation losses, and the ratio of median
training throughput (tokens/s over all processes). Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Optional

from uvlm.core.errors import ConfigError, MissingInputError
from uvlm.core.io import write_json, write_text

FORMAT = "uvlm.train.ddp_check/1"


def read_log(path: Path) -> dict[int, dict]:
    """{step: row}. Every process of a multi-process run appends its own row per step (the
    loss is already reduced, the timings are the process's own): keep one row per step, with
    the slowest process's time, since a synchronised step ends when its slowest process does."""
    if not path.exists():
        raise MissingInputError(path, "train (uvlm.train.cli)")
    rows: dict[int, dict] = {}
    for r in csv.DictReader(path.open()):
        step = int(r["step"])
        if step in rows and "step_time_s" in r:
            if float(r["step_time_s"]) > float(rows[step]["step_time_s"]):
                rows[step] = {**r, "loss": rows[step]["loss"]}
        else:
            rows.setdefault(step, r)
    return dict(sorted(rows.items()))


def smoothed_loss(log: dict[int, dict], window: int) -> dict[int, float]:
    """Trailing mean of the last ``window`` losses of the same task (unified runs interleave
    U and G batches, whose losses differ in scale)."""
    recent: dict[str, list] = defaultdict(list)
    out = {}
    for step, r in log.items():
        xs = recent[r["task"]]
        xs.append(float(r["loss"]))
        del xs[:-window]
        out[step] = sum(xs) / len(xs)
    return out


def _max_gap(a: dict, b: dict) -> Optional[dict]:
    common = sorted(set(a) & set(b))
    if not common:
        return None
    gaps = [abs(a[s] - b[s]) for s in common]
    worst = max(range(len(common)), key=gaps.__getitem__)
    return {"max_abs_diff": gaps[worst], "at_step": common[worst], "mean_abs_diff": sum(gaps) / len(gaps),
            "steps_compared": len(common), "final": [a[common[-1]], b[common[-1]]]}


def throughput(log: dict[int, dict], skip: int) -> dict:
    steady = list(log.values())[skip:] or list(log.values())
    return {"median_tokens_per_s": statistics.median(float(r["tokens_per_s"]) for r in steady),
            "median_step_time_s": statistics.median(float(r["step_time_s"]) for r in steady),
            "train_time_s": sum(float(r["step_time_s"]) for r in log.values()), "steps": len(log)}


def processes_of(run_dir: Path) -> Optional[int]:
    summary = run_dir / "train_summary.json"
    return json.loads(summary.read_text()).get("processes") if summary.exists() else None


def read_run(run_dir: Path) -> tuple[dict, dict]:
    """(training log, validation log) of one run folder."""
    return read_log(run_dir / "train_log.csv"), read_log(run_dir / "val_log.csv")


def loss_gaps(run_a: tuple[dict, dict], run_b: tuple[dict, dict], window: int) -> dict:
    """The raw and smoothed training-loss gaps and the validation-loss gaps of two runs' logs."""
    (train_a, val_a), (train_b, val_b) = run_a, run_b
    val_cols = [c for c in next(iter(val_a.values()), {}) if c.startswith("val_loss_")]
    return {"train_loss_raw": _max_gap({s: float(r["loss"]) for s, r in train_a.items()},
                                       {s: float(r["loss"]) for s, r in train_b.items()}),
            "train_loss_smoothed": _max_gap(smoothed_loss(train_a, window), smoothed_loss(train_b, window)),
            "val_loss": {c: _max_gap({s: float(r[c]) for s, r in val_a.items() if r.get(c)},
                                     {s: float(r[c]) for s, r in val_b.items() if r.get(c)}) for c in val_cols}}


def worst_gaps(gaps: dict) -> dict[str, Optional[float]]:
    """{curve: its largest gap} for the smoothed training loss and each validation loss."""
    curves = {"train_loss_smoothed": gaps["train_loss_smoothed"], **gaps["val_loss"]}
    return {k: (g["max_abs_diff"] if g else None) for k, g in curves.items()}


def compare(dir_a, dir_b, window: int = 20, skip: int = 5, tol: float = 0.05, device: Optional[str] = None,
            noise=None) -> dict:
    """The comparison of run folder ``dir_a`` (reference, e.g. one GPU) with ``dir_b``.

    ``noise``: run folders of the reference's setting at other seeds (one path or a list). Two
    seeds' curves differ by the training noise itself, so the verdict
    ``losses_agree_within_noise`` asks whether ``dir_b`` is no further from ``dir_a`` than the
    furthest of those seeds is, curve by curve; a fixed ``tol`` cannot know how noisy a larger
    model's short run is, and one extra seed is itself a noisy yardstick.
    """
    if window < 1:
        raise ConfigError("window", window, "an integer >= 1")
    if skip < 0:
        raise ConfigError("skip", skip, "an integer >= 0")
    dir_a, dir_b = Path(dir_a), Path(dir_b)
    run_a, run_b = read_run(dir_a), read_run(dir_b)
    gaps = loss_gaps(run_a, run_b, window)
    speed_a, speed_b = throughput(run_a[0], skip), throughput(run_b[0], skip)
    result = {
        "format": FORMAT, "device": device, "runs": [str(dir_a), str(dir_b)],
        "processes": [processes_of(dir_a), processes_of(dir_b)],
        "window": window, "skip": skip, "tolerance": tol, **gaps,
        "throughput": [speed_a, speed_b],
        "tokens_per_s_ratio": speed_b["median_tokens_per_s"] / speed_a["median_tokens_per_s"],
        "train_time_ratio": speed_a["train_time_s"] / speed_b["train_time_s"],
        "losses_agree": all(g is not None and g <= tol for g in worst_gaps(gaps).values()),
    }
    if noise:
        runs = [noise] if isinstance(noise, (str, Path)) else list(noise)
        result["noise_runs"] = [str(p) for p in runs]
        result["noise"] = [loss_gaps(run_a, read_run(Path(p)), window) for p in runs]
        per_seed = [worst_gaps(g) for g in result["noise"]]
        yardstick = {k: max((s[k] for s in per_seed if s.get(k) is not None), default=None)
                     for k in worst_gaps(gaps)}
        result["noise_yardstick"] = yardstick
        result["losses_agree_within_noise"] = all(
            g is not None and yardstick[k] is not None and g <= yardstick[k] for k, g in worst_gaps(gaps).items())
    return result


def markdown(r: dict) -> str:
    pa, pb = (p if p is not None else "?" for p in r["processes"])
    sm, (ta, tb) = r["train_loss_smoothed"], r["throughput"]
    lines = [f"Same run, same seed and global batch, on {pa} vs {pb} processes"
             + (f" ({r['device']})" if r["device"] else "") + ":", "",
             f"- `{r['runs'][0]}` vs `{r['runs'][1]}`",
             f"- training loss, trailing mean of {r['window']} steps per task: max |diff| "
             f"{sm['max_abs_diff']:.4f} at step {sm['at_step']} (mean {sm['mean_abs_diff']:.4f}, "
             f"{sm['steps_compared']} steps); raw per-step max |diff| {r['train_loss_raw']['max_abs_diff']:.4f}"]
    for col, g in r["val_loss"].items():
        lines.append(f"- {col}: max |diff| {g['max_abs_diff']:.4f} over {g['steps_compared']} evaluations "
                     f"(final {g['final'][0]:.4f} vs {g['final'][1]:.4f})")
    lines += [f"- median tokens/s (after {r['skip']} warm-up steps): {ta['median_tokens_per_s']:,.0f} vs "
              f"{tb['median_tokens_per_s']:,.0f}: **{r['tokens_per_s_ratio']:.2f}x**; summed step time "
              f"{ta['train_time_s']:.1f} s vs {tb['train_time_s']:.1f} s ({r['train_time_ratio']:.2f}x)",
              f"- losses agree within {r['tolerance']}: **{'yes' if r['losses_agree'] else 'no'}**"]
    if "noise" in r:
        for run, nz in zip(r["noise_runs"], r["noise"]):
            vals = ", ".join(f"{c} {g['max_abs_diff']:.4f}" for c, g in nz["val_loss"].items() if g)
            lines.append(f"- noise: the reference against `{run}` (same setting, another seed): smoothed "
                         f"training loss max |diff| {nz['train_loss_smoothed']['max_abs_diff']:.4f}; {vals}")
        seeds = "that seed's" if len(r["noise"]) == 1 else f"the largest of these {len(r['noise'])} seeds'"
        lines.append(f"- losses agree within {seeds} gaps, curve by curve: "
                     f"**{'yes' if r['losses_agree_within_noise'] else 'no'}**")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m uvlm.train.ddp_check", description=__doc__.split("\n")[0])
    ap.add_argument("reference", help="run folder of the reference run (e.g. one GPU)")
    ap.add_argument("other", help="run folder of the same run on more processes")
    ap.add_argument("--out", help="output path without suffix (default: <other>/ddp_check)")
    ap.add_argument("--window", type=int, default=20, help="steps of the trailing mean (default 20)")
    ap.add_argument("--skip", type=int, default=5, help="warm-up steps left out of throughput (default 5)")
    ap.add_argument("--tol", type=float, default=0.05, help="largest loss gap that counts as agreement")
    ap.add_argument("--device", help="the machine's name, recorded in the result")
    ap.add_argument("--noise", nargs="+", help="run folders of the reference's setting at other seeds: the "
                                               "noise the gaps are judged against (the largest of theirs)")
    a = ap.parse_args(argv)
    try:
        result = compare(a.reference, a.other, a.window, a.skip, a.tol, a.device, noise=a.noise)
    except (ConfigError, MissingInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stem = a.out if a.out else str(Path(a.other) / "ddp_check")
    write_json(stem + ".json", result)
    write_text(stem + ".md", markdown(result) + "\n")
    print(markdown(result) + f"\n\nwrote {stem}.json, {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
