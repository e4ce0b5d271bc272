"""Verdicts you can trust: each finding of issue 14 as a regression test (they failed before the fix), plus
property-based tests with hypothesis: random sets of records never lose, merge or duplicate a run on the board, and
random bad values of every numeric config field stop at the door in one line naming the field."""

import json
import math
import os
import re
import stat
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.record import results
from harness.report import board, render
from harness.run import build, cli
from tests.conftest import examples
from tests.sweeps import SMOKE
from tests.test_board import record, write_all


@pytest.fixture
def archbench(tmp_path, monkeypatch):
    """archbench(*args) -> exit code: the CLI in this process, writing under tmp_path/results."""
    monkeypatch.setenv("ARCHBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["archbench", *args])
        try:
            cli.main()
        except SystemExit as e:
            return e.code or 0
        return 0

    return call


def saved(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob(results.RECORD)) if p.is_file()]


# 1. the board silently dropped runs whose overrides differ ---------------------------------------------------------


def test_single_runs_with_different_overrides_are_each_a_row(tmp_path):
    """`archbench`, the same with model.d_model=128, the same with model/mixer=gqa: three rows, not one."""
    plain = record("attention", "mqar", 0, 0.5)
    plain["overrides"] = []
    wide = record("attention", "mqar", 0, 0.6, d_model=128)
    wide["overrides"] = ["model.d_model=128"]
    gqa = record("gqa", "mqar", 0, 0.7)
    gqa["overrides"] = ["model/mixer=gqa"]
    write_all(tmp_path, [plain, wide, gqa])
    table = board.leaderboard([tmp_path]).table
    assert sorted(table.index) == ["attention d_model=128", "attention d_model=64", "gqa d_model=64"]


def test_a_swept_group_choice_names_its_column_once(tmp_path):
    """`-m task=mqar,induction_heads`: the columns are `mqar` and `induction_heads`, not `mqar task=mqar`."""
    recs = [record("attention", t, s, 0.5) for t in ("mqar", "induction_heads") for s in (0, 1)]
    for r in recs:
        r["overrides"] = [f"task={r['labels']['task']}", f"seed={r['seed']}", "model=transformer"]
    write_all(tmp_path, recs)
    assert sorted(board.leaderboard([tmp_path]).table.columns[:2]) == ["induction_heads", "mqar"]


def test_runs_of_one_cell_that_differ_in_a_field_nobody_overrode_are_not_merged(tmp_path):
    """Two experiment files that set different lrs, seeds 0 and 1: not one cell of two seeds."""
    a, b = record("attention", "mqar", 0, 0.5, lr=1e-3), record("attention", "mqar", 1, 0.9, lr=3e-3)
    for r in (a, b):
        r["overrides"] = [f"seed={r['seed']}"]
    write_all(tmp_path, [a, b])
    result = board.leaderboard([tmp_path])
    assert sorted(result.table.index) == ["trainer.lr=0.001", "trainer.lr=0.003"]
    assert set(result.long["n"]) == {1}


