"""Shower shapes on hand-built showers with known answers, and on every geometry."""

import re

import numpy as np
import pytest

from caloforge.data import ShowerSet
from caloforge.evaluate import (
    cell_energy_histogram,
    feature_matrix,
    observables,
    response_profile,
    shower_shapes,
)
from caloforge.geometry import GEOMETRIES, get_geometry


def _calogan_showers():
    """Three hand-built CaloGAN showers.

    0: layer 0 cells (1, 47) = 30 MeV and (1, 48) = 10 MeV; layer 1 cells (5, 5) and
       (6, 5) = 60 MeV each; layer 2 empty. E_inc = 200 MeV.
    1: no energy at all.
    2: 50 MeV in one cell of layer 2 only.
    """
    g = get_geometry("calogan")
    layers = [np.zeros((3, *layer.shape), np.float32) for layer in g.layers]
    layers[0][0, 1, 47] = 30.0
    layers[0][0, 1, 48] = 10.0
    layers[1][0, 5, 5] = 60.0
    layers[1][0, 6, 5] = 60.0
    layers[2][2, 3, 2] = 50.0
    return ShowerSet(g, g.join_layers(layers), np.array([200.0, 1000.0, 100.0]))


def test_calogan_seed_table_on_hand_built_showers():
    s = shower_shapes(_calogan_showers())
    approx = pytest.approx
    # shower 0
    assert s["E_0"][0] == approx(40.0) and s["E_1"][0] == approx(120.0) and s["E_2"][0] == 0
    assert s["E_tot"][0] == approx(160.0)
    assert s["response"][0] == approx(0.8)
    assert (s["f_0"][0], s["f_1"][0], s["f_2"][0]) == approx((0.25, 0.75, 0.0))
    assert s["E_ratio_0"][0] == approx(0.5)  # (30 - 10) / (30 + 10)
    assert s["E_ratio_1"][0] == approx(0.0)  # two equal cells
    assert s["d"][0] == 1
    assert s["l_d"][0] == approx(120.0)  # 0 * 40 + 1 * 120
    assert s["s_d"][0] == approx(0.75)
    assert s["sigma_sd"][0] == approx(np.sqrt(0.75 - 0.75**2))
    # Widths: layer 1 cells 5 and 6 of 12 rows of 40 mm sit at -20 and +20 mm.
    assert s["centre_x_1"][0] == approx(0.0, abs=1e-9)
    assert s["width_x_1"][0] == approx(20.0)
    assert s["sigma_1"][0] == approx(0.5)  # 20 mm in 40 mm cells
    assert s["centre_y_1"][0] == approx(-20.0)
    assert s["width_y_1"][0] == approx(0.0, abs=1e-6)
    # Layer 0: columns 47 and 48 of 96 x 5 mm sit at -2.5 and +2.5 mm.
    assert s["centre_y_0"][0] == approx(-1.25)
    assert s["width_y_0"][0] == approx(np.sqrt(6.25 - 1.25**2))
    assert s["sigma_0"][0] == approx(0.0, abs=1e-6)  # one row only
    assert s["sparsity_0"][0] == approx(2 / 288)
    assert s["sparsity_1"][0] == approx(2 / 144)
    # Whole-shower barycentre in y: (40 * -1.25 + 120 * -20) / 160.
    assert s["centre_y"][0] == approx(-15.3125)
    second = (40 * 6.25 + 120 * 400.0) / 160
    assert s["width_y"][0] == approx(np.sqrt(second - 15.3125**2))
    # shower 1: empty -> all finite, d = -1
    assert s["d"][1] == -1
    assert all(np.isfinite(v[1]) for v in s.values())
    assert s["E_tot"][1] == 0 and s["s_d"][1] == 0 and s["E_ratio_0"][1] == 0
    # shower 2: one cell in the last layer
    assert s["d"][2] == 2 and s["s_d"][2] == approx(2.0)
    assert s["sigma_sd"][2] == approx(0.0, abs=1e-6)
    assert s["E_ratio_2"][2] == approx(1.0)
    assert s["response"][2] == approx(0.5)


def test_sparsity_threshold():
    s = shower_shapes(_calogan_showers(), threshold=20.0)
    assert s["sparsity_0"][0] == pytest.approx(1 / 288)  # only the 30 MeV cell


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_every_geometry_has_its_observables(name):
    g = get_geometry(name)
    rng = np.random.default_rng(1)
    n = 5
    voxels = rng.exponential(1.0, (n, g.n_voxels)).astype(np.float32)
    voxels[voxels < 1.5] = 0
    angle = rng.uniform(*g.angle_range, n) if g.angle_range else None
    showers = ShowerSet(g, voxels, rng.uniform(1e4, 2e4, n), angle=angle)
    shapes = shower_shapes(showers)
    info = observables(g)
    assert list(shapes) == list(info)
    for key, values in shapes.items():
        assert values.shape == (n,) and np.all(np.isfinite(values)), key
    # per-layer observables for every layer, axis names from the cell unit
    axes = ("eta", "phi") if g.layers[0].cell_unit == "eta,phi" else ("x", "y")
    for i in range(g.n_layers):
        for family in ("E", "f", "E_ratio", "sigma", "sparsity"):
            assert f"{family}_{i}" in shapes
        for axis in axes:
            assert f"centre_{axis}_{i}" in shapes and f"width_{axis}_{i}" in shapes
    # E_i add up to E_tot, f_i to 1
    e_layers = sum(shapes[f"E_{i}"] for i in range(g.n_layers))
    np.testing.assert_allclose(e_layers, shapes["E_tot"], rtol=1e-9)
    np.testing.assert_allclose(sum(shapes[f"f_{i}"] for i in range(g.n_layers)), 1.0)
    features, names = feature_matrix(shapes, g)
    assert features.shape == (n, len(names)) and np.all(np.isfinite(features))
    # f_i (sum to 1) and sigma_i (width in other units) are left out of the feature vector
    assert not any(re.fullmatch(r"(f|sigma)_\d+", name) for name in names)


