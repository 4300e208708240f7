"""dvc.yaml's deps tell the truth: each stage lists every library folder its notebook reaches.

scripts/stage_deps.py computes the import closure of each stage's notebook over lib/uvlm (static
reading only, so this is cheap); `python scripts/stage_deps.py --write` brings dvc.yaml in line.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("stage_deps", ROOT / "scripts" / "stage_deps.py")
stage_deps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stage_deps)


def test_every_stage_lists_what_its_notebook_reaches():
    missing = stage_deps.missing_deps(ROOT)
    assert not missing, ("stages whose notebook reaches library files their deps do not list "
                         f"(run `python scripts/stage_deps.py --write`): {missing}")


def test_every_notebook_stage_depends_on_the_presets_and_core():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stages = stage_deps.stage_notebooks(dvc)
    # Every stage runs a notebook, so every stage is checked, but `params`, which validates
    # params.yaml before any of them and so depends on the whole library.
    assert set(stages) == set(dvc["stages"]) - {"params"}
    assert {"params.yaml", "lib/uvlm"} <= set(stage_deps._listed(dvc["stages"]["params"]))
    for name in stages:
        listed = stage_deps._listed(dvc["stages"][name])
        for path in ("lib/uvlm/presets", "lib/uvlm/core"):
            assert path in listed, (name, path)
        assert all((ROOT / p).exists() for p in listed if p.startswith("lib/")), name


def test_import_forms_are_followed():
    lib = stage_deps.Library(ROOT)
    tree = ast.parse("import uvlm.world.scenes\nfrom uvlm.paper import tables as T\nfrom uvlm.eval.fid import x\n"
                     "def f():\n    from .claims import y\n    return ['-m', 'uvlm.train.cli']\n")
    found = lib.imports_of(tree, "uvlm.paper")
    assert {"uvlm", "uvlm.world.scenes", "uvlm.world.scenes", "uvlm.paper.tables", "uvlm.eval.fid", "uvlm.paper.claims",
            "uvlm.train.cli"} <= found
    assert "uvlm.train.loop" in lib.closure({"uvlm.train.cli"})  # the command line imports the loop inside main()
    # config.py names the section modules as strings and imports them lazily
    assert {"uvlm.tokens.vq", "uvlm.world.scenes", "uvlm.train.config"} <= lib.closure({"uvlm.core.config"})


def _project(tmp_path: Path) -> Path:
    (tmp_path / "lib").symlink_to(ROOT / "lib")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("executed"))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def test_a_new_import_in_a_notebook_is_caught(tmp_path):
    root = _project(tmp_path)
    path = root / "notebooks" / "01_data.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"].append({"cell_type": "code", "execution_count": None, "id": "new", "metadata": {},
                        "outputs": [], "source": ["from uvlm.eval.fid import frechet_distance"]})
    path.write_text(json.dumps(nb))
    missing = stage_deps.missing_deps(root)
    assert set(missing) == {"data"} and "lib/uvlm/eval" in missing["data"]


def test_a_dropped_dep_is_caught_and_write_restores_it(tmp_path):
    root = _project(tmp_path)
    dvc = root / "dvc.yaml"
    original = dvc.read_text()
    dvc.write_text(original.replace("      - lib/uvlm/eval\n", "", 1))
    assert stage_deps.missing_deps(root)
    dvc.write_text(stage_deps.rewrite(dvc.read_text(), stage_deps.required_deps(root)))
    assert not stage_deps.missing_deps(root)
    assert dvc.read_text() == original  # the committed dvc.yaml is exactly what --write produces


@pytest.mark.parametrize("stage", ["data", "train"])
def test_rewrite_touches_library_deps_only(stage):
    text = (ROOT / "dvc.yaml").read_text()
    required = {k: v[:3] for k, v in stage_deps.required_deps(ROOT).items()}  # any other list will do
    before, after = yaml.safe_load(text), yaml.safe_load(stage_deps.rewrite(text, required))
    b, a = before["stages"][stage], after["stages"][stage]
    b, a = b.get("do", b), a.get("do", a)
    assert {k: v for k, v in a.items() if k != "deps"} == {k: v for k, v in b.items() if k != "deps"}
    assert [d for d in a["deps"] if not str(d).startswith("lib/")] == \
           [d for d in b["deps"] if not str(d).startswith("lib/")]
    assert [d for d in a["deps"] if str(d).startswith("lib/")] == required[stage]
