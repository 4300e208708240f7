"""Draw the validation curves of every run and seed of a runs folder (a record's runs/ or data/runs).

    python scripts/val_curves.py records/gpu/converged_partial/runs records/gpu/converged_partial/val_curves.png
"""
import argparse

from uvlm.train.figures import plot_val_curves

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("runs_dir")
ap.add_argument("out")
ap.add_argument("--title", default="")
a = ap.parse_args()
plot_val_curves(a.runs_dir, a.out, title=a.title)
