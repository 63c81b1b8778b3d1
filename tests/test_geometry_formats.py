"""Geometries as data, and the file formats' round trips."""

import h5py
import numpy as np
import pytest

from caloforge import CaloforgeError
from caloforge.data import (
    ShowerSet,
    ShowerWriter,
    file_info,
    iter_showers,
    read_showers,
    write_showers,
)
from caloforge.geometry import GEOMETRIES, Geometry, get_geometry


def test_calogan_geometry_matches_spec():
    g = get_geometry("calogan")
    assert [layer.shape for layer in g.layers] == [(3, 96), (12, 12), (12, 6)]
    assert g.n_voxels == 504
    for layer in g.layers:  # every layer spans +-240 mm
        assert layer.shape[0] * layer.cell_size[0] == pytest.approx(480.0)
        assert layer.shape[1] * layer.cell_size[1] == pytest.approx(480.0)
    assert [layer.depth for layer in g.layers] == [(-240, -150), (-150, 197), (197, 240)]


def test_atlas89_and_clic51():
    assert get_geometry("atlas89").n_voxels == 89
    assert get_geometry("atlas89").layer_sizes == (6, 48, 21, 14)
    clic = get_geometry("clic51")
    assert clic.n_layers == 25 and clic.layers[0].shape == (51, 51)
    assert clic.conditions == ("energy", "angle")


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_geometry_dict_round_trip_and_split(name):
    g = get_geometry(name)
    assert Geometry.from_dict(g.to_dict()) == g
    voxels = np.random.default_rng(0).random((4, g.n_voxels), dtype=np.float32)
    layers = g.split_layers(voxels)
    assert [arr.shape[1:] for arr in layers] == [layer.shape for layer in g.layers]
    np.testing.assert_array_equal(g.join_layers(layers), voxels)


def test_unknown_geometry_is_a_clear_error():
    with pytest.raises(CaloforgeError, match="unknown geometry"):
        get_geometry("nope")


def _random_set(name, n=7, seed=0):
    g = get_geometry(name)
    rng = np.random.default_rng(seed)
    voxels = rng.exponential(10.0, (n, g.n_voxels)).astype(np.float32)
    voxels[voxels < 5] = 0
    energy = rng.uniform(*g.energy_range, n) * 1000.0
    angle = rng.uniform(*g.angle_range, n) if g.angle_range else None
    overflow = rng.random((n, g.n_layers)) if g.has_overflow else None
    return ShowerSet(g, voxels, energy, angle=angle, overflow=overflow,
                     meta={"particle": "test", "generator": "test", "seed": seed})


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_round_trip(tmp_path, name):
    showers = _random_set(name)
    path = write_showers(tmp_path / "s.h5", showers, chunk_size=3)
    back = read_showers(path)
    assert back.geometry == showers.geometry
    np.testing.assert_allclose(back.voxels, showers.voxels, rtol=1e-6)
    np.testing.assert_allclose(back.incident_energy, showers.incident_energy, rtol=1e-6)
    if showers.angle is not None:
        np.testing.assert_allclose(back.angle, showers.angle, rtol=1e-5)
    assert back.meta["generator"] == "test" and back.meta["geometry"] == name
    info = file_info(path)
    assert info.n == 7 and info.geometry.name == name
    assert sum(len(c) for c in iter_showers(path, chunk_size=2)) == 7


def test_calogan_layout_is_exactly_the_public_one(tmp_path):
    showers = _random_set("calogan", n=5)
    path = write_showers(tmp_path / "c.h5", showers)
    with h5py.File(path) as f:
        assert f["layer_0"].shape == (5, 3, 96)
        assert f["layer_1"].shape == (5, 12, 12)
        assert f["layer_2"].shape == (5, 12, 6)
        assert f["overflow"].shape == (5, 3)
        assert f["energy"].shape == (5, 1)
        # energy in GeV on disk, MeV in memory
        np.testing.assert_allclose(f["energy"][:, 0] * 1000, showers.incident_energy, rtol=1e-6)


def test_reads_a_plain_public_calogan_file_without_attributes(tmp_path):
    path = tmp_path / "public.h5"
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:  # what the public CaloGAN files hold
        f["layer_0"] = rng.random((3, 3, 96), dtype=np.float32)
        f["layer_1"] = rng.random((3, 12, 12), dtype=np.float32)
        f["layer_2"] = rng.random((3, 12, 6), dtype=np.float32)
        f["overflow"] = rng.random((3, 3), dtype=np.float32)
        f["energy"] = np.array([[10.0], [50.0], [99.0]], dtype=np.float32)
    showers = read_showers(path)
    assert showers.geometry.name == "calogan"
    np.testing.assert_allclose(showers.incident_energy, [10000, 50000, 99000])


def test_atomic_write_leaves_no_file_on_failure(tmp_path):
    showers = _random_set("calogan")
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError):
        with ShowerWriter(target, "calogan") as writer:
            writer.write(showers)
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_files(tmp_path):
    with pytest.raises(CaloforgeError, match="not found"):
        read_showers(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not hdf5")
    with pytest.raises(CaloforgeError, match="HDF5"):
        read_showers(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(CaloforgeError, match="not a shower file"):
        read_showers(other)
    nan = _random_set("calogan")
    nan.voxels[0, 0] = np.nan
    path = write_showers(tmp_path / "nan.h5", nan)
    with pytest.raises(CaloforgeError, match="NaN"):
        read_showers(path)


def test_wrong_shape_is_rejected():
    with pytest.raises(CaloforgeError, match="shape"):
        ShowerSet("calogan", np.zeros((2, 500)), np.ones(2))
