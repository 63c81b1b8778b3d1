"""The readout threshold: cell energies below it count as empty.

A real readout records nothing below a threshold, and the community's evaluation applies
one to both samples before every metric, so that a generator is not judged by deposits far
below what a detector would see (or rewarded for reproducing them). Values below the
threshold, small negative values of a generator included, become 0. The same function
serves generators whose run asks for it, so that generated files carry no floor of tiny
deposits.

Defaults per geometry (MeV per cell, in the geometry's energy scale: total deposit for
caloforge's geometries, calibrated cell energy for the CaloChallenge files):

- CaloChallenge dataset 1 (photons, pions): 1 MeV; datasets 2 and 3: 0.5 keV in the
  silicon divided by the sampling fraction 0.033, i.e. 15.15 keV. These are the values of
  the challenge's ``evaluate.py``.
- ``clic51``: 15.15 keV, the CaloChallenge dataset-2/3 value: the same Si-W technology
  (0.5 keV in silicon) at a comparable sampling fraction.
- ``calogan`` and ``atlas89``: 1 keV, the threshold CaloFlow applies to the CaloGAN data
  (Pb/LAr). On our Geant4 11.4 (electromagnetic physics, data-free models) e+ reference it
  removes 0.06% of the non-zero cells, while it removes any sub-keV floor a generator leaves
  (e.g. from dequantisation noise).
- any other geometry: 0 (only negative values are removed).

References:
    C. Krause, M. Faucci Giannelli, G. Kasieczka, B. Nachman, D. Salamani, D. Shih,
    A. Zaborowska et al., "CaloChallenge 2022: a community challenge for fast calorimeter
    simulation", arXiv:2410.21611; evaluation code ``code/evaluate.py`` of
    https://github.com/CaloChallenge/homepage (``args.min_energy``).

    C. Krause, D. Shih, "CaloFlow: fast and accurate generation of calorimeter showers with
    normalizing flows", Phys. Rev. D 107 (2023) 113003, arXiv:2106.05285 (1 keV on the
    CaloGAN data).
"""

from __future__ import annotations

import numpy as np

from caloforge.errors import CaloforgeError

__all__ = ["READOUT_THRESHOLD_MEV", "default_threshold", "apply_threshold"]

_SI_W = 0.5e-3 / 0.033  # 0.5 keV in silicon over the sampling fraction: 15.15 keV

READOUT_THRESHOLD_MEV: dict[str, float] = {
    "calogan": 1e-3,
    "atlas89": 1e-3,
    "clic51": _SI_W,
    "calochallenge_ds1_photons": 1.0,
    "calochallenge_ds1_pions": 1.0,
    "calochallenge_ds2": _SI_W,
    "calochallenge_ds3": _SI_W,
}


def default_threshold(geometry) -> float:
    """The default readout threshold of a geometry, MeV per cell.

    Args:
        geometry: a :class:`caloforge.geometry.Geometry` or its registry name.

    Returns:
        The value of :data:`READOUT_THRESHOLD_MEV`, or 0.0 for a geometry not listed there.

    Examples:
        >>> default_threshold("calochallenge_ds1_photons")
        1.0
        >>> round(default_threshold("calochallenge_ds2") * 1e3, 2)  # keV
        15.15
    """
    name = geometry if isinstance(geometry, str) else geometry.name
    return READOUT_THRESHOLD_MEV.get(name, 0.0)


def apply_threshold(voxels: np.ndarray, threshold_mev: float, copy: bool = True) -> np.ndarray:
    """Set every cell below ``threshold_mev`` to zero (negative values included).

    As the CaloChallenge evaluation: ``np.where(x < threshold, 0, x)``, so a cell exactly at
    the threshold is kept.

    Args:
        voxels: deposits in MeV, any shape.
        threshold_mev: the threshold, MeV (>= 0).
        copy: return a new array (``False``: change ``voxels`` in place and return it).

    Returns:
        The thresholded deposits, same shape and dtype.

    Raises:
        CaloforgeError: for a negative or non-finite threshold.

    Examples:
        >>> apply_threshold(np.array([-0.1, 0.0005, 1.0, 3.0]), 1.0)
        array([0., 0., 1., 3.])
    """
    threshold_mev = float(threshold_mev)
    if not np.isfinite(threshold_mev) or threshold_mev < 0:
        raise CaloforgeError(f"the readout threshold must be a finite value >= 0 MeV, got "
                             f"{threshold_mev}")
    out = np.array(voxels, copy=True) if copy else voxels
    out[out < threshold_mev] = 0
    return out
