"""Racing (harness/report/race.py): the procedure's error rate and power over many simulated races fed straight to
`decide` (no training), and a real tiny race through `archbench -m hydra/sweeper=race`."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from harness.report import cli as board_cli
from harness.report import race
from harness.run import cli
from tests.conftest import examples
from tests.sweeps import SMOKE

ALPHA = 0.05


def simulate(means, std, races: int, min_seeds: int, max_seeds: int, alpha: float = ALPHA, seed: int = 0):
    """`races` independent races of variants with true `means` (normal seeds of `std`), each a column of one long
    table, run round by round as the sweeper runs them. Returns the last decisions and the seeds spent."""
    rng = np.random.default_rng(seed)
    k = len(means)
    draws = rng.normal(np.asarray(means, float)[None, :, None], std, size=(races, k, max_seeds))
    seeds = np.full((races, k), min_seeds)
    variant = np.tile([f"v{i}" for i in range(k)], races)
    column = np.repeat([f"r{r}" for r in range(races)], k)
    while True:
        upto = np.arange(max_seeds)[None, None, :] < seeds[..., None]
        values = np.where(upto, draws, np.nan)
        long = pd.DataFrame(
            {
                "variant": variant,
                "column": column,
                "mean": np.nanmean(values, -1).ravel(),
                "std": np.nanstd(values, -1, ddof=1).ravel(),
                "n": seeds.ravel(),
                "failed": 0,
            }
        )
        decided = race.decide(long, alpha, min_seeds, max_seeds)
        more = decided["open"].to_numpy().reshape(races, k)
        if not more.any():
            return decided, seeds
        seeds = seeds + more


def eliminated(decided, races: int, k: int) -> np.ndarray:
    return decided["decision"].to_numpy().reshape(races, k) == "worse"


def tolerance(races: int, rate: float) -> int:
    """The most eliminations a procedure with this error rate shows in `races` races but once in 10,000."""
    return int(sps.binom.ppf(0.9999, races, rate))


@pytest.mark.parametrize(
    "means",
    [[0.5] * 6, [0.5, 0.5, 0.5, 0.45, 0.4, 0.3], [0.5, 0.49, 0.48]],
    ids=["six equal", "three tied at the top", "close"],
)
def test_the_best_variant_is_marked_worse_at_most_at_rate_alpha(means):
    races = 2000
    decided, _ = simulate(means, 0.05, races, min_seeds=2, max_seeds=8)
    out = eliminated(decided, races, len(means))
    best = [i for i, m in enumerate(means) if m == max(means)]
    for i in best:  # each variant with the highest true mean is a best one, and each must survive
        assert out[:, i].sum() <= tolerance(races, ALPHA), (i, out[:, i].mean())


def test_without_the_correction_for_looks_and_rivals_the_error_rate_is_broken():
    """The check above can fail: the same races tested at alpha per test (no Bonferroni) lose the best too often."""
    races, k, looks = 2000, 6, 7
    decided, _ = simulate([0.5] * k, 0.05, races, 2, 8, alpha=ALPHA * looks * (k - 1))
    assert eliminated(decided, races, k)[:, 0].sum() > tolerance(races, ALPHA)


def test_a_clear_leader_is_found_and_the_others_stop_early():
    means, races = [0.9, 0.7, 0.65, 0.6, 0.6, 0.5], 500
    decided, seeds = simulate(means, 0.05, races, min_seeds=2, max_seeds=8)
    d = decided["decision"].to_numpy().reshape(races, len(means))
    assert (d[:, 0] == "leader").mean() >= 0.99
    assert (d[:, 1:] == "worse").mean() >= 0.95
    assert seeds.sum() < 0.75 * races * len(means) * seeds.max()  # well under the fixed allocation


def test_decisions_follow_the_long_table_alone():
    long = pd.DataFrame(
        {
            "variant": ["a", "b", "c", "d", "a", "b"],
            "column": ["x", "x", "x", "x", "y", "y"],
            "mean": [0.9, 0.5, 0.89, 0.3, 0.4, 0.6],
            "std": [0.01, 0.01, 0.05, 0.1, 0.1, 0.1],
            "n": [5, 5, 4, 3, 2, 1],
            "failed": [0, 0, 1, 0, 0, 1],
        }
    )
    d = race.decide(long, ALPHA, 2, 8).set_index(["column", "variant"])
    assert d.loc[("x", "a"), "decision"] == "leader" and d.loc[("x", "a"), "open"]
    assert d.loc[("x", "b"), "decision"] == "worse" and not d.loc[("x", "b"), "open"]  # far below at 5 seeds
    assert d.loc[("x", "c"), "decision"] == "tied" and d.loc[("x", "c"), "seeds"] == 5  # a failed seed counts
    assert d.loc[("x", "d"), "decision"] == "worse" and np.isnan(d.loc[("x", "d"), "p"])  # stopped at 3 seeds
    assert d.loc[("y", "b"), "decision"] == "untested" and d.loc[("y", "a"), "decision"] == "leader"
    assert d.loc[("x", "a"), "level"] == pytest.approx(ALPHA / (7 * 3))
    assert not race.decide(long.assign(n=8, failed=0), ALPHA, 2, 8)["open"].any()  # max_seeds: nothing more
    alone = race.decide(long[long.variant.isin(["a", "b"]) & (long.column == "x")], ALPHA, 2, 8)
    assert not alone["open"].any()  # one survivor: the column is decided
    text = race.decisions_markdown(long, ALPHA, 2, 8)
    assert "| a " in text and "leader" in text and "runs spent: 22" in text and "(= 6 cells × 5 seeds)" in text


@settings(max_examples=examples(30), deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("xyz"), st.floats(0, 1), st.floats(0, 0.3), st.integers(0, 8), st.integers(0, 2)),
        min_size=1,
        max_size=12,
    )
)
def test_every_column_has_one_leader_and_only_open_cells_get_seeds(rows):
    long = pd.DataFrame(rows, columns=["column", "mean", "std", "n", "failed"]).assign(
        variant=lambda f: [f"v{i}" for i in range(len(f))]
    )
    long["mean"], long["std"] = long["mean"].where(long.n > 0), long["std"].where(long.n > 1)
    d = race.decide(long, ALPHA, 2, 8)
    for _, col in d.groupby("column"):
        alive = col.seeds == col.seeds.max()
        assert (col.decision == "leader").sum() == int((alive & (col.n >= 2)).any())
        assert (col.decision[~alive] == "worse").all()
        lead = col[col.decision == "leader"]
        assert (col["mean"][alive & (col.n >= 2)] <= lead["mean"].max()).all()
    assert not (d.open & ((d.decision == "worse") | (d.seeds >= 8))).any()


def test_loss_is_raced_downwards():
    long = pd.DataFrame(
        {
            "variant": ["a", "b"],
            "column": ["x", "x"],
            "mean": [1.0, 2.0],
            "std": [0.01, 0.01],
            "n": [8, 8],
            "failed": [0, 0],
        }
    )
    d = race.decide(long, ALPHA, 2, 8, higher_is_better=False)
    assert d["decision"].tolist() == ["leader", "worse"]


def test_a_margin_keeps_zero_spread_cells_within_it_tied():
    long = pd.DataFrame(
        {"variant": ["a", "b"], "column": ["x", "x"], "mean": [1.0, 0.999], "std": [0.0, 0.0], "n": [8, 8]}
    )
    assert race.decide(long, ALPHA, 2, 8, delta=0.01)["decision"].tolist() == ["leader", "tied"]
    assert race.decide(long, ALPHA, 2, 8, delta=0.0)["decision"].tolist() == ["leader", "worse"]
    far = long.assign(mean=[1.0, 0.9], std=[0.01, 0.01])
    assert race.decide(far, ALPHA, 2, 8, delta=0.01)["decision"].tolist() == ["leader", "worse"]
    low = long.assign(mean=[0.5, 0.505])  # lower is better: 0.505 is within 0.01 of 0.5
    assert race.decide(low, ALPHA, 2, 8, False, delta=0.01)["decision"].tolist() == ["leader", "tied"]


def test_with_the_runs_values_the_race_pairs_by_seed():
    """Seeds that move every variant together (a hard or easy draw of the data): b is 0.02 below a on every seed,
    the seeds spread by 0.1. Welch's test sees the spread and cannot separate; paired on the seeds, b is worse. The
    p-value is scipy's one-sided paired t-test of the differences less delta."""
    seed_effect = np.array([0.5, 0.7, 0.6, 0.8, 0.55, 0.65, 0.75, 0.62])
    a, b = seed_effect + 0.1, seed_effect + 0.08 + np.array([0, 1, -1, 0, 1, -1, 0, 0]) * 0.002
    values = pd.DataFrame(
        {"variant": ["a"] * 8 + ["b"] * 8, "column": "x", "seed": [*range(8), *range(8)], "value": [*a, *b]}
    )
    long = values.groupby(["variant", "column"], as_index=False)["value"].agg(mean="mean", std="std", n="count")
    unpaired = race.decide(long, ALPHA, 2, 8, delta=0.01).set_index("variant")
    assert unpaired.loc["b", "decision"] == "tied" and not unpaired["paired"].any()
    paired = race.decide(long, ALPHA, 2, 8, delta=0.01, values=values).set_index("variant")
    assert paired.loc["b", "decision"] == "worse" and paired.loc["b", "paired"]
    expected = sps.ttest_rel(a - 0.01, b, alternative="greater").pvalue
    assert paired.loc["b", "p"] == pytest.approx(expected)
    assert "paired by seed" in race.decisions_markdown(long, ALPHA, 2, 8, delta=0.01, values=values)


