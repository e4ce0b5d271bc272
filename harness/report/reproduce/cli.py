"""`archbench-reproduce NAME [--scale ci|small|full] [--results DIR]`: run a paper's experiment
(conf/experiment/<experiment>.yaml with the scale's overrides from harness/report/reproduce/papers/NAME.yaml), then
print the leaderboard of its records, our numbers beside the paper's, and PASS / FAIL / N/A for each of the paper's
claims. `archbench-reproduce --list` lists the reproductions.
Runs already completed are skipped, so a rerun only reprints."""

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from harness.record.results import load_records
from harness.report import board, render
from harness.report.reproduce import cards, claims, compare


def command(card: dict, scale: str, extra: Sequence[str] = ()) -> list[str]:
    """The archbench call of a reproduction at a scale: its experiment, name <name>_<scale>, the scale's overrides."""
    return [
        sys.executable,
        "-c",
        "from harness.run.cli import main; main()",
        f"experiment={card['experiment']}",
        f"name={card['name']}_{scale}",
        *cards.overrides(card, scale),
        *extra,
    ]


def run(card: dict, scale: str, results: Path, extra: Sequence[str] = (), quiet: bool = False) -> int:
    env = {**os.environ, "ARCHBENCH_RESULTS": str(results)}
    out = subprocess.DEVNULL if quiet else None
    return subprocess.run(command(card, scale, extra), env=env, stdout=out, stderr=out).returncode


def check_claims(card: dict, table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: its text, the verdict and what it saw on our numbers, and the verdict on the paper's."""
    higher = compare.higher_is_better(card["metric"])
    columns = list(card["columns"])
    rows = []
    for claim in card["claims"]:
        ours, seen = claims.check(claim, table, columns, "ours", higher)
        paper, paper_seen = claims.check(claim, table, columns, "paper", higher)
        rows.append(
            {
                "claim": claim.get("text", claim["check"]),
                "ours": ours,
                "seen": seen,
                "paper": paper,
                "paper_seen": paper_seen,
            }
        )
    return pd.DataFrame(rows)


def report(card: dict, scale: str, records: list[dict]) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The text printed for a reproduction, with the side-by-side table and the claims behind it."""
    table = compare.side_by_side(records, card)
    verdicts = check_claims(card, table)
    metric = f"{card['split']}/{card['metric']}"
    lines = [
        f"## {card['title']} ({card['name']}, scale {scale})",
        "",
        f"ours: {metric}"
        + (f", best over {', '.join(card['select'])} on val" if card.get("select") else "")
        + f"; paper: {' '.join(str(card['published']['source']).split())}",
        "",
        compare.render(table, card),
        "",
        "claims (checked on ours, and on the paper's numbers):",
        "",
    ]
    for v in verdicts.itertuples():
        lines.append(f"- {v.ours:4}  {v.claim}: {v.seen}  [paper: {v.paper}]")
    return "\n".join(lines), table, verdicts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="archbench-reproduce", description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?", help="a reproduction (see --list)")
    p.add_argument("overrides", nargs="*", help="more archbench overrides, e.g. trainer.device=cuda")
    p.add_argument(
        "--scale",
        choices=cards.SCALES,
        default="small",
        help="ci: seconds; small: a CPU hour; full: the paper's protocol (GPU)",
    )
    p.add_argument("--results", type=Path, default=Path("results/reproduce"), help="root of the result records")
    p.add_argument("--no-run", action="store_true", help="only report on the records already there")
    p.add_argument("--list", action="store_true", help="list the reproductions")
    args = p.parse_intermixed_args(argv)  # options before, between or after the overrides
    if args.list:
        for name in cards.names():
            card = cards.load(name)
            print(f"{name:26} {card['title']}  (conf/experiment/{card['experiment']}.yaml)")
        return
    if not args.name:
        p.error("name a reproduction (archbench-reproduce --list)")
    try:
        card = cards.load(args.name)
    except ValueError as e:
        p.error(str(e))
    results = args.results.resolve()
    if not args.no_run:
        code = run(card, args.scale, results, args.overrides)
        if code != 0:
            print(
                f"archbench-reproduce: the runs exited with {code}; reporting on the records there are", file=sys.stderr
            )
    folder = results / f"{card['name']}_{args.scale}"
    records = load_records([folder])
    if not records:
        sys.exit(f"archbench-reproduce: no result records under {folder}")
    if args.no_run:  # a run has just printed its sweep's board
        try:
            print(render.markdown(board.build(records, card["metric"], card["split"], card.get("select", []))) + "\n")
        except Exception as e:  # the comparison below does not depend on the board
            print(f"(no leaderboard: {e})\n")
    try:
        text, _, _ = report(card, args.scale, records)
    except ValueError as e:  # runs of different configs in one cell (compare.same_setup)
        p.exit(2, f"archbench-reproduce: {folder}: {e}\n")
    print(text)
    (folder / "comparison.md").write_text(text + "\n")
    print(f"\nwritten: {folder / 'comparison.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
