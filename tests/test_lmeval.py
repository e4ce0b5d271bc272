"""The lm-evaluation-harness adapter (harness/run/lmeval.py): a tiny LM trained here on the shipped sample (BPE shards),
evaluated through lm-eval on two tasks defined from local files (multiple choice by loglikelihood, and greedy
generation), and its loglikelihoods checked against a direct computation with the model. Skipped without lm_eval
(`pip install 'archbench[lmeval]'`)."""

import json
import math

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from harness.run import lmeval_cli  # noqa: E402
from harness.run import prepare as prepare_cli  # noqa: E402
from harness.run.lmeval import ArchbenchLM  # noqa: E402
from tests.test_cli import archbench  # noqa: E402

VOCAB, SEQ = 300, 32
DOCS = [
    {"question": "The king said to the", "choices": ["queen", "zebra", "of"], "label": 0},
    {"question": "It was the best of times, it was the", "choices": ["worst", "table", "and"], "label": 0},
    {"question": "And the people", "choices": ["went", "xylophone"], "label": 1},
]
MC_TASK = """task: local_mc
dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
"""
GEN_TASK = """task: local_gen
dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{choices[0]}}}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 6
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A transformer with rotary positions trained 60 steps on BPE shards of the shipped sample; its folder."""
    root = tmp_path_factory.mktemp("lmeval")
    task = ["task.tokenizer=bpe", f"task.vocab_size={VOCAB}", f"task.shards={root}/shards"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARCHBENCH_CACHE", str(root / "cache"))
        prepare_cli.main([*task, "--num-proc=1"])
    args = ["task=lm_text", *task]
    args += [f"task.seq_len={SEQ}", "model/position=rope", "trainer=smoke", "trainer.max_steps=60", "trainer.lr=3e-3"]
    proc = archbench(root, *args, env={"ARCHBENCH_CACHE": str(root / "cache")})
    assert proc.returncode == 0, proc.stderr
    [record] = (root / "results").rglob("result.json")
    return record.parent


@pytest.fixture(scope="module")
def lm(run):
    return ArchbenchLM(run=str(run), batch_size=2)


def direct(lm, context: str, continuation: str) -> tuple[float, bool]:
    """Sum of log-softmax over the continuation's tokens, from one forward pass of the model on context+continuation
    (the context encoded alone, as lm-eval splits it)."""
    whole, ctx = lm.codec.encode(context + continuation), lm.codec.encode(context)
    ids = torch.tensor([whole[-(lm.max_length + 1) :]])
    n = len(whole) - len(ctx)
    with torch.no_grad():
        logp = torch.log_softmax(lm.model.head(lm.model(ids[:, :-1])), dim=-1)[0, -n:]
    target = ids[0, -n:]
    return float(logp[torch.arange(n), target].sum()), bool((logp.argmax(-1) == target).all())


def instances(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def test_loglikelihood_is_the_sum_of_log_softmax_over_the_continuation(lm):
    pairs = [(d["question"], " " + c) for d in DOCS for c in d["choices"]]
    pairs.append((" ".join(["x"] * 40), " the end"))  # longer than max_seq_len: the context keeps its last tokens
    got = lm.loglikelihood(instances("loglikelihood", pairs), disable_tqdm=True)
    for (ctx, cont), (logprob, greedy) in zip(pairs, got, strict=True):
        want, want_greedy = direct(lm, ctx, cont)
        assert logprob == pytest.approx(want, abs=1e-4) and greedy == want_greedy
        assert logprob < 0


def test_rolling_loglikelihood_covers_every_token_once(lm):
    short = "It was the best of times."
    long = " ".join(["the people of the town"] * 20)  # several windows of max_seq_len tokens
    got = lm.loglikelihood_rolling(instances("loglikelihood_rolling", [(short,), (long,)]), disable_tqdm=True)
    ids = lm.codec.encode(short)  # one window: every token, the first conditioned on the newline token
    with torch.no_grad():
        logp = torch.log_softmax(lm.model.head(lm.model(torch.tensor([[lm.eot_token_id, *ids[:-1]]]))), dim=-1)[0]
    assert got[0] == pytest.approx(float(logp[torch.arange(len(ids)), torch.tensor(ids)].sum()), abs=1e-4)
    n = len(lm.codec.encode(long))
    assert n > 2 * lm.max_length and got[1] < 0
    assert -got[1] / n < 3 * math.log(VOCAB)  # a per-token loss of a trained model, not a sum over overlaps


def test_greedy_generation_stops_at_until_and_matches_argmax_decoding(lm):
    context = "The king said to the"
    [text] = lm.generate_until(instances("generate_until", [(context, {"until": ["."], "max_gen_toks": 5})]), True)
    ids = lm.codec.encode(context)
    new = []
    for _ in range(5):
        with torch.no_grad():
            new.append(int(lm.model.head(lm.model(torch.tensor([(ids + new)[-lm.max_length :]])))[0, -1].argmax()))
    want = lm.codec.decode(new)
    assert text == want.split(".")[0]
    with pytest.raises(ValueError, match="greedily only"):
        lm.generate_until(instances("generate_until", [(context, {"do_sample": True, "temperature": 1.0})]), True)


def local_tasks(folder):
    """The two tasks' YAML and their data (JSON lines) in `folder`, for lm-eval's include_path."""
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (folder / "mc.yaml").write_text(MC_TASK.format(data=data))
    (folder / "gen.yaml").write_text(GEN_TASK.format(data=data))
    return folder


def test_local_tasks_through_lm_eval(run, lm, tmp_path):
    local_tasks(tmp_path)
    out = simple_evaluate(
        model=lm,
        tasks=["local_mc", "local_gen"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        log_samples=True,
    )
    assert 0 <= out["results"]["local_mc"]["acc,none"] <= 1
    assert 0 <= out["results"]["local_gen"]["exact_match,none"] <= 1
    samples = out["samples"]["local_mc"]
    assert len(samples) == len(DOCS)
    for sample in samples:  # lm-eval's scores are the adapter's: the direct computation, choice by choice
        doc = sample["doc"]
        got = [float(r[0][0]) for r in sample["resps"]]
        want = [direct(lm, doc["question"], " " + c)[0] for c in doc["choices"]]  # lm-eval's target_delimiter
        assert got == pytest.approx(want, abs=1e-4)
    assert len(out["samples"]["local_gen"]) == len(DOCS)


def test_cli_evaluates_a_run_with_lm_evals_defaults(run, tmp_path):
    """`archbench-lmeval --model_args run=RUN --tasks ...`: lm-eval's own command line and defaults (its --device is
    cuda: the CPU where CUDA is unavailable; its --batch_size, not a model argument), results in --output_path."""
    args = [
        "--model_args",
        f"run={run}",
        "--batch_size",
        "4",
        "--tasks",
        "local_mc",
        "--include_path",
        str(local_tasks(tmp_path)),
    ]
    lmeval_cli.main([*args, "--output_path", str(tmp_path / "out")])
    [path] = (tmp_path / "out").rglob("results_*.json")
    assert 0 <= json.loads(path.read_text())["results"]["local_mc"]["acc,none"] <= 1


def test_cli_implies_the_model_and_refuses_a_missing_run_in_one_line(tmp_path, capsys):
    assert lmeval_cli.lm_eval_args(["--tasks", "x"]) == ["run", "--model", "archbench", "--tasks", "x"]
    assert lmeval_cli.lm_eval_args(["run", "--model=hf"]) == ["run", "--model=hf"]
    assert lmeval_cli.lm_eval_args(["ls", "tasks"]) == ["ls", "tasks"]
    args = ["--model_args", f"run={tmp_path}/nowhere", "--tasks", "local_mc"]
    args += ["--include_path", str(local_tasks(tmp_path))]
    with pytest.raises(SystemExit) as e:
        lmeval_cli.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("archbench-lmeval: RUN=") and "is not a run's folder" in err[-1], err
