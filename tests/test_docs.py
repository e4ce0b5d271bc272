"""The docs keep up with conf/ and with each other: docs/zoo.md's table has one row per option of conf/model/mixer/, and
no other, so a mixer added without its row (family, paper, reference, state, times) fails here; README's front page
is the commands, their board and links (dated results live in docs/results.md), links every page of docs/, and every
link in README and docs/ reaches a file and, with `#`, one of its headings."""

import re

import pytest

from tests.conftest import ROOT, options

ZOO = ROOT / "docs" / "zoo.md"
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))


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


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_front_page_is_commands_board_and_links():
    text = README.read_text()
    assert [line for line in text.splitlines() if line.startswith("#")] == [
        "# archbench",
        "## Quickstart",
        "## Where to go next",
    ], "README: dated results and other sections belong in docs/ (docs/results.md), linked from 'Where to go next'"
    commands = text.split("## Quickstart", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert len(commands) == 2 and commands[1] == "pytest", commands
    install = commands[0].split(" && archbench ")[0]
    assert install in (ROOT / ".ci" / "run").read_text(), f".ci/run no longer installs as README says: {install}"


def test_readme_links_every_page_of_docs():
    text = README.read_text()
    unlinked = [p.name for p in PAGES if f"(docs/{p.name})" not in text]
    assert not unlinked, f"README's 'Where to go next' links no row to {unlinked}"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_every_link_reaches_its_file_and_heading(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = page.parent / path if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md":
            headings = {slug(line.lstrip("#")) for line in linked.read_text().splitlines() if line.startswith("#")}
            broken += [target] if anchor not in headings else []
    assert not broken, f"{page.name}: links to nothing: {broken}"