def test_the_race_decides_on_validation_and_the_board_reports_test(tmp_path):
    """Val and test disagree: a leads on val, b on test. The race (split val by default) decides on val: a leads and
    b is worse, while the board's own table reports test. A race run with split=test decides on test."""
    from omegaconf import OmegaConf

    from harness import grammar
    from harness.report import board
    from tests.test_board import record, write_all

    recs = [record("a", "mqar", s, test=0.5 + s / 100, val=0.9 + s / 100) for s in range(8)]
    recs += [record("b", "mqar", s, test=0.9 + s / 100, val=0.5 + s / 100) for s in range(8)]
    write_all(tmp_path, recs)
    sweeper = OmegaConf.create({"_target_": grammar.RACE_SWEEPER, "min_seeds": 2, "max_seeds": 8})
    assert race.settings(sweeper)["split"] == "val" and race.settings(sweeper)["delta"] == 0.01
    result = board.leaderboard([tmp_path])
    assert race.mark(result, sweeper)
    table, legend = result.views["race"]
    assert table.loc["a", "mqar"].startswith("0.935 leader") and " worse " in table.loc["b", "mqar"]
    assert "decided on val/accuracy" in legend[0] and result.table.loc["b", "mqar"].startswith("0.935")
    on_test = board.leaderboard([tmp_path])
    assert race.mark(on_test, OmegaConf.merge(sweeper, {"split": "test"}))
    assert on_test.views["race"][0].loc["b", "mqar"].startswith("0.935 leader")


