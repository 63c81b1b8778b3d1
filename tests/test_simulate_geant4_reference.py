"""The parametric simulator against Geant4 showers in the same calorimeter.

``tests/data/geant4_em_{eplus,gamma}_400.h5`` are the first 400 showers of the reference
files (Geant4 11.4, electromagnetic physics, data-free models; 1-100 GeV, calogan). The
parametric showers are simulated at the same incident energies (five per reference
shower), so the comparison carries no noise from the energy spectrum. Tolerances follow
the issue: occupancy per layer within 10% relative (or three standard errors of the
reference where those are larger), layer fractions within three standard errors,
deposited fraction within 0.3%. Where the current calibration misses, the case is a
strict expected failure with the gap in its reason (``GAPS``). The last tests hold what
parametric-3 changed (the width's fluctuation, the energy beyond the grid, the halo's
radial symmetry), parametric-4 (the centroid's wandering) and parametric-5 (far hits in
clusters) and run on every version;
where an older calibration misses, they are strict expected failures: they can fail, and
do on the calibration before.
"""

from pathlib import Path

import numpy as np
import pytest

from caloforge.data import read_showers
from caloforge.simulate.parametric import (
    SIMULATOR_VERSION,
    SIMULATOR_VERSIONS,
    calorimeter,
    simulate_block,
)

DATA = Path(__file__).parent / "data"
BINS = ((1.0, 10.0), (10.0, 30.0), (30.0, 100.0))
COPIES = 5
PARTICLES = ("eplus", "gamma")

# Known gaps of the current calibration (parametric-5), kept as strict expected failures
# so that they show in every test run and flag when a better calibration closes them
# (parametric-4's photon pair closed the photons' layer-2 occupancy and fraction).
GAPS = {
    ("occupancy>1", "eplus", 2): "too few layer-2 cells above 1 MeV at 30-100 GeV (0.205 "
                                 "against 0.231)",
    ("occupancy>1", "gamma", 2): "too few layer-2 cells above 1 MeV at 30-100 GeV (0.240 "
                                 "against 0.267)",
}


def _case(kind, particle, layer):
    mark = ()
    if (kind, particle, layer) in GAPS:
        mark = pytest.mark.xfail(strict=True, reason=GAPS[kind, particle, layer])
    return pytest.param(particle, layer, marks=mark, id=f"{particle}-layer{layer}")


_PAIRS: dict = {}


def _pair(particle, version=SIMULATOR_VERSION):
    if (particle, version) not in _PAIRS:
        g4 = read_showers(DATA / f"geant4_em_{particle}_400.h5")
        assert g4.meta["generator"] == "geant4"
        energy = np.repeat(g4.incident_energy.astype(np.float64), COPIES)
        sim = simulate_block(calorimeter("calogan", version), particle, energy, None,
                             np.random.default_rng(2024))
        _PAIRS[particle, version] = (particle, g4, sim)
    return _PAIRS[particle, version]


def _select(showers, lo, hi):
    e = showers.incident_energy / 1000.0
    return showers[(e >= lo) & (e < hi)]


def _occupancy(showers, layer, threshold=0.0):
    image = showers.layers[layer].reshape(len(showers), -1)
    return (image > threshold).mean(axis=1)


@pytest.mark.parametrize("threshold", [0.0, 0.1])
@pytest.mark.parametrize("particle,layer", [_case("occupancy", p, i) for p in PARTICLES
                                            for i in range(3)])
def test_occupancy_per_layer_and_energy(particle, layer, threshold):
    _check_occupancy(particle, layer, threshold)


@pytest.mark.parametrize("particle,layer", [_case("occupancy>1", p, i) for p in PARTICLES
                                            for i in range(3)])
def test_occupancy_above_1_mev(particle, layer):
    _check_occupancy(particle, layer, 1.0)


