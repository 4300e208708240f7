"""Apply the results stage again to a record brought back from another machine.

    python -m uvlm.paper.rescore records/gpu/grid

A record folder holds what ``scripts/gpu/pipeline.sh`` brings back and nothing heavier:
``params.yaml`` (the params that ran), ``metrics/`` (each run's ``<run>.json``, ``attention.json``
and ``results.json``) and ``runs/<run>/seed<S>/train_summary.json``. The checkpoints and data stay on
the machine that trained them; the run information saved in ``results.json`` (plans, counted FLOPs)
stands in for them. This rewrites the record's ``tables/``, ``claims.md``, ``metrics/results.json``
(keeping its Fig. 5 entry) and the synergy and efficiency figures with the current code, so a record
is read by the same rule as a fresh run. Scores are never recomputed: they come from the record.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uvlm.core.errors import MissingInputError, UVLMError

KEPT = ("fig5",)  # entries of results.json that need the checkpoints, carried over as they are


def rescore(record) -> list[dict]:
    """Rewrite the record's tables, claims, results.json and figures; return the claims."""
    from . import claims as C
    from . import results as R
    from . import figures as F
    from . import tables as T
    from uvlm.core.config import load_config
    from uvlm.core.io import read_json

    record = Path(record).resolve()
    if not (record / "params.yaml").exists():
        raise UVLMError(f"'{record}' is not a record folder: it has no params.yaml "
                        "(bash scripts/gpu/record.sh lays one out)")
    if not (record / "metrics" / "results.json").exists():
        raise MissingInputError(record / "metrics" / "results.json", "results")
    cfg = load_config(record / "params.yaml", overrides={"paths": {"data": str(record), "figures": str(record)}})
    saved = read_json(record / "metrics" / "results.json", stage="results")
    if not isinstance(saved.get("runs"), dict) or set(saved["runs"]) != set(cfg.runs):
        raise UVLMError(f"{record / 'metrics/results.json'} does not describe the runs of {record / 'params.yaml'}"
                        f" ({sorted(saved.get('runs') or [])} vs {sorted(cfg.runs)})")
    res = R.collect(cfg, info=saved["runs"])
    for table in T.build_tables(res.stats, res.info).values():
        T.write_table(table, record / "tables")
    F.plot_synergy(R.synergy_frame(res), record / "fig_synergy.png")
    F.plot_efficiency(R.efficiency_frame(res), record / "fig_efficiency.png")
    claims = C.decide_claims(res, R.read_attention(cfg))
    C.write_claims(cfg, claims)
    R.write_results_json(cfg, res, claims, {k: saved[k] for k in KEPT if k in saved})
    return claims


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m uvlm.paper.rescore", description=__doc__.split("\n")[0])
    ap.add_argument("record", help="a record folder (params.yaml, metrics/, runs/), e.g. records/gpu/grid")
    a = ap.parse_args(argv)
    try:
        claims = rescore(a.record)
    except UVLMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for c in claims:
        print(f"{c['id']} {c['name']}: {c['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