def test_atlas89_barycentre_in_eta_phi():
    g = get_geometry("atlas89")
    layers = [np.zeros((1, *layer.shape), np.float32) for layer in g.layers]
    # middle layer (3 x 7 cells of 0.025 x 0.0245): all energy in cell (2, 6)
    layers[2][0, 2, 6] = 100.0
    shapes = shower_shapes(ShowerSet(g, g.join_layers(layers), [1000.0]))
    assert shapes["centre_eta_2"][0] == pytest.approx(0.025)
    assert shapes["centre_phi_2"][0] == pytest.approx(3 * 0.0245)
    assert shapes["width_eta_2"][0] == pytest.approx(0.0, abs=1e-9)
    assert shapes["d"][0] == 2 and shapes["f_2"][0] == pytest.approx(1.0)


def test_cell_energy_histogram_counts_non_zero_cells():
    voxels = np.array([[0.0, 1.5, 1.5, 2e7], [1e-9, 0.0, 0.0, 0.0]])
    counts = cell_energy_histogram(voxels, edges=np.array([1e-4, 1.0, 10.0, 1e6]))
    # 1e-9 goes to the first bin, 2e7 to the last; zeros are not counted
    np.testing.assert_array_equal(counts, [1, 2, 1])


def test_response_profile():
    energy = np.array([1.0, 1.5, 2.5, 2.6, 9.0])
    response = np.array([0.9, 1.1, 0.5, 0.7, 1.0])
    prof = response_profile(energy, response, np.array([0.0, 2.0, 4.0, 6.0]))
    assert prof["count"] == [2, 2, 0]
    assert prof["mean"][:2] == pytest.approx([1.0, 0.6])
    assert prof["rms"][0] == pytest.approx(0.1)
    assert prof["mean"][2] is None


def test_polar_layer_barycentre_and_radial_width():
    g = get_geometry("calochallenge_ds1_photons")
    layers = [np.zeros((1, *layer.shape), np.float32) for layer in g.layers]
    # layer 1: 10 alpha bins x 16 r bins; r bin 3 spans 6-8 mm (centre 7 mm). Equal
    # deposits in opposite alpha bins 0 and 5 cancel: barycentre 0, width 7 mm in x and y
    # together; one more cell in r bin 4 of alpha bin 0 makes the radial index spread.
    layers[1][0, 0, 3] = 10.0
    layers[1][0, 5, 3] = 10.0
    shapes = shower_shapes(ShowerSet(g, g.join_layers(layers), [1000.0]))
    assert shapes["centre_x_1"][0] == pytest.approx(0.0, abs=1e-9)
    assert shapes["centre_y_1"][0] == pytest.approx(0.0, abs=1e-9)
    assert np.hypot(shapes["width_x_1"][0], shapes["width_y_1"][0]) == pytest.approx(7.0)
    assert shapes["sigma_1"][0] == pytest.approx(0.0, abs=1e-6)  # one radial bin
    layers[1][0, 0, 4] = 20.0
    shapes = shower_shapes(ShowerSet(g, g.join_layers(layers), [1000.0]))
    # radial indices 3, 3, 4 with weights 10, 10, 20: mean 3.5, RMS 0.5
    assert shapes["sigma_1"][0] == pytest.approx(0.5)


def test_calochallenge_conventions_centre_sign_radial_moments_and_sparsity():
    # The CaloChallenge's HighLevelFeatures: angular bin j of n centred at
    # alpha = -pi + (j + 1/2) 2 pi / n, cell at (r cos alpha, r sin alpha); sparsity is the
    # fraction of empty cells.
    g = get_geometry("calochallenge_ds1_photons")
    layers = [np.zeros((1, *layer.shape), np.float32) for layer in g.layers]
    layers[1][0, 5, 3] = 10.0  # alpha = +pi/10, r bin 6-8 mm
    layers[0][0, 0, 2] = 4.0  # one angular bin: alpha = 0; r bin 10-30 mm
    shapes = shower_shapes(ShowerSet(g, g.join_layers(layers), [1000.0]))
    alpha = np.pi / 10
    assert shapes["centre_x_1"][0] == pytest.approx(7.0 * np.cos(alpha))
    assert shapes["centre_y_1"][0] == pytest.approx(7.0 * np.sin(alpha))
    assert shapes["centre_x_0"][0] == pytest.approx(20.0)  # positive, as the challenge's
    assert shapes["centre_r_1"][0] == pytest.approx(7.0)
    assert shapes["centre_r_0"][0] == pytest.approx(20.0)
    assert shapes["width_r_1"][0] == pytest.approx(0.0, abs=1e-9)
    assert shapes["sparsity_1"][0] == pytest.approx(1.0 - 1 / 160)
    assert shapes["sparsity_2"][0] == pytest.approx(1.0)
    info = observables(g)
    assert "empty cells, CaloChallenge" in info["sparsity_1"].label
    assert "non-zero cells, CaloGAN" in observables(get_geometry("calogan"))["sparsity_0"].label
