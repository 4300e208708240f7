"""Headline scores: the small files ``dvc metrics show`` reads, one per stage and per run.

    figures/metrics/<name>.json    every number a stage measured (plain outputs; the results stage
                                   and the README read these)
    figures/headline/<name>.json   a few dozen headline numbers taken from it (dvc.yaml's metrics:)

Each stage's notebook writes its detailed file, then :func:`write_headline`. The headline of a run
is each benchmark score per subset (all / in-distribution / transfer items), mean over seeds; of the
results stage, the claims' verdicts. ``python -m uvlm.paper.headline`` rewrites every headline file from
the detailed files already in figures/metrics (after a change to what a headline holds).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from uvlm.core.io import read_json, write_json

DETAIL_DIR, HEADLINE_DIR = "metrics", "headline"


def _round(value):
    """Four significant digits (one decimal from 1000 up): the scores' own noise is larger, and
    `dvc metrics show`'s table stays narrow. The detailed files keep every digit."""
    if isinstance(value, float):
        return round(value, 1) if abs(value) >= 1000 else float(f"{value:.4g}")
    return value


def run_headline(detail: dict) -> dict:
    """{subset: {metric: mean over seeds}} of an eval result (the columns of the paper's tables)."""
    table = detail["aggregate"]["table"]
    out = {subset: {metric: _round(cell["mean"]) for metric, cell in cols.items()
                    if cell and cell.get("mean") is not None}
           for subset, cols in table.items()}
    return {"n_seeds": len(detail["seeds"]), **out}


def world_headline(detail: dict) -> dict:
    return {"split_sizes": detail["split_sizes"]}


def probe_headline(detail: dict) -> dict:
    p = detail["probe"]
    return {k: _round(p[k]) for k in ("occupancy", "shape", "colour", "size", "scene_exact") if k in p}


def tokenizer_headline(detail: dict) -> dict:
    return {k: _round(detail[k]) for k in ("mse", "psnr", "codebook_usage", "perplexity", "probe_agreement")
            if k in detail}


def attention_headline(detail: dict) -> dict:
    """Per view: the late/first image-share ratio of U and G, and whether the asymmetry holds."""
    out = {}
    for view in ("all", "output"):
        m = detail.get(view) or {}
        row = {f"{t}_ratio": _round(m[f"{t}_ratio"]["ratio"]) for t in ("u", "g") if f"{t}_ratio" in m}
        if "verdict" in m:
            row["asymmetry"] = bool(m["verdict"].get("asymmetry"))
        out[view] = row
    return out


def results_headline(detail: dict) -> dict:
    """The verdict of every claim (C1-C6)."""
    return {c["id"]: c["verdict"] for c in detail.get("claims", [])}


def fig5_headline(detail: dict) -> dict:
    """Per HMGen plan at inference: speed-up over the full plan and FID-analogue over all items."""
    return {name: {"speedup": _round(p.get("speedup")), "FID": _round(p["generation"]["all"]["fd"])}
            for name, p in detail.get("plans", {}).items()}


def sweep_headline(detail: dict) -> dict:
    """The synergy gap (unified minus isolated; + means unified helps) of each task's primary metric
    along the size and data axes."""
    out = {"enabled": bool(detail.get("enabled")), "n_train_jobs": detail.get("n_train_jobs", 0),
           "missing_jobs": len(detail.get("missing_jobs", []))}
    primary = detail.get("primary", {})
    for axis, point in (("size_axis", "size"), ("data_axis", "data_n")):
        gaps = {}
        for r in detail.get(axis, []):
            if r.get("metric") == primary.get(r.get("task")) and r.get("subset") == "in_dist":
                key = f"{r['task']} {r[point]}" + (" prior" if r.get("prior") else "")
                gaps[key] = _round(r["gap"])
        if gaps:
            out[axis] = gaps
    return out


def text_prior_headline(detail: dict) -> dict:
    return {"n_priors": detail.get("n_priors", 0),
            **{f"{k} val_text_loss": _round(v["val_text_loss"]) for k, v in detail.get("priors", {}).items()}}


STAGES = {"world": world_headline, "probe": probe_headline, "tokenizer": tokenizer_headline,
          "attention": attention_headline, "results": results_headline, "fig5": fig5_headline,
          "sweep": sweep_headline, "text_prior": text_prior_headline}


def headline(name: str, detail: dict) -> dict:
    """The headline of ``figures/metrics/<name>.json``: a stage's by name, any other a run's."""
    return STAGES.get(name, run_headline)(detail)


def write_headline(figures, name: str) -> Path:
    """``<figures>/headline/<name>.json`` from ``<figures>/metrics/<name>.json``; returns its path."""
    figures = Path(figures)
    path = figures / HEADLINE_DIR / f"{name}.json"
    write_json(path, headline(name, read_json(figures / DETAIL_DIR / f"{name}.json")))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m uvlm.paper.headline", description=__doc__.split("\n")[0])
    ap.add_argument("--figures", default="figures", help="the figures folder (default: figures)")
    a = ap.parse_args(argv)
    for detail in sorted((Path(a.figures) / DETAIL_DIR).glob("*.json")):
        print(write_headline(a.figures, detail.stem))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
