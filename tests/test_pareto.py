"""`archbench-board --pareto METRIC,COST` (harness/report/pareto.py) on records built here with known metrics and
costs."""

from pathlib import Path

import numpy as np
import pytest

from harness.record import results
from harness.report import cli as board_cli
from harness.report import pareto
from harness.report.runs import runs_frame


def record(
    mixer: str,
    seed: int,
    accuracy: float,
    params: int,
    status: str = "completed",
    loss: float = 1.0,
    task: str = "mqar",
) -> dict:
    return {
        "schema": results.SCHEMA,
        "run_id": f"{mixer}-{task}-{seed}",
        "status": status,
        "error": None,
        "labels": {"model": "transformer", "mixer": mixer, "task": task},
        "overrides": [f"model/mixer={mixer}"],
        "config": {},
        "seed": seed,
        "metrics": {"test/accuracy": accuracy, "test/loss": loss, "val/accuracy": accuracy},
        "cost": {"params": params, "flops_per_token": 6 * params},
        "timestamps": {"finished": f"t{seed}"},
    }


# (mixer, test/accuracy, params): a..f with one seed each
POINTS = [
    ("a", 0.5, 100),
    ("b", 0.7, 200),
    ("c", 0.4, 150),
    ("d", 0.6, 200),
    ("e", 0.7, 300),
    ("f", 0.9, 400),
    ("g", 0.9, 400),
]


def write(root: Path, records: list[dict]) -> Path:
    for i, r in enumerate(records):
        results.write_json_atomic(root / str(i) / results.RECORD, r)
    return root


def test_the_front_is_the_variants_no_other_beats_on_both():
    recs = [record(m, 0, acc, p) for m, acc, p in POINTS]
    recs.append(record("h", 0, 1.0, 50, status="failed"))  # failed: not a candidate, whatever its metric says
    table = pareto.front(recs, "test/accuracy", "params")
    on = table[table.pareto]
    # c (0.4 at 150) is beaten by a (0.5 at 100); d by b (0.7 at 200 vs 0.6); e by b (same 0.7, more params);
    # f and g are equal on both: neither dominates the other
    assert on["variant"].tolist() == ["a", "b", "f", "g"]
    assert on["metric"].tolist() == [0.5, 0.7, 0.9, 0.9] and on["cost"].tolist() == [100, 200, 400, 400]
    assert len(table) == 7 and "h" not in table["variant"].tolist()


def test_seeds_are_averaged_per_variant_before_the_front_is_drawn():
    recs = [
        record("a", 0, 0.2, 100),
        record("a", 1, 0.8, 100),  # mean 0.5
        record("b", 0, 0.6, 200),
        record("b", 1, 0.6, 200),  # 0.6 at more params: still on the front
        record("c", 0, 0.55, 300),
        record("c", 1, 0.0, 300, status="diverged"),
    ]  # 0.55 over its completed seed
    table = pareto.front(recs, "test/accuracy", "params").set_index("variant")
    assert table.loc["a", "metric"] == pytest.approx(0.5) and table.loc["a", "n"] == 2
    assert table.loc["c", "n"] == 1 and table.loc["c", "metric"] == pytest.approx(0.55)
    assert table["pareto"].to_dict() == {"a": True, "b": True, "c": False}


def test_lower_is_better_metrics_and_each_task_its_own_front():
    recs = [
        record("a", 0, 0, 100, loss=2.0),
        record("b", 0, 0, 200, loss=1.0),
        record("c", 0, 0, 300, loss=1.5),
        record("a", 0, 0, 100, loss=0.5, task="other"),
        record("b", 0, 0, 200, loss=1.0, task="other"),
    ]
    table = pareto.front(recs, "test/loss", "flops_per_token")
    fronts = {s: rows.loc[rows.pareto, "variant"].tolist() for s, rows in table.groupby("setting")}
    assert fronts == {"mqar": ["a", "b"], "other": ["a"]}  # c loses to b; in "other" a beats b on both


def test_non_dominated_agrees_with_the_definition_on_random_points():
    rng = np.random.default_rng(0)
    for _ in range(20):
        metric, cost = rng.integers(0, 6, 30).astype(float), rng.integers(0, 6, 30).astype(float)
        brute = [
            not any(
                metric[j] >= metric[i] and cost[j] <= cost[i] and (metric[j] > metric[i] or cost[j] < cost[i])
                for j in range(30)
            )
            for i in range(30)
        ]
        assert pareto.non_dominated(metric, cost).tolist() == brute


def test_archbench_board_pareto_prints_the_front_and_draws_it(tmp_path, capsys):
    root = write(tmp_path / "search", [record(m, 0, acc, p) for m, acc, p in POINTS])
    board_cli.main([str(root), "--pareto", "test/accuracy,cost:params", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "Pareto front of mqar: 4 of 7 variants are not dominated on test/accuracy" in out
    rows = [[c.strip() for c in line.split("|")[1:3]] for line in out.splitlines() if line.startswith("| ")]
    assert rows[1:] == [["1", "a"], ["2", "b"], ["3", "f"], ["4", "g"]]  # numbered as in the plot
    png = root / pareto.FILE
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {png}" in out
    csv = (tmp_path / "out" / "pareto.csv").read_text().splitlines()
    assert csv[0] == "setting,variant,metric,cost,n,pareto" and len(csv) == 8


@pytest.mark.parametrize(
    "spec,message",
    [
        ("test/accuracy", "give METRIC,COST"),
        ("test/accuracy,tokens", "no cost tokens in the records (they have: flops_per_token, params)"),
        ("test/bleu,params", "no metric test/bleu in the records (they have: test/accuracy, test/loss, val/accuracy)"),
    ],
)
def test_a_bad_pareto_spec_names_what_is_there(tmp_path, spec, message, capsys):
    root = write(tmp_path / "search", [record("a", 0, 0.5, 100)])
    with pytest.raises(SystemExit) as e:
        board_cli.main([str(root), "--pareto", spec])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and line.startswith("archbench-board: error: --pareto") and message in line


def test_runs_of_a_search_and_runs_by_hand_name_variants_alike():
    recs = [
        {**record(m, 0, acc, p), "overrides": [f"model/mixer={m}", "hparams_search=arch_nsga2"]}
        for m, acc, p in POINTS[:2]
    ] + [record("c", 0, 0.4, 150)]  # a run by hand: no hparams_search
    assert runs_frame(recs)["variant"].tolist() == ["a", "b", "c"]
