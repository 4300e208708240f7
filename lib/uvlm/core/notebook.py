"""The first cell of every notebook: find the project, apply overrides, load the config.

    cfg = uvlm.core.notebook.setup(params_path, overrides)

A notebook runs in two places: ``dvc repro`` runs it through papermill from the repository root
(``--cwd .``), and JupyterLab starts its kernel in ``notebooks/``. :func:`setup` walks up from the
kernel's working directory to the folder that holds ``params_path`` and makes it the working
directory, so every relative path in a notebook means what it means under ``dvc repro``.

``overrides`` swaps any setting, in the syntax of ``dvc exp run -S`` and ``train_cli --set``
(``KEY=VALUE``, a dotted params.yaml key, the value read as YAML), and is merged over params.yaml
exactly as those are (:func:`uvlm.core.overrides.parse_sets`, then :func:`uvlm.core.config.load_config`)::

    papermill notebooks/04_train.ipynb out.ipynb -p run u_base -p overrides train.lr=5e-4
    papermill notebooks/04_train.ipynb out.ipynb -p overrides '["preset=tiny", "train.lr=5e-4"]'
    papermill notebooks/04_train.ipynb out.ipynb -y 'overrides: [preset=tiny, train.lr=5e-4]'

papermill's ``-p`` passes a string, so a string is one ``KEY=VALUE``, or a list of them when it
is written as a YAML/JSON list (``[...]``); ``-y`` and papermill's Python API pass a list as is.
Overrides change the notebook's config only: outputs still land where params.yaml's paths put
them, so a notebook run with overrides should not be mixed with ``dvc repro`` outputs.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import ConfigError

PARAMETER = "overrides"  # the name of the papermill parameter every notebook declares


def find_root(params_path="params.yaml", start=None) -> Path:
    """The folder holding ``params_path``: ``start`` (default: the working directory) or the
    nearest folder above it. An absolute ``params_path`` names its folder directly."""
    path = Path(params_path)
    if path.is_absolute():
        if not path.is_file():
            raise FileNotFoundError(f"params file '{path}' does not exist")
        return path.parent
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / path).is_file():
            return folder
    raise FileNotFoundError(f"no '{params_path}' in '{here}' or any folder above it: open the notebook inside "
                            "the repository, or set the notebook parameter params_path to the params file")


def as_sets(overrides) -> list[str]:
    """``overrides`` as a list of ``KEY=VALUE`` strings (see the module docstring for the forms)."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        text = overrides.strip()
        if not text:
            return []
        if not text.startswith("["):
            return [text]
        try:
            overrides = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(PARAMETER, overrides, f"a list of KEY=VALUE strings ({e})") from e
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(s, str) for s in overrides):
        raise ConfigError(PARAMETER, overrides, "a KEY=VALUE string or a list of them, "
                                                "e.g. [\"train.lr=5e-4\", \"preset=tiny\"]")
    return list(overrides)


def setup(params_path="params.yaml", overrides=None, chdir: bool = True):
    """Find the repository root, make it the working directory, and load the config there with
    ``overrides`` merged in. Returns the :class:`uvlm.core.config.Config`."""
    from .config import load_config
    from .overrides import parse_sets  # the one parser of KEY=VALUE settings

    sets = parse_sets(as_sets(overrides), flag=PARAMETER)  # a malformed override fails before anything moves
    root = find_root(params_path)
    if chdir and Path.cwd().resolve() != root:
        os.chdir(root)
    # sets, not overrides: runs.X.key=value edits one key of one run, as dvc exp run -S does.
    return load_config(root / params_path, sets=sets)  # root / an absolute path is that path
