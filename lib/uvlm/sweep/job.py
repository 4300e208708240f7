"""One sweep job in its own process: ``python -m uvlm.sweep.job --params P --job JSON``.

Train (resuming from the job's last checkpoint if one exists), score, write
``result.json`` atomically, then drop the checkpoints unless ``sweep.keep_checkpoints``.
A job is finished exactly when its result file exists, so a killed sweep re-runs only
the jobs that had not finished, and those resume mid-run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time

from uvlm.core.config import _merge, load_config
from uvlm.core.io import read_json, write_json
from .plan import RUN_NAME, Job, job_dir, job_overrides, job_settings

RESULT = "result.json"


def device_name() -> str:
    """The GPU's name, or the CPU's: every number of the sweep names the device it came from."""
    import torch

    from uvlm.core.devices import device_name as named
    return named("cuda" if torch.cuda.is_available() else "cpu")


def job_config(params: str, job: Job, threads: int | None = None, base=None, sets=()):
    """The config ``job`` trains under; ``base`` is params.yaml (with ``sets``) already loaded, if at
    hand. ``sets``: ``KEY=VALUE`` overrides of params.yaml, under the job's own settings."""
    from uvlm.core.overrides import parse_sets
    user = parse_sets(sets)
    over = job_overrides(base or load_config(params, user), job)
    if threads is not None:
        over["train"]["threads"] = threads
        over["eval"] = {**over["eval"], "threads": threads}
    return load_config(params, _merge(user, over))


def finished(params: str, job: Job, base=None, sets=()) -> bool:
    """A stored result made under exactly this job's settings (a stale one does not count)."""
    cfg = job_config(params, job, base=base, sets=sets)
    path = job_dir(cfg, job) / RESULT
    if not path.exists():
        return False
    try:
        return read_json(path).get("settings") == job_settings(cfg, job)
    except (json.JSONDecodeError, OSError):
        return False


def run_job(params: str, job: Job, threads: int | None = None, progress: bool = False, sets=()) -> dict:
    cfg = job_config(params, job, threads, sets=sets)
    out = job_dir(cfg, job)
    settings = job_settings(cfg, job)
    if (out / RESULT).exists() and read_json(out / RESULT).get("settings") != settings:
        shutil.rmtree(out)  # made under other settings: start this job over
    t0 = time.perf_counter()
    if job.kind == "prior":
        from uvlm.train.text_prior import train_text_prior
        summary = train_text_prior(cfg, job.seed, job.lr, out, progress=progress)
        result = {"settings": settings, "prior": summary}
    else:
        from .metrics import evaluate_job
        from uvlm.train.loop import train_run
        train_dir = out / "train"
        summary = train_run(cfg, RUN_NAME, job.seed, out_dir=train_dir, progress=progress)
        t_train = time.perf_counter() - t0
        from uvlm.model.decoder import UVLM
        params_n = UVLM.from_pretrained(train_dir / "final").num_params()
        t1 = time.perf_counter()
        metrics = evaluate_job(cfg, train_dir, job.seed)
        result = {"settings": settings, "params": params_n, "steps": summary["steps"],
                  "best": summary["best"], "device": summary["device"], "precision": summary["precision"],
                  "train_time_s": t_train, "eval_time_s": time.perf_counter() - t1, "metrics": metrics}
        if not cfg.sweep.keep_checkpoints:
            for sub in train_dir.iterdir():
                if sub.is_dir():
                    shutil.rmtree(sub)
    result["wall_time_s"] = time.perf_counter() - t0
    result["device_name"] = device_name()
    write_json(out / RESULT, result)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m uvlm.sweep.job", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--job", required=True, help="the job as JSON (uvlm.sweep.plan.Job)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override one params key, as train_cli --set (repeatable)")
    args = ap.parse_args(argv)
    run_job(args.params, Job.from_dict(json.loads(args.job)), args.threads, sets=args.sets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
