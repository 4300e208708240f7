"""scripts/gpu/pipeline.sh edits a throw-away copy's params.yaml before `dvc repro`: the preset, the
runs KEEP_RUNS keeps and the step-matched controls. Run here with a stand-in `dvc` that does nothing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, **env):
    work = tmp_path / "copy"
    work.mkdir()
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    (work / "dvc.lock").write_text("schema: '2.0'\n")  # what the script packs after `dvc repro`
    (work / "figures").mkdir()
    (work / "notebooks" / "executed").mkdir(parents=True)
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "dvc").write_text("#!/bin/sh\nexit 0\n")
    (stubs / "dvc").chmod(0o755)
    full_env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
                "LIMIT_S": "20", "GIT_CEILING_DIRECTORIES": str(tmp_path), **env}
    proc = subprocess.run(["bash", str(ROOT / "scripts/gpu/pipeline.sh")], cwd=work, env=full_env,
                          capture_output=True, text=True, timeout=60)
    return proc, yaml.safe_load((work / "params.yaml").read_text())


def test_keep_runs_and_step_matched_rewrite_the_grid(tmp_path):
    proc, params = _run(tmp_path, KEEP_RUNS="u_base g_base ug_base", STEP_MATCHED="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert params["preset"] == "gpu"
    assert list(params["runs"]) == ["u_base", "g_base", "ug_base", "u_base_x2", "g_base_x2"]
    assert params["runs"]["g_base_x2"] == {"task": "g", "accel": "base", "epochs_factor": 2.0}
    assert params["runs"]["ug_base"] == {"task": "ug", "accel": "base"}
    assert "runs kept: 3" in proc.stdout
    with tarfile.open(tmp_path / "out" / "pipeline.tgz") as tgz:  # what record.sh lays out
        packed = yaml.safe_load(tgz.extractfile("params.yaml").read())
    assert packed == params


def test_keep_runs_names_an_unknown_run_and_the_grid(tmp_path):
    proc, params = _run(tmp_path, KEEP_RUNS="u_base ubase")
    assert proc.returncode == 2
    assert "'ubase' is not a run of params.yaml" in proc.stdout and "ug_himix_hmgen_sharepartial" in proc.stdout
    assert len(params["runs"]) == 8  # nothing was dropped


def test_record_sh_keeps_only_the_record_s_own_runs(tmp_path):
    """The archive holds the committed files of runs the grid did not train (KEEP_RUNS); the record
    folder leaves them out and is re-scored."""
    record = ROOT / "records" / "gpu" / "step_matched"
    pack = tmp_path / "pack"
    (pack / "figures").mkdir(parents=True)
    shutil.copy(record / "params.yaml", pack / "params.yaml")
    for name in ("claims.md", "fig_synergy.png", "fig_efficiency.png"):
        shutil.copy(record / name, pack / "figures" / name)
    for folder in ("tables", "metrics", "curves"):
        shutil.copytree(record / folder, pack / "figures" / folder)
    shutil.copytree(record / "runs", pack / "data" / "runs")
    (pack / "figures" / "metrics" / "u_himix.json").write_text("{}")  # a committed cpu-preset file
    (pack / "figures" / "curves" / "u_himix.png").write_bytes(b"")
    with tarfile.open(tmp_path / "pipeline.tgz", "w:gz") as tgz:
        for item in ("params.yaml", "figures", "data"):
            tgz.add(pack / item, arcname=item)
    dest = tmp_path / "record"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'lib'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # the script's `python`
    proc = subprocess.run(["bash", str(ROOT / "scripts/gpu/record.sh"), str(tmp_path / "pipeline.tgz"), str(dest)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (dest / "metrics" / "u_himix.json").exists() and not (dest / "curves" / "u_himix.png").exists()
    assert (dest / "metrics" / "ug_base.json").exists() and (dest / "metrics" / "results.json").exists()
    assert (dest / "claims.md").read_text() == (record / "claims.md").read_text()
    assert (dest / "runs" / "u_base_x2" / "seed0" / "train_summary.json").exists()


def test_compile_sets_train_compile_and_bad_jobs_are_named(tmp_path):
    proc, params = _run(tmp_path, COMPILE="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert params["train"]["compile"] is True
    assert "dvc repro: exit 0" in proc.stdout  # JOBS=1: plain `dvc repro`
    other = tmp_path / "again"
    other.mkdir()
    proc, params = _run(other, JOBS="three")
    assert proc.returncode == 2 and "JOBS='three': expected an integer >= 1" in proc.stdout


def test_cuda_graphs_sets_train_cuda_graphs_only_with_compile(tmp_path):
    proc, params = _run(tmp_path, COMPILE="1", CUDA_GRAPHS="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert params["train"]["compile"] is True and params["train"]["cuda_graphs"] is True
    other = tmp_path / "again"
    other.mkdir()
    proc, _ = _run(other, CUDA_GRAPHS="1")
    assert proc.returncode == 2 and "CUDA_GRAPHS=1 needs COMPILE=1" in proc.stdout


def test_train_jobs_caps_the_train_stages_and_the_history_is_seeded(tmp_path):
    stubs = tmp_path / "pybin"  # _run's stand-in dvc goes in tmp_path / "bin"
    stubs.mkdir()
    (stubs / "python").write_text('#!/bin/sh\necho "stand-in python $*"\nexit 0\n')
    (stubs / "python").chmod(0o755)
    history = ROOT / "records" / "gpu" / "parallel" / "stage_seconds.json"
    proc, _ = _run(tmp_path, JOBS="5", TRAIN_JOBS="3", HISTORY=str(history),
                   PATH=os.pathsep.join([str(stubs), str(tmp_path / "bin"), os.environ["PATH"]]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "python -m uvlm.pipeline.repro --jobs 5 --limit train=3: exit 0" in proc.stdout
    seeded = tmp_path / "copy" / "notebooks" / "executed" / "logs" / "stage_seconds.json"
    assert seeded.read_text() == history.read_text()
    other = tmp_path / "again"
    other.mkdir()
    proc, _ = _run(other, TRAIN_JOBS="3")
    assert proc.returncode == 2 and "TRAIN_JOBS needs JOBS > 1" in proc.stdout
