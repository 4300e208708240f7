"""Render params.yaml: every key of every section, ``null`` = the preset's value.

``python -m uvlm.core.params_template > params.yaml`` regenerates it; a test checks
that params.yaml lists exactly the keys the dataclasses define, so the two can
never drift apart.
"""
from __future__ import annotations

import dataclasses
import json

import yaml

from .config import DEFAULT_RUNS, PRESETS, SECTIONS, read_preset, section_class

HEADER = """\
# All knobs of the pipeline. `null` means "the value of the chosen preset";
# each comment shows that value for cpu | gpu | tiny (presets: lib/uvlm/presets).
#   dvc exp run -S preset=gpu          # switch scale
#   dvc exp run -S train.lr=3e-4       # override one key under any preset
# Regenerate the key list with: python -m uvlm.core.params_template > params.yaml
"""

def _fmt(v) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def preset_value(name: str, section: str, key: str, default):
    return read_preset(name).get(section, {}).get(key, default) if name != "cpu" else default


def render() -> str:
    lines = [HEADER, "preset: cpu  # cpu | gpu | tiny", "seed: 0  # world seed: fixes every scene, split and probe", ""]
    for section in SECTIONS:
        cls = section_class(section)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"{section}:" + (f"  # {doc}" if doc and not doc.startswith(cls.__name__) else ""))
        defaults = cls()
        for f in dataclasses.fields(cls):
            d = getattr(defaults, f.name)
            vals = [preset_value(p, section, f.name, d) for p in PRESETS]
            shown = _fmt(vals[0]) + "  (every preset)" if all(v == vals[0] for v in vals) \
                else " | ".join(_fmt(v) for v in vals)
            lines.append(f"  {f.name}: null  # {shown}")
        lines.append("")
    lines.append("# The run grid: one train@RUN and one eval@RUN stage per entry.")
    lines.append("# task: u | g | ug; accel: base | himix | hmgen | himix+hmgen; share: all | partial")
    lines.append(yaml.safe_dump({"runs": DEFAULT_RUNS}, sort_keys=False).rstrip())
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
