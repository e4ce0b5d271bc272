"""Architecture search with the Optuna sweeper (conf/hparams_search/, harness/run/search.py): tiny MQAR searches run in
this process (the basic launcher runs the trials here, which lets a test patch the trainer). Needs the search extra
(pip install 'archbench[search]'); without it the searches are skipped and only the objective rules are tested."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.record import results
from harness.run import cli, search
from harness.run.train import Diverged
from tests.conftest import CONF, options

needs_optuna = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("optuna", "hydra_plugins.hydra_optuna_sweeper")),
    reason="needs the search extra: pip install 'archbench[search]'",
)

TINY = [
    "trainer=smoke",
    "trainer.max_steps=2",
    "trainer.eval_every=2",
    "task.num_train=32",
    "task.num_val=16",
    "task.num_test=16",
    "+hydra.callbacks.leaderboard.plots=false",
]
# the space narrowed as a user narrows it; base_conv takes no positions, so rope with it cannot be built
SPACE = [
    "model/mixer=choice(attention,base_conv)",
    "model/position=choice(learned,rope)",
    "model/norm=choice(layernorm,rmsnorm)",
    "model/ffn=choice(none,mlp)",
    "model.n_layers=int(interval(1,2))",
    "model.d_model=choice(16,32)",
]


@pytest.fixture
def archbench(tmp_path, monkeypatch):
    """archbench(*args): the CLI in this process, writing under tmp_path/results."""
    monkeypatch.setenv("ARCHBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> None:
        monkeypatch.setattr(sys, "argv", ["archbench", *args])
        cli.main()

    return call


@pytest.fixture
def studies(monkeypatch) -> list:
    """The Optuna studies the searches of a test create, in order (in memory: the trials as the sweeper told them)."""
    import optuna

    made, create = [], optuna.create_study
    monkeypatch.setattr(optuna, "create_study", lambda **kw: made.append(create(**kw)) or made[-1])
    return made


def stored(tmp_path: Path, study: str, *args: str) -> list[str]:
    """The arguments of a search kept in tmp_path/search.db under `study`."""
    return [f"hydra.sweeper.storage=sqlite:///{tmp_path / 'search.db'}", f"hydra.sweeper.study_name={study}", *args]


def trials(tmp_path: Path, study: str):
    import optuna

    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path / 'search.db'}").trials


def sweep_records(tmp_path: Path) -> list[list[dict]]:
    """The records of each search under tmp_path/results, oldest first, in job (= trial) order."""
    sweeps = sorted(p for p in (tmp_path / "results" / "default").iterdir() if p.is_dir())
    return [
        [
            json.loads((d / results.RECORD).read_text())
            for d in sorted((d for d in s.iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
        ]
        for s in sweeps
    ]


@needs_optuna
def test_six_trial_search_records_every_trial_and_the_same_seed_proposes_the_same_trials(archbench, studies, tmp_path):
    archbench("-m", "hparams_search=arch_tpe", "hydra.sweeper.n_trials=6", *SPACE, *TINY)
    first = studies[0].trials
    [recs] = sweep_records(tmp_path)
    assert len(first) == 6 and len(recs) == 6 and {t.state.name for t in first} == {"COMPLETE"}
    assert len({tuple(sorted(t.params.items())) for t in first}) > 1  # the sampler does search
    for trial, record in zip(first, recs, strict=True):
        assert {f"{k}={v}" for k, v in trial.params.items()} <= set(record["overrides"])
        if record["status"] == "completed":
            assert trial.value == record["metrics"]["val/accuracy"]
        else:  # rope with base_conv: a failed trial with the worst value, and the study went on
            assert (trial.params["model/mixer"], trial.params["model/position"]) == ("base_conv", "rope")
            assert record["error"].startswith("ConfigError:") and trial.value == 0.0
    assert {r["status"] for r in recs} == {"completed", "failed"}  # seed 0 draws both kinds
    assert (next((tmp_path / "results" / "default").iterdir()) / "leaderboard.md").exists()

    # the same search again: the same proposals (and, each run already completed, the same values at no cost)
    archbench("-m", "hparams_search=arch_tpe", "hydra.sweeper.n_trials=6", *SPACE, *TINY)
    again = studies[1].trials
    assert [t.params for t in again] == [t.params for t in first]
    assert [t.value for t in again] == [t.value for t in first]


@needs_optuna
def test_trials_that_raise_or_diverge_return_the_worst_values_and_the_study_goes_on(
    archbench, studies, monkeypatch, tmp_path
):
    real_train, calls = cli.train, []

    def faulty(*args, **kwargs):
        calls.append(True)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        if len(calls) == 3:
            raise Diverged("training loss is nan at step 1")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(cli, "train", faulty)
    archbench(
        "-m",
        "hparams_search=arch_nsga2",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.population_size=2",
        "model/mixer=attention",
        "model/position=learned",
        *SPACE[2:],
        *TINY,
    )
    [study] = studies
    done = study.trials
    [recs] = sweep_records(tmp_path)
    assert [r["status"] for r in recs] == ["completed", "failed", "diverged", "completed"]
    assert [t.state.name for t in done] == ["COMPLETE"] * 4
    for trial, record in zip(done, recs, strict=True):  # (val/accuracy, params): a failed run keeps its real cost
        accuracy = record["metrics"]["val/accuracy"] if record["status"] == "completed" else 0.0
        assert trial.values == [accuracy, record["cost"]["params"]]


@needs_optuna
def test_an_exception_that_escapes_a_trial_fails_that_trial_not_the_study(archbench, studies, monkeypatch):
    real_build, calls = cli.build, []

    def faulty(*args, **kwargs):
        calls.append(True)
        if len(calls) == 2:  # not a ConfigError: it escapes the app, and Hydra's sweeper sees a failed job
            raise RuntimeError("a mixer's __init__ broke")
        return real_build(*args, **kwargs)

    monkeypatch.setattr(cli, "build", faulty)
    archbench(
        "-m",
        "hparams_search=arch_tpe",
        "hydra.sweeper.n_trials=3",
        "model/mixer=attention",
        "model/position=learned",
        *SPACE[2:],
        *TINY,
    )
    [study] = studies
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]


@needs_optuna
def test_a_study_resumes_from_its_storage(archbench, tmp_path):
    args = [
        "-m",
        "hparams_search=arch_tpe",
        "hydra.sweeper.n_trials=1",
        *stored(tmp_path, "kept"),
        "model/mixer=attention",
        "model/position=learned",
        *SPACE[2:],
        *TINY,
    ]
    archbench(*args)
    before = trials(tmp_path, "kept")
    archbench(*args, "hydra.sweeper.sampler.seed=1")  # a new sampler seed: new random proposals
    after = trials(tmp_path, "kept")
    assert len(before) == 1 and len(after) == 2
    assert (after[0].params, after[0].value) == (before[0].params, before[0].value)
    assert after[1].params != before[0].params


@needs_optuna
@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["-m", "hparams_search=arch_tpe", "model/mixer=choice(attention,hyenna)"],
            "hydra.sweeper.params.model/mixer: no option hyenna (available: ",
        ),
        (["-m", "hparams_search=arch_tpe", "model.n_layerz=2"], "n_layerz"),
        (
            ["-m", "hparams_search=arch_nsga2", "hydra.sweeper.direction=[maximize]"],
            "search.objectives=['val/accuracy', 'cost:params'] has 2 objectives but "
            "hydra.sweeper.direction=['maximize']",
        ),
        (
            ["-m", "hparams_search=arch_tpe", "hydra.sweeper.direction=minimize"],
            "search.objectives: val/accuracy is maximized, but hydra.sweeper.direction says minimize",
        ),
    ],
)
def test_a_search_with_a_bad_space_stops_before_its_first_trial(archbench, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        archbench(*args, *TINY)
    [line] = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and line.startswith("archbench: error:") and message in line, line
    assert not list((tmp_path / "results").rglob(results.RECORD))


@needs_optuna
@pytest.mark.parametrize(
    "preset,objectives,directions",
    [
        ("arch_tpe", ["val/accuracy"], "maximize"),
        ("arch_nsga2", ["val/accuracy", "cost:params"], ["maximize", "minimize"]),
    ],
)
def test_presets_search_mixer_norm_position_ffn_placement_depth_width_and_lr(preset, objectives, directions):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hparams_search={preset}", "seed=7"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == search.OPTUNA_SWEEPER and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    direction = list(sweeper.direction) if OmegaConf.is_list(sweeper.direction) else sweeper.direction
    assert list(cfg.search.objectives) == objectives and direction == directions
    assert sweeper.sampler.seed == 7 and sweeper.n_jobs == 1
    assert set(sweeper.params) == {
        "model/mixer",
        "model/norm",
        "model/position",
        "model/ffn",
        "model.norm_placement",
        "model.n_layers",
        "model.d_model",
        "trainer.lr",
    }
    assert sweeper.params["trainer.lr"].startswith("tag(log")
    for group in ("model/mixer", "model/norm", "model/position", "model/ffn"):  # every option of each group
        choice = sweeper.params[group]
        assert choice.startswith("choice(") and sorted(c.strip() for c in choice[7:-1].split(",")) == options(group)


def test_outside_a_search_a_config_that_cannot_be_built_still_exits_2(archbench, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        archbench("+search.objectives=[val/accuracy]", "model/mixer=base_conv", "model/position=rope", *TINY)
    assert e.value.code == 2 and "no mixer takes positions" in capsys.readouterr().err
    assert not list((tmp_path / "results").rglob(results.RECORD))


# --- what a trial returns ------------------------------------------------------------------------------------------


def _returned(objectives, record):
    return search.returned(OmegaConf.create({"search": {"objectives": objectives}} if objectives else {}), record)


COMPLETED = {
    "status": "completed",
    "metrics": {"val/accuracy": 0.75, "val/loss": 0.5},
    "cost": {"params": 1200, "flops_per_token": 9000},
}


def test_a_search_returns_its_objectives_in_order():
    assert _returned(["val/accuracy"], COMPLETED) == 0.75
    assert _returned(["val/accuracy", "cost:params"], COMPLETED) == (0.75, 1200.0)
    assert _returned(["val/loss", "cost:flops_per_token"], COMPLETED) == (0.5, 9000.0)
    assert _returned(None, COMPLETED) == 0.75  # outside a search: the validation accuracy, as always


@pytest.mark.parametrize("status", ["failed", "diverged"])
def test_a_run_that_did_not_complete_returns_the_worst_metric_and_its_own_cost(status):
    record = {**COMPLETED, "status": status, "metrics": {"val/loss": float("nan")}}
    assert _returned(["val/accuracy", "cost:params"], record) == (0.0, 1200.0)
    assert _returned(["val/loss"], record) == search.LARGE
    assert _returned(None, {**record, "metrics": {}}) is None


def test_a_trial_that_could_not_be_built_has_no_cost_and_returns_large():
    record = {"status": "failed", "metrics": {}, "cost": {}}
    assert _returned(["val/accuracy", "cost:flops_per_token"], record) == (0.0, search.LARGE)
    assert _returned(["val/accuracy"], {"status": "completed", "metrics": {"val/accuracy": float("nan")}}) == 0.0


@pytest.mark.parametrize("space", sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml")))
def test_a_search_space_offers_every_option_of_the_groups_it_searches(space):
    """A mixer (norm, ffn, position) added to conf/ is in every search space without an edit (`${options:GROUP}`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.load(CONF / "hparams_search" / f"{space}.yaml").hydra.sweeper.params
    groups = {k: v for k, v in OmegaConf.to_container(params, resolve=True).items() if "/" in k}
    assert "model/mixer" in groups
    for group, spec in groups.items():
        parsed = OverridesParser.create().parse_override(f"{group}={spec}")
        assert sorted(parsed.sweep_string_iterator()) == sorted(options(group)), group
