"""The leaderboard on records whose statistics are known because the test builds them: every number it prints is
checked against scipy on the raw samples, or against values worked by hand."""

import math
import statistics

import pandas as pd
import pytest
from scipy import stats as sps

from harness.record.results import SCHEMA, load_records, run_id, write_json_atomic
from harness.report import BoardError, board
from harness.report import cli as board_cli
from tests.test_stats import exact_p

CODE = {"fingerprint": "0123456789abcdef", "modules": {}, "kernels": None}


def record(
    mixer,
    task,
    seed,
    test,
    *,
    val=None,
    lr=1e-3,
    d_model=64,
    status="completed",
    rid=None,
    cost=None,
    family=None,
    history=None,
    extra_metrics=None,
):
    config = {
        "seed": seed,
        "trainer": {"lr": lr, "weight_decay": 0.1},
        "model": {"mixer": mixer, "d_model": d_model},
        "task": {"name": task, **({"family": family} if family else {})},
    }
    val = test if val is None else val
    return {
        "schema": SCHEMA,
        "run_id": rid or run_id(config),
        "config_id": run_id(config),
        "code": CODE,  # as archbench writes them now (a record without one reads as "code unknown")
        "status": status,
        "error": None,
        "labels": {"mixer": mixer, "norm": "layernorm", "task": task},
        "overrides": [f"model/mixer={mixer}", f"seed={seed}", f"trainer.lr={lr}", f"model.d_model={d_model}"],
        "config": config,
        "seed": seed,
        "metrics": {}
        if status != "completed"
        else {
            "test/accuracy": test,
            "val/accuracy": val,
            "test/loss": 1 - test,
            "val/loss": 1 - val,
            **(extra_metrics or {}),
        },
        "cost": cost or {"params": 100, "params_non_embedding": 80, "tokens_per_second": 10.0},
        "timestamps": {"finished": f"2026-01-01T00:00:0{seed}"},
        "history": history or [],
    }


def write_all(root, recs):
    for i, r in enumerate(recs):
        write_json_atomic(root / str(i) / "result.json", r)


ACCS = {
    ("attention", "mqar"): [0.9, 1.0, 0.8],
    ("hyena", "mqar"): [0.5, 0.7, 0.6],
    ("based", "mqar"): [0.8, 0.9, 0.85],
    ("attention", "ih"): [0.2, 0.4, 0.3],
    ("hyena", "ih"): [0.1, 0.15, 0.2],
    ("based", "ih"): [0.5, 0.6, 0.7],
}
PARAMS = {
    ("attention", "mqar"): 1000,
    ("attention", "ih"): 1200,
    ("hyena", "mqar"): 800,
    ("hyena", "ih"): 800,
    ("based", "mqar"): 900,
    ("based", "ih"): 950,
}


def known_records():
    return [
        record(
            m,
            t,
            s,
            a,
            cost={
                "params": 2 * PARAMS[m, t],
                "params_non_embedding": PARAMS[m, t],
                "flops_per_token": 6 * PARAMS[m, t],
                "tokens_seen": 1000,
                "wall_seconds": 2.0 + s,
                "tokens_per_second": 500.0 * (s + 1),
            },
        )
        for (m, t), vals in ACCS.items()
        for s, a in enumerate(vals)
    ]


