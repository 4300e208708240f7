"""pyproject.toml is the one list of dependencies; environment.yml and constraints.txt follow it."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins() -> dict:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_name(name)] = version.strip()
    return pins


def test_environment_yml_installs_this_package_and_nothing_else():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert {_name(d) for d in conda} == {"python", "pip"}, "conda packages would duplicate pyproject's list"
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip and "-c constraints.txt" in pip


def test_environment_python_satisfies_requires_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    version = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    minor = int(version.split("=")[1].split(".")[1])
    required = int(_project()["requires-python"].split(">=")[1].split(".")[1])
    assert minor >= required


def test_every_dependency_is_pinned_and_torch_is_the_cpu_build_pin():
    pins = _pins()
    missing = [_name(d) for d in _project()["dependencies"] if _name(d) not in pins]
    assert not missing, f"constraints.txt does not pin {missing}"
    assert pins["torch"].startswith("2.13.0")


def test_makefile_installs_from_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt -e ." in makefile
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