RECORD_CHOICES = st.fixed_dictionaries(
    {
        "mixer": st.sampled_from(["attention", "hyena", "gqa"]),
        "task": st.sampled_from(["mqar", "induction_heads"]),
        "seed": st.integers(0, 3),
        "lr": st.sampled_from([1e-3, 3e-3]),
        "d_model": st.sampled_from([64, 128]),
        "status": st.sampled_from(["completed"] * 4 + ["failed", "diverged"]),
        "test": st.floats(0, 1, allow_nan=False),
        "overridden": st.lists(st.sampled_from(["lr", "d_model", "mixer", "seed"]), unique=True),
        "folders": st.integers(1, 2),  # a record copied into a second folder (a rerun of a sweep)
    }
)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(RECORD_CHOICES, min_size=1, max_size=14))
def test_every_completed_run_is_counted_exactly_once_in_exactly_one_cell(tmp_path_factory, choices):
    root = tmp_path_factory.mktemp("records")
    recs, seen = [], set()
    for c in choices:
        r = record(c["mixer"], c["task"], c["seed"], c["test"], lr=c["lr"], d_model=c["d_model"], status=c["status"])
        r["overrides"] = [o for o in r["overrides"] if any(k in o for k in c["overridden"])]
        if r["run_id"] in seen:  # the same config and seed twice is one run: a rerun, not a second seed
            continue
        seen.add(r["run_id"])
        recs.extend([r] * c["folders"])
    write_all(root, recs)
    result = board.leaderboard([root])
    runs = {r["run_id"]: r for r in recs}
    completed = {rid for rid, r in runs.items() if r["status"] == "completed"}
    used = result.chosen
    assert sorted(used["run_id"]) == sorted(completed)  # each completed run once: none lost, none doubled
    assert len(result.table) == result.runs["variant"].nunique()  # a row per variant, failed-only ones too
    # a cell holds runs that differ only by seed: one config per (variant, column)
    for _, cell in used.groupby(["variant", "column"]):
        configs = {json.dumps({**runs[rid]["config"], "seed": None}, sort_keys=True) for rid in cell["run_id"]}
        assert len(configs) == 1
        values = [runs[rid]["metrics"]["test/accuracy"] for rid in cell["run_id"]]
        row = result.long[(result.long.variant == cell.variant.iloc[0]) & (result.long.column == cell.column.iloc[0])]
        assert row["n"].item() == len(values) and row["mean"].item() == pytest.approx(sum(values) / len(values))
    distinct_variants = {
        json.dumps({k: v for k, v in runs[rid]["config"].items() if k not in ("seed", "task")}, sort_keys=True)
        for rid in runs
    }
    assert result.runs["variant"].nunique() == len(distinct_variants)  # rows = distinct variants
    assert len(result.files) == len(recs)  # every file read is accounted for


# 2. bad values got past validation ----------------------------------------------------------------------------------

BAD_VALUES = [
    ("seed=-1", "seed=-1: must be an integer >= 0 and < 4294967296"),
    ("seed=abc", "seed='abc': must be an integer >= 0 and < 4294967296"),
    ("trainer.lr=nan", "trainer.lr=nan: must be a finite number > 0"),
    ("trainer.lr=inf", "trainer.lr=inf: must be a finite number > 0"),
    ("trainer.batch_size=1.5", "trainer.batch_size=1.5: must be an integer >= 1"),
    ("trainer.warmup_steps=-1", "trainer.warmup_steps=-1: must be an integer >= 0"),
    ("trainer.grad_clip=-1", "trainer.grad_clip=-1: must be a finite number >= 0"),
    ("trainer.weight_decay=-0.1", "trainer.weight_decay=-0.1: must be a finite number >= 0"),
    ("trainer.min_lr_ratio=2", "trainer.min_lr_ratio=2: must be a finite number >= 0 and <= 1"),
    ("trainer.target_accuracy=1.5", "trainer.target_accuracy=1.5: must be a finite number > 0 and <= 1 or null"),
    (
        "trainer.betas=[0.9,1.5]",
        "trainer.betas=[0.9, 1.5]: must be a list of 2 values, each a finite number >= 0 and < 1",
    ),
    ("model.n_layers=2.5", "model.n_layers=2.5: must be an integer >= 1"),
    ("task.num_kv_pairs=0", "task.num_kv_pairs=0: must be an integer >= 1"),
]


