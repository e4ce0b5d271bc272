"""Length-generalisation tasks (tasks/length_generalization.py and the tasks built on it): every label equals an
independent computation of it (Python's integers, an explicit stack, eval of the expression, sorted(), ...), the
input lengths of each split, the layout input | blanks | padding, and that padding never changes a scored output of
a causal model. Parametrized over every option of conf/task/ whose class is a LengthGeneralizationTask."""

import math

import numpy as np
import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from tasks.base import IGNORE
from tasks.length_generalization import LengthGeneralizationTask, even_lengths
from tests.conftest import CONF, options


def length_tasks(package: str = "") -> list[str]:
    out = []
    for name in options("task"):
        target = OmegaConf.load(CONF / "task" / f"{name}.yaml").get("_target_")
        if target and issubclass(get_class(target), LengthGeneralizationTask) and target.startswith(package):
            out.append(name)
    return out


ALL = length_tasks()
TASKS = length_tasks("tasks.chomsky.")  # input, then blanks for the answer
STATE = length_tasks("tasks.state_tracking.")
MOD = 5


def little(bits) -> int:
    return int("".join(map(str, bits[::-1])) or "0", 2)


def to_little(number: int) -> list[int]:
    return [int(c) for c in f"{number:b}"[::-1]]


def expression(tokens, symbols) -> str:
    return "".join(str(t) if t < MOD else symbols[t - MOD] for t in tokens)


def ref_modular_arithmetic(x):
    return [eval(expression(x, "+-*_")) % MOD]  # Python's precedence: products first


def ref_brackets(x):
    return [eval(expression(x, "+-*()")) % MOD]


def ref_solve_equation(x):
    if len(x) < 3:
        return [0]
    assert x[-2] == MOD + 5 and x.count(MOD + 4) == 1, "expression = value, with one x"
    text = expression(x[:-2], "+-()x")
    roots = [d for d in range(MOD) if eval(text.replace("x", str(d))) % MOD == x[-1]]
    assert len(roots) == 1, "no multiplication: the solution is unique"
    return roots


def ref_stack(x):
    if len(x) == 1:
        return [x[0], 2]
    k = next(i for i, t in enumerate(x) if t >= 2)  # the initial stack (bits) ends where the actions begin
    stack = list(x[:k])
    for action in x[k:]:
        if action == 2:
            if stack:
                stack.pop()
        else:
            stack.append(action - 3)
    return stack[::-1] + [2]


def ref_missing_duplicate(x):
    if len(x) == 1:
        return [1]
    half = len(x) // 2
    s = x[: 2 * half]
    i = s.index(2)
    j = (i + half) % (2 * half)
    assert all(s[k] == s[(k + half) % (2 * half)] for k in range(2 * half) if k not in (i, j))
    return [s[j]]


def ref_binary(op):
    def ref(x):
        if 2 not in x:  # L <= 2: no operator
            if op == "mul":
                return [0] * (len(x) - 1) + [2]
            return to_little(little(x)) + [2]
        i = x.index(2)
        a, b = little(x[:i]), little(x[i + 1 :])
        assert a >= 1 and b >= 1
        return to_little(a + b if op == "add" else a * b) + [2]

    return ref


REFERENCE = {
    "parity_check": lambda x: [sum(x) % 2],
    "even_pairs": lambda x: [sum(a != b for a, b in zip(x[:-1], x[1:], strict=True)) % 2],
    "cycle_navigation": lambda x: [sum(a - 1 for a in x) % 5],
    "modular_arithmetic": ref_modular_arithmetic,
    "reverse_string": lambda x: x[::-1],
    "stack_manipulation": ref_stack,
    "modular_arithmetic_brackets": ref_brackets,
    "solve_equation": ref_solve_equation,
    "duplicate_string": lambda x: x + x,
    "missing_duplicate_string": ref_missing_duplicate,
    "odds_first": lambda x: x[1::2] + x[::2],
    "binary_addition": ref_binary("add"),
    "binary_multiplication": ref_binary("mul"),
    "compute_sqrt": None,  # checked by its defining property below, not by math.isqrt (which the generator uses)
    "bucket_sort": sorted,
}


