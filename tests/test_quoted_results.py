"""Results quoted in prose stay those of the committed tables.

The README, the notebooks' markdown and the docs quote figures of the committed report
(``figures/*.md``) in the paragraphs that cite them. When the report is rebuilt with other
results, the tables change and the prose does not: every number with two decimals in a
paragraph that cites ``figures/<table>.md`` must appear in one of the tables it cites,
unless it is listed below as derived from them.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CITED = re.compile(r"figures/(\w+)\.md")
TWO_DECIMALS = re.compile(r"(?<![\d.])[-+]?(\d{1,3}\.\d{2})(?!\d)")
#: Numbers in citing paragraphs that are not cells of the tables: (file, number) -> what it is.
DERIVED = {
    ("README.md", "5.08"): "the oracle-taught student minus plain fine-tuning on test (python -m emolib gap)",
    ("README.md", "79.58"): "the oracle-taught student's validation UA (python -m emolib gap)",
    ("README.md", "75.42"): "plain fine-tuning's validation UA (python -m emolib gap)",
}


def _prose() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "notebooks").rglob("*.py")), *sorted((ROOT / "docs").glob("*.md"))]


def _paragraphs(path: Path) -> list[str]:
    # a blank line ends a paragraph; in a percent-format notebook, a bare "#" line does
    return re.split(r"\n[ \t]*#?[ \t]*\n", path.read_text(encoding="utf-8"))


def test_every_table_a_paragraph_cites_exists():
    for path in _prose():
        for paragraph in _paragraphs(path):
            for stem in CITED.findall(paragraph):
                assert (ROOT / "figures" / f"{stem}.md").is_file(), f"{path.relative_to(ROOT)} cites figures/{stem}.md"


@pytest.mark.parametrize("path", _prose(), ids=lambda p: str(p.relative_to(ROOT)))
def test_numbers_quoted_beside_a_table_are_in_it(path):
    name = str(path.relative_to(ROOT))
    stale = []
    for paragraph in _paragraphs(path):
        stems = sorted(set(CITED.findall(paragraph)))
        if not stems:
            continue
        cells = "\n".join((ROOT / "figures" / f"{stem}.md").read_text(encoding="utf-8") for stem in stems)
        stale += [f"{number} (cites {', '.join(stems)}): {paragraph.strip()[:90]!r}"
                  for number in TWO_DECIMALS.findall(paragraph)
                  if number not in cells and (name, number) not in DERIVED]
    assert not stale, f"{name} quotes numbers its cited tables no longer hold:\n" + "\n".join(stale)


def test_the_derived_numbers_are_still_quoted():
    """An entry of DERIVED that the prose no longer quotes is dropped, not kept for ever."""
    for (name, number), _ in DERIVED.items():
        assert number in (ROOT / name).read_text(encoding="utf-8"), (name, number)
