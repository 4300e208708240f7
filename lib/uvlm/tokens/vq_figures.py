"""Figures and tables for the tokenizer stage. They only draw; nothing is trained here."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from uvlm.core.io import atomic_path


def plot_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, title: str = ""):
    """A 2-row figure: originals on top, their reconstructions below. Returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 2.9), squeeze=False)
    for row, (label, imgs) in enumerate((("original", originals), ("reconstruction", reconstructions))):
        for i in range(n):
            ax = axes[row, i]
            ax.imshow(imgs[i], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_reconstruction_figure(model, images: np.ndarray, path, n: int = 8, title: str = "") -> Path:
    """Encode+decode the first ``n`` images with ``model`` and save originals vs reconstructions."""
    import matplotlib.pyplot as plt

    images = images[:n]
    fig = plot_reconstructions(images, model.reconstruct(images), title=title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def metrics_markdown(metrics: dict) -> str:
    """The scalar entries of a metrics dict as a two-column markdown table."""
    rows = ["| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (list, dict)):
            continue
        rows.append(f"| {key} | {value} |")
    return "\n".join(rows)
