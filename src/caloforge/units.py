"""Units: MeV inside the library, GeV on the command line and in the CaloGAN ``energy`` key.

One constant and two helpers, so that a conversion is written once and reads as what it
is. They work on Python floats, numpy arrays and torch tensors alike (a multiplication or
division by :data:`MEV_PER_GEV`, so the result is bit for bit what ``x * 1000.0`` or
``x / 1000.0`` gives).

Examples:
    >>> gev_to_mev(2.5)
    2500.0
    >>> mev_to_gev(1500.0)
    1.5
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["MEV_PER_GEV", "gev_to_mev", "mev_to_gev"]

#: MeV per GeV
MEV_PER_GEV = 1000.0

T = TypeVar("T")


def gev_to_mev(value: T) -> T:
    """``value`` (GeV; float, array or tensor) in MeV."""
    return value * MEV_PER_GEV


def mev_to_gev(value: T) -> T:
    """``value`` (MeV; float, array or tensor) in GeV."""
    return value / MEV_PER_GEV