def make(compose, name, **fields):
    task = instantiate(compose([f"task={name}"]).task)
    for k, v in {"num_train": 400, "num_val": 50, "num_test": 50, **fields}.items():
        setattr(task, k, v)
    task.check()
    return task


def rows(task, split):
    """Each row of a split as (input, answer targets, the row's tokens after the input)."""
    for x, y in zip(split.inputs.tolist(), split.targets.tolist(), strict=True):
        n_in = x.index(task.blank)
        yield x[:n_in], y, x[n_in:]


def test_every_length_task_has_a_reference():
    assert set(TASKS) == set(REFERENCE), "a new length task needs its independent reference in REFERENCE"


@pytest.mark.parametrize("name", TASKS)
def test_labels_equal_an_independent_computation(compose, name):
    task = make(compose, name, test_lengths=[41, 64, 97])
    splits = task.splits(0)
    for split_name in ("train", "test@41", "test@64", "test@97"):
        for x, y, rest in rows(task, splits[split_name]):
            n_in, n_out = len(x), task.output_length(len(x))
            assert all(0 <= t < task.input_size for t in x)
            assert rest[:n_out] == [task.blank] * n_out and set(rest[n_out:]) <= {task.pad}, "input|blanks|pad"
            assert all(t == IGNORE for t in y[:n_in]) and all(t == IGNORE for t in y[n_in + n_out :])
            answer = y[n_in : n_in + n_out]
            scored = [t for t in answer if t != IGNORE]
            assert answer[: len(scored)] == scored, "the scored answer is a prefix (termination, then unscored)"
            if name == "compute_sqrt":
                n, q = int("".join(map(str, x)), 2), int("".join(map(str, answer)), 2)
                assert 1 <= n < 2 ** len(x) and q * q <= n < (q + 1) ** 2 and len(answer) == math.ceil(len(x) / 2)
            else:
                assert scored == list(REFERENCE[name](list(x))), (x, scored)


@pytest.mark.parametrize("name", TASKS)
def test_input_lengths_of_each_split(compose, name):
    task = make(compose, name, num_train=4000, test_lengths=[41, 100])
    splits = task.splits(3)
    assert list(splits) == ["train", "val", "test", "test@41", "test@100"]
    for split_name in ("train", "val", "test"):
        lengths = np.array([len(x) for x, _, _ in rows(task, splits[split_name])])
        assert lengths.min() >= 1 and lengths.max() <= 40
        assert splits[split_name].inputs.shape[1] == task.seq_len == task.width(40)
        if split_name == "train":  # uniform over 1..40: every length, none far from 100 of 4,000
            counts = np.bincount(lengths, minlength=41)[1:]
            if name == "modular_arithmetic":
                counts = counts[::2]  # an even length loses one: 1, 3, ..., 39 get 200 each
                assert counts.min() > 130 and counts.max() < 270
            else:
                assert counts.min() > 55 and counts.max() < 150
    for length in (41, 100):
        got = {len(x) for x, _, _ in rows(task, splits[f"test@{length}"])}
        assert got == ({length - 1} if name == "modular_arithmetic" and length % 2 == 0 else {length})
        assert splits[f"test@{length}"].inputs.shape[1] == task.width(length) <= task.max_seq_len


@pytest.mark.parametrize("name", ALL)
def test_padding_is_never_scored_and_never_reaches_a_scored_output(compose, name):
    """Changing the padding (to random tokens) never changes the logits at scored positions of a causal model."""
    from harness.run.build import build_model

    cfg = compose(
        [f"task={name}", "model.d_model=16", "model.n_layers=2", "task.test_lengths=[41]", "task.train_min_length=3"]
    )
    task = instantiate(cfg.task)
    task.num_train = 64
    split = task.split("train", 0)
    pad = split.inputs == task.pad
    assert pad.any(), "lengths vary in a split, so some rows are padded"
    assert (split.targets[pad] == IGNORE).all()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    other = split.inputs.clone()
    other[pad] = torch.randint(0, task.vocab_size, (int(pad.sum()),))
    scored = split.targets != IGNORE
    with torch.no_grad():
        a, b = model.head(model(split.inputs)), model.head(model(other))
    assert torch.equal(a[scored], b[scored])
    assert not torch.equal(a[pad], b[pad]), "the change reached the model at all"


