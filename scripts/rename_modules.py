"""Rename histolib's near-named modules and rewrite every reference to them (issue 20, item 5).

Run from anywhere: ``python scripts/rename_modules.py`` (``--dry-run`` lists what it would do).

What it does, in order:

1. moves files and folders with ``git mv`` (:data:`MOVES`); a file added later under an old
   folder (a branch merged after the rename) is moved into the new folder too;
2. deletes the shims of a release that never shipped (:data:`SHIMS`);
3. rewrites, in every tracked or new text file, the dotted module names and file paths
   (:data:`DOTTED`, :data:`PATHS`), ``from package import module`` forms of the renamed modules
   (:data:`MODULES`), and imports from the removed evaluation shim into imports from the
   modules that define the names (:data:`SHIM_NAMES`);
4. re-sorts the imports of the Python files it changed (``ruff check --select I001 --fix``).

It is idempotent: run twice, the second run changes nothing; run again after merging a branch
written against the old names, it brings that branch's files over to the new ones.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (old, new) paths relative to the root, folders and files, applied in this order.
MOVES: tuple[tuple[str, str], ...] = (
    ("histolib/tiles", "histolib/tileset"),
    ("histolib/tileset/slide_reader.py", "histolib/tileset/pixels.py"),
    ("histolib/tileset/regions.py", "histolib/tileset/contours.py"),
    ("histolib/core/cluster.py", "histolib/core/dask_cluster.py"),
    ("histolib/tiling/run.py", "histolib/tiling/tiler.py"),
    ("histolib_train/evaluation/run.py", "histolib_train/evaluation/evaluator.py"),
    ("histolib_train/experiment/run.py", "histolib_train/experiment/runner.py"),
    ("histolib_train/demo/run.py", "histolib_train/demo/pipeline.py"),
    ("histolib_train/data/batches.py", "histolib_train/training/batches.py"),
    ("tests/unit/tiles", "tests/unit/tileset"),
    ("tests/unit/tileset/test_slide_reader.py", "tests/unit/tileset/test_pixels.py"),
    ("tests/unit/tileset/test_regions.py", "tests/unit/tileset/test_contours.py"),
    ("tests/unit/tiling/test_split.py", "tests/unit/tileset/test_split.py"),
    ("tests/unit/core/test_cluster.py", "tests/unit/core/test_dask_cluster.py"),
)

#: Files removed: shims and a package left empty by the moves.
SHIMS: tuple[str, ...] = (
    "histolib/qupath_export.py",
    "histolib_train/evaluation/evaluate.py",
    "histolib_train/data/__init__.py",
)

#: (old, new) dotted module names, most specific first (matched as whole names).
DOTTED: tuple[tuple[str, str], ...] = (
    ("histolib.tiles.slide_reader", "histolib.tileset.pixels"),
    ("histolib.tiles.regions", "histolib.tileset.contours"),
    ("histolib.tiles", "histolib.tileset"),
    ("histolib.core.cluster", "histolib.core.dask_cluster"),
    ("histolib.tiling.run", "histolib.tiling.tiler"),
    ("histolib_train.evaluation.run", "histolib_train.evaluation.evaluator"),
    ("histolib_train.experiment.run", "histolib_train.experiment.runner"),
    ("histolib_train.demo.run", "histolib_train.demo.pipeline"),
    ("histolib_train.data.batches", "histolib_train.training.batches"),
)

#: (old, new) file paths as written in docs and comments.
PATHS: tuple[tuple[str, str], ...] = (
    *MOVES,
    ("histolib/tiles/slide_reader.py", "histolib/tileset/pixels.py"),
    ("histolib/tiles/regions.py", "histolib/tileset/contours.py"),
    ("tests/unit/tiles/test_slide_reader.py", "tests/unit/tileset/test_pixels.py"),
    ("tests/unit/tiles/test_regions.py", "tests/unit/tileset/test_contours.py"),
)

#: (package, old module, new package, new module): ``from package import module`` forms.
MODULES: tuple[tuple[str, str, str, str], ...] = (
    ("histolib.tileset", "slide_reader", "histolib.tileset", "pixels"),
    ("histolib.tileset", "regions", "histolib.tileset", "contours"),
    ("histolib.core", "cluster", "histolib.core", "dask_cluster"),
    ("histolib.tiling", "run", "histolib.tiling", "tiler"),
    ("histolib_train.evaluation", "run", "histolib_train.evaluation", "evaluator"),
    ("histolib_train.evaluation", "evaluate", "histolib_train.evaluation", "evaluator"),
    ("histolib_train.experiment", "run", "histolib_train.experiment", "runner"),
    ("histolib_train.demo", "run", "histolib_train.demo", "pipeline"),
    ("histolib_train.data", "batches", "histolib_train.training", "batches"),
)

#: The removed evaluation shim's names and the modules that define them.
SHIM_MODULE = "histolib_train.evaluation.evaluate"
SHIM_NAMES: dict[str, str] = {
    **dict.fromkeys(("CSV_COLUMNS", "table_markdown", "write_panel"), "report"),
    **dict.fromkeys(("checkpoint_labels", "evaluate_generators", "run_evaluation"), "evaluator"),
    **dict.fromkeys(
        (
            "CONVENTION",
            "PAPER_TARGET",
            "GeneratorFn",
            "real_ihc_statistics",
            "score_generator",
            "summarise",
            "virtual_dab_mask",
        ),
        "scoring",
    ),
    **dict.fromkeys(
        ("EvalTile", "load_folder_tiles", "load_manifest_tiles", "load_real_ihc"), "tiles"
    ),
}

#: Lines dropped from pyproject.toml (the package the moves empty).
DROPPED_LINES = ('    "histolib_train.data",\n',)

TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".txt", ".sh"}
#: Files that describe the rename itself, left as written.
UNTOUCHED = {"scripts/rename_modules.py", "CHANGELOG.md"}


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def _mv(old: Path, new: Path, dry_run: bool, log: list[str]) -> None:
    log.append(f"git mv {old.relative_to(ROOT)} {new.relative_to(ROOT)}")
    if dry_run:
        return
    new.parent.mkdir(parents=True, exist_ok=True)
    tracked = bool(git("ls-files", "--", str(old.relative_to(ROOT))).strip())
    if tracked:
        git("mv", str(old.relative_to(ROOT)), str(new.relative_to(ROOT)))
    else:
        shutil.move(str(old), str(new))


def move(old_rel: str, new_rel: str, *, dry_run: bool, log: list[str]) -> None:
    """Move ``old_rel`` to ``new_rel``; a folder whose target exists is merged file by file."""
    old, new = ROOT / old_rel, ROOT / new_rel
    if not old.exists():
        return
    if old.is_file():
        if not new.exists():
            _mv(old, new, dry_run, log)
        return
    if not new.exists():
        _mv(old, new, dry_run, log)
        return
    for item in sorted(old.rglob("*")):
        if item.is_file() and "__pycache__" not in item.parts:
            target = new / item.relative_to(old)
            if not target.exists():
                _mv(item, target, dry_run, log)
    if not dry_run:
        for folder in sorted(old.rglob("__pycache__"), reverse=True):
            shutil.rmtree(folder, ignore_errors=True)
        for folder in sorted((p for p in old.rglob("*") if p.is_dir()), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
        if old.is_dir() and not any(old.iterdir()):
            old.rmdir()


def learn_shim_names() -> None:
    """Add to :data:`SHIM_NAMES` what the evaluation shim re-exports, while it still exists (a
    branch may have added names to it)."""
    shim = ROOT / (SHIM_MODULE.replace(".", "/") + ".py")
    if not shim.is_file():
        return
    evaluation = "histolib_train.evaluation"
    renamed = {old: new for package, old, _, new in MODULES if package == evaluation}
    for node in ast.walk(ast.parse(shim.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            package, _, module = node.module.rpartition(".")
            if package == evaluation:
                for alias in node.names:
                    SHIM_NAMES.setdefault(alias.name, renamed.get(module, module))


def remove_shims(*, dry_run: bool, log: list[str]) -> None:
    for rel in SHIMS:
        path = ROOT / rel
        if not path.exists():
            continue
        log.append(f"git rm {rel}")
        if dry_run:
            continue
        if git("ls-files", "--", rel).strip():
            git("rm", "-q", "-f", rel)
        else:
            path.unlink()
        folder = path.parent
        pycache = folder / "__pycache__"
        if pycache.is_dir() and not any(p.suffix != ".pyc" for p in pycache.iterdir()):
            shutil.rmtree(pycache, ignore_errors=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _name(old: str) -> re.Pattern[str]:
    """``old`` as a whole dotted name or path (not a prefix of a longer one)."""
    return re.compile(r"(?<![\w.])" + re.escape(old) + r"(?![\w])")


_DOTTED = [(_name(old), new) for old, new in DOTTED]
_PATHS = [(_name(old), new) for old, new in PATHS]


def rewrite_names(text: str) -> str:
    for pattern, new in (*_DOTTED, *_PATHS):
        text = pattern.sub(new, text)
    return text


def _rewrite_import_line(
    match: re.Match[str], rename: tuple[str, str, str, str]
) -> tuple[str, bool]:
    """One ``from package import ...`` line with the renamed module; whether it was imported
    without an alias."""
    package, old, new_package, new = rename
    names = match.group("names")
    parts = [p.strip() for p in names.split("#", 1)[0].split(",")]
    moved = [p for p in parts if p.split(" as ")[0].strip() == old]
    if not moved:
        return match.group(0), False
    kept = [p for p in parts if p.split(" as ")[0].strip() != old]
    comment = "  #" + names.split("#", 1)[1] if "#" in names else ""
    indent, bare, out = match.group("indent"), False, []
    for part in moved:
        alias = part.split(" as ")[1].strip() if " as " in part else None
        bare = bare or alias is None
        alias_text = f" as {alias}" if alias and alias != new else ""
        out.append(f"{indent}from {new_package} import {new}{alias_text}")
    if kept:
        out.insert(0, f"{indent}from {package} import {', '.join(kept)}")
    out[0] += comment
    return "\n".join(out), bare


def rewrite_module_imports(text: str) -> str:
    """``from package import old [as alias]`` -> the new module (and ``old.`` in the file
    when it was imported without an alias)."""
    for rename in MODULES:
        package, old, _, new = rename
        line = re.compile(
            r"^(?P<indent>[ \t]*)from " + re.escape(package) + r" import (?P<names>[^(\n]+)$",
            re.MULTILINE,
        )
        bare_any = False
        pieces, last = [], 0
        for match in line.finditer(text):
            replaced, bare = _rewrite_import_line(match, rename)
            bare_any = bare_any or bare
            pieces += [text[last : match.start()], replaced]
            last = match.end()
        text = "".join(pieces) + text[last:]
        if bare_any and old != new:
            text = re.sub(r"(?<![\w.])" + re.escape(old) + r"\.", new + ".", text)
    return text


def rewrite_shim_imports(text: str) -> str:
    """Imports from the removed evaluation shim -> imports from the defining modules."""
    if SHIM_MODULE not in text:
        return text
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    lines = text.splitlines(keepends=True)
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == SHIM_MODULE]
    for node in sorted(nodes, key=lambda n: n.lineno, reverse=True):
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        original = "".join(lines[first : last + 1])
        noqa = "  # noqa: E402" if "noqa: E402" in original else ""
        indent = " " * node.col_offset
        by_module: dict[str, list[str]] = {}
        for alias in node.names:
            module = SHIM_NAMES.get(alias.name)
            if module is None:
                raise SystemExit(f"{SHIM_MODULE}.{alias.name}: unknown name; add it to SHIM_NAMES")
            written = alias.name + (f" as {alias.asname}" if alias.asname else "")
            by_module.setdefault(module, []).append(written)
        new_lines = []
        for module, names in sorted(by_module.items()):
            head = f"{indent}from histolib_train.evaluation.{module} import "
            one = head + ", ".join(names) + noqa
            if len(one) <= 100:
                new_lines.append(one + "\n")
            else:
                body = "".join(f"{indent}    {name},\n" for name in names)
                new_lines.append(f"{head}({noqa}\n{body}{indent})\n")
            noqa = ""
        lines[first : last + 1] = new_lines
    text = "".join(lines)
    # Prose: histolib_train.evaluation.evaluate.NAME -> the defining module; the bare shim name
    # -> the package.
    for name, module in SHIM_NAMES.items():
        text = text.replace(f"{SHIM_MODULE}.{name}", f"histolib_train.evaluation.{module}.{name}")
    return _name(SHIM_MODULE).sub("histolib_train.evaluation", text)


def drop_lines(text: str) -> str:
    for line in DROPPED_LINES:
        text = text.replace(line, "")
    return text


def text_files() -> Iterable[Path]:
    listed = git("ls-files", "-co", "--exclude-standard").splitlines()
    for rel in sorted(set(listed)):
        path = ROOT / rel
        if rel in UNTOUCHED or path.suffix not in TEXT_SUFFIXES or not path.is_file():
            continue
        yield path


def rewrite_tree(*, dry_run: bool, log: list[str]) -> list[Path]:
    changed = []
    for path in text_files():
        text = path.read_text(encoding="utf-8")
        new = rewrite_names(text)
        if path.suffix == ".py":
            new = rewrite_shim_imports(rewrite_module_imports(new))
        if path.name == "pyproject.toml":
            new = drop_lines(new)
        if new != text:
            changed.append(path)
            log.append(f"rewrote {path.relative_to(ROOT)}")
            if not dry_run:
                path.write_text(new, encoding="utf-8")
    return changed


def sort_imports(paths: list[Path]) -> None:
    """Re-sort the imports of the rewritten Python files (import order only)."""
    py = [str(p) for p in paths if p.suffix == ".py" and p.exists()]
    if not py:
        return
    ruff = [sys.executable, "-m", "ruff"]
    subprocess.run(
        [*ruff, "check", "--select", "I001", "--fix", "--quiet", *py],
        cwd=ROOT,
        check=False,
        capture_output=True,
    )
    # A longer name can push a docstring line past the limit: say where, to re-wrap by hand.
    long_lines = subprocess.run(
        [*ruff, "check", "--select", "E501", "--output-format", "concise", "--quiet", *py],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if long_lines:
        print("re-wrap these lines by hand:\n" + long_lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="list, change nothing")
    args = parser.parse_args(argv)
    log: list[str] = []
    for old, new in MOVES:
        move(old, new, dry_run=args.dry_run, log=log)
    learn_shim_names()
    remove_shims(dry_run=args.dry_run, log=log)
    changed = rewrite_tree(dry_run=args.dry_run, log=log)
    if not args.dry_run:
        sort_imports(changed)
    print("\n".join(log) if log else "nothing to rename: the tree is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
