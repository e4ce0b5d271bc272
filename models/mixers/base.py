"""The mixer contract, as code. Every sequence mixer (one file each in models/mixers/, one YAML in conf/model/mixer/)
subclasses `Mixer`:

    class MyMixer(Mixer):
        accepts_position = False                     # True: takes rope/alibi from the backbone as `position=`
        def __init__(self, d_model: int, *, max_seq_len: int, layer_idx: int, my_option: int = 4): ...
        def forward(self, x: Tensor) -> Tensor:      # (batch, seq, d_model) -> same shape, strictly causal
        def flops_per_token(self, seq_len: int) -> int:   # training FLOPs per token beyond 6 * parameters
        def no_weight_decay(self) -> Iterable[nn.Parameter]:  # e.g. Mamba's A_log and D (default: none)

Initialisation is owned by the part: a mixer initialises its own parameters in `__init__` as its reference code
does; the backbone initialises only what it creates (embeddings, head). The trainer puts the parameters named by
`no_weight_decay()` in the optimizer's no-decay group, with norms, biases and embeddings. `contract_errors(cls)`
lists what a class breaks; the tests run it on every option of conf/model/mixer/ before anything trains.
"""

import abc
import inspect
from collections.abc import Iterable

from torch import Tensor, nn

REQUIRED = ("d_model", "max_seq_len", "layer_idx")


class Mixer(nn.Module, metaclass=abc.ABCMeta):
    accepts_position: bool = False

    def __init__(self, d_model: int, *, max_seq_len: int, layer_idx: int):
        super().__init__()
        self.d_model, self.max_seq_len, self.layer_idx = d_model, max_seq_len, layer_idx

    @abc.abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """(batch, seq, d_model) -> (batch, seq, d_model); output t depends on inputs <= t only."""

    @abc.abstractmethod
    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token that 6 * parameters does not count (the sequence term: QK^T and AV for
        attention, the scan or the FFT convolution for the recurrent and convolutional mixers)."""

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        """Parameters the optimizer must not decay (state-space A and D, decay rates): none by default."""
        return ()


def contract_errors(cls: type) -> list[str]:
    """What `cls` (a mixer class, or a function returning a mixer) breaks of the contract; empty if nothing."""
    name = getattr(cls, "__qualname__", repr(cls))
    if not (isinstance(cls, type) and issubclass(cls, Mixer)):
        return [f"{name} does not subclass models.mixers.base.Mixer"]
    errors = []
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        errors.append(f"{name} does not implement {', '.join(abstract)}")
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if not params or params[0].name != "d_model" or params[0].kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
        errors.append(f"{name}.__init__ must take d_model as its first argument")
    kinds = {p.name: p.kind for p in params}
    for required in REQUIRED[1:]:
        if kinds.get(required) is not inspect.Parameter.KEYWORD_ONLY:
            errors.append(f"{name}.__init__ must take {required} as a keyword-only argument")
    for p in params:
        if p.name in REQUIRED or p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                errors.append(f"{name}.__init__ takes **{p.name}: options must be named (a typo must fail)")
            continue
        if p.default is inspect.Parameter.empty:
            errors.append(f"{name}.__init__: option {p.name} has no default")
        if p.annotation is inspect.Parameter.empty:
            errors.append(f"{name}.__init__: option {p.name} has no type annotation (the config is checked by it)")
    if cls.accepts_position and "position" not in kinds:
        errors.append(f"{name} sets accepts_position but takes no position= argument")
    return errors
