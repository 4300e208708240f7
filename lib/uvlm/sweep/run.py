"""Where does synergy appear? The sweep of the unified baseline, end to end.

    python -m uvlm.sweep.run --priors     # stage text_prior: the text priors the sweep needs
    python -m uvlm.sweep.run              # stage sweep: train, score, tables, figures, verdict
    python -m uvlm.sweep.run --report     # tables and figures again from stored results

Notebooks 07 and 08 call the same functions. Every job keeps its own result file, so
an interrupted sweep resumes where it stopped (see uvlm.sweep.runner).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from uvlm.core.config import load_config
from uvlm.core.io import read_json, write_json, write_text
from .plan import STEP_MATCHED_FACTOR, job_dir, prior_dir, prior_jobs, sweep_dir, train_jobs
from .results import (PRIMARY, both_task_points, data_axis, gap_frame, lr_check_frame, markdown_table,
                            primary_rows, results_frame, size_axis, summarise_gaps)


SWEEP_README = "Synergy sweep jobs: jobs/<id>/result.json (+ train logs), logs/<id>.log."


def _ensure_dir(path: Path, readme: str) -> None:
    """The stage's output folder exists even when there is nothing to run (DVC tracks it)."""
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "README.txt").exists():
        write_text(path / "README.txt", readme + "\n")


def _device(cfg) -> str:
    from uvlm.core.devices import resolve_device
    return resolve_device(cfg.train.device, "train.device")


def _load(params: str, sets) -> object:
    from uvlm.core.overrides import parse_sets
    return load_config(params, parse_sets(sets))


def _run(params: str, jobs, cfg, progress: bool, sets=()) -> dict:
    from .job import finished
    from .runner import raise_failures, run_jobs
    pending = [j for j in jobs if not finished(params, j, base=cfg, sets=sets)]
    if progress:
        print(f"{len(jobs) - len(pending)} of {len(jobs)} jobs already finished; running {len(pending)} "
              f"({cfg.sweep.concurrency} at a time on {_device(cfg)})", flush=True)
    result = run_jobs(params, pending, cfg.sweep.concurrency, cfg.sweep.solo_params,
                      sweep_dir(cfg) / "logs", progress=progress, sets=sets)
    raise_failures(result)
    return result | {"n_jobs": len(jobs), "n_reused": len(jobs) - len(pending)}


def run_priors(params: str = "params.yaml", progress: bool = True, sets=()) -> dict:
    """Train every text prior the sweep asks for (nothing when the prior level is off).

    ``sets``: ``KEY=VALUE`` overrides of params.yaml (as ``train_cli --set``), passed on to every job.
    """
    cfg = _load(params, sets)
    _ensure_dir(cfg.paths.data / "priors", "Text priors of the synergy sweep: <size>/seed<S>/model.")
    jobs = prior_jobs(cfg) if cfg.sweep.enabled else []
    run = _run(params, jobs, cfg, progress, sets) if jobs else {"n_jobs": 0, "wall_s": 0.0}
    summaries = {j.id: read_json(job_dir(cfg, j) / "prior_summary.json") for j in jobs}
    return {"enabled": cfg.sweep.enabled, "source": cfg.text_prior.source, "n_priors": len(jobs),
            "wall_s": run["wall_s"],
            "priors": {k: {key: v[key] for key in ("params", "val_text_loss", "steps", "train_time_s", "lr")}
                       for k, v in summaries.items()}}


def run_sweep(params: str = "params.yaml", progress: bool = True, sets=()) -> dict:
    """Train and score every job of the sweep grid; return {job id: result}. ``sets`` as in run_priors."""
    cfg = _load(params, sets)
    _ensure_dir(sweep_dir(cfg), SWEEP_README)
    jobs = train_jobs(cfg)
    missing = [j for j in jobs if j.prior and cfg.text_prior.source == "world"
               and not (prior_dir(cfg, j.size, j.seed) / "model").exists()]
    if missing:
        from uvlm.core.errors import MissingInputError
        raise MissingInputError(prior_dir(cfg, missing[0].size, missing[0].seed) / "model", "text_prior")
    run = _run(params, jobs, cfg, progress, sets)
    results = {j.id: read_json(job_dir(cfg, j) / "result.json") for j in jobs}
    return {"run": run, "results": results}


