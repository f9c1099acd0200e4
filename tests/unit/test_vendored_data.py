"""The vendored real data in tests/data: complete, listed in PROVENANCE.md, nothing extra."""

from __future__ import annotations

from tests.conftest import TEST_DATA, VENDORED


def test_every_vendored_file_is_present_and_documented() -> None:
    provenance = (TEST_DATA / "PROVENANCE.md").read_text()
    for name in VENDORED:
        assert (TEST_DATA / name).is_file(), name
        assert name in provenance, f"{name} is not listed in PROVENANCE.md"
    present = {
        p.relative_to(TEST_DATA).as_posix()
        for p in TEST_DATA.rglob("*")
        if p.is_file() and p.name != "PROVENANCE.md"
    }
    assert present == set(VENDORED), "tests/data holds files no test reads, or lacks some"
