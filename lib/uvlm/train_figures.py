"""Training-curve figures drawn from the CSV logs that training writes."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from .plotting import save, style

TASK_COLOURS = {"u": "tab:blue", "g": "tab:orange"}


def read_logs(run_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    run_dir = Path(run_dir)
    return pd.read_csv(run_dir / "train_log.csv"), pd.read_csv(run_dir / "val_log.csv")


def plot_training_curves(runs: dict, path, smooth: int = 10) -> None:
    """One panel per run: train loss per task (smoothed) and validation loss per task.

    ``runs`` maps a label to a seed directory (data/runs/RUN/seedS).
    """
    style()
    n = len(runs)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for ax, (label, run_dir) in zip(axes[0], runs.items()):
        train, val = read_logs(run_dir)
        for task, group in train.groupby("task"):
            c = TASK_COLOURS.get(task)
            ax.plot(group["step"], group["loss"].rolling(smooth, min_periods=1).mean(), color=c, alpha=0.8,
                    lw=1, label=f"train {task.upper()}")
        for col in [c for c in val.columns if c.startswith("val_loss_")]:
            task = col.rsplit("_", 1)[-1]
            ax.plot(val["step"], val[col], "o--", color=TASK_COLOURS.get(task), ms=3, lw=1,
                    label=f"val {task.upper()}")
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats / output token)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
