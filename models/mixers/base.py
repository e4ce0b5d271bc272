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

A subclass's single-field ranges are declared in its signature (`Annotated[int, Ge(1)]`, `Literal[...]`) and
checked when it is constructed (`check_option`), so a mixer built from Python fails as loudly as one from a config;
checks relating several fields stay in the mixer's code as `ValueError("mixer.<field>=<v> must ...")`.
"""

import abc
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Literal, Union

import annotated_types as at
import torch
from torch import Tensor, nn

REQUIRED = ("d_model", "max_seq_len", "layer_idx")


class Mixer(nn.Module, metaclass=abc.ABCMeta):
    accepts_position: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:  # each class checks the options its own signature declares
            cls.__init__ = _checked(cls.__init__)

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

    def kernel_for(self, device_type: str, bf16: bool) -> str | None:
        """The kernel this mixer runs on `device_type` ("cpu", "cuda"), under bf16 autocast or not: what its
        `kernel=auto` resolves to. The harness records it and puts it in the run id, so a GPU run is never taken for
        a CPU run. None: the mixer has a single form. A mixer with a `kernel` option must say (contract_errors)."""
        return None


def autocast_bf16(x: Tensor) -> bool:
    """Whether bf16 autocast is on for x's device (the trainer's precision=bf16, or auto on CUDA)."""
    kind = x.device.type
    return torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16


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
        elif p.default is not inspect.Parameter.empty and (bad := check_option(p.name, p.default, p.annotation)):
            errors.append(f"{name}.__init__: the default breaks its own declaration: {bad}")
    if "kernel" in kinds and cls.kernel_for is Mixer.kernel_for:
        errors.append(f"{name} has a kernel option but no kernel_for(device_type, bf16): `auto` must resolve")
    if cls.accepts_position and "position" not in kinds:
        errors.append(f"{name} sets accepts_position but takes no position= argument")
    return errors


def check_option(name: str, value: typing.Any, hint: typing.Any, prefix: str = "mixer.") -> str | None:
    """Why `value` breaks the range or choices declared in `hint` (Annotated[..., Ge(1)], Literal[...], unions of
    them), or None. Types themselves are the config schema's business; only declared constraints are checked."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *metadata = typing.get_args(hint)
        if (error := check_option(name, value, base, prefix)) is not None:
            return error
        for constraint in _flatten(metadata):
            if not _satisfies(constraint, value):
                return f"{prefix}{name}={value!r} must be {_describe(constraint, base)}"
        return None
    if origin is Literal:
        choices = typing.get_args(hint)
        return None if value in choices else f"{prefix}{name}={value!r} must be one of {', '.join(map(str, choices))}"
    if origin in (Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        errors = [check_option(name, value, a, prefix) for a in arms]
        return None if any(e is None for e in errors) else errors[0]
    return None


def _flatten(metadata: Iterable[object]) -> list:
    out = []
    for m in metadata:
        out.extend(_flatten(list(m)) if isinstance(m, at.GroupedMetadata) else [m])  # Interval -> Ge, Le, ...
    return out


def _satisfies(c: object, value: typing.Any) -> bool:
    try:
        if isinstance(c, at.Gt):
            return value > c.gt
        if isinstance(c, at.Ge):
            return value >= c.ge
        if isinstance(c, at.Lt):
            return value < c.lt
        if isinstance(c, at.Le):
            return value <= c.le
        if isinstance(c, at.MultipleOf):
            return value % c.multiple_of == 0
        if isinstance(c, at.MinLen):
            return len(value) >= c.min_length
        if isinstance(c, at.MaxLen):
            return len(value) <= c.max_length
    except TypeError:  # a value of the wrong type: the schema reports it
        return True
    return True  # constraints this checker does not know are left to the schema


def _describe(c: object, base: object) -> str:
    if (isinstance(c, at.Gt) and c.gt == 0) or (isinstance(c, at.Ge) and c.ge == 1 and base is int):
        return "positive"
    if isinstance(c, at.Ge) and c.ge == 0:
        return "non-negative"
    for kind, op, field in ((at.Gt, ">", "gt"), (at.Ge, ">=", "ge"), (at.Lt, "<", "lt"), (at.Le, "<=", "le")):
        if isinstance(c, kind):
            return f"{op} {getattr(c, field)}"
    if isinstance(c, at.MultipleOf):
        return f"a multiple of {c.multiple_of}"
    if isinstance(c, at.MinLen):
        return f"of length >= {c.min_length}"
    if isinstance(c, at.MaxLen):
        return f"of length <= {c.max_length}"
    return repr(c)


def _checked(init: Callable[..., None]) -> Callable[..., None]:
    """`init` checking, before it runs, every argument given against the range its annotation declares."""
    signature = inspect.signature(init)
    hints = typing.get_type_hints(init, include_extras=True)

    @functools.wraps(init)
    def checked_init(self: Mixer, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as e:  # an unknown option: name the class, as Python's own message does
            raise TypeError(f"{init.__qualname__}() {e}") from None
        for name, value in bound.arguments.items():
            if name in hints and (error := check_option(name, value, hints[name])) is not None:
                raise ValueError(error)
        init(self, *args, **kwargs)

    return checked_init
