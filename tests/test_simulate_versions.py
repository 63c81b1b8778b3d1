"""The parametric simulator's versions: each stays selectable and reproducible.

A model card says which version a model learned (``simulator_version``); its figures can
only be reproduced against showers of that version, so an older calibration must keep
giving the same showers after a newer one is added.
"""

import h5py
import numpy as np
import pytest

from caloforge.cli.main import main
from caloforge.errors import CaloforgeError
from caloforge.geometry import get_geometry
from caloforge.simulate import simulate_showers
from caloforge.simulate._halo import (
    exponential_disc_mixture,
    gaussian_cell_probabilities,
    halo_expectation,
)
from caloforge.simulate._showers import axis_walk_steps, em_showers, walk_offsets
from caloforge.simulate.parametric import SIMULATOR_VERSION, SIMULATOR_VERSIONS, calorimeter

# Energy per layer (MeV) of the first four showers of seed 7, written by parametric-2 as
# it was committed before parametric-3 existed (commit 578c647): calogan 1-100 GeV and the
# geometries' default ranges.
PARAMETRIC_2 = {
    ("calogan", "eplus"): [[9801.14, 69537.95, 83.84], [2649.91, 3569.85, 0.0],
                           [11008.4, 48192.7, 84.37], [7542.2, 79020.5, 134.43]],
    ("calogan", "gamma"): [[1243.19, 78224.5, 88.68], [1601.75, 4611.63, 2.49],
                           [9186.84, 50065.23, 23.26], [46.75, 85759.23, 684.41]],
    ("calogan", "piplus"): [[33.85, 191.38, 24.32], [42.64, 1324.38, 51.32],
                            [60.73, 26783.52, 348.84], [55.78, 255.17, 16.59]],
    ("atlas89", "gamma"): [[4.14, 5787.5, 70344.56, 908.96], [17.04, 4496.68, 9548.34, 26.94],
                           [136.35, 11294.56, 48345.82, 338.47],
                           [0.87, 483.62, 79898.41, 1660.6]],
}

# The same for parametric-3, as committed before parametric-4 existed (commit f1d17ca).
PARAMETRIC_3 = {
    ("calogan", "eplus"): [[15548.86, 64042.84, 110.67], [1860.57, 4376.3, 6.08],
                           [7995.99, 51204.32, 124.42], [20092.72, 66613.14, 79.58]],
    ("calogan", "gamma"): [[1166.79, 78308.19, 258.66], [2282.18, 3947.93, 3.14],
                           [9343.22, 49968.92, 33.09], [68.77, 85843.36, 617.05]],
    ("calogan", "piplus"): [[33.85, 191.38, 24.32], [43.22, 1020.21, 286.38],
                            [49.49, 31518.95, 842.84], [55.78, 255.17, 16.59]],
    ("atlas89", "gamma"): [[3.05, 5777.41, 70797.48, 635.46], [17.53, 3251.25, 10784.27, 44.98],
                           [245.47, 12445.56, 47045.56, 308.17],
                           [3.51, 506.57, 80344.42, 1717.93]],
}
# The same for parametric-4, as committed before parametric-5 existed (commit e19c6ce).
PARAMETRIC_4 = {
    ("calogan", "eplus"): [[15543.22, 64051.81, 96.27], [1921.68, 4314.68, 5.56],
                           [8006.87, 51213.01, 117.31], [20010.8, 66702.51, 55.52]],
    ("calogan", "gamma"): [[1880.96, 77732.64, 155.46], [1611.43, 4620.07, 1.55],
                           [7699.24, 51359.89, 202.55], [60.62, 85990.38, 601.94]],
    ("calogan", "piplus"): [[33.85, 191.38, 24.32], [43.22, 1020.21, 286.38],
                            [49.49, 31518.95, 842.84], [55.78, 255.17, 16.59]],
    ("atlas89", "gamma"): [[1.75, 4304.89, 72091.05, 827.44], [120.36, 5265.89, 8592.99, 34.46],
                           [269.82, 13307.21, 45643.01, 468.57],
                           [3.26, 106.61, 75828.15, 4780.44]],
}
PINNED = {"parametric-2": PARAMETRIC_2, "parametric-3": PARAMETRIC_3,
          "parametric-4": PARAMETRIC_4}


