"""The docs keep up with conf/: docs/zoo.md's table has one row per option of conf/model/mixer/, and no other, so a
mixer added without its row (family, paper, reference, state, times) fails here."""

import re

from tests.conftest import ROOT, options

ZOO = ROOT / "docs" / "zoo.md"


def zoo_rows() -> list[str]:
    """The option named in the first cell of each row of the table under '## The table'."""
    section = ZOO.read_text().split("\n## The table\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert rows[0].startswith("| option |") and set(rows[1]) <= set("|-"), "the table's header changed"
    names = []
    for row in rows[2:]:
        first = row.split("|")[1].strip()
        match = re.fullmatch(r"`([a-z0-9_]+)`", first)
        assert match, f"docs/zoo.md: a row's first cell is not an option in backticks: {first!r}"
        names.append(match.group(1))
    return names


def test_zoo_has_one_row_per_mixer_option():
    rows = zoo_rows()
    mixers = options("model/mixer")
    duplicated = sorted({n for n in rows if rows.count(n) > 1})
    missing = sorted(set(mixers) - set(rows))
    unknown = sorted(set(rows) - set(mixers))
    assert not duplicated, f"docs/zoo.md: rows given twice: {duplicated}"
    assert not missing, f"docs/zoo.md: no row for mixer option(s) {missing} of conf/model/mixer/"
    assert not unknown, f"docs/zoo.md: rows for {unknown}, which are no option of conf/model/mixer/"