def _check_occupancy(particle, layer, threshold):
    _, g4, sim = _pair(particle)
    for lo, hi in BINS:
        a, b = _select(g4, lo, hi), _select(sim, lo, hi)
        occ_a, occ_b = _occupancy(a, layer, threshold), _occupancy(b, layer, threshold)
        err = np.hypot(occ_a.std() / np.sqrt(len(a)), occ_b.std() / np.sqrt(len(b)))
        tol = max(0.10 * occ_a.mean(), 3 * err)
        assert abs(occ_b.mean() - occ_a.mean()) < tol, (
            particle, threshold, (lo, hi), layer, occ_a.mean(), occ_b.mean(), tol)


@pytest.mark.parametrize("particle,layer", [_case("fraction", p, i) for p in PARTICLES
                                            for i in range(3)])
def test_layer_fractions_within_statistical_error(particle, layer):
    _, g4, sim = _pair(particle)
    fa, fb = (s.layer_energies().astype(np.float64) for s in (g4, sim))
    fa, fb = fa[:, layer] / fa.sum(axis=1), fb[:, layer] / fb.sum(axis=1)
    err = np.hypot(fa.std() / np.sqrt(len(fa)), fb.std() / np.sqrt(len(fb)))
    assert abs(fb.mean() - fa.mean()) < 3 * err, (particle, layer, fa.mean(), fb.mean(), err)


@pytest.mark.parametrize("particle", PARTICLES)
def test_deposited_fraction_and_its_spread(particle):
    _, g4, sim = _pair(particle)
    for lo, hi in BINS:
        a, b = _select(g4, lo, hi), _select(sim, lo, hi)
        ra = (a.total_energy() + a.overflow.sum(axis=1)) / a.incident_energy
        rb = (b.total_energy() + b.overflow.sum(axis=1)) / b.incident_energy
        assert abs(rb.mean() - ra.mean()) < 0.003, (particle, lo, ra.mean(), rb.mean())
        # Geant4's spread is 0.1-0.3%: within a factor 2 (the old simulator had 0.5-2.5%).
        assert 0.5 < rb.std() / ra.std() < 2.0, (particle, lo, ra.std(), rb.std())


@pytest.mark.parametrize("particle", PARTICLES)
def test_photons_convert_like_geant4(particle):
    # How often a shower leaves almost nothing in layer 0 (a late first conversion for
    # photons) and the mean layer-0 fraction per energy bin.
    _, g4, sim = _pair(particle)
    for lo, hi in BINS:
        fa = _select(g4, lo, hi).layer_energies().astype(np.float64)
        fb = _select(sim, lo, hi).layer_energies().astype(np.float64)
        fa, fb = fa[:, 0] / fa.sum(axis=1), fb[:, 0] / fb.sum(axis=1)
        err = np.hypot(fa.std() / np.sqrt(len(fa)), fb.std() / np.sqrt(len(fb)))
        assert abs(fb.mean() - fa.mean()) < 3 * err, (particle, lo, fa.mean(), fb.mean())
    late_a = (g4.layer_energies()[:, 0] < 0.02 * g4.total_energy()).mean()
    late_b = (sim.layer_energies()[:, 0] < 0.02 * sim.total_energy()).mean()
    assert abs(late_b - late_a) < 3 * np.sqrt(late_a * (1 - late_a) / len(g4)) + 0.01


@pytest.mark.parametrize("particle,layer", [_case("spectrum", p, i) for p in PARTICLES
                                            for i in range(3)])
def test_cell_energy_spectrum_per_layer(particle, layer):
    # Fraction of cells per decade of energy, 0.01 MeV to 10 GeV: the halo's keV-MeV
    # deposits and the core's. Within 25% relative, or 0.01 absolute for rare decades.
    _, g4, sim = _pair(particle)
    edges = np.logspace(-2, 4, 7)
    ha = np.histogram(g4.layers[layer].ravel(), edges)[0] / g4.layers[layer].size
    hb = np.histogram(sim.layers[layer].ravel(), edges)[0] / sim.layers[layer].size
    assert np.all(np.abs(hb - ha) < np.maximum(0.25 * ha, 0.01)), (particle, layer, ha, hb)


