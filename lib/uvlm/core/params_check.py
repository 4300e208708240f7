"""Stage ``params``: validate the whole params.yaml before any other stage runs.

    python -m uvlm.core.params_check params.yaml data/params_checked.txt

DVC removes a stage's outputs just before it runs that stage, and a stage re-runs only when a
key it lists changed. Checked inside the notebooks, a typo'd section (``trian:``) or a
``paths`` key was never read by any stage, and ``-S preset=huge`` failed only after DVC had
deleted ``data/world``. This stage depends on the file itself, and ``data`` and ``probe`` (so
every stage) depend on its output: a bad file fails here, before anything is deleted. The
output's content never changes, so a valid edit re-runs only the stages whose keys changed.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import UVLMError

CHECKED = "params.yaml is valid under its preset (written by python -m uvlm.core.params_check)\n"


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m uvlm.core.params_check PARAMS OUT", file=sys.stderr)
        return 2
    params, out = Path(args[0]), Path(args[1])
    from .config import load_config
    from .io import write_text
    try:
        load_config(params)
    except (UVLMError, FileNotFoundError) as e:
        print(f"error: {e}\nFix it in '{params}' and run again (a value given with `dvc exp run -S` is "
              "already written there). No stage has run and no output was deleted.", file=sys.stderr)
        return 2
    write_text(out, CHECKED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
