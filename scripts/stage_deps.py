"""The library folders each DVC stage reaches, from its notebook's imports, against dvc.yaml's deps.

    python scripts/stage_deps.py            # print each stage's library deps as dvc.yaml should list them
    python scripts/stage_deps.py --check    # exit 1 naming every stage whose deps miss a file it reaches
    python scripts/stage_deps.py --write    # rewrite the lib/uvlm entries of every stage's deps: in dvc.yaml

A stage reaches the modules its notebook imports and, transitively, everything those import:
``import uvlm.x``, ``from uvlm import x``, ``from .x import y`` at any depth (the library imports
lazily inside functions), and the string ``"uvlm.x"`` naming a module (config.py's section table
and the ``python -m uvlm.x`` commands of worker processes). A stage lists each sub-package it
reaches as one folder (lib/uvlm/model, say), not file by file: the folders are the library's
units, and a folder cannot miss a module added to it later. Every stage also depends on the
presets and on lib/uvlm/core, whose config decides every setting. Only the static text is read;
nothing is imported.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "uvlm"
ALWAYS = ("lib/uvlm/presets", "lib/uvlm/core")
# config.py names every section's dataclass as a string ("uvlm.train.config") and imports it only
# to read a config: a stage reached that way depends on that file, not on its whole folder.
SECTION_TABLE = "uvlm.core.config"
NOTEBOOK = re.compile(r"notebooks/[^ ]+\.ipynb")


class Library:
    """The modules of lib/uvlm and the import arrows between them, read from the source."""

    def __init__(self, root: Path = ROOT):
        self.root = root
        self.lib = root / "lib"
        self.files = {self._name(p): p for p in sorted((self.lib / PACKAGE).rglob("*.py"))}
        self._imports: dict[str, set[str]] = {}  # module -> what it imports, read once

    def _name(self, path: Path) -> str:
        parts = path.relative_to(self.lib).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def rel(self, module: str) -> str:
        return self.files[module].relative_to(self.root).as_posix()

    def unit(self, module: str) -> str:
        """What a stage lists for ``module``: its sub-package's folder, or the file of a top-level module."""
        parts = module.split(".")
        if len(parts) > 2 or (len(parts) == 2 and self.files[module].name == "__init__.py"):
            return (self.lib / PACKAGE / parts[1]).relative_to(self.root).as_posix()
        return self.rel(module)

    def _with_parents(self, module: str) -> set[str]:
        """A module and the packages above it (importing a.b.c runs a/__init__ and a/b/__init__)."""
        parts = module.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(self.files)

    def imports_of(self, tree: ast.AST, package: str = PACKAGE) -> set[str]:
        """The library modules a parsed source imports; ``package`` resolves relative imports."""
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # `from a import b` imports a, and a.b where b is a module
                names = [stem] + [f"{stem}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value]  # "uvlm.tokens.vq" in an importlib table or a `python -m` command
            else:
                continue
            for name in names:
                if name.split(".")[0] == PACKAGE and name in self.files:
                    found |= self._with_parents(name)
        return found

    def _package_of(self, module: str) -> str:
        return module if self.files[module].name == "__init__.py" else module.rpartition(".")[0]

    def closure(self, modules: set[str], sections: bool = True) -> set[str]:
        """Everything ``modules`` reach; ``sections=False`` does not follow config.py's section table."""
        seen: set[str] = set()
        todo = set(modules)
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            if m not in self._imports:
                tree = ast.parse(self.files[m].read_text(), filename=str(self.files[m]))
                self._imports[m] = self.imports_of(tree, self._package_of(m))
            reached = self._imports[m]
            if m == SECTION_TABLE and not sections:
                reached = self.imports_of(self._code_only(m), self._package_of(m))
            todo |= reached - seen
        return seen

    def _code_only(self, module: str) -> ast.AST:
        """A module's source with its string constants blanked (its imports kept)."""
        tree = ast.parse(self.files[module].read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                node.value = ""
        return tree

    def units(self, modules: set[str]) -> set[str]:
        """What a stage lists for what its notebook imports: the folder of each sub-package it
        imports, and single files for the section modules that it reaches only through config.py."""
        imported = self.closure(modules, sections=False)
        folders = {self.unit(m) for m in imported}
        files = {self.rel(m) for m in self.closure(modules) - imported if self.unit(m) not in folders}
        return folders | files


def notebook_tree(path: Path) -> ast.Module:
    """The notebook's code cells as one module (IPython magics and shell lines left out)."""
    nb = json.loads(path.read_text())
    lines = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = "".join(cell["source"])
            lines += [ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))] + [""]
    return ast.parse("\n".join(lines), filename=str(path))


