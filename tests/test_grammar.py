"""harness/grammar.py expands a sweep into the same jobs, in the same order, as Hydra's basic sweeper (the reference
here, its internal `split_arguments`), over random sweeps of plain, listed, repeated and quoted values."""

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given
from hypothesis import strategies as st

from harness import grammar

KEYS = ("model/mixer", "task", "seed", "trainer.lr", "+model.extra", "task.seq_len")
VALUES = st.sampled_from(["a", "b", "0", "1", "3e-3", "null", "'x,y'", "[1,2]"])
OVERRIDE = st.tuples(st.sampled_from(KEYS), st.lists(VALUES, min_size=1, max_size=3)).map(
    lambda kv: f"{kv[0]}={','.join(kv[1])}"
)


@given(st.lists(OVERRIDE, max_size=5))
def test_jobs_are_the_basic_sweepers(overrides):
    [expected] = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
    assert grammar.jobs(overrides) == [list(job) for job in expected]