def test_every_number_of_the_table_against_scipy(tmp_path):
    write_all(tmp_path, known_records())
    result = board.leaderboard([tmp_path])
    table, long = result.table, result.long
    for task in ("mqar", "ih"):
        leader = max((m for m, t in ACCS if t == task), key=lambda m: statistics.mean(ACCS[m, task]))
        for (m, t), vals in ACCS.items():
            if t != task:
                continue
            mean, std = statistics.mean(vals), statistics.stdev(vals)
            lo, hi = sps.t.interval(0.95, len(vals) - 1, loc=mean, scale=std / math.sqrt(len(vals)))
            variants = [v for v, u in ACCS if u == task]
            p = dict(zip(variants, exact_p([ACCS[v, task] for v in variants], 0.01), strict=True))
            tied = m == leader or p[m] >= 0.05  # the exact paired permutation test, every shuffle enumerated
            solved = sum(v >= 0.9 for v in vals)
            text = f"{mean:.3f} ± {std:.3f} [{max(lo, 0):.3f}, {min(hi, 1):.3f}] {solved}/3 ≥ 0.9"
            assert table.loc[m, t] == text + (" *" if tied else "")
            cell = long[(long.variant == m) & (long.task == t)].iloc[0]
            assert (cell["mean"], cell["std"], cell["n"]) == (pytest.approx(mean), pytest.approx(std), 3)
    # worked by hand: t_{0.975,2} = 4.3027, so 0.9 ± 4.3027 * 0.1 / sqrt(3) = [0.652, 1.148], clipped to 1
    assert table.loc["attention", "mqar"] == "0.900 ± 0.100 [0.652, 1.000] 2/3 ≥ 0.9 *"
    # Welch vs attention: p = 0.021, uncorrected; counting the leader's choice among three variants, p = 2/36 (the
    # chance that shuffles within seeds give a range of means of 0.3 or more): not marked. On ih, hyena is below
    # on every seed: p = 1/36, marked
    assert table.loc["hyena", "mqar"] == "0.600 ± 0.100 [0.352, 0.848] 0/3 ≥ 0.9 *"
    assert table.loc["hyena", "ih"] == "0.150 ± 0.050 [0.026, 0.274] 0/3 ≥ 0.9"
    # ranks: mqar attention 1, based 2, hyena 3; ih based 1, attention 2, hyena 3. attention and based tie at 1.5:
    # based has the better mean over tasks (0.725 against 0.6), so it comes first.
    assert list(table.index) == ["based", "attention", "hyena"]
    assert table["avg rank"].tolist() == ["1.50", "1.50", "3.00"]
    # costs: non-embedding params differ between tasks for attention and based (vocabularies), not for hyena
    assert table["params"].tolist() == ["900–950", "1k–1.2k", "800"]
    assert table["FLOPs/token"].tolist() == ["5.4k–5.7k", "6k–7.2k", "4.8k"]
    assert table["tokens"].tolist() == ["1k"] * 3
    assert table["wall s"].tolist() == ["3.0"] * 3 and table["tokens/s"].tolist() == ["1k"] * 3
    assert "peak mem" not in table  # no GPU: no column rather than an empty one
    legend = "\n".join(result.legend)
    assert "Student-t" in legend and "permutation" in legend and "alpha = 0.05" in legend and "delta = 0.01" in legend
    assert "every column paired by seed" in legend and "too few seeds" not in legend
    assert "n = 3 seeds per cell" in legend and "†" not in legend


def test_one_seed_cells_are_marked_and_failures_counted(tmp_path):
    write_all(
        tmp_path,
        [
            record("attention", "mqar", 0, 0.9),
            record("attention", "mqar", 1, 0, status="failed"),
            record("hyena", "mqar", 0, 0.5),
            record("hyena", "mqar", 1, 0.7),
            record("based", "mqar", 0, 0, status="diverged"),
        ],
    )
    result = board.leaderboard([tmp_path])
    assert (
        result.table.loc["attention", "mqar"] == "0.900 1/1 ≥ 0.9 n=1 † [1 failed]"
    )  # best mean, but one seed: untested
    assert result.table.loc["hyena", "mqar"] == "0.600 ± 0.141 [0.000, 1.000] 0/2 ≥ 0.9 *"  # leads the testable
    assert result.table.loc["based", "mqar"] == "failed (1)"
    assert list(result.table.index) == ["attention", "hyena", "based"]  # no completed run ranks last
    assert any(line.startswith("† = fewer than 2 seeds") for line in result.legend)