def test_files_record_the_simulator_version():
    from caloforge.simulate import simulate_showers

    showers = simulate_showers("calogan", "eplus", 3, seed=0)
    assert showers.meta["generator_version"] == SIMULATOR_VERSION


def _pooled_spreads(g4, sim, lo, hi, kind):
    """Shower-to-shower spread of the layer-1 ``kind`` ("width" or "centre"), x and y
    pooled, of the Geant4 and the parametric showers between ``lo`` and ``hi`` GeV."""
    from caloforge.evaluate.observables import shower_shapes

    spread = []
    for showers in (_select(g4, lo, hi), _select(sim, lo, hi)):
        shapes = shower_shapes(showers)
        spread.append(np.sqrt(0.5 * (shapes[f"{kind}_x_1"].var()
                                     + shapes[f"{kind}_y_1"].var())))
    return spread


def _versions(gap, failing=("parametric-2",)):
    """Every simulator version; the ``failing`` ones fail with ``gap``."""
    return [pytest.param(v, id=v, marks=() if v not in failing else
                         pytest.mark.xfail(strict=True, reason=f"{v}: {gap}"))
            for v in SIMULATOR_VERSIONS]


@pytest.mark.parametrize("version", _versions("the layer-1 width fluctuates up to 1.7 times "
                                              "as much as in Geant4"))
@pytest.mark.parametrize("particle", PARTICLES)
def test_layer1_width_fluctuates_like_geant4(particle, version):
    _, g4, sim = _pair(particle, version)
    for lo, hi in BINS:
        spread = _pooled_spreads(g4, sim, lo, hi, "width")
        assert 0.75 < spread[1] / spread[0] < 1.33, (particle, version, lo, spread)


@pytest.mark.parametrize("version", _versions("2.4 times Geant4's energy beyond +-240 mm"))
@pytest.mark.parametrize("particle", PARTICLES)
def test_energy_beyond_the_grid(particle, version):
    _, g4, sim = _pair(particle, version)
    for lo, hi in BINS:
        a, b = (_select(s, lo, hi) for s in (g4, sim))
        out_a, out_b = (s.overflow.sum(axis=1).mean() / s.incident_energy.mean() for s in (a, b))
        assert abs(out_b / out_a - 1.0) < 0.35, (particle, version, lo, out_a, out_b)


@pytest.mark.parametrize("version", _versions("a diamond-shaped halo: far cells on the axes "
                                              "through the core hit 27% more often"))
@pytest.mark.parametrize("particle", PARTICLES)
def test_halo_is_radially_symmetric(particle, version):
    # Layer-1 cells 190-235 mm from the axis, on the axes through the core and off them:
    # how often each is hit (above the evaluation's 1 keV) by 10-100 GeV showers.
    _, g4, sim = _pair(particle, version)
    centres = (np.arange(12) - 5.5) * 40.0
    x, y = np.meshgrid(centres, centres, indexing="ij")
    far = (np.hypot(x, y) > 190.0) & (np.hypot(x, y) < 235.0)
    on_axis = far & ((np.abs(x) < 40.0) | (np.abs(y) < 40.0))
    hits = []
    for showers in (_select(g4, 10.0, 100.0), _select(sim, 10.0, 100.0)):
        image = showers.layers[1].reshape(len(showers), 12, 12) > 0.001
        hits.append((image[:, on_axis].mean(), image[:, far & ~on_axis].mean()))
    (axis_a, diagonal_a), (axis_b, diagonal_b) = hits
    assert abs(axis_b / axis_a - 1.0) < 0.10, (particle, version, hits)
    assert abs(diagonal_b / diagonal_a - 1.0) < 0.10, (particle, version, hits)


@pytest.mark.parametrize("version", _versions(
    "the layer-1 centroid wanders 17-26% more than in Geant4 at 30-100 GeV (its walk "
    "fell as 1 / E; parametric-2's fewer, larger spots happen to match)",
    failing=("parametric-3",)))
