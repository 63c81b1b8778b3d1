"""Small click helpers shared by the commands: ``LO:HI`` ranges and common options.

Bad values raise :class:`~caloforge.errors.CaloforgeError`, which ``caloforge``'s
``main`` prints as one line (no usage block, no traceback).
"""

from __future__ import annotations

import math

import click

from caloforge.errors import CaloforgeError

__all__ = ["parse_range", "RangeType", "SeedType", "OutputPath", "seed_option", "SEED_MAX"]

#: the largest seed: every random generator the library seeds (numpy, torch) takes 0..2**32-1
SEED_MAX = 2**32 - 1


def parse_range(text: str, name: str = "range", unit: str = "", low: float | None = None,
                high: float | None = None) -> tuple[float, float]:
    """Parse ``"LO:HI"`` (or a single value ``"X"``, meaning ``X:X``) into ``(lo, hi)``.

    Args:
        text: the user's text, e.g. ``"1:100"``.
        name: what the range is, for messages (``"--energy"``).
        unit: unit for messages (``"GeV"``).
        low, high: allowed bounds (inclusive), or ``None``.

    Raises:
        CaloforgeError: not two numbers, NaN/infinite, reversed, or out of bounds.
    """
    text = str(text).strip()
    unit_s = f" {unit}" if unit else ""
    parts = text.split(":")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise CaloforgeError(f"{name}: expected LO:HI (e.g. 1:100), got {text!r}")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise CaloforgeError(f"{name}: expected two numbers LO:HI (e.g. 1:100), got {text!r}")\
            from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise CaloforgeError(f"{name}: {text!r} is not a finite range")
    if lo > hi:
        raise CaloforgeError(f"{name}: range {text} is reversed; write {hi:g}:{lo:g}")
    if low is not None and lo < low:
        raise CaloforgeError(f"{name}: {lo:g}{unit_s} is below the minimum {low:g}{unit_s}")
    if high is not None and hi > high:
        raise CaloforgeError(f"{name}: {hi:g}{unit_s} is above the maximum {high:g}{unit_s}")
    return lo, hi


class RangeType(click.ParamType):
    """A click type for ``LO:HI`` ranges (see :func:`parse_range`)."""

    name = "LO:HI"

    def __init__(self, unit: str = "", low: float | None = None, high: float | None = None):
        self.unit, self.low, self.high = unit, low, high

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, tuple):
            return value
        label = f"--{param.name}" if param is not None and param.name else "range"
        return parse_range(value, label, self.unit, self.low, self.high)


class SeedType(click.ParamType):
    """A click type for ``--seed``: a whole number from 0 to :data:`SEED_MAX`; anything else
    is a :class:`CaloforgeError` (one line)."""

    name = "SEED"

    def convert(self, value, param, ctx):
        if value is None:
            return None
        if isinstance(value, int):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                number = None
        if not isinstance(number, int) or not 0 <= number <= SEED_MAX:
            raise CaloforgeError(f"--seed: expected a whole number from 0 to {SEED_MAX}, got "
                                 f"{value!r}")
        return number


class OutputPath(click.Path):
    """A click path for an output (``kind`` ``"file"`` or ``"folder"``): refused in one line
    when it cannot be written as one (a folder for a file, a path below a file, an existing
    file for a folder); see :func:`caloforge.data.atomic.check_output_path`."""

    def __init__(self, kind: str = "file"):
        super().__init__(dir_okay=kind == "folder", file_okay=kind == "file")
        self.kind = kind

    def convert(self, value, param, ctx):
        from caloforge.data.atomic import check_output_path

        label = f"--{param.name}" if param is not None and param.name else "output"
        try:
            check_output_path(value, self.kind)
        except CaloforgeError as err:
            raise CaloforgeError(f"{label}: {err}") from None
        return super().convert(value, param, ctx)


def seed_option(default: int | None = 0):
    """``--seed``: the random seed (same seed, same result), 0 to :data:`SEED_MAX`."""
    return click.option("--seed", type=SeedType(), default=default, show_default=True,
                        help="Random seed; the same seed gives the same output.")