RACE = [
    "-m",
    "hydra/sweeper=race",
    "model/mixer=attention,gqa",
    "task=mqar",
    "hydra.sweeper.min_seeds=2",
    "hydra.sweeper.max_seeds=3",
    "+hydra.callbacks.leaderboard.plots=false",
    *SMOKE,
]


@pytest.mark.slow  # CI runs it in .ci/run's second command
def test_a_real_race_gives_consecutive_seeds_and_its_decisions_and_a_rerun_trains_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("ARCHBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["archbench", *RACE])
    cli.main()
    out = capsys.readouterr().out
    [first] = [p.parent for p in (tmp_path / "results").rglob("race.md")]
    recs = [json.loads(p.read_text()) for p in first.rglob("result.json")]
    by_mixer = {}
    for r in recs:
        by_mixer.setdefault(r["labels"]["mixer"], []).append(r["seed"])
    assert set(by_mixer) == {"attention", "gqa"}
    assert all(sorted(s) == list(range(len(s))) and 2 <= len(s) <= 3 for s in by_mixer.values()), by_mixer
    assert "| attention" in out and "runs spent:" in out and "leader" in out
    assert f"runs spent: {len(recs)};" in (first / "race.md").read_text()
    board_md = (first / "leaderboard.md").read_text()  # the board itself marks the decisions and the seeds
    assert "Race (docs/racing.md)" in board_md and f"runs spent: {len(recs)};" in board_md and " seeds |" in board_md
    board_cli.main([str(first)])  # and so does archbench-board on the race's folder
    assert f"runs spent: {len(recs)};" in capsys.readouterr().out

    cli.main()  # the same race again: every run is found completed
    out = capsys.readouterr().out
    [second] = [p.parent for p in (tmp_path / "results").rglob("race.md") if p.parent != first]
    again = [json.loads(p.read_text()) for p in second.rglob("result.json")]
    assert sorted((r["run_id"], r["timestamps"]["started"]) for r in again) == sorted(
        (r["run_id"], r["timestamps"]["started"]) for r in recs
    )
    assert "(0 trained by this call" in out

    monkeypatch.setattr(sys, "argv", ["archbench", *RACE, "hydra.sweeper.budget=5"])
    cli.main()  # a budget that the second round would pass: the race stops after the first
    out = capsys.readouterr().out
    # it stops after the first round: for the budget, or because that round already decided every column
    assert "runs spent: 4;" in out and "(0 trained by this call" in out and "stopped: " in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["seed=0,1"], "a race sets the seeds itself"),
        (["hydra.sweeper.min_seeds=1"], "min_seeds"),
        (["hydra.sweeper.delta=-0.1"], "hydra.sweeper.delta=-0.1 must be 0 or more"),
        (["hydra.sweeper.budget=3"], "less than the first round"),
        (["suite=quick", "hydra.sweeper.budget=3"], "2 cells x 3 grid points"),  # its seeds dropped, its lrs a grid
    ],
)
def test_a_race_that_cannot_run_stops_before_training(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setenv("ARCHBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["archbench", *RACE, *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not list(Path(tmp_path).rglob("result.json"))


@pytest.mark.slow  # CI runs it in .ci/run's second command
def test_a_race_over_a_tuned_grid_halves_it_on_val_and_the_board_reports_the_lr_it_kept(tmp_path, monkeypatch, capsys):
    """`tune: [trainer.lr]` with a swept lr: each cell runs seed 0 at every lr, keeps the best third on val (here
    one of two), then races seeds at that lr alone; the board selects the same lr and says so, and the runs spent
    (both lrs' runs) are printed against the full grid."""
    monkeypatch.setenv("ARCHBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)
    args = [*RACE, "tune=[trainer.lr]", "trainer.lr=0.001,0.01"]
    monkeypatch.setattr(sys, "argv", ["archbench", *args])
    cli.main()
    out = capsys.readouterr().out
    [folder] = [p.parent for p in (tmp_path / "results").rglob("race.md")]
    recs = [json.loads(p.read_text()) for p in folder.rglob("result.json")]
    lrs = {}
    for r in recs:
        lrs.setdefault(r["labels"]["mixer"], {}).setdefault(r["config"]["trainer"]["lr"], []).append(r["seed"])
    for mixer, by_lr in lrs.items():
        assert sorted(map(len, by_lr.values()))[0] == 1, by_lr  # the eliminated lr: seed 0 only
        [kept] = [lr for lr, seeds in by_lr.items() if len(seeds) >= 2]
        assert sorted(by_lr[kept]) == list(range(len(by_lr[kept])))
        line = next(line for line in (folder / "leaderboard.md").read_text().splitlines() if f"| {mixer} " in line)
        assert f"lr={kept}" in line, (mixer, kept, line)
    assert f"runs spent in all: {len(recs)};" in out and "tuned grid (trainer.lr: 2 points per cell)" in out
    assert f"runs spent in all: {len(recs)};" in (folder / "leaderboard.md").read_text()  # the board says it too
    cli.main()  # replayed from the records: nothing trains again
    assert "(0 trained by this call" in capsys.readouterr().out


@pytest.mark.slow  # CI runs it in .ci/run's second command
def test_the_halving_counts_a_reused_run_whatever_spelling_its_record_kept(tmp_path, monkeypatch, capsys):
    """A run trained before the race by a single `archbench ... trainer.lr=1e-2` keeps that spelling in its record's
    overrides; the race asks for `trainer.lr=0.01`, finds it completed by run id and reuses it: the halving must
    still count it for lr 0.01 (it knows each job's point from the job, not from the record's text)."""
    monkeypatch.setenv("ARCHBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)
    single = [a for a in RACE if a not in ("-m", "hydra/sweeper=race", "model/mixer=attention,gqa")]
    single = [a for a in single if not a.startswith(("hydra.sweeper", "+hydra.callbacks"))]
    monkeypatch.setattr(sys, "argv", ["archbench", *single, "model/mixer=attention", "seed=0", "trainer.lr=1e-2"])
    cli.main()
    [before] = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("result.json")]
    assert "trainer.lr=1e-2" in before["overrides"]
    capsys.readouterr()
    race_args = [a if a != "model/mixer=attention,gqa" else "model/mixer=attention" for a in RACE]
    monkeypatch.setattr(sys, "argv", ["archbench", *race_args, "tune=[trainer.lr]", "trainer.lr=0.001,0.01"])
    cli.main()
    [folder] = [p.parent for p in (tmp_path / "results").rglob("race.md")]
    recs = [json.loads(p.read_text()) for p in folder.rglob("result.json")]
    at_seed0 = {r["config"]["trainer"]["lr"]: r for r in recs if r["seed"] == 0}
    assert at_seed0[0.01]["run_id"] == before["run_id"]  # reused, not retrained
    val = {lr: r["metrics"]["val/accuracy"] for lr, r in at_seed0.items()}
    loss = {lr: r["metrics"]["val/loss"] for lr, r in at_seed0.items()}
    expected = max(val, key=lambda lr: (val[lr], -loss[lr]))  # the rule of tuning.ranked at one run a point
    kept = {r["config"]["trainer"]["lr"] for r in recs if r["seed"] == 1}
    assert kept == {expected}, (val, loss, kept)