def test_a_variant_not_run_on_a_task_ranks_last_there(tmp_path):
    """A variant run only on the task it is good at must not top the average rank of those run on every task."""
    write_all(
        tmp_path,
        [record("a", "mqar", s, 0.9) for s in (0, 1)]
        + [record("b", "mqar", s, 0.8) for s in (0, 1)]
        + [record("b", "induction_heads", s, 0.7) for s in (0, 1)]
        + [record("c", "mqar", s, 0.7) for s in (0, 1)]
        + [record("c", "induction_heads", s, 0.6) for s in (0, 1)],
    )
    result = board.leaderboard([tmp_path])
    # mqar ranks a 1, b 2, c 3; induction_heads b 1, c 2, a (not run) 3
    assert list(result.table.index) == ["b", "a", "c"]
    assert list(result.table["avg rank"]) == ["1.50", "2.00", "2.50"]
    assert result.table.loc["a", "induction_heads"] == ""


def test_select_does_not_pick_a_grid_value_whose_runs_diverged(tmp_path):
    """lr=1e-2 has the best val mean over the seeds that survived, but one of three diverged: lr=1e-3 is chosen."""
    recs = [record("attention", "mqar", s, test=0.95, val=0.95, lr=1e-2) for s in (0, 1)]
    recs += [record("attention", "mqar", 2, 0, lr=1e-2, status="diverged")]
    recs += [record("attention", "mqar", s, test=0.8, val=0.8, lr=1e-3) for s in (0, 1, 2)]
    write_all(tmp_path, recs)
    cell = board.leaderboard([tmp_path], select=["trainer.lr"]).long.iloc[0]
    assert cell["selected"] == "lr=0.001" and cell["mean"] == pytest.approx(0.8) and cell["n"] == 3
    assert cell["failed"] == 1  # the diverged run still shows in its cell


def test_select_picks_best_on_validation_reports_test_and_shows_the_grid(tmp_path):
    recs = [record("attention", "mqar", s, test=0.1, val=0.9, lr=1e-2) for s in (0, 1)]
    recs += [record("attention", "mqar", s, test=0.8, val=0.5, lr=1e-3) for s in (0, 1)]
    recs += [record("hyena", "mqar", s, test=0.3 + s / 10, val=0.3, lr=1e-3) for s in (0, 1)]
    write_all(tmp_path, recs)
    result = board.leaderboard([tmp_path], select=["trainer.lr"])
    cell = result.long.set_index("variant").loc["attention"]
    assert cell["mean"] == pytest.approx(0.1) and cell["n"] == 2 and cell["selected"] == "lr=0.01"
    assert cell["grid"] == "trainer.lr∈{0.001,0.01}" and cell["searched"] == 2
    assert result.table.loc["attention", "mqar"].endswith("@ lr=0.01")
    assert "@" not in result.table.loc["hyena", "mqar"]  # one grid point: nothing was chosen
    assert any("grid searched: trainer.lr∈{0.001,0.01}; some cells searched less" in line for line in result.legend)


def test_group_by_makes_zoology_columns(tmp_path):
    recs = [
        record(m, "mqar", s, acc + s / 100, d_model=d)
        for m, d, acc in [("attention", 32, 0.5), ("attention", 64, 0.9), ("hyena", 32, 0.3), ("hyena", 64, 0.6)]
        for s in (0, 1)
    ]
    write_all(tmp_path, recs)
    result = board.leaderboard([tmp_path], group_by="model.d_model")
    assert list(result.table.columns[:2]) == ["mqar d_model=32", "mqar d_model=64"]
    assert list(result.table.index) == ["attention", "hyena"]
    assert result.table.loc["hyena", "mqar d_model=64"].startswith("0.605 ± 0.007")


def test_task_fields_name_the_setting_and_do_not_merge_cells(tmp_path):
    recs = [record("attention", "mqar", 0, 0.9), record("attention", "mqar", 0, 0.4)]
    recs[1]["overrides"].append("task.num_kv_pairs=16")
    recs[0]["overrides"].append("task.num_kv_pairs=4")
    recs[1]["run_id"] = "other"
    write_all(tmp_path, recs)
    columns = board.leaderboard([tmp_path]).table.columns
    assert {"mqar num_kv_pairs=4", "mqar num_kv_pairs=16"} <= set(columns)