def stored_results(cfg) -> tuple[dict, list[str]]:
    """The results of the grid's jobs that have finished, and the ids of those that have not.

    For a report of a sweep that was cut short: every table and the verdict then say which
    jobs are missing, and a gap is only formed where both of its runs exist.
    """
    results, missing = {}, []
    for j in train_jobs(cfg):
        path = job_dir(cfg, j) / "result.json"
        if path.exists():
            results[j.id] = read_json(path)
        else:
            missing.append(j.id)
    return results, missing


def report(cfg, results: dict, out_dir, run_info: dict | None = None, missing: list[str] = (),
           device_label: str | None = None) -> dict:
    """Tables (md + csv), figures and the verdict from job results; returns the metrics dict."""
    from uvlm.core.plotting import save as save_figure
    from .figures import gap_figure, lr_check_figure

    out_dir = Path(out_dir)
    frame = results_frame(results)
    summary = summarise_gaps(gap_frame(frame))
    sw = cfg.sweep
    n_max, point = sw.size_axis_n(), sw.data_size_point().name
    by_size, by_data = size_axis(summary, n_max), data_axis(summary, point)
    lr_check = lr_check_frame(frame)
    matched = step_matched_axis(frame, n_max)
    cols = ["size", "params", "data_n", "prior", "task", "metric", "subset", "gap", "std", "n_seeds", "ci_lo",
            "ci_hi", "verdict"]
    tables = [("synergy_vs_params", by_size), ("synergy_vs_data", by_data), ("lr_check", lr_check)]
    tables += [("step_matched", matched)] if len(matched) else []
    for name, df in tables:
        df = df[[c for c in cols if c in df.columns]] if name != "lr_check" else df
        write_text(out_dir / f"{name}.csv", df.to_csv(index=False))
        write_text(out_dir / f"{name}.md", markdown_table(df))
    write_text(out_dir / "runs.csv", frame.to_csv(index=False))
    device = [device_label] if device_label else sorted({r.get("device_name") or r.get("device", "?")
                                                         for r in results.values()})
    title = f"preset {cfg.preset}, {len(sw.seeds)} seeds, device {', '.join(device)}"
    save_figure(gap_figure(by_size, "params", f"Synergy gap vs parameters (data {n_max}/task; {title})"),
                out_dir / "synergy_vs_params.png")
    save_figure(gap_figure(by_data, "data_n", f"Synergy gap vs training examples per task (model {point}; {title})"),
                out_dir / "synergy_vs_data.png")
    if len(lr_check):
        save_figure(lr_check_figure(lr_check), out_dir / "lr_check.png")
    if len(matched):
        save_figure(gap_figure(matched, "params", f"Synergy gap against step-matched isolated runs (2x epochs, data "
                               f"{n_max}/task; {title})"), out_dir / "synergy_step_matched.png")
    both = {str(p): both_task_points(summary[summary.prior == p]).to_dict("records")
            for p in sorted(summary.prior.unique())}
    verdict = verdict_text(cfg, by_size, by_data, both, lr_check, title, list(missing), matched)
    write_text(out_dir / "verdict.md", verdict)
    metrics = {"enabled": True, "preset": cfg.preset, "device": device, "n_train_jobs": len(results),
               "missing_jobs": list(missing),
               "both_task_synergy": both,
               "primary": PRIMARY, "wall_s": (run_info or {}).get("wall_s"),
               "size_axis": by_size.to_dict("records"), "data_axis": by_data.to_dict("records"),
               "step_matched": matched.to_dict("records")}
    return metrics


def step_matched_axis(frame, n_max: int):
    """The size axis again, with the isolated runs replaced by their step-matched controls."""
    if "epochs_factor" not in frame or not (frame.epochs_factor == STEP_MATCHED_FACTOR).any():
        return frame.iloc[0:0]
    summary = summarise_gaps(gap_frame(frame, STEP_MATCHED_FACTOR))
    return size_axis(summary[~summary.prior], n_max)


def _size_points(g) -> str:
    """'SIZE (PARAMS): gap [lo, hi] verdict; ...' along the size axis."""
    return "; ".join(f"{r['size']} ({r.params / 1e6:.1f}M): {r.gap:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}] {r.verdict}"
                     for _, r in g.sort_values("params").iterrows())


