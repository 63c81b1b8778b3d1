"""The clic51 evaluation extra (the 3DGAN papers' figures: Khattak et al., Carminati et al.):
projections, energy response, cell spectrum and feature correlations, on synthetic input with
known answers."""

import json

import numpy as np
import pytest

from caloforge.evaluate.clic51 import (
    FEATURE_NAMES,
    Clic51Extra,
    correlation_matrix,
    shower_features,
    voxel_grid,
)
from caloforge.evaluate.extras import extra_for
from caloforge.geometry import CLIC51, Geometry, Layer

SMALL = Geometry(
    name="clic-small",
    layers=tuple(Layer(f"layer_{i:02d}", (6, 5), (5.1, 5.1), (5.1 * i, 5.1 * (i + 1)))
                 for i in range(4)),
    conditions=("energy", "angle"),
    energy_range=(100.0, 200.0),
    angle_range=(60.0, 120.0),
    file_format="3dgan",
)


def synthetic(n: int, seed: int, geometry: Geometry = SMALL):
    rng = np.random.default_rng(seed)
    energy = rng.uniform(100e3, 200e3, n)
    angle = rng.uniform(60.0, 120.0, n)
    voxels = rng.exponential(1.0, (n, geometry.n_voxels)) * (rng.random((n, geometry.n_voxels))
                                                              < 0.5)
    voxels = voxels / voxels.sum(axis=1, keepdims=True) * energy[:, None] * 0.95
    return voxels.astype(np.float32), energy.astype(np.float32), angle.astype(np.float32)


def filled(geometry: Geometry, voxels, energy, angle, chunk: int = 7) -> Clic51Extra:
    extra = Clic51Extra(geometry)
    for lo in range(0, len(voxels), chunk):
        extra.update(voxels[lo:lo + chunk], energy[lo:lo + chunk], angle[lo:lo + chunk])
    return extra


def test_registered_for_clic51():
    assert extra_for(CLIC51) is Clic51Extra


def test_identical_inputs_give_zero_correlation_difference_and_unit_ratio(tmp_path):
    data = synthetic(300, 0)
    ref, gen = filled(SMALL, *data), filled(SMALL, *data, chunk=50)
    metrics, figures = Clic51Extra.compare(ref, gen, tmp_path, plots=True)
    corr = metrics["correlations"]
    assert corr["max_abs_difference"] == pytest.approx(0.0, abs=1e-9)
    assert corr["mean_abs_difference"] == pytest.approx(0.0, abs=1e-9)
    assert corr["features"] == list(FEATURE_NAMES)
    response = metrics["energy_response"]
    ratios = [b["ratio_generated_over_reference"] for b in response["bins"]]
    assert len(ratios) == 10 and all(r == pytest.approx(1.0) for r in ratios)
    assert response["ratio_overall"] == pytest.approx(1.0)
    assert sum(b["n_reference"] for b in response["bins"]) == 300
    spectrum = metrics["cell_spectrum"]
    assert spectrum["separation_power_log"] == pytest.approx(0.0, abs=1e-12)
    assert spectrum["separation_power_linear"] == pytest.approx(0.0, abs=1e-12)
    for plane in ("xy", "xz", "yz"):
        assert metrics["projections"][plane]["shape_distance"] == pytest.approx(0.0, abs=1e-12)
    json.dumps(metrics)  # JSON-safe
    assert len(figures) == 4
    for _, name in figures:
        assert (tmp_path / name).stat().st_size > 0


def test_a_different_sample_shows_up():
    ref = filled(SMALL, *synthetic(400, 1))
    voxels, energy, angle = synthetic(400, 2)
    gen = filled(SMALL, voxels * 1.2, energy, angle)  # 20% too much energy everywhere
    metrics, _ = Clic51Extra.compare(ref, gen, None, plots=False)
    assert metrics["energy_response"]["ratio_overall"] == pytest.approx(1.2, rel=0.03)
    assert metrics["correlations"]["max_abs_difference"] > 0


def test_single_voxel_shower_projections_and_moments():
    voxels = np.zeros((1, SMALL.n_voxels), np.float32)
    x, y, z = 1, 4, 2  # row, column, layer
    voxels[0, SMALL.layer_offsets[z] + x * 5 + y] = 100.0
    extra = filled(SMALL, voxels, np.array([150e3], np.float32), np.array([80.0], np.float32))
    expected = {"xy": (x, y), "xz": (x, z), "yz": (y, z)}
    for plane, index in expected.items():
        image = extra.mean_projection(plane)
        assert image[index] == pytest.approx(100.0)
        assert image.sum() == pytest.approx(100.0)
    f = dict(zip(FEATURE_NAMES, extra.feature_table()[0], strict=True))
    xs, ys = SMALL.layers[0].cell_centres()
    assert f["M1_x"] == pytest.approx(xs[x]) and f["M1_y"] == pytest.approx(ys[y])
    assert f["M1_z"] == pytest.approx(5.1 * (z + 0.5))
    assert f["M2_x"] == pytest.approx(0.0, abs=1e-6) and f["M2_z"] == pytest.approx(0.0, abs=1e-6)
    assert f["ECAL_sum"] == pytest.approx(0.1) and f["E_p"] == pytest.approx(150.0)
    assert f["hits"] == 1 and f["angle"] == pytest.approx(80.0)
    assert (f["f_front"], f["f_middle"], f["f_back"]) == (0.0, 1.0, 0.0)  # layers [0,1],[2],[3]
    bins = extra.energy_response()
    assert [b["n"] for b in bins][5] == 1 and bins[5]["mean_gev"] == pytest.approx(0.1)


def test_voxel_grid_pads_ragged_layers():
    ragged = Geometry(name="ragged", layers=(Layer("a", (2, 3), (1.0, 1.0), (0.0, 1.0)),
                                             Layer("b", (1, 4), (1.0, 1.0), (1.0, 2.0))))
    v = np.arange(1, ragged.n_voxels + 1, dtype=np.float32)[None]
    grid = voxel_grid(v, ragged)
    assert grid.shape == (1, 2, 4, 2)
    np.testing.assert_array_equal(grid[0, :2, :3, 0], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(grid[0, 0, :, 1], [7, 8, 9, 10])
    assert grid.sum() == v.sum()


def test_correlation_matrix_known_cases():
    rng = np.random.default_rng(0)
    a = rng.normal(size=1000)
    f = np.stack([a, 2 * a + 1, -a, np.full(1000, 3.0)], axis=1)
    c = correlation_matrix(f)
    np.testing.assert_allclose(c[:3, :3], [[1, 1, -1], [1, 1, -1], [-1, -1, 1]], atol=1e-12)
    np.testing.assert_allclose(c[3], [0, 0, 0, 1])  # a constant feature: 0, not NaN


def test_features_are_bounded_memory():
    extra = Clic51Extra(SMALL)
    assert extra.feature_table().shape == (0, len(FEATURE_NAMES))
    v, e, a = synthetic(20, 3)
    extra.update(v, e, None)  # no angle: 90 degrees
    assert extra.feature_table().shape == (20, len(FEATURE_NAMES))
    assert (extra.feature_table()[:, 1] == 90.0).all()
    grid = voxel_grid(v, SMALL)
    assert shower_features(grid, e, a, extra.axes).shape == (20, len(FEATURE_NAMES))