@pytest.mark.parametrize("override,message", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_each_bad_value_exits_2_with_one_line_and_writes_nothing(archbench, tmp_path, capsys, override, message):
    code = archbench("logger=wandb", *SMOKE, override)
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and line == f"archbench: error: {message}"
    assert not (tmp_path / "results").exists() and not list(tmp_path.rglob("wandb"))


def test_a_sweep_with_a_bad_seed_trains_no_job(archbench, tmp_path, capsys, monkeypatch):
    trained = []
    monkeypatch.setattr(cli, "train", lambda *a, **k: trained.append(1))
    assert archbench("-m", *SMOKE, "seed=0,-1") == 2 and trained == []
    assert capsys.readouterr().err.strip() == (
        "archbench: error: seed=-1: must be an integer >= 0 and < 4294967296 (job 1: seed=-1)"
    )


def _numeric_fields():
    """(group option, key) for every numeric field of every YAML in conf/ that a run composes."""
    import yaml

    from tests.conftest import CONF

    fields = []
    for group, prefix in (
        ("trainer", "trainer."),
        ("task", "task."),
        ("model/mixer", "model.mixer."),
        ("model/ffn", "model.ffn."),
        ("model/norm", "model.norm."),
        ("model/position", "model.position."),
    ):
        for path in sorted((CONF / group).glob("*.yaml")):
            node = yaml.safe_load(path.read_text()) or {}
            for key, value in node.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and not key.startswith("_"):
                    fields.append((f"{group}={path.stem}", prefix + key, value))
    for key in ("model.d_model", "model.n_layers", "model.init_std", "seed"):
        fields.append(("", key, 1))
    return fields


NUMERIC_FIELDS = _numeric_fields()
BAD = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -1, -0.5, 0, 0.5, 1.5, -3, 2.5]),
    st.floats(-4, 4, allow_nan=False),
    st.integers(-4, 4),
)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(NUMERIC_FIELDS), value=BAD)
def test_random_values_of_every_numeric_field_are_refused_in_one_line_or_build_a_model_that_runs(compose, field, value):
    """No traceback ever: a value is refused with one line naming its field, or the model builds and runs."""
    import torch

    option, key, _ = field
    text = repr(value) if isinstance(value, float) and math.isfinite(value) else str(value)
    overrides = [*SMOKE, *([option] if option else []), f"{key}={text}"]
    if key.startswith("task.") and option.split("=")[1] not in ("mqar",):
        overrides = [o for o in overrides if not o.startswith("task.num_")]
    try:
        cfg = compose(overrides)
    except Exception:  # Hydra refuses the override itself (e.g. a key the option does not have): not our concern
        return
    try:
        build.check(cfg)
    except build.ConfigError as e:
        assert "\n" not in str(e) and (
            key.split(".")[-1] in str(e)
            or key in str(e)
            or "seq_len" in str(e)
            or "vocab" in str(e)
            or "d_model" in str(e)
        ), str(e)
        return
    task, model, _ = build.build(cfg)  # what check accepted builds for real, and runs forward and backward
    x = torch.randint(0, task.vocab_size, (2, min(task.seq_len, 64)))
    model(x).sum().backward()


# 3. a single run that fails or diverges exited 0 ---------------------------------------------------------------------


def test_a_single_run_that_diverges_exits_1_and_keeps_its_record(archbench, tmp_path, capsys):
    code = archbench(*SMOKE, "trainer.lr=1e30", "trainer.grad_clip=0", "trainer.weight_decay=0")
    [rec] = saved(tmp_path / "results")
    assert code == 1 and rec["status"] == "diverged"
    assert "archbench: failed: the run diverged: training loss is" in capsys.readouterr().err


def test_a_single_run_that_fails_exits_1_and_a_sweep_with_failures_exits_1_and_counts_them(
    archbench, tmp_path, monkeypatch, capsys
):
    real = cli.train

    def flaky(model, splits, cfg, *, seed, **kw):
        if seed == 1:
            raise RuntimeError("injected")
        return real(model, splits, cfg, seed=seed, **kw)

    monkeypatch.setattr(cli, "train", flaky)
    assert archbench(*SMOKE, "seed=1") == 1
    capsys.readouterr()
    assert archbench("-m", *SMOKE, "seed=0,1,2") == 1
    out = capsys.readouterr().out
    assert "3 runs: 2 completed, 1 failed" in out
    assert archbench("-m", *SMOKE, "seed=0,2", "name=ok") == 0  # completed (here: skipped as completed) sweeps


# 4. file-system faults were raw tracebacks ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["paths.results={file}", "paths.results={file}/below", "hydra.run.dir={file}/run"])
def test_an_unwritable_results_folder_stops_before_training_in_one_line(
    archbench, tmp_path, capsys, monkeypatch, where
):
    trained = []
    monkeypatch.setattr(cli, "train", lambda *a, **k: trained.append(1))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a_file").write_text("not a folder")  # inside the results root, where run folders go
    code = archbench(*SMOKE, where.format(file=tmp_path / "results" / "a_file"))
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "is not a writable folder" in line and "a_file is a file" in line and trained == []