def verdict_text(cfg, by_size, by_data, both, lr_check, title, missing: list[str] = (), matched=None) -> str:
    """The verdict, written from the numbers (nothing here is typed in by hand)."""
    lines = [f"# Synergy sweep: verdict ({title})", "",
             "Gap = unified minus isolated, signed so that + means unified training helps; mean over seeds "
             "with a 95% t-interval. Primary metrics: U = GQA-analogue accuracy (%), G = held-out image-token "
             "NLL (nats/token).", ""]
    if missing:
        lines += [f"**Incomplete sweep: {len(missing)} of {len(train_jobs(cfg))} "
                  "jobs did not run**, so the points below that need them are absent or rest on fewer seeds "
                  f"(`n_seeds` in the tables). Not run: {', '.join(sorted(missing))}.", ""]
    for prior in sorted(by_size.prior.unique()):
        label = "with the text prior" if prior else "from scratch"
        lines += [f"## Size axis, {label}", ""]
        prim = primary_rows(by_size[by_size.prior == prior])
        for (task, subset), g in prim.groupby(["task", "subset"]):
            lines.append(f"- **{task.upper()} {PRIMARY[task]}, {subset}**: {_size_points(g)}")
        pts = both.get(str(prior), [])
        lines += ["", (f"Positive synergy on both tasks (in-distribution, beyond the interval) at: "
                       + ", ".join(f"{p['size']} / {p['data_n']} examples" for p in pts)) if pts else
                  "No point shows positive synergy on both tasks beyond the interval.", ""]
    lines += ["## Data axis", ""]
    prim = primary_rows(by_data)
    for (task, subset), g in prim.groupby(["task", "subset"]):
        pts = "; ".join(f"{r.data_n}: {r.gap:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}] {r.verdict}"
                        for _, r in g.sort_values("data_n").iterrows())
        lines.append(f"- **{task.upper()} {PRIMARY[task]}, {subset}**: {pts}")
    if len(lr_check):
        lines += ["", "## Learning-rate rule", ""]
        for (size, task), g in lr_check.groupby(["size", "run_task"], sort=False):
            best = g.loc[g.best_val_loss.idxmin()]
            rule = g[g.lr_factor == 1.0].best_val_loss
            rule_txt = f"{float(rule.iloc[0]):.4f}" if len(rule) else "?"
            lines.append(f"- {size} {task}-only: rule's lr {rule_txt}; best lr x{best.lr_factor:g} "
                         f"({best.best_val_loss:.4f})")
    if matched is not None and len(matched):
        lines += ["", "## Against step-matched isolated runs", "",
                  "The isolated runs trained for twice the epochs, as many optimizer steps as the unified run; "
                  "every metric, in-distribution:", ""]
        for (task, metric), g in matched[matched.subset == "in_dist"].groupby(["task", "metric"]):
            lines.append(f"- **{task.upper()} {metric}**: {_size_points(g)}")
    return "\n".join(lines) + "\n"


def disabled_note(cfg, out_dir) -> dict:
    _ensure_dir(sweep_dir(cfg), SWEEP_README)
    text = (f"# Synergy sweep\n\nNot run at preset `{cfg.preset}` (`sweep.enabled: false`). The sweep is a GPU "
            "experiment: run it with `dvc exp run -S preset=gpu` (the whole grid takes about 25 min on one "
            "H200; an interrupted run resumes), or set "
            "`sweep.enabled: true` with a smaller `sweep.sizes`. The committed gpu results are in "
            "records/gpu/sweep/.\n")
    write_text(Path(out_dir) / "verdict.md", text)
    return {"enabled": False, "preset": cfg.preset}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m uvlm.sweep.run", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--priors", action="store_true", help="train the text priors only (stage text_prior)")
    ap.add_argument("--report", action="store_true", help="only redraw tables and figures from stored results")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--device-label", help="with --report: the device to name, for results stored before "
                    "jobs recorded their device's name")
    args = ap.parse_args(argv)
    from uvlm.paper.headline import write_headline
    cfg = load_config(args.params)
    out = cfg.paths.figures / "sweep"
    if args.priors:
        write_json(cfg.paths.figures / "metrics" / "text_prior.json", run_priors(args.params, not args.no_progress))
        write_headline(cfg.paths.figures, "text_prior")
        return 0
    if not cfg.sweep.enabled:
        write_json(cfg.paths.figures / "metrics" / "sweep.json", disabled_note(cfg, out))
        write_headline(cfg.paths.figures, "sweep")
        return 0
    if args.report:
        results, missing = stored_results(cfg)
        info = None
    else:
        ran = run_sweep(args.params, not args.no_progress)
        results, info, missing = ran["results"], ran["run"], []
    write_json(cfg.paths.figures / "metrics" / "sweep.json", report(cfg, results, out, info, missing, args.device_label))
    write_headline(cfg.paths.figures, "sweep")
    print((out / "verdict.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
