"""Paper cards (harness/reproduce/papers/<name>.yaml): the experiment a reproduction runs, its scales (overrides on
top of conf/experiment/<experiment>.yaml), how records map to the paper's table, the published numbers and the
claims."""

from pathlib import Path

import yaml

PAPERS = Path(__file__).resolve().parent / "papers"  # shipped with the package (pyproject: package-data)
SCALES = ("ci", "small", "full")
REQUIRED = ("title", "experiment", "metric", "split", "row", "columns", "scales", "published", "claims")


def names() -> list[str]:
    return sorted(p.stem for p in PAPERS.glob("*.yaml"))


def load(name: str) -> dict:
    """The card `name`, checked: every field present, every scale a list of key=value overrides, published rows as
    long as their field list, every claim of a known check."""
    from harness.reproduce.claims import CHECKS

    path = PAPERS / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"reproduction {name!r} not found: choose from {', '.join(names())}")
    card = yaml.safe_load(path.read_text())
    missing = [k for k in REQUIRED if k not in card]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    for scale in SCALES:
        overrides = card["scales"].get(scale)
        if not isinstance(overrides, list) or any("=" not in str(o) for o in overrides):
            raise ValueError(f"{path}: scales.{scale} must be a list of key=value overrides, got {overrides!r}")
    fields = [*card["row"], *card["columns"], "value"]
    published = card["published"]
    if published.get("fields") != fields:
        raise ValueError(f"{path}: published.fields={published.get('fields')} must be the row and column fields "
                         f"then value: {fields}")
    for row in published["rows"]:
        if len(row) != len(fields):
            raise ValueError(f"{path}: published row {row} must have {len(fields)} values ({', '.join(fields)})")
    for claim in card["claims"]:
        if claim.get("check") not in CHECKS:
            raise ValueError(f"{path}: claim check={claim.get('check')!r} must be one of {', '.join(CHECKS)}")
    card["name"] = name
    return card