def test_the_model_gets_positions_and_vocabulary_from_the_task(compose):
    cfg = compose(["task=duplicate_string", "task.test_max_length=500"])
    task = instantiate(cfg.task)
    assert cfg.model.max_seq_len == task.max_seq_len == 1500 and cfg.model.vocab_size == task.vocab_size == 4
    assert compose(["task=parity_check", "task.test_lengths=[41,900]"]).model.max_seq_len == 901
    assert compose(["task=compute_sqrt", "task.train_max_length=10", "task.test_max_length=11"]).task.seq_len == 15


def length_sweeps() -> list[tuple[str, str]]:
    """(suite=... or experiment=..., its first length task) for every suite and experiment that sweeps a length task:
    read from their composed configs, so a new one is checked with no edit here."""
    from hydra import compose, initialize_config_module

    import harness  # noqa: F401  (the config resolvers)

    out = []
    with initialize_config_module(config_module="conf", version_base="1.3"):
        for group in ("suite", "experiment"):
            for name in options(group):
                text = (CONF / group / f"{name}.yaml").read_text()
                if not any(t in text for t in ALL) and "suite/" not in text and "chomsky" not in text:
                    continue  # names no length task and inherits no suite: not one (and composing all is slow)
                cfg = compose(config_name="config", overrides=[f"{group}={name}"], return_hydra_config=True)
                swept = str(OmegaConf.select(cfg, "hydra.sweeper.params.task") or cfg.hydra.runtime.choices.task)
                tasks = [t.strip() for t in swept.split(",") if t.strip() in ALL]
                out += [(f"{group}={name}", tasks[0])] if tasks else []  # the position is the sweep's, not the task's
    return out


@pytest.mark.parametrize("sweep, name", length_sweeps())
def test_no_length_sweep_gives_the_model_a_position_table_it_never_trains(compose, sweep, name):
    # A learned absolute position table trained on lengths <= 40 holds untrained rows at every test length beyond,
    # and the papers' recurrent models (Delétang's LSTM, Grazzi's DeltaNet and Mamba) take no positions at all. The
    # length suites and experiments give none (causal attention then runs NoPE); the command line may still ask.
    cfg = compose([sweep, f"task={name}", "model/mixer=lstm"])
    if cfg.task.get("num_test_lengths") == 0 and not cfg.task.get("test_lengths"):
        pytest.skip(f"{sweep} trains and tests {name} at one length")
    assert cfg.model.position._target_ == "models.positions.none", cfg.model.position
    asked = compose([sweep, f"task={name}", "model/position=rope"])
    assert asked.model.position._target_ == "models.positions.RotaryPosition"


def test_paper_protocol_lengths_and_score():
    assert even_lengths(41, 500, 460) == list(range(41, 501))
    assert even_lengths(41, 100, 3) == [41, 70, 100]
    from tasks.chomsky.parity_check import ParityCheck

    task = ParityCheck(test_min_length=41, test_max_length=500, num_test_lengths=460, num_length_buckets=5)
    metrics = {f"test@{length}/accuracy": float(length % 2) for length in range(41, 501)}
    out = task.derived_metrics(metrics)
    assert out["test/length_mean_accuracy"] == pytest.approx(0.5)
    buckets = [k for k in out if k.startswith("bucket@")]
    assert buckets[0] == "bucket@41-132/accuracy" and buckets[-1] == "bucket@409-500/accuracy" and len(buckets) == 5
    assert task.derived_metrics({}) == {}, "no test lengths evaluated: no score"


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"vocab_size": 9}, "vocab_size"),
        ({"train_min_length": 5, "train_max_length": 4}, "train_min_length"),
        ({"max_seq_len": 50}, "max_seq_len"),
        ({"test_lengths": [0]}, "test_lengths"),
    ],
)
def test_impossible_settings_name_the_field(kwargs, field):
    from tasks.chomsky.parity_check import ParityCheck

    with pytest.raises(ValueError, match=field):
        ParityCheck(**kwargs).check()


