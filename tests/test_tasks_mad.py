"""MAD's six tasks: the exact semantics of each (checked by parsing the generated sequences independently), the
distributions against a plain-Python port of MAD's per-example loops, and every preset of MAD's grid."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tasks.base import IGNORE
from tasks.compression import Compression
from tasks.fuzzy_recall import FuzzyRecall, distinct_tuples
from tasks.in_context_recall import InContextRecall
from tasks.mad_base import first_occurrence
from tasks.memorization import Memorization
from tasks.noisy_recall import NoisyRecall
from tasks.selective_copying import SelectiveCopying

CONF = Path(__file__).resolve().parents[1] / "conf"
FAMILIES = ("in_context_recall", "fuzzy_recall", "noisy_recall", "selective_copying", "compression", "memorization")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHBENCH_CACHE", str(tmp_path / "cache"))


def held_out(task, seed=0):
    s = task.split("test", seed)
    return s.inputs.numpy(), s.targets.numpy()


def test_first_occurrence_and_distinct_tuples():
    codes = np.array([[3, 1, 3, 2, 1, 3], [0, 0, 0, 5, -1, -2]])
    assert first_occurrence(codes).tolist() == [[0, 1, 0, 3, 1, 0], [0, 0, 0, 3, 4, 5]]
    d = distinct_tuples(np.random.default_rng(0), (60_000,), 2, 6, 3)
    assert ((d >= 2) & (d < 6)).all() and (np.diff(np.sort(d, axis=1), axis=1) > 0).all()
    counts = np.unique(d @ [16, 4, 1], return_counts=True)[1]
    assert len(counts) == 4 * 3 * 2 and counts.min() > 0.85 * 60_000 / 24, "every ordered triple equally likely"


# ---- in-context recall and noisy recall -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task",
    [
        InContextRecall(vocab_size=16, seq_len=64, num_test=400),
        InContextRecall(vocab_size=32, seq_len=64, multi_query=False, num_test=400),
        NoisyRecall(vocab_size=32, seq_len=64, frac_noise=0.4, num_test=400),
    ],
)
def test_in_context_recall_scores_exactly_the_recalled_values(task):
    x, y = held_out(task)
    c, L = task.content_vocab, task.seq_len
    K = c // 2
    for row_x, row_y in zip(x, y, strict=True):
        pairs = row_x[: 2 * (L // 2 - 1)].reshape(-1, 2)
        real = pairs[:, 0] < K
        noise = ~real
        assert ((pairs[noise] >= c) & (pairs[noise] < c + task.noise_vocab_size)).all()
        assert ((pairs[real, 1] >= K) & (pairs[real, 1] < c)).all()
        value_of, expected = {}, np.full(L, IGNORE)
        for i, (k, v) in enumerate(pairs):
            if not real[i]:
                continue
            assert value_of.setdefault(k, v) == v, "a key keeps its value within a sequence"
            if task.multi_query and i != [j for j in range(len(pairs)) if real[j] and pairs[j, 0] == k][0]:
                expected[2 * i] = v
        key_at = L - 2 if task.multi_query else L - 1  # the probe key; without multi_query after the copy prefix
        if not task.multi_query:
            assert row_x[L - 2] == task.vocab_size - 1
        assert row_x[key_at] in value_of, "the probe's key was shown"
        expected[key_at] = value_of[row_x[key_at]]
        if task.multi_query:
            assert row_x[-1] == value_of[row_x[key_at]], "the probe's value is the last input, unscored"
        np.testing.assert_array_equal(row_y, expected)


def test_in_context_recall_trains_on_every_next_token():
    task = InContextRecall(vocab_size=16, seq_len=32, num_train=50)
    s = task.split("train", 0)
    x, y = s.inputs.numpy(), s.targets.numpy()
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    assert (y[:, -1] == IGNORE).all()
    only_probes = InContextRecall(vocab_size=16, seq_len=32, num_train=50, train_all_tokens=False).split("train", 0)
    scored = only_probes.targets[:, :-1] != IGNORE
    assert scored.sum() < (s.targets != IGNORE).sum() / 2, "without train_all_tokens, only recalled values"
    assert torch.equal(only_probes.targets[:, :-1][scored], only_probes.inputs[:, 1:][scored])


def test_noisy_recall_replaces_the_asked_fraction_of_pairs():
    task = NoisyRecall(seq_len=128, frac_noise=0.4, num_test=2000)
    x, _ = held_out(task)
    pairs = x[:, :126].reshape(2000, -1, 2)
    assert abs((pairs[..., 0] >= task.content_vocab).mean() - 0.4) < 0.02


def mad_in_context_recall(rng, vocab_size, seq_len, multi_query, noise_vocab_size, frac_noise):
    """A plain-Python port of MAD's generate_in_context_recall_instance (is_training=False)."""
    special = 0 if multi_query else 1
    c = vocab_size - special - noise_vocab_size
    key_vocab, value_vocab = np.arange(c // 2), np.arange(c // 2, c)
    noise_vocab = np.arange(c, c + noise_vocab_size)
    kv_map, inputs, targets, presented = {}, [], [], {}
    P = seq_len // 2
    keep = rng.choice(P)
    for i in range(P - 1):
        if frac_noise > 0 and i != keep and rng.random() < frac_noise:
            inputs += list(rng.choice(noise_vocab, size=2))
            targets += [-100, -100]
            continue
        k = rng.choice(key_vocab)
        v = kv_map.setdefault(k, rng.choice(value_vocab))
        inputs += [k, v]
        targets += [-100, v if (k in presented and multi_query) else -100]
        presented[k] = v
    k = rng.choice(list(presented))
    inputs += ([] if multi_query else [vocab_size - 1]) + [k, presented[k]]
    targets += ([] if multi_query else [-100]) + [-100, presented[k]]
    return np.array(inputs[:-1]), np.array(targets[1:])


def test_in_context_recall_matches_mads_distribution():
    task = NoisyRecall(vocab_size=24, seq_len=48, noise_vocab_size=8, frac_noise=0.3, num_test=2000)
    _, y = held_out(task)
    rng = np.random.default_rng(1)
    ref = [mad_in_context_recall(rng, 24, 48, True, 8, 0.3)[1] for _ in range(2000)]
    ours, theirs = (y != IGNORE).sum(1), np.array([(t != IGNORE).sum() for t in ref])
    se = np.sqrt(ours.var() / 2000 + theirs.var() / 2000)
    assert abs(ours.mean() - theirs.mean()) < 4 * se, (ours.mean(), theirs.mean())


# ---- fuzzy recall ------------------------------------------------------------------------------------------------


def parse_fuzzy(row, task):
    """Split a fuzzy recall stream into (kind, tokens, start) runs: pad, key, value or noise runs."""
    K, c = task.content_vocab // 2, task.content_vocab

    def kind(t):
        return "pad" if t == task.pad else "key" if t < K else "value" if t < c else "other"

    runs = []
    for i, t in enumerate(row):
        if runs and runs[-1][0] == kind(t):
            runs[-1][1].append(t)
        else:
            runs.append((kind(t), [t], i))
    return runs


@pytest.mark.parametrize(
    "task",
    [
        FuzzyRecall(vocab_size=16, seq_len=64, num_test=300),
        FuzzyRecall(vocab_size=20, seq_len=48, k_motif_size=2, v_motif_size=2, num_test=300),
    ],
)
def test_fuzzy_recall_scores_the_values_of_keys_seen_before(task):
    x, y = held_out(task)
    L, answerable = task.seq_len, 0
    for row_x, row_y in zip(x, y, strict=True):
        full = np.append(row_x, row_y[-1])  # the stream before the shift: its last token is the last target
        runs = [r for r in parse_fuzzy(full, task) if r[0] != "pad"]
        assert [r[0] for r in runs] == ["key", "value"] * (len(runs) // 2)
        pairs = [(tuple(k[1]), tuple(v[1]), v[2]) for k, v in zip(runs[0::2], runs[1::2], strict=True)]
        *context, (probe_key, probe_value, probe_at) = pairs
        expected, seen = np.full(L + 1, IGNORE), {}
        for key, value, at in context:
            assert len(key) == task.k_motif_size, "held-out keys always have k_motif_size tokens"
            assert len(set(key)) == len(key) and len(set(value)) == len(value) <= task.v_motif_size
            if key in seen:
                assert seen[key] == value, "a key keeps its value"
                expected[at : at + len(value)] = value
            seen.setdefault(key, value)
        assert len(probe_key) == task.k_motif_size
        expected[probe_at : probe_at + len(probe_value)] = probe_value
        if probe_key in seen:
            answerable += 1
            assert seen[probe_key] == probe_value
        np.testing.assert_array_equal(row_y, expected[1:])
    assert answerable > 0.9 * len(x), "the probe pair is placed in the context (MAD misses ~5% at length 64)"


def test_fuzzy_recall_trains_on_keys_of_every_size_and_every_next_token():
    task = FuzzyRecall(vocab_size=16, seq_len=64, num_train=300)
    s = task.split("train", 0)
    x, y = s.inputs.numpy(), s.targets.numpy()
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    sizes = {len(r[1]) for row in x for r in parse_fuzzy(row, task) if r[0] == "key"}
    assert {1, 2, 3} <= sizes


def mad_fuzzy_recall(rng, V, L, km, vm):
    """A plain-Python port of MAD's generate_fuzzy_in_context_recall_instance (multi_query, test, no noise)."""
    from itertools import permutations

    c = V - 1
    key_vocab, value_vocab = range(c // 2), range(c // 2, c)
    keys = list(permutations(key_vocab, km))
    values = {s: list(permutations(value_vocab, s)) for s in range(1, vm + 1)}
    vps = rng.integers(1, vm + 1)
    k_probe, v_probe = keys[rng.integers(len(keys))], values[vps][rng.integers(len(values[vps]))]
    probe_at = rng.integers(L - 2 * (km + vps))
    kv_map, inputs, targets, presented, added = {}, [], [], set(), False
    while len(inputs) < L - (km + vps) - (km + vm):
        vs = rng.integers(1, vm + 1)
        if len(inputs) >= probe_at and not added:
            inputs += [*k_probe, *v_probe]
            targets += [-100] * (km + vps)
            presented.add(k_probe)
            added = True
            continue
        k = keys[rng.integers(len(keys))]
        if k == k_probe:
            v, added = v_probe, True
        else:
            v = kv_map.setdefault(k, values[vs][rng.integers(len(values[vs]))])
        inputs += [*k, *v]
        targets += [-100] * km + (list(v) if k in presented else [-100] * len(v))
        presented.add(k)
    inputs, targets = [*inputs, *k_probe, *v_probe], [*targets, *[-100] * km, *v_probe]
    pad = L + 1 - len(inputs)
    return [V - 1] * pad + inputs, [-100] * pad + targets


def test_fuzzy_recall_matches_mads_distribution():
    task = FuzzyRecall(vocab_size=12, seq_len=40, num_test=3000)
    x, y = held_out(task)
    rng = np.random.default_rng(1)
    ref = [mad_fuzzy_recall(rng, 12, 40, 3, 3) for _ in range(3000)]

    def answerable(stream):
        keys = [tuple(r[1]) for r in parse_fuzzy(np.array(stream), task) if r[0] == "key"]
        return keys[-1] in keys[:-1]

    for ours, theirs in [
        ((x == task.pad).sum(1), np.array([r[0].count(11) for r in ref])),
        (
            np.array([answerable(np.append(a, b[-1])) for a, b in zip(x, y, strict=True)]),
            np.array([answerable(r[0]) for r in ref]),
        ),
        ((y != IGNORE).sum(1), np.array([sum(t != -100 for t in r[1]) for r in ref])),
    ]:
        se = np.sqrt(ours.var() / 3000 + theirs.var() / 3000)
        assert abs(ours.mean() - theirs.mean()) < 4 * se, (ours.mean(), theirs.mean())


# ---- selective copying, compression, memorization ----------------------------------------------------------------


def test_selective_copying_mad_scores_the_tokens_in_order_after_the_copy_token():
    task = SelectiveCopying(vocab_size=10, seq_len=40, num_tokens_to_copy=6, placement="mad", num_test=2000)
    x, y = held_out(task)
    k, L, blank, copy = 6, 40, 8, 9
    assert (x[:, L - k - 1] == copy).all() and (x[:, L - k :] == blank).all()
    assert (y[:, : L - k] == IGNORE).all()
    before = x[:, : L - k - 1]
    assert ((before != blank).sum(1) == k).all() and (before != copy).all()
    np.testing.assert_array_equal(y[:, L - k :], before[before != blank].reshape(-1, k))
    assert (before[:, -1] != blank).all()  # MAD inserts blanks only before tokens: the last one touches the copy token


def test_selective_copying_mamba_is_s4s_layout_markers_scored_with_the_tokens_in_order():
    """torch_copying_data(L=28, M=6, A=10, variable=True): 6 tokens among the first 34 positions, then 6 markers."""
    task = SelectiveCopying(vocab_size=10, seq_len=40, num_tokens_to_copy=6, placement="mamba", num_test=4000)
    x, y = held_out(task)
    k, L, blank, marker = 6, 40, 8, 9
    assert (x[:, L - k :] == marker).all() and (y[:, : L - k] == IGNORE).all()
    before = x[:, : L - k]
    assert ((before != blank).sum(1) == k).all() and (before != marker).all()
    np.testing.assert_array_equal(y[:, L - k :], before[before != blank].reshape(-1, k))
    occupied = (before != blank).mean(0)  # positions uniform over the 34: each holds a token with p = 6/34
    assert np.abs(occupied - k / (L - k)).max() < 0.03
    assert (y[:, L - k :] < blank).all() and len(np.unique(y[:, L - k :])) == 8  # content tokens 0..7


def test_compression_reproduces_the_tokens_at_the_compression_tokens():
    task = Compression(vocab_size=8, seq_len=20, num_test=100)
    x, y = held_out(task)
    assert (x[:, :10] < 7).all() and (x[:, 10:] == 7).all() and (y[:, :10] == IGNORE).all()
    np.testing.assert_array_equal(y[:, 10:], x[:, :10])


def test_memorization_uses_mads_fixed_map_in_every_split():
    task = Memorization(vocab_size=64, seq_len=16, num_train=200, num_val=200, num_test=200)
    c = 63
    rng = np.random.default_rng(12345)  # MAD's kv map: shuffled keys, then shuffled values, zipped
    mad = dict(zip(rng.permutation(c // 2), c // 2 + rng.permutation(c - c // 2), strict=False))
    for split in task.splits(0).values():
        x, y = split.inputs.numpy(), split.targets.numpy()
        assert (x[:, 1::2] == 63).all() and (y[:, 0::2] == IGNORE).all()
        assert all(mad[k] == v for k, v in zip(x[:, 0::2].ravel(), y[:, 1::2].ravel(), strict=True))
    assert len(np.unique(x[:, 0::2])) > 25


@pytest.mark.parametrize(
    "cls,kwargs,message",
    [
        (InContextRecall, dict(seq_len=33), "seq_len=33 must be even"),
        (InContextRecall, dict(frac_noise=0.5), "noise_vocab_size=0 must be positive when frac_noise > 0"),
        (NoisyRecall, dict(vocab_size=17), "vocab_size=17 leaves 1 key and value tokens"),
        (FuzzyRecall, dict(vocab_size=6), "vocab_size=6 leaves 2 key and 3 value tokens"),
        (FuzzyRecall, dict(seq_len=12), "seq_len=12 must exceed"),
        (SelectiveCopying, dict(seq_len=33), "num_tokens_to_copy=16 does not fit"),
        (SelectiveCopying, dict(placement="random"), "placement='random' must be one of mad, mamba"),
        (Compression, dict(seq_len=31), "seq_len=31 must be even"),
        (Memorization, dict(vocab_size=4), "vocab_size=4 must be at least 5"),
    ],
)
def test_mad_tasks_reject_impossible_settings(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs).check()


# ---- the grid ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baselines():
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return {f: compose(config_name="config", overrides=[f"task={f}"]).task for f in FAMILIES}


def preset(path: Path):
    """A grid preset read as YAML: its defaults line and the keys it sets."""
    cfg = OmegaConf.load(path)
    return list(cfg.pop("defaults")), cfg


def test_every_grid_preset_varies_exactly_its_named_factor_from_the_baseline(baselines):
    presets = sorted(CONF.glob("task/mad/*/*.yaml"))
    assert {p.parent.name for p in presets} == set(FAMILIES) and len(presets) == 60
    for path in presets:
        family, setting = path.parent.name, path.stem
        defaults, keys = preset(path)
        assert defaults == [f"/task/{family}@_here_", "_self_"]
        base = baselines[family]
        assert base.family == family and base.setting == "baseline"
        factor = next(k for k in keys if k != "setting")
        assert set(keys) == {"setting", factor} and keys[factor] != base[factor]
        assert keys.setting == setting == f"{factor}_{keys[factor]}"
        task = instantiate(OmegaConf.merge(base, keys))
        task.check()
        x, y = task.generate(4, np.random.default_rng(0))
        assert x.shape == (4, task.seq_len) and (y != IGNORE).any() and x.max() < task.vocab_size


@pytest.mark.slow
def test_every_grid_preset_composes_through_hydra_as_read(baselines):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        for path in sorted(CONF.glob("task/mad/*/*.yaml")):
            cfg = compose(config_name="config", overrides=[f"task=mad/{path.parent.name}/{path.stem}"])
            assert cfg.task == OmegaConf.merge(baselines[path.parent.name], preset(path)[1])
            assert cfg.model.max_seq_len == cfg.task.seq_len and cfg.model.vocab_size == cfg.task.vocab_size


def test_mad_baselines_are_mads(baselines):
    tasks = {f: instantiate(cfg) for f, cfg in baselines.items()}
    assert all(t.num_test == 1280 and t.setting == "baseline" for t in tasks.values())
    icr, fuzzy, noisy = tasks["in_context_recall"], tasks["fuzzy_recall"], tasks["noisy_recall"]
    assert (icr.vocab_size, icr.seq_len, icr.num_train, icr.multi_query) == (16, 128, 12800, True)
    assert (fuzzy.k_motif_size, fuzzy.v_motif_size, fuzzy.seq_len) == (3, 3, 128)
    assert (noisy.vocab_size, noisy.noise_vocab_size, noisy.frac_noise) == (32, 16, 0.2)
    sc, comp, mem = tasks["selective_copying"], tasks["compression"], tasks["memorization"]
    assert (sc.vocab_size, sc.seq_len, sc.num_tokens_to_copy, sc.placement) == (16, 256, 16, "mad")
    assert (comp.vocab_size, comp.seq_len) == (16, 64)  # MAD's length 32, as 32 tokens + 32 to reproduce them
    assert (mem.vocab_size, mem.seq_len, mem.num_train, mem.kv_map_seed) == (256, 32, 256, 12345)


def test_generated_splits_are_tensors_of_longs():
    s = Memorization(num_train=4, num_val=4, num_test=4).splits(3)
    assert all(v.inputs.dtype == torch.long == v.targets.dtype for v in s.values())
