"""Synergy gap against model size and against data size (draws only what was measured)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from .metrics import METRICS, SUBSETS  # noqa: E402
from .results import zero_crossings  # noqa: E402

TASK_NAMES = {"u": "understanding", "g": "generation"}


def _label(metric: str) -> str:
    task, higher, unit = METRICS[metric]
    return f"{TASK_NAMES.get(task, 'each task')}: {metric} gap ({unit}; + = unified better)"


def _short(v: float) -> str:
    """2.2e7 -> '22M', 3100 -> '3.1k': crossing labels readable at a glance."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def _ylim(sub):
    """Y range of the points with the full number of seeds (plus every mean), or None.

    A point that lost a seed has a t-interval several times wider (2 seeds: t = 12.7); drawn
    in full it would flatten every other line of the panel, so it is clipped and said so."""
    full = sub.n_seeds == sub.n_seeds.max()
    if full.all():
        return None
    lo = min(sub.ci_lo[full].min(), sub.gap.min(), 0.0)
    hi = max(sub.ci_hi[full].max(), sub.gap.max(), 0.0)
    pad = 0.1 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def gap_figure(summary, x: str, title: str, log_x: bool = True, style_by_prior: bool = True):
    """One panel per metric; one line per split (and per prior level), mean ± 95% CI over seeds."""
    metrics = [m for m in METRICS if m in set(summary.metric)]
    ncol = 2
    nrow = (len(metrics) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.6 * nrow), squeeze=False)
    colours = dict(zip(SUBSETS, sns.color_palette("colorblind", len(SUBSETS))))
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        sub = summary[summary.metric == metric]
        for (subset, prior), g in sub.groupby(["subset", "prior"]):
            g = g.sort_values(x)
            ls = "--" if (prior and style_by_prior) else "-"
            label = subset.replace("_", "-") + (" + text prior" if prior else "")
            ax.plot(g[x], g.gap, ls, marker="s" if prior else "o", color=colours[subset], label=label)
            ax.fill_between(g[x], g.ci_lo, g.ci_hi, color=colours[subset], alpha=0.15 if not prior else 0.08)
            # Bars as well as bands: a point with no neighbour has no band to show.
            ax.errorbar(g[x], g.gap, yerr=[g.gap - g.ci_lo, g.ci_hi - g.gap], fmt="none", ecolor=colours[subset],
                        elinewidth=0.8, capsize=2, alpha=0.7)
            for xc in zero_crossings(list(g[x]), list(g.gap)):
                ax.axvline(xc, color=colours[subset], ls=":", lw=1)
                slot = 2 * SUBSETS.index(subset) + bool(prior)  # one text row per line: no overlaps
                ax.annotate(f"0 at {_short(xc)}", (xc, 0), textcoords="offset points",
                            xytext=(3, 6 + 9 * slot), fontsize=7, color=colours[subset])
        ax.axhline(0, color="black", lw=0.8)
        limits = _ylim(sub)
        if limits is not None:
            ax.set_ylim(*limits)
            ax.text(0.01, 0.01, "intervals of points with fewer seeds clipped", transform=ax.transAxes,
                    fontsize=6, color="grey", va="bottom")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel("gap")
        ax.set_title(_label(metric), fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def lr_check_figure(lr_check):
    """Best validation loss against lr / rule lr at the two ends of the size range."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), squeeze=False)
    for ax, task in zip(axes[0], ("u", "g")):
        for size, g in lr_check[lr_check.run_task == task].groupby("size", sort=False):
            g = g.sort_values("lr_factor")
            ax.plot(g.lr_factor, g.best_val_loss, marker="o", label=f"{size} ({int(g.params.iloc[0]) / 1e6:.1f}M)")
        ax.axvline(1.0, color="grey", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("lr / rule's lr")
        ax.set_ylabel("best validation loss")
        ax.set_title(f"{TASK_NAMES[task]}-only", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("learning-rate rule, checked at the smallest and largest size", fontsize=10)
    fig.tight_layout()
    return fig
