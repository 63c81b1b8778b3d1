"""Every shipped layout evaluates with its figures (CaloChallenge datasets 1, 2 and 3)."""

import json
import re

import numpy as np
import pytest

from caloforge.data import ShowerSet, write_showers
from caloforge.evaluate import evaluate_files
from caloforge.geometry import get_geometry


def synthetic(name: str, n: int, seed: int) -> ShowerSet:
    """Stand-in showers (not physics): sparse random deposits summing to 0.9 E_inc."""
    geometry = get_geometry(name)
    rng = np.random.default_rng(seed)
    energy = 2.0 ** rng.integers(10, 17, n)
    voxels = rng.exponential(1.0, (n, geometry.n_voxels)) ** 2
    voxels *= rng.random((n, geometry.n_voxels)) < 0.3
    voxels = voxels / voxels.sum(axis=1, keepdims=True) * energy[:, None] * 0.9
    return ShowerSet(geometry, voxels, energy, meta={"generator": "synthetic"})


def _evaluate_with_plots(name, tmp_path, n):
    ref = write_showers(tmp_path / "ref.h5", synthetic(name, n, 1))
    gen = write_showers(tmp_path / "gen.h5", synthetic(name, n, 2))
    out = tmp_path / "out"
    metrics = evaluate_files(ref, gen, out, classifier=False, progress=False, threads=1)
    assert json.loads((out / "metrics.json").read_text())["geometry"] == name
    images = re.findall(r"<img src='([^']+)'", (out / "report.html").read_text())
    for image in ("nearest_neighbours.png", "average_images.png", "hist_E_i.png"):
        assert image in images
    for image in images:
        assert (out / image).read_bytes()[:4] == b"\x89PNG"
    return metrics


def test_dataset_1_pions_with_layers_of_unequal_shapes(tmp_path):
    # issue case: the nearest-neighbour plot stacked the 7 layers and crashed
    geometry = get_geometry("calochallenge_ds1_pions")
    assert len({layer.shape for layer in geometry.layers}) > 1
    metrics = _evaluate_with_plots("calochallenge_ds1_pions", tmp_path, 60)
    assert metrics["n_voxels"] == 533


@pytest.mark.slow
@pytest.mark.parametrize("name", ["calochallenge_ds2", "calochallenge_ds3"])
def test_datasets_2_and_3(tmp_path, name):
    _evaluate_with_plots(name, tmp_path, 30)
