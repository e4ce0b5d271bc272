"""Paths and sizes refused up front (issue 28, finding 5): a config value that becomes a path never leaves the
results root; a batch larger than the training set, a model that cannot fit in memory and an unknown top-level key
stop before any training, in one line with exit code 2, with nothing written."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import open_dict, read_write

from harness.run import build, cli, paths
from harness.run.build import ConfigError
from tests.conftest import examples
from tests.test_verdicts import SMOKE, archbench  # noqa: F401  (the in-process CLI fixture)

PIECES = st.sampled_from(["..", ".", "/", "a", "ü", "名前", "x y", "\\", "~", "/etc", "", "\0", "\n", "${name}"])
PATHLIKE = st.lists(PIECES, max_size=6).map("".join) | st.text(max_size=12)


def below(path: str, root: str) -> bool:
    """Independent of paths.inside: the root is the path or one of its parents, after folding `..`."""
    p, r = Path(os.path.normpath(os.path.join(os.getcwd(), path))), Path(os.path.normpath(os.path.abspath(root)))
    return p == r or r in p.parents


@pytest.fixture(scope="module")
def hydra_config():
    from hydra import compose, initialize_config_module

    import harness  # noqa: F401

    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=["paths.results=/tmp/root"], return_hydra_config=True)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["name", "hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir"]), value=PATHLIKE)
def test_no_value_that_becomes_a_path_leaves_the_results_root(hydra_config, field, value):
    import copy

    config = copy.deepcopy(hydra_config)
    with read_write(config), open_dict(config):
        config.hydra.job.num = 3
        node, key = (config.hydra.run, "dir") if field == "hydra.run.dir" else (config, "name")
        if field.startswith("hydra.sweep"):
            node, key = config.hydra.sweep, field.rsplit(".", 1)[1]
        node[key] = value.replace("${", "$ {")  # a value, not an interpolation
    for sweep in (False, True):
        try:
            paths.check_outputs(config, sweep=sweep)
        except ConfigError as e:
            assert "\n" not in str(e).strip() or "\n" in value  # one line (it quotes the value)
            continue
        written = [str(config.hydra.run.dir)]
        if sweep:
            written = [os.path.join(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))]
        assert all(below(w, "/tmp/root") for w in written), (field, value, written)
        assert "/" not in str(config.name) and str(config.name).strip() not in ("", ".", "..")


def command(args: list[str]) -> list[str]:
    """SMOKE and `args`, with a sweep's `-m` first, where Hydra takes it."""
    args = list(args)
    sweep = ["-m"] if "-m" in args else []
    return [*sweep, *SMOKE, *(a for a in args if a != "-m")]


def refused(archbench, tmp_path, capsys, monkeypatch, *args: str) -> str:  # noqa: F811
    """Runs archbench with `args`: exit code 2, one line on stderr, nothing trained, no folder made; the line."""
    trained = []
    monkeypatch.setattr(cli, "train", lambda *a, **k: trained.append(1))
    code = archbench(*args)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    [line] = err
    assert code == 2 and trained == [], line
    assert not (tmp_path / "results").exists() and not (tmp_path / "elsewhere").exists(), line
    return line


REFUSED = [  # (arguments, what the one line says): paths outside the results root, unknown keys, sizes
    (["name=../../etc"], "name='../../etc': must be one folder name"),
    (["name=/etc"], "name='/etc': must be one folder name"),
    (["name=''"], "name='': must be one folder name"),
    (["hydra.run.dir={tmp}/elsewhere"], "hydra.run.dir={tmp}/elsewhere is outside the results root"),
    (["-m", "seed=0,1", "hydra.sweep.dir={tmp}/elsewhere"], "hydra.sweep.dir={tmp}/elsewhere is outside"),
    (["-m", "seed=0,1", "hydra.sweep.subdir=../../../x${{hydra.job.num}}"], "hydra.sweep.subdir=../../../x0"),
    (["-m", "seed=0,1", "name=ok,../x"], "name='../x': must be one folder name"),
    (["+foo=1"], "foo is not a top-level key (`+foo=...` would change nothing but the run id;"),
    (["trainer.batch_size=65"], "trainer.batch_size=65 is larger than the training set (task.num_train=64)"),
    (["-m", "trainer.batch_size=8,100"], "trainer.batch_size=100 is larger than the training set"),
    (  # 1.1 T parameters (4 d² per attention layer): 16 TiB of weights, gradients and AdamW state
        ["model.d_model=65536", "model.n_layers=64"],
        "model.d_model=65536 model.n_layers=64 trainer.batch_size=8: training needs at least 16,392.4 GiB (1,099,",
    ),
]


@pytest.mark.parametrize("args,says", REFUSED)
def test_refused_before_anything_is_made_in_one_line(archbench, tmp_path, capsys, monkeypatch, args, says):  # noqa: F811
    line = refused(archbench, tmp_path, capsys, monkeypatch, *command(a.format(tmp=tmp_path) for a in args))
    assert says.format(tmp=tmp_path) in line


def test_the_memory_estimate_is_weights_grads_adamw_and_the_residual_stream(archbench, tmp_path, capsys, monkeypatch):  # noqa: F811
    """The smoke model (18,624 parameters) fits anywhere; with 64 KiB of memory it is refused with what it needs."""
    monkeypatch.setattr(build, "available_memory", lambda device: (2**16, "of a pretend machine"))
    line = refused(archbench, tmp_path, capsys, monkeypatch, *SMOKE)
    params = int(line.split("(")[1].split(" parameters")[0].replace(",", ""))
    need = 16 * params + 4 * 8 * 64 * 32 * 2  # batch 8 × seq 64 × d_model 32 × 2 layers, fp32
    assert params == 18_624 and f"needs at least {build.size_text(need)} (" in line and "of a pretend machine" in line
    monkeypatch.setattr(build, "available_memory", lambda device: (need, "exactly enough"))
    monkeypatch.setattr(cli, "train", lambda *a, **k: (_ for _ in ()).throw(SystemExit(0)))
    assert archbench(*SMOKE) == 0  # the estimate fits: the run goes on to training
