"""Training-curve figures drawn from the CSV logs that training writes."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from uvlm.core.plotting import save, style

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


def plot_val_curves(runs_dir, path, runs: list[str] | None = None, title: str = "") -> None:
    """Validation loss against step, one panel per task, every run and seed of a runs folder.

    ``runs_dir`` holds RUN/seedS/val_log.csv (data/runs, or a record's runs/). Each run has one
    colour; each seed is a line, ending where the run stopped; a dot marks each seed's best
    evaluation (the checkpoint that is scored). A line that ends without a summary beside it is a
    run that was cut, not one that stopped: it ends in a cross.
    """
    style()
    runs_dir = Path(runs_dir)
    names = runs or sorted(p.name for p in runs_dir.iterdir() if p.is_dir())
    colours = dict(zip(names, plt.get_cmap("Dark2").colors))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, task in zip(axes, ("u", "g")):
        for run in names:
            for i, seed_dir in enumerate(sorted((runs_dir / run).glob("seed*"))):
                val = pd.read_csv(seed_dir / "val_log.csv")
                col = f"val_loss_{task}"
                if col not in val or val[col].isna().all():
                    continue
                c = colours[run]
                # Steps of this task: a unified run (both val columns) alternates U and G batches,
                # half each when the two training sets are equal, as in the grid.
                unified = {"val_loss_u", "val_loss_g"} <= set(val.columns)
                x = val["step"] * (0.5 if unified else 1.0)
                ax.plot(x, val[col], color=c, lw=1, alpha=0.8, ls="--" if unified else "-",
                        label=run if i == 0 else None)
                best = val[col].idxmin()
                ax.plot(x[best], val[col][best], "o", color=c, ms=4)
                if not (seed_dir / "train_summary.json").exists():
                    ax.plot(x.iloc[-1], val[col].iloc[-1], "x", color=c, ms=6)
        ax.set_title({"u": "understanding: validation answer loss", "g": "generation: validation image-token loss"}[task])
        ax.set_xlabel("optimizer steps on this task (dashed: unified, half its steps)")
        ax.set_ylabel("nats per output token")
        if task == "u":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save(fig, path)