def test_loss_is_lower_is_better(tmp_path):
    write_all(tmp_path, [record("a", "lm", 0, 0.9), record("b", "lm", 0, 0.5)])
    result = board.leaderboard([tmp_path], metric="loss")
    assert list(result.table.index) == ["a", "b"]
    assert result.table.loc["a", "lm"] == "0.100 † *"  # n = 1 is the usual n here: not repeated


def test_an_extra_split_can_be_reported(tmp_path):
    write_all(tmp_path, [record("a", "mqar", 0, 0.9, extra_metrics={"test@512/accuracy": 0.25})])
    assert board.build(load_records([tmp_path]), split="test@512").table.loc["a", "mqar"].startswith("0.250")
    with pytest.raises(BoardError, match="no metric nope/accuracy"):
        board.build(load_records([tmp_path]), split="nope")


def test_matched_params_interpolates_in_log_params(tmp_path):
    sizes = {
        "attention": [(32, 1000, 0.4), (64, 4000, 0.8), (128, 16000, 0.9)],
        "hyena": [(32, 2000, 0.5), (64, 8000, 0.6), (128, 32000, 0.7)],
    }

    def records_of(sizes):
        return [
            record(
                m,
                "mqar",
                s,
                acc + (0.01 if s else -0.01),
                d_model=d,
                cost={"params": p, "params_non_embedding": p, "flops_per_token": 6 * p, "tokens_seen": 100},
            )
            for m, points in sizes.items()
            for d, p, acc in points
            for s in (0, 1)
        ]

    write_all(tmp_path / "a", records_of(sizes))
    table, legend = board.leaderboard([tmp_path / "a"], matched="params").views["matched"]
    # budgets: the range both cover, 2000 to 16000, 3 log-spaced points (the most sizes of a variant) rounded to 2
    # significant figures: sqrt(2000 * 16000) = 5657 -> 5700
    assert list(table.columns) == ["mqar @ 2k params", "mqar @ 5.7k params", "mqar @ 16k params"]
    ln = math.log
    att = [0.4 + ln(2000 / 1000) / ln(4) * 0.4, 0.8 + ln(5700 / 4000) / ln(4) * 0.1, 0.9]
    hye = [0.5, 0.5 + ln(5700 / 2000) / ln(4) * 0.1, 0.6 + ln(16000 / 8000) / ln(4) * 0.1]
    assert table.loc["attention"].tolist() == [f"{v:.3f}" for v in att]  # 0.600, 0.826, 0.900
    assert table.loc["hyena"].tolist() == [f"{v:.3f}" for v in hye]  # 0.500, 0.576, 0.650
    assert list(table.index) == ["attention", "hyena"] and "no extrapolation" in legend[0]
    assert "non-embedding" in legend[0]
    # ranges that do not overlap: budgets over all of them, blank where a variant was not measured
    sizes["based"] = [(32, 64000, 0.3), (64, 128000, 0.35)]
    write_all(tmp_path / "b", records_of(sizes))
    table, _ = board.leaderboard([tmp_path / "b"], matched="params").views["matched"]
    assert list(table.columns) == ["mqar @ 1k params", "mqar @ 11k params", "mqar @ 120k params"]
    assert table.loc["based"].tolist() == ["", "", f"{0.3 + ln(120 / 64) / ln(2) * 0.05:.3f}"]
    assert table.loc["attention"].tolist()[2] == ""  # 120k is past attention's 16k: no extrapolation


