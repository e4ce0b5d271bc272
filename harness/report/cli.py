"""`archbench-board DIR...` (or `--wandb ENTITY/PROJECT`): the leaderboard of a set of result records
(harness/report/board.py says how it is built). A board that cannot be made is one line and exit code 2."""

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from harness.record import keys as record_keys
from harness.record.results import Scan, scan
from harness.report import BoardError, board, marking, race, render

FORMATS = ("md", "csv", "html", "tex")


def _formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise argparse.ArgumentTypeError(f"--format {','.join(bad)}: choose from {','.join(FORMATS)}")
    return formats


def _number(flag: str, ok: Callable[[float], bool], allowed: str) -> Callable[[str], float]:
    """An argparse type: a number for which ok(value) holds, else one line naming the flag and what is allowed."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{flag} {text}: {allowed}")
        return value

    return parse


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except BoardError as e:
        print(f"archbench-board: error: {e}", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    """archbench-board's options."""
    p = argparse.ArgumentParser(prog="archbench-board", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="*", type=Path, help="folders searched recursively for result.json")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs of a wandb project instead of folders")
    p.add_argument("--wandb-group", metavar="NAME", help="only the wandb runs of this group (sweep name)")
    p.add_argument("--metric", default="accuracy", help="accuracy (higher is better) or loss (lower is better)")
    p.add_argument(
        "--split",
        default="test",
        help="the split reported (test, or an extra one like test@512); with "
        "a *, every matching split as its own column (test*: extrapolation to every test length)",
    )
    p.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="KEY",
        help="a swept config key (e.g. trainer.lr): best value per cell on val, test reported on it",
    )
    p.add_argument(
        "--solved",
        type=_number("--solved", lambda v: 0 <= v <= 1, "an accuracy in [0, 1]"),
        default=marking.SOLVED,
        help=f"accuracy at which a seed solves the task: cells show k/n ≥ it (default {marking.SOLVED})",
    )
    p.add_argument(
        "--delta",
        type=_number("--delta", lambda v: v >= 0, "a difference of 0 or more, in the metric's units"),
        help="the smallest difference that matters: * marks a cell worse only if it is below the best by more "
        f"(default per metric: {', '.join(f'{k} {v:g}' for k, v in marking.DELTA.items())}; others 0)",
    )
    p.add_argument("--group-by", metavar="KEY", help="a config key (e.g. model.d_model) whose values split columns")
    p.add_argument(
        "--matched",
        choices=("params", "flops"),
        help="also the metric at equal non-embedding params "
        "or equal training FLOPs, interpolated between the swept sizes",
    )
    p.add_argument(
        "--size",
        action="append",
        metavar="KEY",
        help=f"size fields for --matched (default {', '.join(record_keys.SIZE_KEYS)})",
    )
    p.add_argument(
        "--aggregate",
        metavar="KEY",
        help="average settings by this config key, then over its values (MAD's score with task.family)",
    )
    p.add_argument(
        "--mad",
        action="store_true",
        help="MAD score: --aggregate task.family, --select trainer.lr --select trainer.weight_decay unless given",
    )
    p.add_argument(
        "--sensitivity",
        metavar="KEY",
        help="also the val and test metric at each value of this swept key (e.g. trainer.lr) per variant, with "
        "--plots a plot of it (harness/report/sensitivity.py)",
    )
    p.add_argument(
        "--scaling",
        metavar="KEY",
        help="also fit L(C) = a C^-b of the metric (error for accuracy) against training FLOPs per variant "
        "family over this swept size key (e.g. model.d_model, trainer.max_steps): harness/report/scaling.py",
    )
    p.add_argument("--out", type=Path, help="folder to write leaderboard.<format> into")
    p.add_argument("--format", type=_formats, default=["md", "csv"], help="with --out: any of md,csv,html,tex")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write heatmap, learning curves (and --plot-x) PNGs")
    p.add_argument("--plot-x", metavar="KEY", help="with --plots: the metric against this swept key per variant")
    p.add_argument(
        "--pareto",
        metavar="METRIC,COST",
        help="instead of the board: the variants not dominated on "
        "METRIC and COST (e.g. test/accuracy,params) and a plot of the front (harness/report/pareto.py)",
    )
    return p


def _main(argv: list[str] | None) -> None:
    p = parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if bool(args.dirs) == bool(args.wandb):
        p.error("give result folders or --wandb ENTITY/PROJECT (one of the two)")
    if args.mad:
        args.aggregate = args.aggregate or "task.family"
        args.select = args.select or ["trainer.lr", "trainer.weight_decay"]
    records, found = _records(args, p)
    if args.pareto:
        from harness.report import pareto

        return pareto.report(records, args.pareto, args.plots, args.out, args.dirs)
    result = board.build(
        records,
        args.metric,
        args.split,
        args.select,
        args.group_by,
        args.matched,
        tuple(args.size or record_keys.SIZE_KEYS),
        args.aggregate,
        found=found,
        delta=args.delta,
        solved=args.solved,
        sensitivity=args.sensitivity,
        scaling=args.scaling,
    )
    _mark_race(result, args.dirs)
    _write(result, records, args)


def _records(args: argparse.Namespace, p: argparse.ArgumentParser) -> tuple[list[dict], Scan | None]:
    """The records the board reads: a wandb project's runs, or the result files under the folders given (with the
    scan that accounts for every file read)."""
    if args.wandb:
        from harness.report.wandb_runs import fetch_records

        records = fetch_records(args.wandb, group=args.wandb_group, history=args.plots is not None)
        return records, None
    found = scan(args.dirs)
    if not found.records:
        p.error(
            f"no result records under {', '.join(map(str, args.dirs))}"
            + (f" ({found.summary()})" if found.files else "")
        )
    return found.records, found


def _mark_race(result: board.Board, dirs: list[Path]) -> None:
    """The sweep folders given: a race's board shows its decisions (one race, or several run with the same
    settings)."""
    sweepers = [OmegaConf.load(d / "multirun.yaml").hydra.sweeper for d in dirs if (d / "multirun.yaml").is_file()]
    if sweepers and all(race.settings(s) == race.settings(sweepers[0]) for s in sweepers):
        race.mark(result, sweepers[0])


def _write(result: board.Board, records: list[dict], args: argparse.Namespace) -> None:
    """The board on stdout, then its plots and files where asked for."""
    print(render.markdown(result))
    if args.plots:
        from harness.report import plots

        for path in plots.all_plots(result, records, args.plots, args.plot_x):
            print(f"plot: {path}")
    if args.out:
        for path in render.write(result, args.out, args.format, args.plots):
            print(f"written: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
