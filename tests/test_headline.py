"""`dvc metrics show` reads small headline files; the detailed JSONs stay plain outputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from uvlm.paper.headline import headline, run_headline, write_headline

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "records" / "cpu"  # the committed cpu-preset outputs
DETAILS = sorted((RECORD / "metrics").glob("*.json"))


def _leaves(x) -> int:
    return sum(_leaves(v) for v in x.values()) if isinstance(x, dict) else 1


def _stages():
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        yield name, stage.get("do", stage)


def _paths(entries) -> list[str]:
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def test_run_headline_is_the_mean_of_each_benchmark_per_subset():
    detail = json.loads((RECORD / "metrics" / "ug_base.json").read_text())
    h = run_headline(detail)
    table = detail["aggregate"]["table"]
    assert set(h) == {"n_seeds", *table}
    for subset, cols in table.items():
        assert set(h[subset]) == {m for m, c in cols.items() if c and c["mean"] is not None}
        for metric, value in h[subset].items():
            assert value == pytest.approx(cols[metric]["mean"], rel=1e-3, abs=0.05), (subset, metric)
    assert _leaves(h) <= 50


@pytest.mark.parametrize("detail", DETAILS, ids=lambda p: p.stem)
def test_committed_headlines_are_what_the_library_writes(detail):
    committed = json.loads((RECORD / "headline" / detail.name).read_text())
    assert committed == headline(detail.stem, json.loads(detail.read_text()))
    assert _leaves(committed) <= 50


def test_write_headline_reads_the_detail_and_writes_beside_it(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "u_base.json").write_text((RECORD / "metrics" / "u_base.json").read_text())
    path = write_headline(tmp_path, "u_base")
    assert path == tmp_path / "headline" / "u_base.json"
    assert json.loads(path.read_text())["all"]["GQA"] > 0


def test_dvc_metrics_are_the_headlines_and_the_details_stay_outputs():
    for name, stage in _stages():
        metrics, outs = _paths(stage.get("metrics")), _paths(stage.get("outs"))
        assert all(m.startswith("figures/headline/") for m in metrics), name
        # training's numbers are its curves and eval's scores; params only checks params.yaml
        assert metrics or name in ("train", "params"), name
        for m in metrics:
            assert m.replace("figures/headline/", "figures/metrics/") in outs, (name, m)


def test_dvc_metrics_show_fits_on_a_screen(tmp_path):
    # figures/ is what `dvc repro` writes (not in git): read the committed cpu record's headline
    # files where the pipeline puts them, in a copy of the project's dvc.yaml.
    import shutil
    shutil.copy(ROOT / "dvc.yaml", tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path)
    shutil.copytree(RECORD / "headline", tmp_path / "figures" / "headline")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=300)
    out = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    files = next(iter(json.loads(out.stdout).values()))["data"]
    assert len(files) == len(list((RECORD / "headline").glob("*.json")))
    assert sum(_leaves(f["data"]) for f in files.values()) <= 300  # was about 6,600 values
    table = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300).stdout
    assert len(table.splitlines()) <= 100
