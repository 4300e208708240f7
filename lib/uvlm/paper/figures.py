"""Figures of the results stage. Drawing only: every number comes from uvlm.paper.results / uvlm.paper.fig5."""
from __future__ import annotations

import textwrap

import numpy as np

from uvlm.core.plotting import save, style

# (mode, image projection set) -> colour; light = vanilla, blues = full with image
# projections, oranges = HiMix, green = shallow.
MODE_COLOURS = {("full", None): "#d9d9d9", ("full", "img"): "#6baed6", ("full", "g"): "#2171b5",
                ("full", "u"): "#9ecae1", ("himix", "img"): "#fdae6b", ("himix", "u"): "#e6550d",
                ("himix", "g"): "#a63603", ("shallow", None): "#74c476"}
MODE_TEXT = {"full": "F", "himix": "H", "shallow": "S"}


def mode_name(mode, proj) -> str:
    if mode == "full":
        return "full (text projections)" if proj is None else f"full + image Q/K/V from set '{proj}'"
    if mode == "himix":
        return f"HiMix: text queries, image K/V from set '{proj}'"
    return "shallow: image tokens skip the layer"


def plot_layer_plans(plans: dict, path, labels: dict | None = None) -> None:
    """Layer-by-run grid: one row per (run, batch task), one column per layer, coloured by mode.

    ``plans``: {run: {task: [LayerMode]}}, as the runs trained (uvlm.paper.results.layer_plans).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle
    style()
    rows = [(run, task, plan) for run, by_task in plans.items() for task, plan in by_task.items()]
    n_layers = max(len(p) for _, _, p in rows)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * n_layers + 2.5, 0.9 + 0.32 * len(rows)))
    seen = []
    fallback = iter(plt.get_cmap("tab10").colors)
    for r, (run, task, plan) in enumerate(rows):
        for i, m in enumerate(plan):
            key = (m.mode, m.image_proj)
            if key not in MODE_COLOURS:
                MODE_COLOURS[key] = next(fallback)
            if key not in seen:
                seen.append(key)
            ax.add_patch(Rectangle((i, r), 1, 1, facecolor=MODE_COLOURS[key], edgecolor="white", lw=1.5))
            txt = MODE_TEXT.get(m.mode, "?") + (f"·{m.image_proj}" if m.image_proj else "")
            ax.text(i + 0.5, r + 0.5, txt, ha="center", va="center", fontsize=6)
    ax.set_xlim(0, n_layers)
    ax.set_ylim(len(rows), 0)
    ax.set_xticks(np.arange(n_layers) + 0.5, [str(i) for i in range(n_layers)])
    names = [f"{(labels or {}).get(run, run)} · {task.upper()} batches" for run, task, _ in rows]
    ax.set_yticks(np.arange(len(rows)) + 0.5, names, fontsize=7)
    ax.set_xlabel("layer")
    ax.grid(False)
    ax.set_title("Layer plans of the runs (drawn from the plans they trained with)", fontsize=9)
    handles = [Patch(facecolor=MODE_COLOURS[k], label=mode_name(*k)) for k in seen]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    save(fig, path)


def plot_fig5(result: dict, path) -> None:
    """Samples of the G-only baseline: real image, full computation, inference-time HMGen per K."""
    import matplotlib.pyplot as plt
    style()
    metrics, samples = result["metrics"], result["samples"]
    plan_names = list(metrics["plans"])
    rows = ["real"] + plan_names
    n = len(samples["real"])
    fig, axes = plt.subplots(len(rows), max(n, 1), figsize=(1.5 * max(n, 1) + 1.8, 1.65 * len(rows) + 0.4),
                             squeeze=False, layout="constrained")
    for r, name in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(samples[name][c], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(textwrap.fill(str(samples["prompts"][c]), 22), fontsize=5)
        if name == "real":
            label = "real test image"
        else:
            m = metrics["plans"][name]
            fd = m["generation"]["all"]["fd"]
            what = "full computation" if m["k"] == 0 else f"HMGen K={m['k']}\nlayers {m['shallow_layers']}"
            label = (f"{what}\nFID-a {'n/a' if fd is None else f'{fd:.3f}'}\n"
                     f"{m['time_s']:.3g} s, speedup x{m['speedup']:.2f}")
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"Inference-time HMGen on the G-only baseline, no retraining (n = {metrics['n']} prompts, "
                 f"{metrics['device']})", fontsize=9)
    save(fig, path)


def plot_efficiency(eff, path) -> None:
    """Counted-FLOPs ratio (x) vs measured training-time ratio (y) per accelerated run, y = x dashed."""
    import matplotlib.pyplot as plt
    style()
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    lim = 1.1
    d = eff.dropna(subset=["flops_rel"]) if len(eff) else eff
    for row in d.itertuples(index=False):
        if row.time_rel is None or (isinstance(row.time_rel, float) and np.isnan(row.time_rel)):
            continue
        yerr = row.time_rel_std if row.time_rel_std is not None and not np.isnan(row.time_rel_std) else None
        ax.errorbar(row.flops_rel, row.time_rel, yerr=yerr, fmt="o", capsize=3)
        ax.annotate(row.label, (row.flops_rel, row.time_rel), fontsize=6, xytext=(4, 4),
                    textcoords="offset points")
        lim = max(lim, row.flops_rel * 1.1, row.time_rel * 1.1)
    if not ax.lines:  # a grid of baselines only (e.g. the step-matched control): say so, not a bare diagonal
        ax.text(0.5, 0.5, "no accelerated run in this grid", ha="center", va="center", fontsize=9,
                transform=ax.transAxes, zorder=3, bbox=dict(facecolor="white", edgecolor="0.7"))
    ax.plot([0, lim], [0, lim], "k--", lw=0.8, label="time ratio = FLOPs ratio")
    ax.set_xlim(0, lim), ax.set_ylim(0, lim)
    ax.set_xlabel("counted FLOPs per training sample / baseline")
    ax.set_ylabel("measured training time / baseline")
    ax.set_title("Do counted FLOP savings become wall-clock savings?", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    save(fig, path)


def plot_synergy(syn, path) -> None:
    """Unified minus isolated per metric (positive = unified better), in-dist vs transfer."""
    import matplotlib.pyplot as plt
    style()
    metrics = list(dict.fromkeys(syn["metric"])) if len(syn) else []
    comps = list(dict.fromkeys(syn["comparison"])) if len(syn) else []
    cols = 4
    nrows = max(1, -(-len(metrics) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    colours = {"in_dist": "#4c72b0", "transfer": "#dd8452"}
    width = 0.38
    for ax, metric in zip(axes.flat, metrics):
        d = syn[syn.metric == metric]
        for j, subset in enumerate(("in_dist", "transfer")):
            s = d[d.subset == subset].set_index("comparison").reindex(comps)
            x = np.arange(len(comps)) + (j - 0.5) * width
            # A bar's whisker is what a gain must exceed to count (uvlm.paper.results.compare): the larger
            # of the 95% t-interval over seeds of the paired differences and the test items' floor.
            err = s["limit"].astype(float).fillna(0.0).to_numpy() if "limit" in s else None
            ax.bar(x, s["gain"].astype(float), width, yerr=err, capsize=2, color=colours[subset],
                   label=subset.replace("_", "-"))
        ax.axhline(0, color="k", lw=0.8)
        flip = bool(d["lower_is_better"].any())
        ax.set_title(f"{metric}{'-a' if metric != 'G-NLL' else ''}" + (" (sign flipped: lower is better)"
                                                                        if flip else ""), fontsize=8)
        ax.set_xticks(np.arange(len(comps)), [textwrap.fill(c, 16) for c in comps], fontsize=6)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    if metrics:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle("Synergy: unified minus isolated, positive = unified better "
                 "(whiskers: what a gain must exceed to count, the larger of the 95% interval over "
                 "seeds of the paired gaps and the test-item noise)", fontsize=9)
    fig.tight_layout()
    save(fig, path)
