"""A run's identity includes the code that trains it: a changed mixer is retrained (alone, in a sweep, and from a
checkpoint it left), every other run is still skipped, a docstring or comment edit changes nothing; the board never
pools the old code's runs with the new ones'."""

import json
import shutil
import sys
from pathlib import Path

import pytest

import models.mixers
from harness.record import code, results
from harness.run import cli
from tests.test_faults import SMOKE, records

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = "models.mixers.scratch_attention"
WITH_SCRATCH = [f"model.mixer._target_={SCRATCH}.Attention", *SMOKE]


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A scratch copy of the attention mixer, importable as models.mixers.scratch_attention; edit(old, new) changes
    its source as a user would, and the next run imports it anew (as a new process would)."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    path = folder / "scratch_attention.py"
    shutil.copy(ROOT / "models" / "mixers" / "attention.py", path)
    monkeypatch.setattr(models.mixers, "__path__", [*models.mixers.__path__, str(folder)])
    monkeypatch.delitem(sys.modules, SCRATCH, raising=False)

    def edit(old: str, new: str) -> None:
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
        sys.modules.pop(SCRATCH, None)

    yield edit
    sys.modules.pop(SCRATCH, None)


@pytest.fixture
def archbench(tmp_path, monkeypatch, capsys):
    """archbench(*args) -> what it printed; the CLI in this process, results under tmp_path/results."""
    monkeypatch.setenv("ARCHBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> str:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["archbench", *args])
        cli.main()
        out = capsys.readouterr()
        return out.out + out.err

    return call


SKIPPED = "already completed"
COMPUTES_OTHERWISE = ("y = self.attend(*self.project(x))", "y = 0.5 * self.attend(*self.project(x))")
DOCSTRING_ONLY = ('"""Causal softmax attention over', '"""Causal softmax attention (reworded) over')


def test_a_changed_mixer_is_retrained_and_other_runs_are_still_skipped(archbench, scratch, tmp_path):
    first = archbench(*WITH_SCRATCH)
    archbench(*SMOKE, "model/mixer=hyena")
    assert SKIPPED not in first
    assert SKIPPED in archbench(*WITH_SCRATCH)  # nothing changed: skipped

    scratch(*COMPUTES_OTHERWISE)
    assert SKIPPED not in archbench(*WITH_SCRATCH)  # the mixer computes otherwise: retrained
    assert SKIPPED in archbench(*SMOKE, "model/mixer=hyena")  # a run that does not use it: still skipped
    scratch(*DOCSTRING_ONLY)
    scratch("import torch\n", "import torch  # a comment\n\n")
    assert SKIPPED in archbench(*WITH_SCRATCH)  # a docstring, a comment, blank lines: the same code

    runs = [r for r in records(tmp_path / "results") if r["config"]["model"]["mixer"]["_target_"].startswith(SCRATCH)]
    assert len({r["run_id"] for r in runs}) == 2 and len({r["config_id"] for r in runs}) == 1
    new, old = sorted(runs, key=lambda r: r["timestamps"]["started"], reverse=True)[0], runs[0]
    assert new["code"]["modules"][SCRATCH] != old["code"]["modules"][SCRATCH]
    assert new["code"]["modules"]["models.backbone"] == old["code"]["modules"]["models.backbone"]

    # the board counts the new code's run and lists the old one as superseded, never pooled in one cell
    found = results.scan([tmp_path / "results"])
    kept = [r for r in found.records if r["config"]["model"]["mixer"]["_target_"].startswith(SCRATCH)]
    assert [r["run_id"] for r in kept] == [new["run_id"]]
    superseded = {json.loads(Path(p).read_text())["run_id"] for p, _ in found.superseded}
    assert superseded == {r["run_id"] for r in runs} - {new["run_id"]}
    assert "superseded" in found.summary()


def test_a_sweep_retrains_the_runs_of_a_changed_mixer(archbench, scratch):
    sweep = ["-m", "seed=0,1", *WITH_SCRATCH]
    assert SKIPPED not in archbench(*sweep)
    assert archbench(*sweep).count(SKIPPED) == 2
    scratch(*COMPUTES_OTHERWISE)
    assert SKIPPED not in archbench(*sweep)


def test_a_checkpoint_left_by_other_code_is_never_resumed(archbench, scratch, monkeypatch, tmp_path):
    args = [*WITH_SCRATCH, "trainer.max_steps=12", "trainer.checkpoint_every=4"]
    real_train = cli.train

    def interrupted(model, splits, cfg, *, seed, log_fn=None, **kw):
        def log(row, step):
            if step == 6:  # after the checkpoint at step 4
                raise KeyboardInterrupt
            log_fn(row, step)

        return real_train(model, splits, cfg, seed=seed, log_fn=log, **kw)

    monkeypatch.setattr(cli, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        archbench(*args)
    monkeypatch.setattr(cli, "train", real_train)
    assert len(list((tmp_path / "results").glob(".in_progress/*"))) == 1

    scratch(*COMPUTES_OTHERWISE)
    out = archbench(*args)
    assert "not resuming from" in out and "other code" in out and "resuming from step" not in out
    [record] = records(tmp_path / "results")
    assert record["status"] == "completed" and record["cost"]["resumed_from_step"] is None


def test_the_same_code_resumes_its_own_checkpoint(tmp_path):
    from harness.run.checkpoint import Checkpointer

    Checkpointer(tmp_path / "a.pt", run_id="same").save({"step": 3})
    assert Checkpointer(tmp_path / "b.pt", resume_from=tmp_path / "a.pt", run_id="same").load()["step"] == 3
    assert Checkpointer(tmp_path / "b.pt", resume_from=tmp_path / "a.pt", run_id="other").load() is None


def test_the_fingerprint_ignores_comments_docstrings_formatting_and_where_the_code_lies(tmp_path, monkeypatch):
    source = (ROOT / "models" / "mixers" / "hyena.py").read_text()
    variants = {
        "same": source,
        "comment": source.replace("\nimport ", "\n# a comment\nimport ", 1),
        "docstring": source.replace('"""', '"""Reworded. ', 1),
        "blank lines": source.replace("\n\n", "\n\n\n", 3),
        "elsewhere": source,
        "a constant": source + "\nSCALE = 2\n",
    }
    prints = {}
    for i, (what, text) in enumerate(variants.items()):
        folder = tmp_path / f"copy{i}"
        folder.mkdir()
        (folder / "scratch_hyena.py").write_text(text)
        monkeypatch.setattr(models.mixers, "__path__", [*models.mixers.__path__[:1], str(folder)])
        prints[what] = code.fingerprint(["models.mixers.scratch_hyena"])["modules"]["models.mixers.scratch_hyena"]
    assert len({v for k, v in prints.items() if k != "a constant"}) == 1
    assert prints["a constant"] != prints["same"]


def test_a_run_records_the_modules_it_uses_and_auto_resolved(archbench, tmp_path):
    archbench(*SMOKE, "model/mixer=hyena")
    [record] = records(tmp_path / "results")
    modules = record["code"]["modules"]
    assert {"models.mixers.hyena", "models.backbone", "harness.run.train", "tasks.mqar"} <= set(modules)
    assert not any(m.startswith(("models.mixers.attention", "harness.report", "harness.record")) for m in modules)
    assert record["config"]["trainer"]["device"] == "cpu" and record["config"]["trainer"]["precision"] == "fp32"
    assert record["config_id"] != record["run_id"]
    json.dumps(record)


def test_records_before_fingerprints_stay_readable_and_are_marked(archbench, tmp_path):
    archbench(*SMOKE)
    [path] = (tmp_path / "results").rglob(results.RECORD)
    old = json.loads(path.read_text())
    for k in ("code", "config_id"):
        old.pop(k)
    old["config"]["trainer"].update(device="auto", precision="auto")
    results.write_json_atomic(path, old)
    found = results.scan([tmp_path / "results"])
    [record] = found.records
    assert record["code"] is None and record["config"]["trainer"]["device"] == "cpu"
    assert "predate code fingerprints" in found.summary()


def test_the_git_sha_is_archbenchs_own_or_none(tmp_path):
    """An install inside another git repository (a venv in a project) records no sha, not that project's HEAD."""
    import importlib.util
    import subprocess

    assert results._git_sha() is None or len(results._git_sha()) == 40  # this checkout, or none
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path),
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    installed = tmp_path / "venv" / "site-packages" / "harness" / "record" / "results.py"
    installed.parent.mkdir(parents=True)
    shutil.copy(ROOT / "harness" / "record" / "results.py", installed)
    spec = importlib.util.spec_from_file_location("installed_results", installed)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._git_sha() is None


def test_the_board_lists_superseded_runs_below_itself_and_in_its_csv(archbench, scratch, tmp_path):
    from harness.report import board, render

    archbench(*WITH_SCRATCH)
    scratch(*COMPUTES_OTHERWISE)
    archbench(*WITH_SCRATCH)
    b = board.leaderboard([tmp_path / "results"])
    assert len(b.chosen) == 1 and "1 superseded" in b.accounting
    assert any("superseded" in why for _, why in b.skipped)
    assert "superseded: its config ran again under newer code" in render.markdown(b)
    assert (b.files["status"] == "superseded").sum() == 1


def test_code_edited_under_a_running_process_is_not_taken_for_the_new_code(scratch, tmp_path):
    """A long-lived sweep worker that loaded the old mixer must not train under the new code's fingerprint."""
    import importlib

    module = importlib.import_module(SCRATCH)
    before = code.fingerprint([SCRATCH])
    path = Path(module.__file__)
    path.write_text(path.read_text().replace(*COMPUTES_OTHERWISE))  # edited on disk, the loaded module unchanged
    with pytest.raises(code.StaleCode, match="changed on disk after this process loaded"):
        code.fingerprint([SCRATCH])
    sys.modules.pop(SCRATCH)
    importlib.import_module(SCRATCH)  # a new process (or a fresh import) loads the new code: fingerprinted anew
    assert code.fingerprint([SCRATCH])["fingerprint"] != before["fingerprint"]


def test_a_stale_worker_records_the_run_as_failed_and_the_sweep_goes_on(archbench, monkeypatch, tmp_path):
    real = code.fingerprint

    def stale_for_seed_one(modules):
        if "seed=1" in cli.HydraConfig.get().job.override_dirname.split(","):
            raise code.StaleCode("models/mixers/attention.py changed on disk after this process loaded it")
        return real(modules)

    monkeypatch.setattr(code, "fingerprint", stale_for_seed_one)
    with pytest.raises(SystemExit):
        archbench("-m", "seed=0,1", *SMOKE)
    by_seed = {r["seed"]: r for r in results.load_records([tmp_path / "results"])}
    assert by_seed[0]["status"] == "completed"
    assert by_seed[1]["status"] == "failed" and "StaleCode" in by_seed[1]["error"]
