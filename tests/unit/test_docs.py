"""The documentation stands alone and stays true: links resolve, the command reference is
generated from the app and fresh, the README fits a screen, nothing cites a file outside the
repository."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers_proc import run_python

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGES += [ROOT / name for name in ("ARCHITECTURE.md", "CONTRIBUTING.md", "CHANGELOG.md")]
#: Topic pages written on other branches of this round, linked before they land: a missing one
#: is skipped, not failed. Empty this set once they are merged.
PENDING: set[str] = set()

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#+ (.+)$", re.MULTILINE)


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def relative_links(page: Path) -> list[str]:
    """The relative link targets of a Markdown page (code blocks left out)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [t for t in _LINK.findall(text) if not re.match(r"^[a-z]+:", t)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if not dest.exists():
            if rel not in PENDING:
                broken.append(f"{target} (no such file)")
            continue
        if fragment and dest.suffix == ".md":
            anchors = {anchor(h) for h in _HEADING.findall(dest.read_text(encoding="utf-8"))}
            if fragment not in anchors:
                broken.append(f"{target} (no such heading)")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    assert page.is_file()
    assert broken_links(page) == []


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# A heading\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#a-heading) [gone](c.md) [bad](b.md#nope) [web](https://x.org)\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys.modules[__name__], "ROOT", tmp_path)
        assert broken_links(page) == ["c.md (no such file)", "b.md#nope (no such heading)"]


def test_the_readme_fits_a_screen() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


def test_no_file_cites_a_file_outside_the_repository() -> None:
    outside = "DESIGN" + ".md"  # spelled apart so this file does not cite it
    found = subprocess.run(
        ["git", "grep", "-l", "-F", outside, "--", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode not in (0, 1):
        pytest.skip("not a git checkout")
    assert found.stdout.split() == []


# --------------------------------------------------------------------------- docs/commands.md


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_commands", ROOT / "scripts/gen_commands.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_command_reference_is_fresh() -> None:
    done = run_python(str(ROOT / "scripts" / "gen_commands.py"), "--check", cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_edited_flag_makes_the_reference_stale(tmp_path: Path, monkeypatch) -> None:
    generator = _generator()
    page = generator.render()
    assert "| `--seed <int>` |" in page and "## `histolib train`" in page
    stale = tmp_path / "commands.md"
    stale.write_text(page.replace("`--seed <int>`", "`--random-seed <int>`", 1))
    monkeypatch.setattr(generator, "PAGE", stale)
    monkeypatch.setattr(generator, "ROOT", tmp_path)
    assert generator.main(["--check"]) == 1
    stale.write_text(page)
    assert generator.main(["--check"]) == 0


def test_the_site_builds(tmp_path: Path) -> None:
    """``mkdocs build --strict``: every page of the nav exists and its anchors resolve."""
    pytest.importorskip("mkdocs")
    done = run_python("-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "fidelity" / "index.html").is_file()
