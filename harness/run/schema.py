"""One check for every field of a config, before anything runs: each value against the type its class declares and
the range declared beside it (`Annotated[float, Gt(0)]`, annotated_types), validated strictly by pydantic.

The classes are the schema: a node with a `_target_` is checked against that class's (or factory's) signature, the
trainer against `TrainConfig`, the top level against `RunConfig`. Nothing is listed here per field. A value that
fails is one line naming the field and what is allowed, e.g.
`trainer.lr=nan: must be a finite number > 0`. Checks that relate several fields stay with the classes.
"""

import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

import annotated_types as at
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from pydantic import ConfigDict, TypeAdapter, ValidationError

from harness.record.keys import KEYS
from harness.run.recipe import TrainConfig

STRICT = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)
# keys of a node that are not arguments of its target; `pattern` is the hybrid's list and `attention_mixer` its
# attention layers' option, checked by harness/run/build.py
SPECIAL = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_", "pattern", "attention_mixer")


@dataclass
class RunConfig:
    """The top level of conf/config.yaml (the groups are checked against their own classes)."""

    seed: Annotated[int, at.Ge(0), at.Lt(2**32)] = 0  # numpy's SeedSequence takes any such integer
    name: str = "default"
    tune: list[str] = dataclasses.field(default_factory=list)  # the fields the board selects over on val
    skip_completed: bool = True
    resume: bool = True


class SchemaError(ValueError):
    """A config value outside its declared type or range; the message is one line naming the field."""


def validate(cfg: DictConfig) -> None:
    """Raise SchemaError for the first field of `cfg` (the job's config, without `hydra`) that breaks its schema."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # an interpolation that does not resolve: Hydra's own message, folded
        raise SchemaError(" ".join(str(e).split())) from None
    if unknown := sorted(set(config) - top_level()):
        raise SchemaError(
            f"{unknown[0]} is not a top-level key (`+{unknown[0]}=...` would change nothing but the run id; the keys: "
            f"{', '.join(sorted(top_level()))})"
        )
    check_fields("", {k: v for k, v in config.items() if k in _fields(RunConfig)}, RunConfig)
    if isinstance(config.get("trainer"), dict):
        check_fields("trainer.", config["trainer"], TrainConfig)
    for group in ("task", "model"):
        if isinstance(config.get(group), dict):
            check_node(f"{group}.", config[group])


def top_level() -> set[str]:
    """The keys a config may have at its top: RunConfig's fields and the roots of what harness/record/keys.py
    declares (model, task, trainer, paths, logger, search, resources, ...)."""
    return set(_fields(RunConfig)) | {k.key.split(".")[0].split("/")[0] for k in KEYS}


def check_node(prefix: str, node: dict) -> None:
    """A node with a `_target_`: its fields against the target's parameters, then every child node that has one."""
    target = node.get("_target_")
    if isinstance(target, str):
        try:
            obj = get_object(target)
        except Exception as e:
            raise SchemaError(f"{prefix}_target_={target}: cannot be imported ({type(e).__name__}: {e})") from None
        check_fields(prefix, {k: v for k, v in node.items() if k not in SPECIAL and not _is_target(v)}, obj)
    for key, value in node.items():
        if _is_target(value):
            check_node(f"{prefix}{key}.", value)


def _is_target(value: object) -> bool:
    return isinstance(value, dict) and "_target_" in value


def check_fields(prefix: str, values: dict, obj: Any) -> None:
    fields = _fields(obj)
    if fields is None:  # a target with no inspectable signature: instantiation will say what is wrong
        return
    name = getattr(obj, "__qualname__", str(obj))
    for key, value in values.items():
        if key not in fields:
            if fields.get("**"):  # takes **kwargs: anything goes
                continue
            options = ", ".join(k for k in fields if k != "**")
            raise SchemaError(f"{prefix}{key} is not an option of {name} (options: {options})")
        annotation = fields[key]
        if annotation is None or _valid(annotation, value):
            continue
        raise SchemaError(f"{prefix}{key}={_show(value)}: must be {describe(annotation)}")


@cache
def _fields(obj: Any) -> dict[str, Any] | None:
    """Parameter name -> annotation (None if unannotated; key "**" if it takes **kwargs) of a dataclass, class or
    function; None when it cannot be inspected."""
    if dataclasses.is_dataclass(obj):
        hints = typing.get_type_hints(obj, include_extras=True)
        return {f.name: hints.get(f.name) for f in dataclasses.fields(obj) if f.init}
    try:
        fn = obj.__init__ if isinstance(obj, type) else obj
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
    except (TypeError, ValueError, NameError):
        return None
    out: dict[str, Any] = {}
    for p in list(sig.parameters.values())[1 if isinstance(obj, type) else 0 :]:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            out["**"] = True
        elif p.kind is not inspect.Parameter.VAR_POSITIONAL:
            out[p.name] = hints.get(p.name)
    return out


@cache
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation, config=STRICT)


def _valid(annotation: Any, value: object) -> bool:
    try:
        _adapter(annotation).validate_python(_as_declared(annotation, value))
        return True
    except ValidationError:
        return False
    except Exception:  # a type pydantic cannot check (a module, a callable): left to the class itself
        return True


def _as_declared(annotation: Any, value: object) -> object:
    """Config lists where the class declares a tuple (OmegaConf has no tuples)."""
    base = _strip(annotation)[0]
    if isinstance(value, list) and typing.get_origin(base) is tuple:
        return tuple(value)
    return value


def _strip(annotation: Any) -> tuple[Any, list]:
    """(the type without Annotated, its metadata)."""
    if typing.get_origin(annotation) is Annotated:
        base, *meta = typing.get_args(annotation)
        return base, meta
    return annotation, []


def describe(annotation: Any) -> str:
    """What a value of `annotation` may be, in words: 'an integer >= 0 and < 4294967296', "one of 'pre', 'post'"."""
    base, meta = _strip(annotation)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(describe(a) for a in rest)
        return text + (" or null" if len(rest) < len(args) else "")
    if origin is Literal:
        text = "one of " + ", ".join(repr(a) for a in args)
    elif origin in (list, tuple):
        each = describe(args[0]) if args else "a value"
        length = [m for m in meta if isinstance(m, at.Len)]
        size = f"{length[0].min_length} " if length and length[0].min_length == length[0].max_length else ""
        return f"a list of {size}values, each {each}"
    else:
        text = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}.get(
            base, getattr(base, "__name__", str(base))
        )
    bounds = [_bound(m) for m in meta]
    return " ".join([text, " and ".join(b for b in bounds if b)]).strip()


def _bound(m: object) -> str:
    for cls, op, attr in ((at.Gt, ">", "gt"), (at.Ge, ">=", "ge"), (at.Lt, "<", "lt"), (at.Le, "<=", "le")):
        if isinstance(m, cls):
            return f"{op} {_show(getattr(m, attr))}"
    if isinstance(m, at.Interval):
        return " and ".join(_bound(b) for b in m)
    return ""


def _show(value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    return str(value)