def _layer_sums(showers):
    return np.stack([layer.reshape(len(showers), -1).sum(axis=1) for layer in showers.layers],
                    axis=1)


@pytest.mark.parametrize("version", list(PINNED))
@pytest.mark.parametrize("geometry,particle", list(PARAMETRIC_2))
def test_older_versions_give_the_showers_they_always_gave(geometry, particle, version):
    energy = (1.0, 100.0) if geometry == "calogan" else None
    showers = simulate_showers(geometry, particle, 4, energy_range=energy, seed=7,
                               version=version)
    assert showers.meta["generator_version"] == version
    np.testing.assert_allclose(_layer_sums(showers), PINNED[version][geometry, particle],
                               rtol=1e-5, atol=0.01)


def test_the_default_is_the_newest_version_and_it_differs():
    assert SIMULATOR_VERSION == SIMULATOR_VERSIONS[-1] == "parametric-5"
    new = simulate_showers("calogan", "eplus", 4, energy_range=(1.0, 100.0), seed=7)
    assert new.meta["generator_version"] == "parametric-5"
    for pinned in PINNED.values():
        assert not np.allclose(_layer_sums(new), pinned["calogan", "eplus"], rtol=1e-3)
    # the same incident energies: the version changes the showers, not the sampling
    old = simulate_showers("calogan", "eplus", 4, energy_range=(1.0, 100.0), seed=7,
                           version="parametric-2")
    np.testing.assert_array_equal(new.incident_energy, old.incident_energy)


def test_unknown_version_is_refused_in_one_line():
    known = "parametric-2, parametric-3, parametric-4, parametric-5"
    with pytest.raises(CaloforgeError, match=known):
        simulate_showers("calogan", "eplus", 2, version="parametric-9")
    with pytest.raises(CaloforgeError, match="unknown parametric simulator version"):
        calorimeter("calogan", "3")
    with pytest.raises(CaloforgeError, match="parametric engine"):
        simulate_showers("calogan", "eplus", 2, engine="geant4", version="parametric-2")


