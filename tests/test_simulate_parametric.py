"""The parametric engine's contract: shapes, units, ranges, labels and reproducibility."""

import h5py
import numpy as np
import pytest

from caloforge import CaloforgeError
from caloforge.data import read_showers
from caloforge.geometry import get_geometry
from caloforge.simulate import simulate, simulate_showers, simulate_to_file
from caloforge.simulate.parametric import calorimeter, simulate_chunks

CASES = [("calogan", "eplus"), ("calogan", "gamma"), ("calogan", "piplus"),
         ("atlas89", "gamma"), ("clic51", "eminus")]


@pytest.mark.parametrize("geometry,particle", CASES)
def test_every_geometry_and_particle(geometry, particle):
    g = get_geometry(geometry)
    n = 7 if geometry == "clic51" else 50
    showers = simulate_showers(geometry, particle, n, seed=3)
    assert showers.voxels.shape == (n, g.n_voxels)
    assert showers.voxels.dtype == np.float32
    assert np.all(np.isfinite(showers.voxels)) and np.all(showers.voxels >= 0)
    lo, hi = g.energy_range
    e_gev = showers.incident_energy / 1000.0  # MeV inside
    assert np.all((e_gev >= lo) & (e_gev <= hi))
    if g.angle_range is not None:
        assert np.all((showers.angle >= g.angle_range[0]) & (showers.angle <= g.angle_range[1]))
    else:
        assert showers.angle is None
    assert (showers.overflow is not None) == g.has_overflow
    assert showers.meta["generator"] == "parametric"
    assert showers.meta["particle"] == particle
    # Every shower deposits something, most of it in the grid for EM showers.
    assert np.all(showers.total_energy() > 0)
    if particle != "piplus":
        assert np.median(showers.total_energy() / showers.incident_energy) > 0.8


def test_fixed_energy_and_angle():
    showers = simulate_showers("clic51", "eminus", 3, energy_range=(120, 120),
                               angle_range=(75, 75), seed=0)
    np.testing.assert_allclose(showers.incident_energy, 120_000.0)
    np.testing.assert_allclose(showers.angle, 75.0)


def test_same_seed_same_showers_whatever_the_chunk_size_or_threads():
    n = 2345  # not a multiple of the block size: a partial last block
    kwargs = dict(energy_range=(1, 100), seed=42)
    ref = simulate_showers("calogan", "eplus", n, chunk_size=10_000, **kwargs)
    for chunk_size in (1, 137, 1000):
        other = simulate_showers("calogan", "eplus", n, chunk_size=chunk_size, **kwargs)
        np.testing.assert_array_equal(other.voxels, ref.voxels)
        np.testing.assert_array_equal(other.overflow, ref.overflow)
        np.testing.assert_array_equal(other.incident_energy, ref.incident_energy)
    for threads in (1, 3):
        chunks = list(simulate_chunks("calogan", "eplus", n, (1, 100), None, 42, 500,
                                      threads=threads))
        assert [len(c) for c in chunks] == [500] * 4 + [345]
        np.testing.assert_array_equal(np.concatenate([c.voxels for c in chunks]), ref.voxels)
    different = simulate_showers("calogan", "eplus", n, energy_range=(1, 100), seed=43)
    assert not np.array_equal(different.voxels, ref.voxels)


def test_same_seed_same_file(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    simulate_to_file(a, "calogan", "gamma", 1500, progress=False, seed=9, chunk_size=1500)
    simulate_to_file(b, "calogan", "gamma", 1500, progress=False, seed=9, chunk_size=256)
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert sorted(fa) == sorted(fb)
        for key in fa:
            np.testing.assert_array_equal(fa[key][:], fb[key][:])
        assert fa.attrs["generator"] == "parametric"
    showers = read_showers(a)
    assert len(showers) == 1500 and showers.particle == "gamma"
    # With the same arguments, the very same bytes.
    c = tmp_path / "c.h5"
    simulate_to_file(c, "calogan", "gamma", 1500, progress=False, seed=9, chunk_size=1500)
    assert a.read_bytes() == c.read_bytes()


def test_clic51_chunks_are_bounded_in_memory():
    # 65025 voxels per shower: a chunk never exceeds ~128 MB whatever is asked.
    chunks = simulate_chunks("clic51", "eminus", 3, (100, 100), (90, 90), 0, 10**6)
    assert sum(len(c) for c in chunks) == 3
    cal = calorimeter("clic51")
    assert cal.block_size * cal.geometry.n_voxels * 4 < 64 * 2**20


def test_parametric_is_never_called_geant4():
    showers = simulate_showers("calogan", "eplus", 5, seed=0)
    assert "geant4" not in str(showers.meta).lower()


@pytest.mark.parametrize("kwargs,match", [
    (dict(particle="muon"), "unknown particle"),
    (dict(geometry="nope"), "unknown geometry"),
    (dict(energy_range=(100, 1)), "reversed"),
    (dict(energy_range=(float("nan"), 10)), "not finite"),
    (dict(energy_range=(-5, 10)), "outside"),
    (dict(angle_range=(60, 120)), "no angle"),
    (dict(n=0), "positive"),
])
def test_bad_arguments_are_clear_errors(kwargs, match):
    args = dict(geometry="calogan", particle="eplus", n=10)
    args.update(kwargs)
    with pytest.raises(CaloforgeError, match=match):
        next(simulate(args.pop("geometry"), args.pop("particle"), args.pop("n"), **args))


def test_geometry_without_a_parametric_model_is_a_clear_error(monkeypatch):
    from caloforge.geometry import GEOMETRIES, Geometry, Layer

    g = Geometry("toy_for_test", (Layer("l0", (2, 2), (1.0, 1.0), (0.0, 1.0)),),
                 particles=("eplus",))
    monkeypatch.setitem(GEOMETRIES, g.name, g)
    with pytest.raises(CaloforgeError, match="no model of geometry"):
        next(simulate(g, "eplus", 3))
