"""Frozen configuration dataclasses, read from dicts and YAML files.

Every configuration in caloforge (the training loop's, each model family's) is a frozen
dataclass deriving from :class:`Config`, so that a checkpoint can store it as a plain dict
and rebuild it exactly. A value from YAML is turned into the type the field declares
(a list into a tuple, ``1`` into ``1.0``), and a key that does not exist, a value of the
wrong type or a learning rate that is not positive is refused in one line that names the
key.

The coercion is hand-written (:func:`_coerce`, about fifty lines for the handful of types
configs use) rather than pydantic or cattrs: the configs stay plain standard-library
dataclasses that checkpoints store as dicts, and a validation library would be a
dependency for that alone.

Examples:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Toy(Config):
    ...     size: int = 4
    ...     widths: tuple[int, ...] = (8, 8)
    ...     lr: float = 1e-3
    >>> Toy.from_dict({"size": 2, "widths": [16, 4]})
    Toy(size=2, widths=(16, 4), lr=0.001)
    >>> Toy.from_dict({"size": "abc"})
    Traceback (most recent call last):
    ...
    caloforge.errors.CaloforgeError: Toy.size: expected an integer, got 'abc'
    >>> Toy.from_dict({"lr": -1})
    Traceback (most recent call last):
    ...
    caloforge.errors.CaloforgeError: Toy.lr: a learning rate must be positive, got -1.0
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caloforge.errors import CaloforgeError

__all__ = ["Config", "check_choice", "load_yaml"]


def _coerce_union(value: Any, hint: Any, where: str) -> Any:
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, where)
        except CaloforgeError:
            continue
    raise CaloforgeError(f"{where}: cannot read {value!r} as {hint}")


def _coerce_tuple(value: Any, hint: Any, where: str) -> tuple:
    args = typing.get_args(hint)
    if not isinstance(value, (list, tuple)):
        raise CaloforgeError(f"{where}: expected a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(v, args[0], where) for v in value)
    if len(args) != len(value):
        raise CaloforgeError(f"{where}: expected {len(args)} values, got {value!r}")
    return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))


def _coerce_number(value: Any, hint: type, where: str) -> float | int:
    kind = "a number" if hint is float else "an integer"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise CaloforgeError(f"{where}: expected {kind}, got {value!r}")
    if hint is int and isinstance(value, float) and not value.is_integer():
        raise CaloforgeError(f"{where}: expected {kind}, got {value!r}")
    try:
        return hint(value)
    except ValueError:
        raise CaloforgeError(f"{where}: expected {kind}, got {value!r}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn a YAML value into the type a dataclass field declares (tuples, floats, ...).

    Raises:
        CaloforgeError: the value cannot be read as that type (``where`` names the key).
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, hint, where)
    if origin is tuple:
        return _coerce_tuple(value, hint, where)
    if hint in (float, int):
        return _coerce_number(value, hint, where)
    if hint is bool and not isinstance(value, bool):
        raise CaloforgeError(f"{where}: expected true or false, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise CaloforgeError(f"{where}: expected a string, got {value!r}")
    return value


def check_choice(where: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Refuse a setting that is none of ``choices``, in one line naming them.

    Raises:
        CaloforgeError: ``"{where} {name} must be 'a', 'b' or 'c', got 'x'"``.
    """
    if value not in choices:
        quoted = [f"'{c}'" for c in choices]
        options = (", ".join(quoted[:-1]) + " or " + quoted[-1]) if len(quoted) > 1 else quoted[0]
        raise CaloforgeError(f"{where} {name} must be {options}, got {value!r}")


def _check_range(name: str, value: Any, where: str) -> None:
    """The ranges every family shares by naming convention: a learning rate (``lr`` or
    ``*_lr``) is a positive finite number. Family-specific ranges are checked in each
    config's ``__post_init__``."""
    if (name == "lr" or name.endswith("_lr")) and isinstance(value, float):
        if not (math.isfinite(value) and value > 0):
            raise CaloforgeError(f"{where}: a learning rate must be positive, got {value!r}")


@dataclass(frozen=True)
class Config:
    """Base of every frozen configuration dataclass: dicts and YAML in and out.

    Unknown keys are refused with the list of valid ones, so a typo in a YAML file is an
    error rather than a silently ignored setting.
    """

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str | None = None):
        """Build the config from a mapping of field names to (YAML) values.

        Args:
            d: the settings; missing ones take their defaults (``None``: all defaults).
            where: how messages name the source (default: the class name).

        Raises:
            CaloforgeError: an unknown key, a value of the wrong type, or a value out of
                range; the message names the key.
        """
        d = dict(d or {})
        where = where or cls.__name__
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise CaloforgeError(
                f"{where}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(names)}"
            )
        kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in d.items()}
        for k, v in kwargs.items():
            _check_range(k, v, f"{where}.{k}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise CaloforgeError(f"{where}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = None):
        """Read the config from a YAML file, or from one ``section`` of it.

        Raises:
            CaloforgeError: a missing or malformed file, or a bad setting (see
                :meth:`from_dict`).
        """
        d = load_yaml(path)
        if section is not None:
            d = d.get(section) or {}
        return cls.from_dict(d, where=f"{path}" + (f" [{section}]" if section else ""))

    def to_dict(self) -> dict[str, Any]:
        """Plain (YAML/JSON-safe) dict; tuples become lists."""

        def plain(v):
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return v

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes):
        """A copy with some fields changed (values coerced like YAML input).

        Raises:
            CaloforgeError: a bad setting (see :meth:`from_dict`).
        """
        return self.from_dict({**self.to_dict(), **changes})


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping.

    Raises:
        CaloforgeError: the file is missing, is not valid YAML, or is not a mapping.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise CaloforgeError(f"config file not found: {path}")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        # one line: where (1-based line and column) and what, not PyYAML's quoted snippet
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise CaloforgeError(f"{path}: not valid YAML{where}: {what}") from None
    if not isinstance(d, dict):
        raise CaloforgeError(f"{path}: expected a mapping at the top level")
    return d
