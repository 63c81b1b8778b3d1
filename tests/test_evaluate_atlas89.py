"""The atlas89 evaluation extra: barycentres, RMS, mean cell intensities, total energy."""

import json

import numpy as np
import pytest

from caloforge.data import ShowerSet, write_showers
from caloforge.evaluate.atlas89 import Atlas89Extra, layer_moments
from caloforge.evaluate.extras import extra_for
from caloforge.evaluate.pipeline import evaluate_files
from caloforge.geometry import ATLAS89


def single_cell_showers(layer: int, row: int, col: int, n: int = 5,
                        energy_mev: float = 2e3) -> np.ndarray:
    voxels = np.zeros((n, ATLAS89.n_voxels))
    shape = ATLAS89.layers[layer].shape
    voxels[:, ATLAS89.layer_offsets[layer] + row * shape[1] + col] = energy_mev
    return voxels


def test_registered_for_atlas89():
    assert extra_for(ATLAS89) is Atlas89Extra


@pytest.mark.parametrize(("layer", "row", "col"), [(0, 2, 1), (1, 0, 0), (1, 17, 1),
                                                   (2, 1, 6), (3, 0, 3)])
def test_single_cell_deposit_has_that_cells_barycentre_and_zero_rms(layer, row, col):
    extra = Atlas89Extra(ATLAS89)
    extra.update(single_cell_showers(layer, row, col), np.full(5, 1e4), None)
    metrics, figures = Atlas89Extra.compare(extra, extra, None, plots=False)
    assert figures == []
    geo = ATLAS89.layers[layer]
    # the cell centre from the cell size, counted from the centre of the layer
    eta = (row - (geo.shape[0] - 1) / 2) * geo.cell_size[0]
    phi = (col - (geo.shape[1] - 1) / 2) * geo.cell_size[1]
    got = metrics["barycentres"][geo.name]
    assert got["eta"]["reference"]["barycentre"]["mean"] == pytest.approx(eta, abs=1e-12)
    assert got["phi"]["reference"]["barycentre"]["mean"] == pytest.approx(phi, abs=1e-12)
    assert got["eta"]["reference"]["rms"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert got["eta"]["reference"]["barycentre"]["n"] == 5
    # layers without energy give no barycentre
    other = ATLAS89.layers[(layer + 1) % ATLAS89.n_layers].name
    assert metrics["barycentres"][other]["eta"]["reference"]["barycentre"]["n"] == 0


def test_two_cell_deposit_weighted_barycentre_and_rms():
    # middle layer (3 x 7, 0.025 x 0.0245): 3 GeV in (1, 2), 1 GeV in (1, 4)
    voxels = np.zeros((1, ATLAS89.n_voxels))
    off = ATLAS89.layer_offsets[2]
    voxels[0, off + 1 * 7 + 2] = 3000.0
    voxels[0, off + 1 * 7 + 4] = 1000.0
    layer = ATLAS89.layer_slice(2)
    phi = np.ravel(ATLAS89.layers[2].cell_positions()[1])
    centre, rms, hit = layer_moments(voxels[:, layer], phi)
    phi_a, phi_b = -1 * 0.0245, 1 * 0.0245
    mean = 0.75 * phi_a + 0.25 * phi_b
    assert hit[0] and centre[0] == pytest.approx(mean)
    assert rms[0] == pytest.approx(np.sqrt(0.75 * (phi_a - mean) ** 2
                                           + 0.25 * (phi_b - mean) ** 2))


def test_mean_cell_intensities_ratios_and_total_energy(tmp_path):
    rng = np.random.default_rng(0)
    ref_vox = rng.exponential(10.0, (200, ATLAS89.n_voxels))
    gen_vox = ref_vox * 2.0
    ref, gen = Atlas89Extra(ATLAS89), Atlas89Extra(ATLAS89)
    energy = np.full(200, 5e3)
    for lo in (0, 120):  # two chunks
        ref.update(ref_vox[lo:lo + 120], energy[lo:lo + 120], None)
        gen.update(gen_vox[lo:lo + 120], energy[lo:lo + 120], None)
    metrics, figures = Atlas89Extra.compare(ref, gen, tmp_path, plots=True)
    mean = ref_vox.mean(axis=0)
    for i, layer in enumerate(ATLAS89.layers):
        cells = metrics["mean_cell_intensity"][layer.name]
        np.testing.assert_allclose(np.ravel(cells["reference_mev"]),
                                   mean[ATLAS89.layer_slice(i)])
        assert cells["layer_energy_ratio"] == pytest.approx(2.0)
        assert cells["cell_ratio_median"] == pytest.approx(2.0)
        assert np.shape(cells["ratio"]) == layer.shape
    total = metrics["total_energy"]["total_energy_gev"]
    assert total["reference"]["mean"] == pytest.approx(ref_vox.sum(axis=1).mean() / 1e3)
    assert total["mean_ratio"] == pytest.approx(2.0)
    assert total["separation_power"] > 0.5
    # scaling every cell leaves barycentres and RMS unchanged
    bary = metrics["barycentres"]["strip"]["eta"]
    assert bary["generated"]["barycentre"]["mean"] == pytest.approx(
        bary["reference"]["barycentre"]["mean"])
    assert bary["barycentre_separation_power"] == pytest.approx(0.0, abs=1e-12)
    assert len(figures) == 3 and all((tmp_path / name).exists() for _, name in figures)
    json.dumps(metrics)  # JSON-safe


def test_through_caloforge_evaluate(tmp_path):
    rng = np.random.default_rng(1)

    def showers(scale):
        energy = rng.uniform(1e4, 1e5, 300).astype(np.float32)
        vox = rng.exponential(1.0, (300, ATLAS89.n_voxels)) * (rng.random((300, 89)) < 0.5)
        vox = vox / vox.sum(axis=1, keepdims=True) * energy[:, None] * scale
        return ShowerSet(ATLAS89, vox.astype(np.float32), energy,
                         meta={"particle": "gamma", "generator": "synthetic"})

    write_showers(tmp_path / "ref.h5", showers(0.95))
    write_showers(tmp_path / "gen.h5", showers(0.90))
    metrics = evaluate_files(tmp_path / "ref.h5", tmp_path / "gen.h5", tmp_path / "out",
                             classifier=False, plots=False, progress=False, threads=1)
    extra = metrics["geometry_specific"]
    assert set(extra["barycentres"]) == {layer.name for layer in ATLAS89.layers}
    assert extra["total_energy"]["response"]["reference"]["mean"] == pytest.approx(0.95,
                                                                                   rel=1e-4)
    assert extra["total_energy"]["response"]["generated"]["mean"] == pytest.approx(0.90,
                                                                                   rel=1e-4)
