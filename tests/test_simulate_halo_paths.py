"""The halo photons' paths (parametric-5): several deposits per photon, clustered hits.

:func:`clustered_compound_poisson` draws each photon of a sparse cell and its path, and
spreads the deposits of dense cells on average (a convolution); these tests hold the two
to each other, to the energy they must deposit, and to the clustering they exist for.
"""

import numpy as np
import pytest

import caloforge.simulate._halo as halo_module
from caloforge.simulate._halo import (
    Halo,
    _path_kernel,
    clustered_compound_poisson,
    compound_poisson,
    path_variance,
)

PHOTON_LENGTH = 50.0
# one 20 x 20 layer of 5 mm cells, and a 3 x 8 layer of 40 x 10 mm cells
GRIDS = [(np.arange(21) * 5.0 - 50.0, np.arange(21) * 5.0 - 50.0),
         (np.arange(4) * 40.0 - 60.0, np.arange(9) * 10.0 - 40.0)]
N_VOXELS = 400 + 24


def _expectation(m, level):
    """``(m, N_VOXELS + 2)`` mean deposits: ``level`` per cell, no overflow."""
    mean = np.full((m, N_VOXELS + 2), float(level))
    mean[:, N_VOXELS:] = 0.0
    return mean


def test_path_variance_is_that_of_the_drawn_paths():
    halo = Halo(near=0.1, interactions=2.5, interaction_length=0.3)
    # 1 mm cells, no cut: the kernel's offsets are the paths' displacements to within
    # a cell
    kernel = _path_kernel(1.0, 1.0, halo.interactions, halo.interaction_length * PHOTON_LENGTH,
                          tail=0.0)
    offsets = np.arange(kernel.shape[0]) - (kernel.shape[0] - 1) // 2
    variance = (kernel.sum(axis=1) * offsets**2).sum()
    expected = path_variance(halo, PHOTON_LENGTH)
    assert expected == pytest.approx(2.0 / 3.0 * 1.5 * 15.0**2)
    assert variance == pytest.approx(expected, rel=0.04)
    assert path_variance(Halo(near=0.1), PHOTON_LENGTH) == 0.0


@pytest.mark.parametrize("level", [0.05, 20.0])
def test_deposits_keep_the_expected_energy(level):
    """Sparse cells (photons drawn one by one) and dense ones (spread on average) both
    deposit, inside the grid or in its overflow, what they expect."""
    halo = Halo(near=0.1, shape=2.0, interactions=2.5, interaction_length=0.3)
    m = 400
    mean = _expectation(m, level)
    energy = clustered_compound_poisson(np.random.default_rng(1), halo, mean,
                                        np.full(m, 0.5), GRIDS, PHOTON_LENGTH)
    expected = mean.sum() * 0.5
    assert energy.sum() == pytest.approx(expected, rel=4.0 / np.sqrt(mean.sum()))
    # the paths carry some deposits out of the grid, into each layer's overflow
    assert 0.0 < energy[:, N_VOXELS:].sum() < 0.2 * expected


def test_drawn_and_averaged_spreading_agree(monkeypatch):
    """The two ways of spreading deposits give the same mean per cell: every cell drawn
    photon by photon against the default split at _DENSE_PHOTONS."""
    halo = Halo(near=0.1, shape=2.0, interactions=2.0, interaction_length=0.2)
    m = 300
    rows = np.arange(20) - 9.5
    # a core of a few hundred expected photons falling to a sparse edge
    profile = 400.0 * np.exp(-np.abs(rows) / 1.5)
    mean = _expectation(m, 0.0)
    mean[:, :400] = (profile[:, None] * profile[None, :] / 400.0).reshape(-1)
    args = (halo, mean, np.full(m, 1.0), GRIDS, PHOTON_LENGTH)
    split = clustered_compound_poisson(np.random.default_rng(2), *args)
    monkeypatch.setattr(halo_module, "_DENSE_PHOTONS", np.inf)
    drawn = clustered_compound_poisson(np.random.default_rng(3), *args)
    a, b = split[:, :400].mean(axis=0), drawn[:, :400].mean(axis=0)
    err = np.hypot(split[:, :400].std(axis=0), drawn[:, :400].std(axis=0)) / np.sqrt(m)
    pull = (a - b) / np.maximum(err, 1e-9)
    assert np.abs(pull).max() < 5.0, np.abs(pull).max()
    assert np.mean(np.abs(pull) < 2.0) > 0.85


def _neighbour_ratio(energy):
    """P(right-hand neighbour hit | cell hit) over P(cell hit), on the 5 mm layer."""
    hit = energy[:, :400].reshape(-1, 20, 20) > 0
    both = (hit[:, :, 1:] & hit[:, :, :-1]).sum() / hit[:, :, :-1].sum()
    return both / hit.mean(), hit.mean()


def test_hits_cluster_only_when_photons_fly_on():
    m = 500
    mean = _expectation(m, 0.05)
    one = compound_poisson(np.random.default_rng(4), Halo(near=0.1), mean, np.full(m, 0.5))
    paths = clustered_compound_poisson(
        np.random.default_rng(4), Halo(near=0.1, interactions=2.5, interaction_length=0.1),
        mean, np.full(m, 0.5), GRIDS, PHOTON_LENGTH)
    ratio_one, occupancy_one = _neighbour_ratio(one)
    ratio_paths, occupancy_paths = _neighbour_ratio(paths)
    assert abs(ratio_one - 1.0) < 0.1
    assert ratio_paths > 2.0
    # the same deposits land in fewer cells: a photon hits some cells twice
    assert occupancy_paths < occupancy_one