def test_mad_score_is_best_over_the_grid_then_mean_over_settings_then_tasks(tmp_path):
    plan = {
        ("x", "recall_a", "recall"): 0.8,
        ("x", "recall_b", "recall"): 0.6,
        ("x", "memo_a", "memo"): 0.5,
        ("y", "recall_a", "recall"): 0.9,
        ("y", "recall_b", "recall"): 0.9,
        ("y", "memo_a", "memo"): 0.1,
    }
    recs = [record(m, t, 0, acc, family=f) for (m, t, f), acc in plan.items()]
    recs.append(record("y", "memo_a", 0, test=0.99, val=0.0, lr=1e-2, family="memo"))  # worse on val: not chosen
    write_all(tmp_path, recs)
    board_cli.main([str(tmp_path), "--mad", "--out", str(tmp_path / "out")])
    result = board.build(
        load_records([tmp_path]), select=["trainer.lr", "trainer.weight_decay"], aggregate="task.family"
    )
    table, legend = result.views["aggregate"]
    assert list(table.columns) == ["memo", "recall", "score"]
    assert table.loc["x"].tolist() == ["0.500", "0.700", "0.600"]  # recall (0.8 + 0.6) / 2; score (0.5 + 0.7) / 2
    assert table.loc["y"].tolist() == ["0.100", "0.900", "0.500"]
    assert list(table.index) == ["x", "y"] and "task.family" in legend[0]
    assert "| x " in (tmp_path / "out" / "leaderboard.md").read_text()


def test_a_rerun_is_counted_once(tmp_path):
    write_all(tmp_path, [record("attention", "mqar", 0, 0.9, rid="x"), record("attention", "mqar", 0, 0.9, rid="x")])
    assert board.leaderboard([tmp_path]).long.iloc[0]["n"] == 1


def test_broken_records_are_skipped_with_a_warning(tmp_path, caplog):
    write_all(tmp_path, [record("attention", "mqar", 0, 0.9)])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "result.json").write_text('{"schema": 1, "run_')
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / "result.json").write_text('{"schema": 999, "status": "completed"}')
    (tmp_path / "nan").mkdir()  # json.dump writes NaN for a diverged loss: still a readable record
    (tmp_path / "nan" / "result.json").write_text(
        '{"schema": 1, "status": "diverged", "run_id": "n", "metrics": {"val/loss": NaN}, "seed": 1}'
    )
    assert len(load_records([tmp_path])) == 2
    assert "bad/result.json" in caplog.text and "future/result.json" in caplog.text


def test_run_id_ignores_where_results_go_and_how_they_are_logged():
    base = {"seed": 0, "model": {"d_model": 64}, "trainer": {"lr": 1e-3, "progress": True}}
    moved = {
        **base,
        "paths": {"results": "/elsewhere"},
        "logger": {"mode": "online"},
        "name": "other",
        "trainer": {"lr": 1e-3, "progress": False},
    }
    assert run_id(base) == run_id(moved)
    assert run_id(base) != run_id({**base, "seed": 1})


def test_cli_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        board_cli.main([str(tmp_path), "--format", "md,pdf"])
    assert "--format pdf" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        board_cli.main([])
    with pytest.raises(SystemExit):
        board_cli.main([str(tmp_path)])  # no records
    assert "no result records" in capsys.readouterr().err


def test_a_bimodal_cell_shows_how_many_seeds_solve_the_task(tmp_path, capsys):
    """MQAR in the main job: attention recalls on three seeds of four (0.748 ± 0.344): the cell says 3/4 ≥ 0.9, and
    --solved moves the threshold; a bad --solved or --delta is one line and exit code 2."""
    accs = {"attention": [0.99, 0.995, 0.998, 0.01], "hyena": [0.2, 0.15, 0.18, 0.17]}
    write_all(tmp_path / "runs", [record(m, "mqar", s, a) for m, vals in accs.items() for s, a in enumerate(vals)])
    result = board.leaderboard([tmp_path / "runs"])
    assert " 3/4 ≥ 0.9 " in result.table.loc["attention", "mqar"] + " "
    assert result.long.set_index("variant").loc["hyena", "solved"] == 0
    assert any(line.startswith("k/n ≥ 0.9 = seeds of the cell") for line in result.legend)
    board_cli.main([str(tmp_path / "runs"), "--solved", "0.18", "--delta", "0.5"])
    out = capsys.readouterr().out
    assert "3/4 ≥ 0.18" in out and "2/4 ≥ 0.18" in out and "delta = 0.5" in out
    for bad, message in (("--solved=1.5", "--solved 1.5: an accuracy in [0, 1]"), ("--delta=-1", "--delta -1")):
        with pytest.raises(SystemExit) as e:
            board_cli.main([str(tmp_path / "runs"), bad])
        assert e.value.code == 2 and message in capsys.readouterr().err
    loss = board.leaderboard([tmp_path / "runs"], metric="loss")
    assert "solved" not in loss.long and "≥" not in loss.table.loc["attention", "mqar"]  # accuracy only