def compose_perm(a: tuple, b: tuple) -> tuple:
    """a, then b."""
    return tuple(b[a[i]] for i in range(len(a)))


def is_even(p: tuple) -> bool:
    seen, transpositions = set(), 0
    for start in range(len(p)):  # a cycle of length k is k - 1 transpositions
        k, i = 0, start
        while i not in seen:
            seen.add(i)
            i, k = p[i], k + 1
        transpositions += max(k - 1, 0)
    return transpositions % 2 == 0


@pytest.mark.parametrize("name", [n for n in STATE if n.startswith("word_problem")])
def test_word_problem_labels_are_running_products_of_tuples(compose, name):
    task = make(compose, name, test_lengths=[24])
    kind, order = task.group[0], int(task.group[1:])
    if kind == "Z":
        elements, op = list(range(order)), lambda a, b: (a + b) % order
    else:
        elements = sorted(p for p in __import__("itertools").permutations(range(order)) if kind == "S" or is_even(p))
        op = compose_perm
    assert len(elements) == task.input_size == task.vocab_size - 1
    for split_name in ("train", "test@24"):
        split = task.splits(0)[split_name]
        for x, y in zip(split.inputs.tolist(), split.targets.tolist(), strict=True):
            state = None
            for t, token in enumerate(x):
                if token == task.pad:
                    assert y[t] == IGNORE
                    continue
                state = elements[token] if state is None else op(state, elements[token])
                assert y[t] == elements.index(state)
    abelian = (task.table == task.table.T).all()
    assert abelian == (kind == "Z"), "S5 and A5 do not commute; Z60 does"


def test_grazzi_parity_and_modular_arithmetic_follow_their_code(compose):
    parity = make(compose, "grazzi_parity", num_train=2000, test_lengths=[40, 57])
    for split_name in ("train", "test@57"):
        split = parity.splits(0)[split_name]
        for x, y in zip(split.inputs.tolist(), split.targets.tolist(), strict=True):
            bits = [t for t in x if t != 0]
            assert set(bits) <= {1, 2} and x[: len(bits)] == bits
            assert 2 <= len(bits) <= 39 if split_name == "train" else len(bits) == 56
            assert [t for t in y if t != IGNORE] == [1 + bits.count(2) % 2] and y[len(bits) - 1] != IGNORE
    mod = make(compose, "grazzi_mod_arithmetic", num_train=2000, test_lengths=[40, 57])
    for split_name in ("train", "test@40", "test@57"):
        split = mod.splits(0)[split_name]
        lengths = set()
        for x, y in zip(split.inputs.tolist(), split.targets.tolist(), strict=True):
            body = [t for t in x if t != 0]
            assert body[-1] == 4 and y[len(body) - 1] != IGNORE and sum(t != IGNORE for t in y) == 1
            text = "".join("+-*"[t - 1] if t < 4 else str(t - 5) for t in body[:-1])
            assert y[len(body) - 1] == 5 + eval(text) % 5
            lengths.add(len(body) + 1)  # their s: the expression, `=` and the answer
        assert all(s % 2 == 1 for s in lengths)
        assert (
            lengths == ({39} if split_name == "test@40" else {57})
            if split_name != "train"
            else lengths == set(range(3, 40, 2))
        )
    out = mod.derived_metrics({f"test@{length}/accuracy": 0.6 for length in mod.test_lengths})
    assert out["test/length_mean_scaled_accuracy"] == pytest.approx((0.6 - 0.2) / 0.8)
