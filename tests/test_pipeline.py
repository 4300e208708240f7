"""The whole DVC/papermill pipeline at the tiny preset, in a temp copy of the project.

This is the smoke test of every notebook (01-09) run the way a user runs them, and of the
pipeline's wiring: a second `dvc repro` does nothing, and a tokenizer parameter re-runs the
tokenizer stage but not the data stage.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# One `dvc repro` of the whole tiny project, mostly one process at a time: `make test` runs this
# module beside the rest of the suite (pytest -m slow / -m "not slow"), which mostly uses one core too.
pytestmark = pytest.mark.slow


def _tree_digest(folder: Path) -> dict[str, str]:
    """{path: sha256} of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _env() -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                DVC_NO_ANALYTICS="1")


def _dvc(cwd: Path, *args: str, check: bool = True):
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True)
    if not check:
        return proc
    if proc.returncode:
        pytest.fail(f"dvc {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "dvc.yaml", root)
    shutil.copytree(ROOT / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns("executed", ".ipynb_checkpoints"))
    (root / "notebooks" / "executed").mkdir()
    (root / "lib").symlink_to(ROOT / "lib")  # deps only; the code runs from the installed package
    # The committed cpu-preset records, as a clone has them beside the pipeline (a copy: were a
    # stage to write there, the repository's own records must not be what it overwrites).
    shutil.copytree(ROOT / "records" / "cpu", root / "records" / "cpu")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["preset"] = "tiny"
    # The smallest sweep that still runs both notebooks 08 and 09 through every branch:
    # two sizes, a text prior at one of them, one data size, the step-matched control, no
    # learning-rate check.
    params["sweep"] = {**params["sweep"], "sizes": ["16x1", "32x2"], "seeds": [0], "data_sizes": [64],
                       "text_prior": [False, True], "prior_sizes": ["16x1"], "lr_check_factors": [],
                       "step_matched": True}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _dvc(root, "init", "--no-scm", "-q")
    shutil.copy(ROOT / ".dvcignore", root)  # bytecode written beside lib/ is no input
    _dvc(root, "config", "core.analytics", "false")
    _dvc(root, "repro")
    return root


def test_an_experiment_leaves_the_committed_records_unchanged(tiny_project):
    """`dvc repro` at the tiny preset (the fixture) writes figures/ only: records/ is what was committed."""
    assert _tree_digest(tiny_project / "records" / "cpu") == _tree_digest(ROOT / "records" / "cpu")
    stages = yaml.safe_load((tiny_project / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                path = entry if isinstance(entry, str) else next(iter(entry))
                assert not path.startswith("records"), (name, path)


def test_repro_writes_every_result(tiny_project):
    figs = tiny_project / "figures"
    runs = yaml.safe_load((tiny_project / "params.yaml").read_text())["runs"]
    for run in runs:
        metrics = json.loads((figs / "metrics" / f"{run}.json").read_text())
        assert metrics, run
        assert json.loads((figs / "headline" / f"{run}.json").read_text())["all"], run  # dvc metrics show
        assert (figs / "curves" / f"{run}.png").stat().st_size > 0
    for name in ("world_samples.png", "tokenizer_recon.png", "fig2_attention_maps.png",
                 "fig3_segment_shares_all.png", "fig3_segment_shares_output.png", "attention_evolution.png",
                 "fig_layer_plans.png", "fig5_hmgen_inference.png", "claims.md"):
        assert (figs / name).stat().st_size > 0, name
    for table in ("table1", "table2", "table3"):
        for ext in ("md", "csv", "tex"):
            assert (figs / "tables" / f"{table}.{ext}").stat().st_size > 0
    attention = json.loads((figs / "metrics" / "attention.json").read_text())
    assert "all" in attention and "output" in attention
    assert json.loads((figs / "metrics" / "tokenizer.json").read_text())
    assert json.loads((figs / "metrics" / "world.json").read_text())["split_sizes"]
    assert json.loads((figs / "metrics" / "probe.json").read_text())["probe"]["shape"] > 0
    sweep = json.loads((figs / "metrics" / "sweep.json").read_text())
    assert sweep["enabled"] and sweep["n_train_jobs"] == 9 + 4 and not sweep["missing_jobs"]
    assert {r["size"] for r in sweep["step_matched"]} == {"16x1", "32x2"}
    assert json.loads((figs / "metrics" / "text_prior.json").read_text())["n_priors"] == 1
    for name in ("synergy_vs_params.png", "synergy_vs_data.png", "synergy_vs_params.md", "verdict.md",
                 "synergy_step_matched.png", "step_matched.md"):
        assert (figs / "sweep" / name).stat().st_size > 0, name
    assert len(list((tiny_project / "notebooks" / "executed").glob("*.ipynb"))) == 7 + 2 * len(runs)


def test_second_repro_does_nothing(tiny_project):
    assert "up to date" in _dvc(tiny_project, "status")


def _stale_after(project, section: str, key: str, value) -> set[str]:
    """The stages `dvc status` calls changed once params.yaml's section.key is value."""
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params[section][key] = value
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = _dvc(project, "status")
    finally:
        params_path.write_text(original)
    return {line.strip().rstrip(":") for line in status.splitlines() if line and not line.startswith("\t")
            and line.strip().endswith(":")}


def test_tokenizer_param_reruns_tokenizer_not_data(tiny_project):
    stale = _stale_after(tiny_project, "tokenizer", "codebook_size", 16)
    assert "tokenizer" in stale
    assert "data" not in stale and "probe" not in stale


def test_probe_param_reruns_the_probe_not_the_world(tiny_project):
    """The probe is its own stage beside data: its settings leave the world's images alone."""
    stale = _stale_after(tiny_project, "probe", "steps", 41)
    assert "probe" in stale
    assert "data" not in stale


def _edit_params(project: Path, edit) -> str:
    """Apply ``edit`` to the project's params.yaml (a dict) -> the original text, to put back."""
    path = project / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return original


@pytest.mark.parametrize("bad, named", [
    (lambda p: p.update(trian={"lr": 0.1}), "trian"),               # a section no stage lists
    (lambda p: p.update(preset="huge"), "preset"),                   # every stage lists it
], ids=["typo-section", "preset"])
def test_a_bad_params_file_fails_before_any_output_is_deleted(tiny_project, bad, named):
    kept = [tiny_project / "data" / "world" / "world.json", tiny_project / "figures" / "world_samples.png",
            tiny_project / "data" / "runs" / "u_base" / "seed0" / "final" / "model.safetensors"]
    before = {p: p.stat().st_mtime_ns for p in kept}
    original = _edit_params(tiny_project, bad)
    try:
        proc = _dvc(tiny_project, "repro", check=False)
    finally:
        (tiny_project / "params.yaml").write_text(original)
    assert proc.returncode != 0
    assert f"'{named}'" in proc.stdout + proc.stderr and "No stage has run" in proc.stdout + proc.stderr
    assert {p: p.stat().st_mtime_ns for p in kept} == before  # nothing deleted, nothing re-made
    _dvc(tiny_project, "repro")  # the good file again: only the check re-runs, its output unchanged
    assert {p: p.stat().st_mtime_ns for p in kept} == before
    assert "up to date" in _dvc(tiny_project, "status")


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (papermill's kernel runs in a session of its own)."""
    import psutil
    procs = psutil.Process(pid).children(recursive=True) + [psutil.Process(pid)]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def test_a_train_stage_killed_mid_training_resumes_under_dvc_repro(tiny_project):
    """`persist` keeps the run folder when DVC re-runs the stage, so a killed stage resumes from its
    last checkpoint instead of starting again from step 0."""
    from uvlm.train.checkpoint import read_training_state

    run = tiny_project / "data" / "runs" / "u_kill" / "seed0"
    executed = tiny_project / "notebooks" / "executed" / "04_train_u_kill.ipynb"
    # 12 epochs of the tiny U set: 96 steps, killed once the checkpoint of step 8 is on disk.
    original = _edit_params(tiny_project, lambda p: p["runs"].update(
        u_kill={"task": "u", "accel": "base", "epochs_factor": 12.0}))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train@u_kill"], cwd=tiny_project,
                                env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while read_training_state(run / "last") is None or read_training_state(run / "last")["step"] < 8:
            assert proc.poll() is None, "the stage ended before its second checkpoint"
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        _kill_tree(proc.pid)
        cut = read_training_state(run / "last")["step"]
        assert not (run / "train_summary.json").exists(), "killed too late: the run had finished"
        _dvc(tiny_project, "repro", "train@u_kill")
        assert f"resuming at step {cut}/96" in executed.read_text()
        steps = [int(r["step"]) for r in csv.DictReader((run / "train_log.csv").open())]
        assert steps == list(range(1, 97))
        assert json.loads((run / "train_summary.json").read_text())["finished"]
    finally:
        (tiny_project / "params.yaml").write_text(original)
        shutil.rmtree(run.parent, ignore_errors=True)
        executed.unlink(missing_ok=True)


def test_a_himix_knob_makes_only_the_himix_runs_stale(tiny_project):
    """train@RUN depends on its own resolved settings (data/settings/RUN.json), not on whole params
    sections: once the params stage has rewritten them, only the runs whose plan uses HiMix are
    stale; the base and HMGen-only runs stay up to date."""
    original = _edit_params(tiny_project, lambda p: p["himix"].update(start_layer=1))
    try:
        _dvc(tiny_project, "repro", "--single-item", "params")
        status = _dvc(tiny_project, "status")
    finally:
        (tiny_project / "params.yaml").write_text(original)
        _dvc(tiny_project, "repro", "--single-item", "params")
    stale = {line.strip().rstrip(":") for line in status.splitlines() if line and not line.startswith("\t")
             and line.strip().endswith(":")}
    himix_runs = {f"train@{r}" for r in ("u_himix", "ug_himix_hmgen_shareall", "ug_himix_hmgen_sharepartial")}
    assert himix_runs <= stale
    assert not stale & {f"train@{r}" for r in ("u_base", "g_base", "ug_base", "g_hmgen_k3", "g_hmgen_k5")}
    assert "up to date" in _dvc(tiny_project, "status")
