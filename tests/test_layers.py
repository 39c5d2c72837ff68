"""The package's layers, read from the source: imports point down only.

Function-local imports count (they are how the layers used to be crossed unseen), and so do
`TYPE_CHECKING` imports: a type from a higher layer is still a dependency on it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "molpt_tui"

# Lower number = lower layer. A module may import its own layer and any lower one.
LAYERS: dict[str, int] = {
    "errors": 0, "fileio": 0, "processes": 0, "numfmt": 0, "__init__": 0, "__main__": 9,
    "config": 1,
    "physics": 2,
    "flows": 3,
    "training": 4,
    "report": 5,
    "tui": 6,
    "app": 7,
    "cli": 8,
}


def layer_of(module: str) -> tuple[str, int]:
    """'molpt_tui.training.trainer' -> ('training', 4)."""
    parts = module.split(".")
    assert parts[0] == "molpt_tui", module
    top = parts[1] if len(parts) > 1 else "__init__"
    if top not in LAYERS:
        raise AssertionError(f"{module}: not in a known layer; add it to LAYERS in {__file__}")
    return top, LAYERS[top]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module) of every molpt_tui import in a file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "molpt_tui"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "molpt_tui":
                continue
            if target == "molpt_tui" or (node.module is None):
                # `from . import x` / `from molpt_tui import x`: each name may be a submodule
                out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, target))
    return out


def violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        src_top, src_rank = layer_of(module_name(path, root))
        for line, target in imported_modules(path, root):
            try:
                dst_top, dst_rank = layer_of(target)
            except AssertionError:
                if target.count(".") == 1:  # `from molpt_tui import __version__` and the like
                    continue
                raise
            if dst_rank > src_rank:
                found.append(f"{path.relative_to(root.parent)}:{line}: {src_top} imports {target} ({dst_top})")
    return found


def test_imports_point_down_the_layers() -> None:
    assert violations() == []


def test_the_check_catches_a_function_local_upward_import(tmp_path: Path) -> None:
    """The rule must fail on a violation added on purpose (here in a copy of the package)."""
    import shutil

    copy = tmp_path / "molpt_tui"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    bad = copy / "physics" / "units.py"
    bad.write_text(bad.read_text(encoding="utf-8") + "\n\ndef _sneak() -> None:\n    from ..tui import app  # noqa\n",
                   encoding="utf-8")
    found = sorted(set(violations(copy)) - set(violations()))
    assert len(found) == 1 and "physics imports molpt_tui.tui" in found[0]


@pytest.mark.parametrize("module, layer", [("molpt_tui.cli", "cli"), ("molpt_tui.training.trainer", "training"),
                                           ("molpt_tui.app", "app")])
def test_layer_names(module: str, layer: str) -> None:
    assert layer_of(module)[0] == layer
