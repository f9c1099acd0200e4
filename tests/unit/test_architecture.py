"""ARCHITECTURE.md is true and kept true: the layer rules hold, every module is named in it.

The rules (ARCHITECTURE.md, "Rules"):

- ``histolib`` never imports torch, ``histolib_train`` or ``histolib_cli``;
- ``histolib_train`` never imports ``histolib_cli``;
- ``histolib --help`` loads neither numpy nor torch.

Each rule is checked twice: statically (every ``import`` statement of every module, the ones
inside functions too, with its file and line) and at run time (each subpackage imported in a
fresh interpreter, then the modules it loaded are looked at).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from tests.helpers_proc import run_python

ROOT = Path(__file__).resolve().parents[2]
#: Import name -> source folder.
PACKAGES = {"histolib": ROOT / "histolib", "histolib_train": ROOT / "histolib_train"}
PACKAGES["histolib_cli"] = ROOT / "cli"
#: Package -> the top-level packages it must never import.
FORBIDDEN = {
    "histolib": ("torch", "histolib_train", "histolib_cli"),
    "histolib_train": ("histolib_cli",),
}


def module_name(package: str, path: Path) -> str:
    """The dotted name of the module at ``path`` of ``package``."""
    parts = path.relative_to(PACKAGES[package]).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((package, *parts))


def modules(package: str) -> list[tuple[str, Path]]:
    """Every module of ``package``: (dotted name, file)."""
    files = sorted(PACKAGES[package].rglob("*.py"))
    return [(module_name(package, f), f) for f in files if "__pycache__" not in f.parts]


def imported_names(path: Path) -> list[tuple[int, str]]:
    """Every module an ``import`` statement of ``path`` names, with its line (relative
    imports resolved to nothing: the packages use absolute imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def rule_breaks(package: str) -> list[str]:
    """``file:line imports name`` for every import of ``package`` that breaks a rule."""
    forbidden = FORBIDDEN[package]
    breaks = []
    for _, path in modules(package):
        for line, name in imported_names(path):
            if name.split(".")[0] in forbidden:
                breaks.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return breaks


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_across_the_layers(package: str) -> None:
    assert rule_breaks(package) == []


_LOADED = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def loaded_by(names: list[str]) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing ``names``."""
    done = run_python("-c", _LOADED, *names, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_every_module_loads_no_higher_layer(package: str) -> None:
    every = [name for name, _ in modules(package) if not name.endswith(".__main__")]
    assert sorted(loaded_by(every) & set(FORBIDDEN[package])) == []


def test_histolib_help_loads_neither_numpy_nor_torch() -> None:
    script = (
        "import json, sys\n"
        "from histolib_cli.main import app\n"
        "try:\n"
        "    app(['--help'], prog_name='histolib')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = run_python("-c", script, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert sorted(loaded & {"numpy", "torch"}) == []


def test_the_rule_check_catches_an_import_that_breaks_a_rule(tmp_path: Path) -> None:
    """The static check reads imports inside functions too (the lazy ones a run-time check
    misses)."""
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    import torch\n    from histolib_cli import main\n")
    assert imported_names(module) == [(2, "torch"), (3, "histolib_cli")]


# --------------------------------------------------------------------------- ARCHITECTURE.md

_NAMED = re.compile(r"`((?:histolib|histolib_train|histolib_cli)(?:\.\w+)*)`")


def architecture_names() -> set[str]:
    """The dotted names ARCHITECTURE.md writes in backquotes."""
    return set(_NAMED.findall((ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")))


def test_every_module_is_named_in_architecture_md() -> None:
    named = architecture_names()
    every = [name for package in PACKAGES for name, _ in modules(package)]
    assert [name for name in every if name not in named] == []


def _defines(path: Path, attribute: str) -> bool:
    """Whether the module at ``path`` defines or imports ``attribute`` at its top level."""
    pattern = (
        rf"^(?:async def|def|class) {attribute}\b|^{attribute}\s*[:=]"
        rf"|^from .* import .*\b{attribute}\b"
    )
    return re.search(pattern, path.read_text(encoding="utf-8"), re.MULTILINE) is not None


def test_every_name_architecture_md_writes_exists() -> None:
    """A name is a module, or a top-level attribute of one (`histolib.core.atomic.atomic_path`)."""
    files = {name: path for package in PACKAGES for name, path in modules(package)}
    stale = []
    for name in sorted(architecture_names()):
        parent, _, attribute = name.rpartition(".")
        if name not in files and not (parent in files and _defines(files[parent], attribute)):
            stale.append(name)
    assert stale == []
