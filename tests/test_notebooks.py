"""Notebooks run where a person opens them: JupyterLab starts the kernel in notebooks/.

The setup cell (``uvlm.core.notebook.setup``) is tested directly; one cheap notebook (01_data, at the
tiny preset) runs end to end through nbclient, as "Run All" does, and through papermill with an
``overrides`` parameter. The other notebooks run in tests/test_pipeline.py through ``dvc repro``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from uvlm.core.config import load_config
from uvlm.core.errors import ConfigError
from uvlm.core.notebook import as_sets, find_root, setup
from uvlm.core.overrides import parse_sets

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


def _project(tmp_path: Path, preset: str = "tiny") -> Path:
    """A project folder as a person has it: params.yaml at the root, the notebooks beside it."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["preset"] = preset
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks",
                    ignore=shutil.ignore_patterns("executed", ".ipynb_checkpoints"))
    return tmp_path


def test_find_root_walks_up_from_the_kernels_folder(tmp_path):
    root = _project(tmp_path)
    deeper = root / "notebooks" / "executed"
    deeper.mkdir()
    assert find_root("params.yaml", start=root / "notebooks") == root
    assert find_root("params.yaml", start=deeper) == root
    assert find_root(str(root / "params.yaml"), start=Path("/")) == root
    with pytest.raises(FileNotFoundError, match="params_path"):
        find_root("params.yaml", start=Path("/"))


def test_setup_moves_to_the_root_and_applies_overrides(tmp_path, monkeypatch):
    root = _project(tmp_path)
    monkeypatch.chdir(root / "notebooks")
    cfg = setup("params.yaml", ["train.lr=5e-4", "world.n_val=12", "himix.start_layer=2"])
    assert Path.cwd() == root  # relative paths in the notebook now mean what they mean under dvc repro
    assert cfg.root == root and cfg.paths.data == root / "data"
    # The same merge as load_config with train_cli's --set parser: one parser, one merge.
    reference = load_config(root / "params.yaml", parse_sets(["train.lr=5e-4", "world.n_val=12",
                                                              "himix.start_layer=2"]))
    assert cfg.to_dict() == reference.to_dict()
    assert cfg.train.lr == 5e-4 and cfg.world.n_val == 12 and cfg.himix.start_layer == 2
    plain = load_config(root / "params.yaml")
    assert cfg.preset == "tiny" and cfg.train.epochs == plain.train.epochs  # what is not overridden stays


@pytest.mark.parametrize("given, expected", [
    (None, []), ([], []), ("", []),
    ("train.lr=5e-4", ["train.lr=5e-4"]),                       # papermill -p: one setting
    ("train.seeds=[0, 1]", ["train.seeds=[0, 1]"]),             # a list value is not a list of settings
    ('["train.lr=5e-4", "preset=tiny"]', ["train.lr=5e-4", "preset=tiny"]),  # -p with a list
    (["train.lr=5e-4"], ["train.lr=5e-4"]),                     # -y / the Python API
])
def test_overrides_forms(given, expected):
    assert as_sets(given) == expected


@pytest.mark.parametrize("bad", [{"train.lr": 5e-4}, [1], "[train.lr=1, [", ["lr=5e-4"], ["train.lr"]])
def test_bad_overrides_name_the_parameter(tmp_path, monkeypatch, bad):
    root = _project(tmp_path)
    monkeypatch.chdir(root / "notebooks")
    with pytest.raises(ConfigError, match="overrides"):
        setup("params.yaml", bad)
    assert Path.cwd() == root / "notebooks"  # a rejected override moves nothing


def test_an_unknown_key_names_itself(tmp_path, monkeypatch):
    root = _project(tmp_path)
    monkeypatch.chdir(root / "notebooks")
    with pytest.raises(ConfigError, match="train.no_such_knob"):
        setup("params.yaml", ["train.no_such_knob=1"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_starts_with_the_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    params = {}
    exec(code[0].source, {}, params)  # noqa: S102 - the notebook's own literal defaults
    assert params["params_path"] == "params.yaml" and params["overrides"] == []
    assert code[1].source.splitlines()[-1].startswith("cfg = setup(params_path, overrides)")
    rest = "\n".join(c.source for c in code[2:])
    # Each notebook loads its config once, through setup, and never moves by itself.
    assert "load_config" not in rest and "chdir" not in rest
    # A notebook that hands params.yaml to other processes hands them the overrides as well.
    for call in ("launch_seeds(", "run_priors(", "run_sweep("):
        if call in rest:
            assert "sets=as_sets(overrides)" in rest.split(call, 1)[1].split("\n", 1)[0], (path.stem, call)


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
            if out.get("output_type") == "error":
                parts.append(out.get("ename", "") + out.get("evalue", ""))
    return "\n".join(parts)


def test_data_notebook_runs_all_from_the_notebooks_folder(tmp_path):
    """JupyterLab's "Run All" at the tiny preset: the kernel starts in notebooks/."""
    from nbclient import NotebookClient

    root = _project(tmp_path)
    nb = nbformat.read(root / "notebooks" / "01_data.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    text = _outputs_text(nb)
    assert "TqdmWarning" not in text and "IProgress not found" not in text
    # The bar is a widget, as JupyterLab draws it (ipywidgets is installed).
    assert any("application/vnd.jupyter.widget-view+json" in out.get("data", {})
               for cell in nb.cells for out in cell.get("outputs", []))
    world = json.loads((root / "figures" / "metrics" / "world.json").read_text())
    assert world["split_sizes"]["u_train"] == load_config(root / "params.yaml").world.n_u_train
    assert (root / "figures" / "world_samples.png").stat().st_size > 0
    assert not (root / "notebooks" / "figures").exists()  # nothing landed beside the notebook


def test_papermill_overrides_swap_a_setting(tmp_path):
    import papermill as pm

    root = _project(tmp_path)
    out = root / "notebooks" / "executed.ipynb"
    # papermill's -p passes strings: the list form arrives as text and is read as a list.
    pm.execute_notebook(str(root / "notebooks" / "01_data.ipynb"), str(out), cwd=str(root / "notebooks"),
                        parameters={"overrides": '["world.n_test=20", "world.n_val=8"]'},
                        kernel_name="python3", progress_bar=False)
    sizes = json.loads((root / "figures" / "metrics" / "world.json").read_text())["split_sizes"]
    assert sizes["u_test"] == 20 and sizes["u_val"] == 8
    assert "TqdmWarning" not in _outputs_text(nbformat.read(out, as_version=4))
    # papermill reads the parameter from the notebook (it warns of, and ignores, names it cannot parse).
    assert [p["name"] for p in pm.inspect_notebook(str(out)).values()] == ["params_path", "overrides"]
    assert os.path.isdir(root / "data" / "world")
