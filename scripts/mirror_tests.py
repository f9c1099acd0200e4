"""Move tests to mirror the packages (issue 20, item 7), and import ``benchmarks`` as a package.

Run from anywhere: ``python scripts/mirror_tests.py`` (``--dry-run`` lists what it would do).

1. ``benchmarks/`` becomes a package (``benchmarks/__init__.py``).
2. Benchmark tests (``test_benchmark_<name>.py`` or ``test_<name>_bench.py`` anywhere under
   ``tests/unit/``) move to ``tests/benchmarks/test_<name>.py``.
3. The tests of ``histolib_train`` move from the flat ``tests/unit/train/`` into
   ``tests/unit/train/<subpackage>/``: by :data:`TRAIN_TESTS`, else by the subpackage the file
   names most often (a test of a top-level module such as ``precision`` stays where it is).
4. In every test file: the ``sys.path`` insertions that made ``benchmarks/`` importable are
   removed, a benchmark imported by its bare name is imported as ``benchmarks.<name>``, and a
   moved file's ``Path(__file__).resolve().parents[N]`` is corrected for its new depth; unused
   imports and variables this leaves are removed (``ruff --select F401,F841``).

It is idempotent (a second run changes nothing) and handles test files added later under the
old places (a branch merged after the move): run it again after merging.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "tests" / "unit" / "train"
BENCH_TESTS = ROOT / "tests" / "benchmarks"

#: Test file -> the histolib_train subpackage it tests (where the names alone mislead).
TRAIN_TESTS = {
    "test_conditional.py": "models",
    "test_models.py": "models",
    "test_distributed.py": "training",
    "test_from_slides.py": "training",
    "test_protocol.py": "training",
    "test_train_data.py": "training",
    "test_trainer.py": "training",
    "test_eval_report.py": "evaluation",
    "test_evaluate.py": "evaluation",
    "test_evaluate_selection.py": "evaluation",
    "test_experiment.py": "experiment",
    "test_glass.py": "transfer",
    "test_transfer.py": "transfer",
    "test_transfer_cluster.py": "transfer",
    "test_precision.py": "",  # histolib_train.precision: a top-level module
}

BENCH_INIT = '''"""The benchmark scripts of histolib, each run as ``python benchmarks/<name>.py``.

A package so that the tests import them by name (``from benchmarks import tiling``); see
``benchmarks/README.md`` for what each measures.
"""
'''

_BENCH_NAME = re.compile(r"^test_(?:benchmark_(?P<a>\w+)|(?P<b>\w+)_bench)\.py$")
_SYS_PATH = re.compile(
    r"^(?P<i>[ \t]*)if str\((?P<v>\w+)(?: / \"benchmarks\")?\) not in sys\.path:\n"
    r"(?P=i)[ \t]+sys\.path\.insert\(0, str\((?P=v)(?: / \"benchmarks\")?\)\)\n",
    re.MULTILINE,
)
_LOCAL_ROOT = re.compile(
    r"^[ \t]+(?P<v>\w+) = Path\(__file__\)\.resolve\(\)\.parents\[\d+\]\n", re.MULTILINE
)
_DEPTH = re.compile(r"(Path\(__file__\)\.resolve\(\)\.parents\[)(\d+)(\])")


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True)
    return done.stdout


def _subpackages() -> set[str]:
    folder = ROOT / "histolib_train"
    return {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}


def train_target(path: Path) -> str:
    """The subpackage folder a test of ``tests/unit/train/`` belongs in ("" = stay)."""
    if path.name in TRAIN_TESTS:
        return TRAIN_TESTS[path.name]
    named = re.findall(r"histolib_train\.(\w+)", path.read_text(encoding="utf-8"))
    counts = Counter(n for n in named if n in _subpackages())
    if not counts:
        return ""
    (best, n), *rest = counts.most_common()
    return best if not rest or rest[0][1] < n else ""


def planned_moves() -> list[tuple[Path, Path]]:
    moves = []
    for path in sorted((ROOT / "tests" / "unit").rglob("test_*.py")):
        match = _BENCH_NAME.match(path.name)
        if match:
            moves.append((path, BENCH_TESTS / f"test_{match['a'] or match['b']}.py"))
        elif path.parent == TRAIN:
            target = train_target(path)
            if target:
                moves.append((path, TRAIN / target / path.name))
    return [(old, new) for old, new in moves if not new.exists()]


def _ensure_package(folder: Path, dry_run: bool, log: list[str]) -> None:
    init = folder / "__init__.py"
    if init.exists():
        return
    log.append(f"create {init.relative_to(ROOT)}")
    if not dry_run:
        folder.mkdir(parents=True, exist_ok=True)
        init.write_text("")
        git("add", str(init.relative_to(ROOT)))


def _depth(path: Path) -> int:
    """``parents[N]`` of a file at ``path`` that is the repository root."""
    return len(path.relative_to(ROOT).parts) - 1


def rewrite(text: str, *, old: Path | None, new: Path) -> str:
    """A test file's imports of ``benchmarks`` as a package; its root depth at ``new``."""
    text = _SYS_PATH.sub("", text)
    for local in _LOCAL_ROOT.finditer(text):  # a local root only the insertion used
        if len(re.findall(rf"\b{local['v']}\b", text)) == 1:
            text = text.replace(local[0], "", 1)
    bench = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__"}
    text = re.sub(
        r"import_module\(\"(\w+)\"\)",
        lambda m: f'import_module("benchmarks.{m[1]}")' if m[1] in bench else m[0],
        text,
    )
    if old is not None and _depth(old) != _depth(new):
        shift = _depth(new) - _depth(old)
        text = _DEPTH.sub(lambda m: f"{m[1]}{int(m[2]) + shift}{m[3]}", text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="list, change nothing")
    args = parser.parse_args(argv)
    log: list[str] = []
    init = ROOT / "benchmarks" / "__init__.py"
    if not init.exists():
        log.append("create benchmarks/__init__.py")
        if not args.dry_run:
            init.write_text(BENCH_INIT)
            git("add", "benchmarks/__init__.py")
    changed: list[Path] = []
    for old, new in planned_moves():
        _ensure_package(new.parent, args.dry_run, log)
        log.append(f"git mv {old.relative_to(ROOT)} {new.relative_to(ROOT)}")
        if args.dry_run:
            continue
        text = old.read_text(encoding="utf-8")
        git("mv", str(old.relative_to(ROOT)), str(new.relative_to(ROOT)))
        new.write_text(rewrite(text, old=old, new=new), encoding="utf-8")
        changed.append(new)
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path in changed or "__pycache__" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if rewrite(text, old=None, new=path) != text:
            log.append(f"rewrote {path.relative_to(ROOT)}")
            if not args.dry_run:
                path.write_text(rewrite(text, old=None, new=path), encoding="utf-8")
                changed.append(path)
    if changed:
        ruff = [sys.executable, "-m", "ruff", "check", "--select", "F401,I001", "--fix"]
        subprocess.run(
            [*ruff, "--quiet", *map(str, changed)],
            cwd=ROOT,
            check=False,
            capture_output=True,
        )
    print("\n".join(log) if log else "nothing to move: the tests mirror the packages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
