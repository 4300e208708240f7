"""Figures and tables that show the scene world (notebook 01). Drawing only, no computing."""
from __future__ import annotations

import textwrap
from pathlib import Path

from uvlm.core.io import atomic_path
from .build import load_split


def plot_world_samples(world_dir, path, n: int = 6):
    """Grid of samples: generation (prompt -> image) above, understanding (image -> text) below.

    Saves a PNG at ``path`` and returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    g_records, g_images = load_split(world_dir, "g_train")
    u_records, u_images = load_split(world_dir, "u_train")
    # Show one of each understanding family first, then whatever follows.
    by_family, rest = {}, []
    for i, r in enumerate(u_records[:400]):
        (rest if r["family"] in by_family else by_family.setdefault(r["family"], [])).append(i)
    u_pick = ([v[0] for v in by_family.values()] + rest)[:n]
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 8.0), layout="constrained")
    for j in range(n):
        _panel(axes[0, j], g_images[j], f"G prompt: {g_records[j]['prompt']}")
        r = u_records[u_pick[j]]
        _panel(axes[1, j], u_images[u_pick[j]],
               f"U [{r['family']}] {r['instruction']}\n-> {r['answer']}")
    fig.suptitle("Scene world samples: generation (top) and understanding (bottom)")
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    return fig


def _panel(ax, image, text: str) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("\n".join(textwrap.wrap(text, 32)[:8]), fontsize=7)


def summary_tables(summary: dict) -> dict:
    """pandas tables from a world.json summary: split counts and the transfer combos."""
    import pandas as pd

    rows = []
    for name, s in summary["splits"].items():
        rows.append({"split": name, "records": s["n"], "transfer": s["n_transfer"],
                     "transfer %": round(100 * s["n_transfer"] / max(s["n"], 1), 1)})
    combos = summary["transfer_combos"]
    transfer_table = pd.DataFrame(
        [{"held out of": task, "colour": c, "shape": s}
         for task, key in (("understanding training", "unseen_by_u"),
                           ("generation training", "unseen_by_g"))
         for c, s in combos[key]])
    return {"splits": pd.DataFrame(rows), "transfer_combos": transfer_table}
