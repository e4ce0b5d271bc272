"""Racing (`archbench -m hydra/sweeper=race ...`): seeds go where the verdict is still open (docs/racing.md). This
module is the procedure and its view on the board; the sweeper that runs the jobs is harness/run/race.py.

The sweep grammar is the ordinary one (`model/mixer=a,b,c task=x,y`); every combination is a cell. Each cell first
gets seeds 0..min_seeds-1; after each round the records are read back and, per column of the board (a task
setting), every variant is tested against the column's leader on the *validation* split by default (the board
reports test): one-sided t-test that it is below the leader by more than the practical margin delta (the board's,
harness/report/marking.py), paired on the seeds the two cells share (Welch's where they share fewer than 2), at
level alpha / (looks x rivals), looks = max_seeds - min_seeds + 1 (Bonferroni over the rounds and the rivals), so
the best variant of a column is marked worse with probability at most alpha however many rounds the race looks at.
A cell marked worse gets no more seeds; the others get one more seed each round, until their column has a single
survivor, max_seeds, or the budget. Seeds are consecutive, so every run is an ordinary run of an ordinary sweep:
skip-completed, resume, launchers and wandb work unchanged, and a rerun replays the race from its records.

The decisions are a function of the board's long table and the runs' values alone (`decide`): a cell with fewer
seeds than the most its column got was marked worse at the round it stopped; the others are tested afresh. Nothing
else is remembered.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig

from harness import grammar
from harness.report import BoardError
from tasks.registry import LOWER_IS_BETTER

if TYPE_CHECKING:  # pandas and the board: loaded when a race is decided, not at every start
    import pandas as pd
    from numpy.typing import ArrayLike

    from harness.report.board import Board


# --- the procedure: pure functions of the board's long table ------------------------------------------------------


def level(alpha: float, looks: int, variants: "ArrayLike") -> np.ndarray:
    """The level of each one-sided test: alpha spread over every look and every rival of the best (Bonferroni)."""
    return alpha / (looks * np.maximum(np.asarray(variants) - 1, 1))


def decide(
    long: "pd.DataFrame",
    alpha: float,
    min_seeds: int,
    max_seeds: int,
    higher_is_better: bool = True,
    delta: float = 0.0,
    values: "pd.DataFrame | None" = None,
) -> "pd.DataFrame":
    """Per cell of `long` (columns variant, column, mean, std, n, failed): seeds (runs launched = n + failed),
    decision (leader | tied | worse | untested), p (one-sided p-value of the leader being better by more than
    `delta`: paired t-test on the seeds both completed where `values` (variant, column, seed, value per run) are
    given and share 2 or more seeds, else Welch; NaN where not tested), paired, level (the test's level) and open
    (gets another seed). See the module docstring."""
    import pandas as pd

    from harness.report import stats

    out = long[["variant", "column", "mean", "std", "n"]].copy()
    out["seeds"] = long["n"] + long.get("failed", 0)
    most = out.groupby("column")["seeds"].transform("max")
    alive = out["seeds"] == most  # the others stopped at an earlier round: marked worse
    testable = alive & (out["n"] >= 2)
    score = out["mean"].where(testable) * (1 if higher_is_better else -1)
    best = score.groupby(out["column"]).transform("max")
    is_leader = testable & (score == best)
    is_leader &= ~is_leader.groupby(out["column"]).cumsum().gt(1)  # equal means: the first one leads
    lead = out[is_leader].set_index("column").reindex(out["column"])
    sign = 1 if higher_is_better else -1
    bar = lead["mean"].to_numpy() - sign * delta  # the leader's mean less the margin: worse means below this
    two_sided = stats.welch_p(out["mean"], out["std"], out["n"], bar, lead["std"].to_numpy(), lead["n"].to_numpy())
    below = sign * (bar - out["mean"].to_numpy()) > 0
    one_sided = np.where(below, two_sided / 2, 1 - two_sided / 2)
    paired = np.full(len(out), np.nan)
    if values is not None:  # the race's cells share their seeds: pair them
        p = stats.paired_p(values, out[is_leader], sign, delta)
        paired = p.reindex(pd.MultiIndex.from_frame(out[["variant", "column"]])).to_numpy()
    out["paired"] = testable & ~is_leader & ~np.isnan(paired)
    out["p"] = np.where(testable & ~is_leader, np.where(out["paired"], paired, one_sided), np.nan)
    out["level"] = level(alpha, max_seeds - min_seeds + 1, out.groupby("column")["variant"].transform("size"))
    worse = ~alive | (out["p"] < out["level"])
    out["decision"] = np.select([is_leader, worse, testable], ["leader", "worse", "tied"], "untested")
    survivors = (~worse).groupby(out["column"]).transform("sum")
    out["open"] = ~worse & (survivors > 1) & (out["seeds"] < max_seeds)
    return out


def view(
    long: "pd.DataFrame",
    alpha: float,
    min_seeds: int,
    max_seeds: int,
    higher_is_better: bool = True,
    delta: float = 0.0,
    on: str = "",
    values: "pd.DataFrame | None" = None,
) -> tuple["pd.DataFrame", list[str]]:
    """The decisions as a view of the board (rows variants, columns as on the board; each cell `mean decision p ·
    seeds`, the mean of the split decided `on`) and its legend: the test, its levels, and the runs spent against the
    runs a fixed allocation reaching the same decisions would have needed (every cell at the most seeds any cell
    got)."""
    import pandas as pd

    d = decide(long, alpha, min_seeds, max_seeds, higher_is_better, delta, values)

    def text(
        r: "pd.Series",
    ) -> str:  # a worse cell with fewer seeds than its column's most was marked at the round it stopped
        mean = "" if pd.isna(r["mean"]) else f"{r['mean']:.3f} "
        p = "" if pd.isna(r["p"]) else f" p={r['p']:.2g}"
        return f"{mean}{r['decision']}{p} · {r['seeds']} seeds"

    table = d.assign(text=d.apply(text, axis=1)).pivot(index="variant", columns="column", values="text")
    table = table.reindex(index=list(dict.fromkeys(d["variant"])), columns=list(dict.fromkeys(d["column"])))
    table.columns.name, table.index.name = None, "variant"
    looks = max_seeds - min_seeds + 1
    levels = ", ".join(f"{c}: {v:.3g}" for c, v in d.groupby("column", sort=False)["level"].first().items())
    spent, most = int(d["seeds"].sum()), int(d["seeds"].max())
    legend = [
        f"Race (docs/racing.md){f' decided on {on}' if on else ''}: seeds {min_seeds}..{max_seeds}, {looks} looks; "
        f"a cell is worse once a one-sided t-test ({'paired by seed' if d['paired'].any() else 'Welch, unpaired'}"
        f"{'; Welch where a cell shares < 2 seeds with the leader' if d['paired'].any() else ''}) puts it below its "
        "column's leader by more than "
        f"delta = {delta:g} at level α/(looks·rivals) ({levels}); the means shown are {on or 'those decided on'}; "
        "the best of a "
        f"column is marked worse with probability ≤ α = {alpha}. tied: not (yet) separable from the leader; a worse "
        "cell with fewer seeds than its column was marked at the round it stopped; p: vs the leader, one-sided.",
        f"runs spent: {spent}; a fixed allocation reaching the same decisions would have needed {len(d) * most} "
        f"(= {len(d)} cells × {most} seeds)",
    ]
    return table.fillna(""), legend


def decisions_markdown(long: "pd.DataFrame", *args: object, **options: object) -> str:
    """`view(long, *args, **options)` as Markdown: the table, then its legend."""
    table, legend = view(long, *args, **options)
    return table.to_markdown() + "\n\n" + "\n".join(legend)


def settings(sweeper: DictConfig | None) -> dict | None:
    """The race's settings from a sweep's `hydra.sweeper` node (multirun.yaml), None if the sweep was no race."""
    if sweeper is None or sweeper.get("_target_") != grammar.RACE_SWEEPER:
        return None
    from harness.report.marking import delta_for  # pandas: loaded when a race is read, not at every start

    # as RaceSweeper.__init__'s defaults
    defaults = {"min_seeds": 2, "max_seeds": 8, "alpha": 0.05, "metric": "accuracy", "split": "val", "eta": 3}
    race = {k: sweeper.get(k, v) if sweeper.get(k) is not None else v for k, v in defaults.items()}
    return race | {"delta": sweeper.get("delta") if sweeper.get("delta") is not None else delta_for(race["metric"])}


def mark(board: "Board", sweeper: DictConfig | None) -> bool:
    """Add the race's decisions to `board` as its view "race" if `sweeper` (a sweep's hydra.sweeper) was a race
    deciding on the board's metric (on the board's split, or on another one of the same runs, such as val where
    the board reports test); returns whether it did."""
    import pandas as pd

    from harness.report.board import summarize

    race = settings(sweeper)
    if race is None or race["metric"] != board.options["metric"] or "*" in board.options["split"]:
        return False
    long = board.long
    if race["split"] != board.options["split"]:  # the same cells and runs, the race's split
        none = pd.DataFrame(columns=["variant", "column", "selected"])
        try:
            long = summarize(board.runs, board.chosen, none, race["metric"], race["split"], board.options["group_by"])
        except BoardError:
            return False
    higher = race["metric"] not in LOWER_IS_BETTER
    on = f"{race['split']}/{race['metric']}"
    args = (race["alpha"], race["min_seeds"], race["max_seeds"], higher, race["delta"], on)
    table, legend = view(long, *args, values=values(board.chosen, on))
    if select := list(board.options["select"]):  # a race over a tuned grid: its halving's runs too
        cell = ["variant", "column"]
        points = int(board.runs.groupby(cell)[select].apply(lambda f: len(f.drop_duplicates())).max())
        legend = [*legend, halving_line(race["eta"], select, points, len(board.runs), long)]
    board.views["race"] = (table, legend)
    return True


def values(chosen: "pd.DataFrame", metric: str) -> "pd.DataFrame":
    """The value of `metric` (split/name) of each chosen run of a board: variant, column, seed, value."""
    import pandas as pd

    value = pd.to_numeric(chosen[f"metric:{metric}"], errors="coerce") if f"metric:{metric}" in chosen else None
    return chosen[["variant", "column", "seed"]].assign(value=value)


def halving_line(eta: int, keys: "Sequence[str]", points: int, spent: int, long: "pd.DataFrame") -> str:
    """The legend line of a race over a tuned grid: the halving, and the runs spent in all (every grid point's runs)
    against the full grid at the seeds the race reached (the most runs of a cell of the board's `long` table)."""
    most = int((long["n"] + long.get("failed", 0)).max())
    full = len(long) * points * most
    return (
        f"tuned grid ({', '.join(keys)}: {points} points per cell) halved on validation first (successive halving, "
        f"keep 1/{eta} per round, one seed a round); runs spent in all: {spent}; the full grid at the seeds the race "
        f"reached would need {full} (= {len(long)} cells × {points} points × {most} seeds)"
    )
