"""Figures 2 and 3 of the paper, and the image share over training (drawing only).

Everything drawn here was computed by uvlm.analysis.attention and saved as an
``AttentionProfile`` (or an ``image_share_evolution`` dict); this file only lays it out.
Layers are numbered from 0, as in the profile arrays.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm, Normalize

from uvlm.core.plotting import save, style

SEGMENT_COLOURS = {"system": "0.55", "image": "tab:green", "instruction": "tab:blue", "output": "tab:orange"}
TASK_TITLES = {"u": "understanding (U)", "g": "generation (G)"}
VIEW_TITLES = {"all": "all queries (Eq. 2)", "output": "output queries only"}


def _rows(u, g) -> list:
    rows = [(t, p) for t, p in (("u", u), ("g", g)) if p is not None]
    if not rows:
        raise ValueError("nothing to draw: both the U and the G profile are None")
    return rows


def _colour(name: str) -> str:
    return SEGMENT_COLOURS.get(name, "tab:purple")


def figure_layers(n_layers: int, n: int = 4) -> list[int]:
    """First, about 1/3, about 2/3 and last layer (the paper's 1, 12, 22, 32 of 32)."""
    return sorted(set(np.linspace(0, n_layers - 1, n).round().astype(int).tolist()))


def plot_segment_blocks(u_profile, g_profile, path, layers=None, kind: str = "blocks") -> None:
    """Fig. 2: segment-block coarsened causal attention maps, U on top, G below.

    ``kind="blocks"``: mass a query of the row segment sends to the column segment (rows
    sum to 1); ``"block_density"``: mean weight per (query, key) pair. Log scale 1e-3..1;
    values below 1e-3 (the causal upper blocks) take the lowest colour, NaN is grey.
    """
    style()
    rows = _rows(u_profile, g_profile)
    n_cols = max(len(layers or figure_layers(p.n_layers)) for _, p in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.9 * n_cols, 2.8 * len(rows)), squeeze=False)
    norm = LogNorm(vmin=1e-3, vmax=1.0)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    image = None
    for r, (task, prof) in enumerate(rows):
        shown = layers or figure_layers(prof.n_layers)
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(shown):
                ax.axis("off")
                continue
            layer = shown[c]
            data = np.asarray(getattr(prof, kind)[layer], dtype=float)
            image = ax.imshow(np.clip(data, 1e-3, 1.0), norm=norm, cmap=cmap)
            names = prof.segment_names
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(len(names)), names if c == 0 else [""] * len(names), fontsize=7)
            for (i, j), v in np.ndenumerate(data):
                if np.isfinite(v) and v >= 1e-3:
                    ax.text(j, i, f"{v:.2f}" if v >= 0.01 else f"{v:.0e}", ha="center", va="center",
                            fontsize=6, color="white" if v < 0.1 else "black")
            ax.set_title(f"{task.upper()}: layer {layer} of {prof.n_layers}", fontsize=8)
            ax.grid(False)
        axes[r, 0].set_ylabel(f"{TASK_TITLES[task]}\nquery segment", fontsize=8)
    fig.supxlabel("key segment", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention (log scale)")
    save(fig, path)


def _pie(ax, prof, layer, view, title):
    share = np.nan_to_num(prof.share[view]["mean"][layer])
    names = prof.segment_names
    ax.pie(np.maximum(share, 0), colors=[_colour(n) for n in names], startangle=90, counterclock=False,
           labels=[f"{n}\n{s:.1f}%" for n, s in zip(names, share)], textprops={"fontsize": 7},
           wedgeprops={"linewidth": 0.5, "edgecolor": "white"})
    ax.set_title(title, fontsize=8)


def plot_segment_shares(u_profile, g_profile, path, view: str = "all") -> None:
    """Fig. 3: pies at the first ("shallow") and last ("deep") layer, and each segment's share
    per layer (mean over samples, band = 95% CI), for U and G, in one view."""
    style()
    rows = _rows(u_profile, g_profile)
    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 3.3 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 2.2]})
    for r, (task, prof) in enumerate(rows):
        last = prof.n_layers - 1
        _pie(axes[r, 0], prof, 0, view, f"{task.upper()} shallow (layer 0)")
        _pie(axes[r, 1], prof, last, view, f"{task.upper()} deep (layer {last})")
        ax = axes[r, 2]
        x = np.arange(prof.n_layers)
        for k, name in enumerate(prof.segment_names):
            mean, ci = prof.share[view]["mean"][:, k], np.nan_to_num(prof.share[view]["ci95"][:, k])
            ax.plot(x, mean, "o-", ms=2.5, lw=1.2, color=_colour(name), label=name)
            ax.fill_between(x, mean - ci, mean + ci, color=_colour(name), alpha=0.2, lw=0)
        ax.set_ylim(0, 100)
        ax.set_xlabel("layer")
        ax.set_ylabel("attention share (%)")
        ax.set_title(f"{TASK_TITLES[task]}: {VIEW_TITLES.get(view, view)}, n={prof.n_samples}", fontsize=8)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    save(fig, path)


def plot_image_share_evolution(u_evolution, g_evolution, path) -> None:
    """Image share per layer at each training checkpoint (one line per step, coloured by step).

    Inputs are ``uvlm.analysis.attention.image_share_evolution`` results (either may be None).
    """
    style()
    rows = _rows(u_evolution, g_evolution)
    fig, axes = plt.subplots(1, len(rows), figsize=(5.2 * len(rows), 3.4), squeeze=False)
    for ax, (task, evo) in zip(axes[0], rows):
        steps = list(evo["steps"])
        norm = Normalize(vmin=min(steps), vmax=max(steps) if max(steps) > min(steps) else min(steps) + 1)
        cmap = plt.get_cmap("viridis")
        share = np.asarray(evo["share"], dtype=float)
        for step, row in zip(steps, share):
            ax.plot(np.arange(share.shape[1]), row, "o-", ms=2, lw=1.2, color=cmap(norm(step)))
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="training step")
        ax.set_xlabel("layer")
        ax.set_ylabel(f"share on {evo['segment']} tokens (%)")
        ax.set_title(f"{TASK_TITLES[task]}: {VIEW_TITLES.get(evo['view'], evo['view'])}", fontsize=8)
        ax.set_ylim(0, max(5.0, float(np.nanmax(share, initial=0.0)) * 1.15))
    fig.tight_layout()
    save(fig, path)
