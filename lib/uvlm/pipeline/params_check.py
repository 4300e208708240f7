"""Stage ``params``: validate the whole params.yaml before any other stage runs.

    python -m uvlm.pipeline.params_check params.yaml data/params_checked.txt [data/settings]

DVC removes a stage's outputs just before it runs that stage, and a stage re-runs only when a
key it lists changed. Checked inside the notebooks, a typo'd section (``trian:``) or a
``paths`` key was never read by any stage, and ``-S preset=huge`` failed only after DVC had
deleted ``data/world``. This stage depends on the file itself, and ``data`` and ``probe`` (so
every stage) depend on its output: a bad file fails here, before anything is deleted. The
output's content never changes, so a valid edit re-runs only the stages whose keys changed.

With a third argument it also writes each run's resolved settings there (``RUN.json``, from
``run_setup.stage_settings``), the file train@RUN depends on in place of whole params sections.
"""
from __future__ import annotations

import sys
from pathlib import Path

from uvlm.core.errors import UVLMError

CHECKED = "params.yaml is valid under its preset (written by python -m uvlm.pipeline.params_check)\n"


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print("usage: python -m uvlm.pipeline.params_check PARAMS OUT [SETTINGS_DIR]", file=sys.stderr)
        return 2
    params, out = Path(args[0]), Path(args[1])
    from uvlm.core.config import load_config
    from uvlm.core.io import write_json, write_text
    try:
        cfg = load_config(params)
    except (UVLMError, FileNotFoundError) as e:
        print(f"error: {e}\nFix it in '{params}' and run again (a value given with `dvc exp run -S` is "
              "already written there). No stage has run and no output was deleted.", file=sys.stderr)
        return 2
    if len(args) == 3:
        import json
        import shutil

        from uvlm.train.setup import stage_settings
        settings = Path(args[2])
        shutil.rmtree(settings, ignore_errors=True)  # a run taken out of the grid leaves no file
        for run in cfg.runs:
            # default=str: paths become strings, as they are read back
            write_json(settings / f"{run}.json", json.loads(json.dumps(stage_settings(cfg, run), default=str)))
    write_text(out, CHECKED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