def test_cells_on_other_seeds_are_compared_unpaired_and_the_legend_says_so(tmp_path):
    recs = [record("a", "mqar", s, 0.9 + s / 100) for s in range(4)]
    recs += [record("b", "mqar", s + 10, 0.5 + s / 100) for s in range(4)]  # seeds 10..13: no pairs
    recs += [record(m, "ih", s, 0.5 + s / 100) for m in ("a", "b") for s in range(4)]
    write_all(tmp_path, recs)
    result = board.leaderboard([tmp_path])
    assert result.long.set_index(["variant", "column"])["paired"].to_dict() == {
        ("a", "mqar"): False,
        ("b", "mqar"): False,
        ("a", "ih"): True,
        ("b", "ih"): True,
    }
    assert "paired by seed in 1 of 2 columns, the others unpaired" in result.legend[1]
    # 8 values split 4 / 4: 70 arrangements, the observed split is the most extreme of them (2 of 70 with the
    # labels swapped): p = 0.03, marked; on ih two variants on four seeds can never be separated (1/8)
    assert result.long.set_index(["variant", "column"]).loc[("b", "mqar"), "tied"] == False  # noqa: E712
    assert "too few seeds and variants for any cell to be marked worse at alpha in: ih" in result.legend[1]


def test_results_csv_has_one_row_per_cell(tmp_path):
    write_all(tmp_path / "runs", known_records())
    board_cli.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    csv = pd.read_csv(tmp_path / "out" / "leaderboard.csv").set_index(["variant", "task"])
    assert csv.loc[("hyena", "ih"), "mean"] == pytest.approx(0.15) and len(csv) == 6
    assert {"ci_lo", "ci_hi", "p_vs_leader", "tied", "rank", "params", "params_non_embedding"} <= set(csv.columns)
    assert {"paired", "separable", "alpha", "delta", "solved", "solved_at"} <= set(csv.columns)


def test_split_with_a_star_gives_a_column_per_test_length_in_numeric_order(tmp_path):
    """Mamba's extrapolation table: trained at 64, tested at 64 (test), 128 and 1024, one column each."""
    lengths = {"attention": (1.0, 0.4, 0.1), "mamba": (1.0, 1.0, 0.9)}
    recs = [
        record(
            m,
            "induction_heads",
            s,
            test=acc[0] - s / 100,
            extra_metrics={"test@128/accuracy": acc[1] - s / 100, "test@1024/accuracy": acc[2] - s / 100},
        )
        for m, acc in lengths.items()
        for s in (0, 1)
    ]
    write_all(tmp_path, recs)
    result = board.leaderboard([tmp_path], split="test*")
    assert list(result.table.columns[:3]) == ["induction_heads", "induction_heads @128", "induction_heads @1024"]
    cells = result.long.set_index(["variant", "column"])["mean"]
    assert cells["attention", "induction_heads @128"] == pytest.approx(0.395)
    assert cells["mamba", "induction_heads @1024"] == pytest.approx(0.895)
    assert list(result.table.index) == ["mamba", "attention"]  # ranks over all three columns
    with pytest.raises(BoardError, match="no split matches val@"):
        board.leaderboard([tmp_path], split="val@*")