def test_a_record_that_cannot_be_written_keeps_the_checkpoint_and_says_how_to_recover(
    archbench, tmp_path, monkeypatch, capsys
):
    real = results.write_json_atomic

    def full_disk(path, obj):
        if Path(path).name == results.RECORD and "archbench-" not in Path(path).name:
            raise OSError(28, "No space left on device")
        return real(path, obj)

    monkeypatch.setattr(results, "write_json_atomic", full_disk)
    code = archbench(*SMOKE, "trainer.max_steps=8", "trainer.checkpoint_every=4")
    assert code == 1
    out = capsys.readouterr()
    said = out.out + out.err
    assert "could not write its record" in said and "rerunning the same command resumes" in said
    assert next((tmp_path / "results").glob(".in_progress/*"))  # the checkpoint marker is kept
    fallback = Path(re.search(r"the record is saved to (\S+): copy it", said).group(1))
    assert fallback.parent == Path(os.environ.get("TMPDIR", "/tmp")) and fallback.name.startswith("archbench-")
    assert json.loads(fallback.read_text())["status"] == "completed"
    fallback.unlink()


# 5. damaged records were not all reported ---------------------------------------------------------------------------


def test_a_folder_named_result_json_and_bad_schema_or_status_are_reported_with_their_reason(tmp_path, caplog):
    good = record("attention", "mqar", 0, 0.5)
    write_all(tmp_path / "ok", [good])
    (tmp_path / "folder" / results.RECORD).mkdir(parents=True)
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / results.RECORD).write_text(json.dumps({**good, "run_id": "x", "schema": 99}))
    (tmp_path / "running").mkdir()
    (tmp_path / "running" / results.RECORD).write_text(json.dumps({**good, "run_id": "y", "status": "running"}))
    result = board.leaderboard([tmp_path])
    reasons = dict(result.skipped)
    assert reasons[str(tmp_path / "folder" / results.RECORD)] == "a folder named like a record, not a record"
    assert reasons[str(tmp_path / "future" / results.RECORD)] == "unknown schema 99 (this archbench reads schema 1)"
    assert reasons[str(tmp_path / "running" / results.RECORD)].startswith("status 'running' is not one of")
    assert result.accounting == "read 4 record files; used 1; skipped 3 (listed below)"
    for text in (render.markdown(result), render.html(result), render.latex(result)):
        assert "read 4 record files; used 1; skipped 3" in text and "folder named like a record" in text
    out = tmp_path / "out"
    render.write(result, out, ["csv"])
    files = (out / "leaderboard_records.csv").read_text()
    assert files.count("skipped") == 3 and files.count(",used,") == 1


def test_a_completed_record_without_the_reported_metric_is_shown_not_silently_dropped(tmp_path):
    a, b = record("attention", "mqar", 0, 0.5), record("attention", "mqar", 1, 0.7)
    del b["metrics"]["test/accuracy"]
    write_all(tmp_path, [a, b])
    result = board.leaderboard([tmp_path])
    assert result.long["n"].tolist() == [1]
    assert [why for _, why in result.skipped] == ["completed, but has no test/accuracy: not counted in its cell"]


# 6. records were created mode 0600 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o007, 0o660)])
def test_records_and_markers_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        results.write_json_atomic(tmp_path / results.RECORD, {"a": 1})
        results.mark_completed(tmp_path, "rid", tmp_path / results.RECORD)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / results.RECORD).stat().st_mode) == mode
    assert stat.S_IMODE(results.completed_marker(tmp_path, "rid").stat().st_mode) == mode


# 7. a single run never said where its result.json went ----------------------------------------------------------------


def test_a_single_run_says_where_its_record_is(archbench, tmp_path, capsys):
    assert archbench(*SMOKE) == 0
    [path] = [p for p in (tmp_path / "results").rglob(results.RECORD)]
    out = capsys.readouterr()
    assert f"record: {path}" in out.out + out.err


def test_a_job_lost_to_the_cluster_is_one_line_and_exit_1(monkeypatch, capsys):
    """submitit raises UncompletedJobError when a job is scancelled: one line saying a rerun resumes, exit 1."""

    class UncompletedJobError(RuntimeError):
        pass

    def lost():
        raise UncompletedJobError("Job 7 (task: 0) with path /x\nhas not produced any output (state: CANCELLED)")

    monkeypatch.setattr(cli, "app", lost)
    with pytest.raises(SystemExit) as e:
        cli.main()
    [line] = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and line.startswith("archbench: failed: a job did not complete") and "rerun" in line
