"""Small click helpers shared by the commands: ``LO:HI`` ranges and common options.

Bad values raise :class:`~caloforge.errors.CaloforgeError`, which ``caloforge``'s
``main`` prints as one line (no usage block, no traceback).
"""

from __future__ import annotations

import math

import click

from caloforge.errors import CaloforgeError

__all__ = ["parse_range", "RangeType", "seed_option"]


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


def seed_option(default: int = 0):
    """``--seed``: the random seed (same seed, same result)."""
    return click.option("--seed", type=int, default=default, show_default=True,
                        help="Random seed; the same seed gives the same output.")
