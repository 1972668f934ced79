"""The shape of the house: the engine imports no system, modules stay small, every class is abstract
or final (equinox's pattern), and every public name the README documents is importable."""

from __future__ import annotations

import ast
import pathlib
import re

import flowsim

ROOT = pathlib.Path(flowsim.__file__).parent
ENGINE = sorted([*(p for p in ROOT.glob("_*.py") if p.name != "__init__.py"), ROOT / "cli.py", *ROOT.glob("nn/*.py")])
ALL = sorted(p for p in ROOT.rglob("*.py"))


def _imports(path: pathlib.Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out.append("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
    return out


def test_engine_imports_no_system():
    for path in ENGINE:
        bad = [m for m in _imports(path) if "systems" in m.split(".")]
        assert not bad, f"{path.name} imports {bad}"


def test_systems_do_not_reach_into_each_other():
    for folder in (ROOT / "systems").iterdir():
        if not folder.is_dir() or folder.name.startswith("_"):
            continue
        for path in folder.rglob("*.py"):
            for m in _imports(path):
                parts = m.lstrip(".").split(".")
                if "systems" in parts:
                    assert parts[parts.index("systems") + 1 :][:1] in ([], [folder.name]), (path, m)


def test_modules_are_small():
    for path in ALL:
        n = len(path.read_text().splitlines())
        assert n <= 420, f"{path.relative_to(ROOT)} has {n} lines (keep modules under ~400)"


def _is_abstract_or_final(node: ast.ClassDef) -> bool:
    decorators = {ast.unparse(d) for d in node.decorator_list}
    if "final" in decorators or "typing.final" in decorators:
        return True
    if node.name.startswith("Abstract") or node.name.startswith("_Abstract"):
        return True
    bases = {ast.unparse(b) for b in node.bases}
    return any(re.search(r"(Error|Exception)$", b) for b in bases)  # exceptions form hierarchies


def test_every_class_is_abstract_or_final():
    bad = []
    for path in ALL:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not _is_abstract_or_final(node):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not bad, "classes neither abstract nor @final:\n" + "\n".join(bad)


def test_readme_names_are_importable_from_flowsim():
    readme = (ROOT.parent / "README.md").read_text()
    names = set(re.findall(r"flowsim\.([A-Za-z_][A-Za-z0-9_]*)\(", readme))
    names |= set(re.findall(r"`flowsim\.([A-Za-z_][A-Za-z0-9_]*)`", readme))
    missing = sorted(n for n in names if not hasattr(flowsim, n) and n not in ("systems",))
    assert not missing, f"README documents flowsim.{missing} but flowsim does not export them"
