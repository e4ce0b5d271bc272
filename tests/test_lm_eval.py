"""archbench-eval (harness/run/evaluate.py): a saved run evaluated after the fact on another length writes a record the
board reads beside the run's own; what cannot be evaluated is refused in one line, exit code 2, nothing written."""

import json
import shutil

import pytest

from harness.report import cli as board_cli
from harness.run import evaluate
from harness.run import prepare as prepare_cli
from tests.test_cli import archbench

VOCAB = 300


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """prepare (BPE shards of the shipped sample), then two runs that keep their weights: rope and learned positions."""
    root = tmp_path_factory.mktemp("lm_eval")
    shards = root / "shards"
    with pytest.MonkeyPatch.context() as mp:  # the text's datasets cache, private to the tests
        mp.setenv("ARCHBENCH_CACHE", str(root / "cache"))
        prepare_cli.main(["task.tokenizer=bpe", f"task.vocab_size={VOCAB}", f"task.shards={shards}", "--num-proc=1"])
    task = ["task=lm_text", "task.tokenizer=bpe", f"task.vocab_size={VOCAB}", f"task.shards={shards}"]
    out = {}
    for position in ("rope", "learned"):
        args = [*task, "task.seq_len=32", f"model/position={position}", "trainer=smoke"]
        proc = archbench(root, *args, env={"ARCHBENCH_CACHE": str(root / "cache")})
        assert proc.returncode == 0, proc.stderr
        [path] = [p for p in (root / "results").rglob("result.json") if p.parent not in out.values()]
        out[position] = path.parent
    return root, out


def eval_main(args, monkeypatch, results, capsys):
    monkeypatch.setenv("ARCHBENCH_RESULTS", str(results))
    try:
        evaluate.main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr()


@pytest.mark.slow  # CI runs it in .ci/run's second command
def test_prepare_train_save_eval_board(runs, monkeypatch, capsys, tmp_path):
    root, folders = runs
    results = tmp_path / "results"
    shutil.copytree(folders["rope"], results / "default" / "run")
    code, out = eval_main([results / "default" / "run", "task.seq_len=64"], monkeypatch, results, capsys)
    assert code == 0, out.err
    [path] = (results / "eval").rglob("result.json")
    record = json.loads(path.read_text())
    source = json.loads((results / "default" / "run" / "result.json").read_text())
    assert record["status"] == "completed" and record["config"]["eval_of"] == source["run_id"]
    assert record["config"]["task"]["seq_len"] == 64 and record["seed"] == source["seed"]
    assert {"test/loss", "test/accuracy", "test/perplexity", "test/bits_per_byte"} <= set(record["metrics"])
    board_cli.main([str(results), "--metric", "bits_per_byte"])
    board = capsys.readouterr().out
    assert "lm_text seq_len=32" in board and "lm_text seq_len=64" in board, board


@pytest.mark.parametrize(
    "args,message",
    [
        (["{learned}", "task.seq_len=64"], "do not fit the model this config builds: size mismatch for position"),
        (["{rope}", "model.d_model=8"], "model.d_model=8: archbench-eval evaluates the model as it was trained"),
        (["{nowhere}"], "is not a run's folder (no result.json there)"),
        (["{no_weights}"], "kept no weights (run with save_model=true"),
    ],
)
def test_what_cannot_be_evaluated_is_refused_in_one_line(runs, monkeypatch, capsys, tmp_path, args, message):
    root, folders = runs
    no_weights = tmp_path / "no_weights"
    shutil.copytree(folders["rope"], no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    paths = {**folders, "nowhere": tmp_path / "nowhere", "no_weights": no_weights}
    code, out = eval_main([a.format(**paths) for a in args], monkeypatch, tmp_path / "results", capsys)
    assert code == 2 and out.err.count("\n") == 1 and message in out.err, out.err
    assert not (tmp_path / "results").exists()