def stage_notebooks(dvc: dict) -> dict[str, str]:
    """{stage: its notebook}, for every stage whose command runs one."""
    out = {}
    for name, stage in dvc["stages"].items():
        body = stage.get("do", stage)
        hit = NOTEBOOK.search(body.get("cmd", ""))
        if hit:
            out[name] = hit.group(0)
    return out


def required_deps(root: Path = ROOT, dvc: dict | None = None) -> dict[str, list[str]]:
    """{stage: the library paths its deps must list}: presets, core, and the folders of the closure."""
    dvc = dvc if dvc is not None else yaml.safe_load((root / "dvc.yaml").read_text())
    lib = Library(root)
    out = {}
    for stage, notebook in stage_notebooks(dvc).items():
        files = lib.units(lib.imports_of(notebook_tree(root / notebook))) - set(ALWAYS)
        out[stage] = [*ALWAYS, *sorted(files)]
    return out


def _listed(stage: dict) -> list[str]:
    deps = stage.get("do", stage).get("deps", [])
    return [d if isinstance(d, str) else next(iter(d)) for d in deps]


def missing_deps(root: Path = ROOT) -> dict[str, list[str]]:
    """{stage: library paths it reaches that its deps do not cover} (a listed folder covers its files)."""
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    out = {}
    for stage, need in required_deps(root, dvc).items():
        listed = [d.rstrip("/") for d in _listed(dvc["stages"][stage])]
        gaps = [p for p in need if not any(p == d or p.startswith(d + "/") for d in listed)]
        if gaps:
            out[stage] = gaps
    return out


def rewrite(text: str, required: dict[str, list[str]]) -> str:
    """dvc.yaml with each stage's lib/uvlm deps replaced by ``required[stage]`` (after its notebook);
    everything else (comments, other deps, outs, params) is kept line for line."""
    lines = text.splitlines(keepends=True)
    out, stage, in_deps, deps_indent = [], None, False, 0
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        stage_hit = re.match(r"^  ([A-Za-z_][\w-]*):\s*$", line)
        if stage_hit:
            stage, in_deps = stage_hit.group(1), False
        if in_deps and stripped and indent <= deps_indent:
            in_deps = False
        if re.match(r"^\s*deps:\s*$", line) and stage in required:
            in_deps, deps_indent = True, indent
            out.append(line)
            continue
        if in_deps and stripped.startswith("- "):
            item = stripped[2:].strip()
            if item.startswith("lib/uvlm"):
                continue
            out.append(line)
            if NOTEBOOK.fullmatch(item):
                pad = " " * (len(line) - len(line.lstrip(" ")))
                out += [f"{pad}- {p}\n" for p in required[stage]]
            continue
        out.append(line)
    return "".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if a stage's deps miss a file it reaches")
    mode.add_argument("--write", action="store_true", help="rewrite the lib/uvlm deps of dvc.yaml")
    a = ap.parse_args(argv)
    if a.check:
        missing = missing_deps()
        for stage, paths in missing.items():
            print(f"{stage}: its notebook reaches, but deps do not list: {', '.join(paths)}")
        if missing:
            print("run: python scripts/stage_deps.py --write", file=sys.stderr)
        return 1 if missing else 0
    required = required_deps()
    if a.write:
        path = ROOT / "dvc.yaml"
        path.write_text(rewrite(path.read_text(), required))
        still = missing_deps()
        if still:
            raise SystemExit(f"dvc.yaml still misses {still}: a stage's deps block has no notebook entry")
        return 0
    for stage, paths in required.items():
        print(f"{stage}:\n" + "".join(f"  - {p}\n" for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
