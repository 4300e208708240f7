"""From job results to synergy gaps, their spread over seeds, and a verdict.

The synergy gap of a task at one point (size, data, prior, seed) is the unified run's
score minus the isolated run's, signed so that **positive = unified is better** (for a
loss, isolated minus unified). Gaps are paired by seed: unified seed s against
isolated seed s, which share the initialisation seed. Over seeds we report the mean,
the sample std and a 95% t-interval of the mean; a gap counts as synergy (or as a
cost) only where that interval excludes zero.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .metrics import METRICS, SUBSETS
from .plan import Job

PRIMARY = {"u": "gqa_acc", "g": "image_nll"}  # the metric the verdict is decided on


def results_frame(results: dict[str, dict]) -> pd.DataFrame:
    """One row per (job, task, subset, metric): the tidy table behind every figure."""
    rows = []
    for jid, res in results.items():
        job = Job.from_dict(res["settings"]["job"])
        if job.kind != "train":
            continue
        base = {"job": jid, "run_task": job.task, "size": job.size, "d_model": job.model_size.d_model,
                "params": res["params"], "data_n": job.data_n, "prior": job.prior, "seed": job.seed,
                "lr_factor": job.lr_factor, "epochs_factor": job.epochs_factor, "lr": job.lr}
        for task, subsets in res["metrics"].items():
            for sub, metrics in subsets.items():
                for metric, v in metrics.items():
                    rows.append(base | {"task": task, "subset": sub, "metric": metric, "value": v["value"],
                                        "se": v["se"], "n": v["n"], "train_time_s": res["train_time_s"],
                                        "best_val_loss": res["best"][task]["val_loss"]})
        for task, best in res["best"].items():  # the validation split is in-distribution
            rows.append(base | {"task": task, "subset": SUBSETS[0], "metric": "val_loss", "value": best["val_loss"],
                                "se": math.nan, "n": math.nan, "train_time_s": res["train_time_s"],
                                "best_val_loss": best["val_loss"]})
    return pd.DataFrame(rows)


def gap_frame(frame: pd.DataFrame, isolated_epochs_factor: float = 1.0) -> pd.DataFrame:
    """Per seed: unified minus isolated, signed so that positive = synergy.

    ``isolated_epochs_factor=2`` compares with the step-matched isolated runs instead of the
    same-epochs ones (see :mod:`uvlm.sweep.plan`)."""
    f = frame[frame.lr_factor == 1.0]
    keys = ["size", "d_model", "data_n", "prior", "seed", "task", "subset", "metric"]
    iso = f[(f.run_task != "ug") & (f.epochs_factor == isolated_epochs_factor)].set_index(keys)
    uni = f[(f.run_task == "ug") & (f.epochs_factor == 1.0)].set_index(keys)
    joined = uni[["value", "se", "params"]].join(iso[["value", "se"]], lsuffix="_unified", rsuffix="_isolated",
                                                  how="inner").reset_index()
    higher = joined.metric.map(lambda m: METRICS[m][1])
    diff = joined.value_unified - joined.value_isolated
    joined["gap"] = np.where(higher, diff, -diff)
    joined["item_se"] = np.sqrt(joined.se_unified.fillna(0) ** 2 + joined.se_isolated.fillna(0) ** 2)
    return joined


def _t95(n: int) -> float:
    """Two-sided 95% Student-t quantile for n - 1 degrees of freedom (no scipy needed)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
    return table.get(n - 1, 1.96 + 2.5 / max(n - 1, 1))


def summarise_gaps(gaps: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, n and 95% interval of the gap over seeds, with a verdict per row."""
    keys = ["size", "d_model", "data_n", "prior", "task", "subset", "metric"]
    rows = []
    for k, g in gaps.groupby(keys, sort=True):
        vals = g.gap.dropna().to_numpy(float)
        n = len(vals)
        mean = float(vals.mean()) if n else math.nan
        std = float(vals.std(ddof=1)) if n > 1 else math.nan
        # With one seed there is no spread: fall back to the test items' own noise.
        half = _t95(n) * std / math.sqrt(n) if n > 1 else 1.96 * float(g.item_se.mean())
        lo, hi = mean - half, mean + half
        verdict = "synergy" if lo > 0 else ("cost" if hi < 0 else "within noise")
        rows.append(dict(zip(keys, k)) | {"params": int(g.params.mean()), "gap": mean, "std": std, "n_seeds": n,
                                           "ci_lo": lo, "ci_hi": hi, "verdict": verdict})
    return pd.DataFrame(rows)


def size_axis(summary: pd.DataFrame, n_max: int) -> pd.DataFrame:
    return summary[summary.data_n == n_max].sort_values(["prior", "task", "metric", "subset", "params"])


def data_axis(summary: pd.DataFrame, size: str) -> pd.DataFrame:
    return summary[(summary["size"] == size) & (~summary.prior)].sort_values(["task", "metric", "subset", "data_n"])


def zero_crossings(xs, ys) -> list[float]:
    """x where the piecewise-linear (in log x) curve crosses zero."""
    out = []
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if y0 * y1 < 0:  # a strict sign change; a line lying on zero crosses nothing
            t = y0 / (y0 - y1)
            out.append(float(math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))))
    return out


def primary_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows of each task's primary metric (the one the verdict is decided on)."""
    return summary[summary.metric == summary.task.map(PRIMARY)]


def both_task_points(summary: pd.DataFrame, subset: str = "in_dist") -> pd.DataFrame:
    """Points where the primary metric of *both* tasks shows synergy beyond the interval."""
    prim = primary_rows(summary[summary.subset == subset])
    wide = prim.pivot_table(index=["size", "params", "data_n", "prior"], columns="task", values="verdict",
                            aggfunc="first")
    if not {"u", "g"} <= set(wide.columns):
        return wide.iloc[0:0]
    return wide[(wide.u == "synergy") & (wide.g == "synergy")].reset_index()


def lr_check_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Best validation loss of the isolated runs at lr * factor, at the two ends of the size range."""
    f = frame[(frame.run_task != "ug") & (frame.subset == SUBSETS[0]) & (frame.epochs_factor == 1.0)]
    f = f.drop_duplicates(["size", "run_task", "lr_factor", "seed", "data_n", "prior"])
    sizes = f[f.lr_factor != 1.0]["size"].unique()
    checked = f[f.lr_factor != 1.0].data_n.unique()
    f = f[f["size"].isin(sizes) & (f.seed == f.seed.min()) & (~f.prior) & (f.data_n.isin(checked))]
    out = f[["size", "params", "run_task", "lr_factor", "lr", "best_val_loss"]].sort_values(
        ["params", "run_task", "lr_factor"])
    best = out.groupby(["size", "run_task"]).best_val_loss.transform("min")
    out = out.assign(best_of_size=out.best_val_loss == best)
    return out.reset_index(drop=True)


def _cell(v, floats: int) -> str:
    if not isinstance(v, float):
        return str(v)
    if math.isnan(v):
        return "–"
    if abs(v) < 1e-9:
        return f"{0.0:.{floats}f}"  # float residue of a mean of equal values
    return f"{v:.3g}" if abs(v) < 0.01 else f"{v:.{floats}f}"


def markdown_table(df: pd.DataFrame, floats: int = 3) -> str:
    from uvlm.paper.tables import _md_grid
    rows = [[_cell(r[c], floats) for c in df.columns] for _, r in df.iterrows()]
    return _md_grid(list(df.columns), rows) + "\n"