def test_cli_writes_the_chosen_version(tmp_path, capsys):
    out = tmp_path / "old.h5"
    try:
        main(["simulate", "-p", "gamma", "-n", "5", "--simulator-version", "parametric-2",
              "-o", str(out), "-q"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert "(parametric, parametric-2)" in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        assert f.attrs["generator_version"] == "parametric-2"
    bad = tmp_path / "bad.h5"
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "-p", "gamma", "-n", "5", "--simulator-version", "nope",
              "-o", str(bad)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "parametric-2, parametric-3, parametric-4, parametric-5" in err
    assert len(err.strip().splitlines()) == 1
    assert not bad.exists()


def test_exponential_disc_mixture_matches_its_radial_distribution():
    sigma, weight = exponential_disc_mixture()
    assert np.all(weight > 0) and np.isclose(weight.sum(), 1.0)
    r = np.linspace(0.0, 12.0, 601)
    # P(radius < r) of exp(-r) in a plane: 1 - (1 + r) exp(-r); of an isotropic normal of
    # standard deviation s per axis: 1 - exp(-r^2 / 2 s^2).
    mixture = sum(w * (1.0 - np.exp(-0.5 * (r / s) ** 2))
                  for s, w in zip(sigma, weight, strict=True))
    np.testing.assert_allclose(mixture, 1.0 - (1.0 + r) * np.exp(-r), atol=0.015)
    edges = np.array([-np.inf, 0.0, np.inf])
    p = gaussian_cell_probabilities(edges, np.array([0.0]), np.array([2.0]))
    np.testing.assert_allclose(p, [[0.5, 0.5]])


def test_radial_halo_fills_diagonal_and_axis_cells_alike():
    # One shower's halo photons centred on a 21 x 21 grid of 10 mm cells: the cell 70 mm
    # out on an axis and the one 70 mm out on the diagonal (49.5 mm per axis, nearest
    # cell centre 50 mm): radially symmetric, they expect the same number of photons
    # within the cells' discretisation; the product of two Laplace distributions gives
    # the axis cell far more.
    edges = (np.arange(22) - 10.5) * 10.0
    args = (np.array([[1e6]]), np.zeros((1, 1, 2)), np.full((1, 1, 2), 30.0),
            [(edges, edges)])
    for radial, low, high in ((True, 0.85, 1.2), (False, 1.5, 10.0)):
        mu = halo_expectation(*args, radial=radial)[0, :-1].reshape(21, 21)
        ratio = mu[10 + 7, 10] / mu[10 + 5, 10 + 5]
        assert low < ratio < high, (radial, ratio)
        assert np.isclose(halo_expectation(*args, radial=radial).sum(), 1e6)


def test_axis_walk_is_a_random_walk_in_depth():
    rng = np.random.default_rng(3)
    m = 20_000
    idx = np.concatenate([np.arange(m), np.arange(m)])
    t = np.concatenate([np.full(m, 4.0), np.full(m, 16.0)]).astype(np.float32)
    steps = axis_walk_steps(rng, np.full(m, 0.5))
    du, dv = walk_offsets(steps, idx, t)
    near, far = du[:m], du[m:]
    assert abs(near.var() / (0.5 * 4.0) - 1.0) < 0.05  # variance grows linearly with depth
    assert abs(far.var() / (0.5 * 16.0) - 1.0) < 0.05
    assert abs(np.corrcoef(near, far)[0, 1] - 0.5) < 0.03  # sqrt(4 / 16)
    assert abs(np.corrcoef(du[m:], dv[m:])[0, 1]) < 0.03  # the two axes are independent
    # between whole X0 the path is linear: half-way through X0 number 4
    mid_u, _ = walk_offsets(steps, np.arange(m), np.full(m, 4.5, np.float32))
    assert np.allclose(mid_u, np.cumsum(steps[:, 0, :4], axis=1)[:, -1] + 0.5 * steps[:, 0, 4],
                       atol=1e-5)
    # float32 like the spots (an int32 depth bin must not promote the walk to float64,
    # which doubled the memory traffic of every later step of the binning)
    assert du.dtype == dv.dtype == np.float32
    spots = em_showers(rng, np.array([5e3, 5e4]), np.zeros(2), calorimeter("calogan").medium,
                       30.0, axis_walk=100.0)
    assert spots.u.dtype == spots.v.dtype == np.float32


def test_axis_walk_falls_with_energy_as_configured():
    # the same random draws with and without the walk: the difference of the spots'
    # positions is the walk, whose size goes as E^(-power / 2)
    medium = calorimeter("calogan").medium
    energy = np.array([2e3, 32e3])

    def offsets(walk, power):
        spots = em_showers(np.random.default_rng(5), energy, np.zeros(2), medium, 30.0,
                           axis_walk=walk, axis_walk_power=power)
        return spots.u, spots.shower

    still, shower = offsets(0.0, 1.0)
    walk_1 = offsets(400.0, 1.0)[0] - still
    walk_15 = offsets(400.0, 1.5)[0] - still
    assert np.abs(walk_1).max() > 1.0
    scale = (energy[shower] / 1e3) ** -0.25  # E^-0.75 against E^-0.5
    np.testing.assert_allclose(walk_15, walk_1 * scale, rtol=1e-3, atol=1e-3)


def test_halo_follows_the_wandering_shower():
    # with a large walk, the halo's small deposits (layer 1, below 1 MeV) move with the
    # shower's hot cells when the halo follows the walk, and not otherwise
    from dataclasses import replace

    from caloforge.simulate.parametric import simulate_block

    x = (np.arange(12) - 5.5)[None, :, None]

    def centroid(image):
        return (image * x).sum(axis=(1, 2)) / np.maximum(image.sum(axis=(1, 2)), 1e-9)

    corr = {}
    for follows in (False, True):
        cal = replace(calorimeter("calogan", "parametric-4"), axis_walk=0.5,
                      halo_follows_walk=follows)
        showers = simulate_block(cal, "eplus", np.full(600, 5e3), None,
                                 np.random.default_rng(1))
        image = showers.layers[1].reshape(len(showers), 12, 12).astype(np.float64)
        soft, hot = np.where(image < 1.0, image, 0.0), np.where(image >= 1.0, image, 0.0)
        corr[follows] = np.corrcoef(centroid(hot), centroid(soft))[0, 1]
    assert corr[True] > 0.25 and corr[False] < 0.0, corr


def test_walk_and_halo_of_each_version_in_every_geometry():
    for name in ("calogan", "atlas89", "clic51"):
        cal = calorimeter(get_geometry(name))
        assert cal.halo.radial and cal.axis_walk > 0 and cal.halo_follows_walk
        assert cal.axis_walk_power == 1.5 and cal.sampling_correlation
        # parametric-5: the halo photons' paths everywhere; the escaping energy drawn
        # shower by shower where it was calibrated on Geant4 (calogan)
        assert cal.halo.interactions > 1 and cal.positron_annihilation
        assert cal.escape_fluctuates == (name == "calogan")
        p4 = calorimeter(name, "parametric-4")
        assert p4.halo.interactions == 1 and not p4.escape_fluctuates
        p3 = calorimeter(name, "parametric-3")
        assert p3.halo.radial and p3.axis_walk > 0 and p3.axis_walk_power == 1.0
        assert not (p3.halo_follows_walk or p3.sampling_correlation)
        old = calorimeter(name, "parametric-2")
        assert not old.halo.radial and old.axis_walk == 0


def test_evaluate_names_the_versions_and_warns_on_a_mismatch(tmp_path):
    from caloforge.data import write_showers
    from caloforge.evaluate import evaluate_files

    ref = simulate_showers("calogan", "eplus", 60, energy_range=(10.0, 50.0), seed=1)
    gen = simulate_showers("calogan", "eplus", 60, energy_range=(10.0, 50.0), seed=2,
                           version="parametric-2")
    write_showers(tmp_path / "ref.h5", ref, ref.meta)
    # a model's output names the version its training data came from
    write_showers(tmp_path / "gen.h5", gen, {**gen.meta, "generator": "coupling-flow",
                                              "training_generator_version": "parametric-2"})
    metrics = evaluate_files(tmp_path / "ref.h5", tmp_path / "gen.h5", tmp_path / "ev",
                             classifier=False, distances=False, plots=False, progress=False)
    assert metrics["reference"]["generator_version"] == "parametric-5"
    assert "parametric-5" in metrics["reference"]["generator_label"]
    assert metrics["generated"]["training_generator_version"] == "parametric-2"
    assert any("--simulator-version parametric-2" in w for w in metrics["warnings"])


def test_outputs_that_are_not_regular_files_are_refused(tmp_path, capsys):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "-p", "eplus", "-n", "2", "-o", str(fifo)])
    assert exit_.value.code == 1
    assert "not a regular file" in capsys.readouterr().err
    assert fifo.is_fifo()


