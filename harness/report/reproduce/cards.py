"""Paper cards (harness/report/reproduce/papers/<name>.yaml): the experiment a reproduction runs, its scales
(overrides on top of conf/experiment/<experiment>.yaml), how records map to the paper's table, the published numbers
and the claims."""

from pathlib import Path

import yaml

PAPERS = Path(__file__).resolve().parent / "papers"  # shipped with the package (pyproject: package-data)
SCALES = ("ci", "small", "full")
SEEDS = ("mean", "max")  # a card's `seeds`: our seeds reduced as the paper reduces its own (default mean)
REQUIRED = ("title", "experiment", "metric", "split", "row", "columns", "scales", "published", "claims")
# The ci scale checks the pipeline only, so it is a few steps whatever the experiment sets (an experiment's own
# trainer fields, such as max_steps 400,000, win over a trainer group chosen on the command line).
CI_STEPS = [
    "trainer.max_steps=4",
    "trainer.epochs=null",
    "trainer.eval_every=2",
    "trainer.warmup_steps=1",
    "trainer.batch_size=8",
]


def names() -> list[str]:
    return sorted(p.stem for p in PAPERS.glob("*.yaml"))


def overrides(card: dict, scale: str) -> list[str]:
    """The archbench overrides of a card at a scale: the card's own, then for ci the few steps of CI_STEPS."""
    return [*map(str, card["scales"][scale]), *(CI_STEPS if scale == "ci" else [])]


def load(name: str) -> dict:
    """The card `name`, checked: every field present, every scale a list of key=value overrides, published rows as
    long as their field list, every claim of a known check."""
    from harness.report.reproduce.claims import CHECKS

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
        raise ValueError(
            f"{path}: published.fields={published.get('fields')} must be the row and column fields then value: {fields}"
        )
    for row in published["rows"]:
        if len(row) != len(fields):
            raise ValueError(f"{path}: published row {row} must have {len(fields)} values ({', '.join(fields)})")
    if card.setdefault("seeds", "mean") not in SEEDS:  # how the paper reduces its seeds: mean, or the best one
        raise ValueError(f"{path}: seeds={card['seeds']!r} must be one of {', '.join(SEEDS)}")
    for claim in card["claims"]:
        if claim.get("check") not in CHECKS:
            raise ValueError(f"{path}: claim check={claim.get('check')!r} must be one of {', '.join(CHECKS)}")
    card["name"] = name
    return card