@pytest.mark.parametrize("particle", PARTICLES)
def test_shower_centroid_wanders_like_geant4(particle, version):
    # the shower-to-shower spread of the layer-1 energy centroid, both axes pooled, within
    # three standard errors of Geant4's (a standard deviation's relative error is about
    # 1 / sqrt(2 n)) in every energy bin
    _, g4, sim = _pair(particle, version)
    for lo, hi in BINS:
        spread = _pooled_spreads(g4, sim, lo, hi, "centre")
        tolerance = 3.0 / np.sqrt(2 * len(_select(g4, lo, hi)))
        assert abs(spread[1] / spread[0] - 1.0) < tolerance, (particle, version, lo, spread)


def _neighbour_hits(showers):
    """How often a hit cell (above 1 keV) far from the core has its neighbour hit: the
    layer-0 strips of the two outer rows (next strip along the row) and the layer-1 cells
    more than three cells from the centre in both directions (next cell along a row)."""
    strips = showers.layers[0].reshape(len(showers), 3, 96)[:, [0, 2], :] > 0.001
    cells = showers.layers[1].reshape(len(showers), 12, 12) > 0.001
    outer = np.abs(np.arange(12) - 5.5) > 3
    ring = outer[:, None] & (outer[1:] & outer[:-1])[None, :]
    both0 = (strips[:, :, 1:] & strips[:, :, :-1]).sum() / strips[:, :, :-1].sum()
    hit1 = cells[:, :, :-1] & ring
    both1 = (hit1 & cells[:, :, 1:]).sum() / hit1.sum()
    return both0, both1


# The clustering parametric-5 does not reach yet: (particle, version, bin) -> reason.
CLUSTER_GAPS = {
    ("gamma", "parametric-5", 1.0): "photons of 1-10 GeV: a hit far layer-1 cell has its "
                                    "neighbour hit 0.18 of the time against Geant4's 0.30",
}


def _cluster_cases():
    for version in SIMULATOR_VERSIONS:
        for particle in PARTICLES:
            for lo, hi in BINS:
                if version in ("parametric-2", "parametric-3", "parametric-4"):
                    # independent cells, in the best-measured bin where far cells are sparse
                    if lo != 10.0:
                        continue
                    reason = (f"{version}: far cells are hit independently of each other: a "
                              "hit far cell has its neighbour hit 26-41% less often than in "
                              "Geant4 at 10-30 GeV")
                    marks = pytest.mark.xfail(strict=True, reason=reason)
                else:
                    gap = CLUSTER_GAPS.get((particle, version, lo))
                    marks = pytest.mark.xfail(strict=True, reason=gap) if gap else ()
                yield pytest.param(particle, version, lo, hi, marks=marks,
                                   id=f"{particle}-{version}-{lo:g}-{hi:g}GeV")


@pytest.mark.parametrize("particle,version,lo,hi", list(_cluster_cases()))
def test_far_hits_cluster_like_geant4(particle, version, lo, hi):
    # A halo photon deposits at each of its interactions: far from the core, a hit cell's
    # neighbour is hit more often than independent cells would be. Within 15% of Geant4,
    # or three of its standard errors where those are larger (few Geant4 showers below
    # 10 GeV; bootstrap over the showers).
    _, g4, sim = _pair(particle, version)
    rng = np.random.default_rng(5)
    a, b = _select(g4, lo, hi), _select(sim, lo, hi)
    pa, pb = _neighbour_hits(a), _neighbour_hits(b)
    resampled = [_neighbour_hits(a[rng.integers(0, len(a), len(a))]) for _ in range(100)]
    tolerance = np.maximum(0.15, 3.0 * np.std(resampled, axis=0) / np.asarray(pa))
    for layer in range(2):
        assert abs(pb[layer] / pa[layer] - 1.0) < tolerance[layer], (
            particle, version, lo, layer, pa, pb, tolerance)