def test_photon_showers_are_their_conversion_pairs():
    from caloforge.simulate.parametric import _pair_fraction, simulate_block

    # the Bethe-Heitler spectrum in complete screening, 1 - 4/3 x (1 - x): flat ends,
    # two thirds as dense in the middle, symmetric
    x = _pair_fraction(np.random.default_rng(4), 200_000)
    assert x.min() >= 0.0 and x.max() <= 1.0
    density, _ = np.histogram(x, bins=10, range=(0.0, 1.0), density=True)
    expected = 1.0 - 4.0 / 3.0 * 0.05 * 0.95, 1.0 - 4.0 / 3.0 * 0.45 * 0.55
    norm = 1.0 - 4.0 / 3.0 / 6.0  # the integral of the density on [0, 1]
    assert abs(density[0] / (expected[0] / norm) - 1.0) < 0.03
    assert abs(density[4] / (expected[1] / norm) - 1.0) < 0.03
    assert abs(x.mean() - 0.5) < 0.003
    # parametric-4 photons deposit what parametric-3 photons deposit, in the same grid
    energy = np.full(400, 20e3)
    totals = {}
    for version in ("parametric-3", "parametric-4"):
        cal = calorimeter("calogan", version)
        assert cal.photon_pair_split == (version == "parametric-4")
        showers = simulate_block(cal, "gamma", energy, None, np.random.default_rng(9))
        totals[version] = (showers.voxels.sum(axis=1) + showers.overflow.sum(axis=1)).mean()
    assert abs(totals["parametric-4"] / totals["parametric-3"] - 1.0) < 0.002, totals
