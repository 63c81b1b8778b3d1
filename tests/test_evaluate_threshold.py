"""The readout threshold: applied to both samples before every metric (issue case 1)."""

import json

import numpy as np
import pytest

from caloforge import CaloforgeError
from caloforge.cli.main import main
from caloforge.data import ShowerSet, write_showers
from caloforge.data.threshold import READOUT_THRESHOLD_MEV, apply_threshold, default_threshold
from caloforge.evaluate import evaluate_files
from caloforge.geometry import GEOMETRIES, get_geometry


def photons(n: int, seed: int) -> ShowerSet:
    """Synthetic stand-in showers (not physics) in the dataset-1 photon layout: sparse
    deposits summing to ~0.9 of the incident energy, some of them below 1 MeV."""
    geometry = get_geometry("calochallenge_ds1_photons")
    rng = np.random.default_rng(seed)
    energy = 2.0 ** rng.integers(8, 17, n)
    mask = rng.random((n, geometry.n_voxels)) < 0.4
    voxels = rng.exponential(1.0, (n, geometry.n_voxels)) ** 2 * mask
    voxels = voxels / voxels.sum(axis=1, keepdims=True) * energy[:, None] * 0.9
    return ShowerSet(geometry, voxels, energy, meta={"particle": "gamma",
                                                     "generator": "synthetic"})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("threshold")
    reference, generated = photons(300, 1), photons(300, 2)
    noisy = ShowerSet(generated.geometry, generated.voxels.copy(), generated.incident_energy,
                      meta=generated.meta)
    rng = np.random.default_rng(3)
    empty = noisy.voxels == 0
    noisy.voxels[empty & (rng.random(empty.shape) < 0.2)] += 1e-3  # 1 keV in 20% of them
    return {"ref": write_showers(root / "ref.h5", reference),
            "clean": write_showers(root / "clean.h5", generated),
            "noisy": write_showers(root / "noisy.h5", noisy)}


def _metrics(files, tmp_path, generated, **kwargs):
    return evaluate_files(files["ref"], files[generated], tmp_path / generated,
                          classifier_inputs=("high",), epochs=2, plots=False, progress=False,
                          threads=1, **kwargs)


def test_one_kev_noise_in_empty_cells_changes_nothing_above_the_threshold(files, tmp_path):
    clean = _metrics(files, tmp_path, "clean")
    noisy = _metrics(files, tmp_path, "noisy")
    assert noisy["threshold_MeV"] == 1.0 == clean["threshold_MeV"]
    assert noisy["threshold_source"] == "default for calochallenge_ds1_photons"
    assert noisy["separation_power"] == clean["separation_power"]
    assert noisy["fpd"] == clean["fpd"] and noisy["kpd"] == clean["kpd"]
    assert noisy["classifier"]["high"]["auc"] == clean["classifier"]["high"]["auc"]


def test_without_threshold_the_noise_is_what_is_measured(files, tmp_path):
    noisy = _metrics(files, tmp_path, "noisy", threshold=0.0)
    clean = _metrics(files, tmp_path, "clean", threshold=0.0)
    assert noisy["threshold_MeV"] == 0.0 and noisy["threshold_source"] == "user"
    sparsity = [k for k in noisy["separation_power"] if k.startswith("sparsity_")]
    assert max(noisy["separation_power"][k] for k in sparsity) > 0.5
    assert max(clean["separation_power"][k] for k in sparsity) < 0.2
    assert noisy["fpd"][0] > 5 * max(clean["fpd"][0], clean["fpd"][1])


def test_threshold_in_metrics_report_and_cli(files, tmp_path, capsys):
    out = tmp_path / "cli"
    main(["evaluate", str(files["ref"]), str(files["noisy"]), "-o", str(out), "--threshold",
          "0.5", "--no-classifier", "--no-plots", "--quiet"])
    text = capsys.readouterr().out
    assert "readout threshold: 0.5 MeV per cell (user)" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threshold_MeV"] == 0.5 and metrics["settings"]["threshold_MeV"] == 0.5
    assert "Readout threshold:</b> 0.5 MeV per cell" in (out / "report.html").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(files["ref"]), str(files["noisy"]), "--threshold", "-1"])
    assert exit_info.value.code == 2


def test_apply_threshold_zeroes_below_keeps_at_and_above():
    values = np.array([-0.2, 0.0, 0.999, 1.0, 5.0], dtype=np.float32)
    out = apply_threshold(values, 1.0)
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 1.0, 5.0])
    assert values[0] == np.float32(-0.2)  # copy by default
    apply_threshold(values, 0.0, copy=False)
    assert values[0] == 0.0 and values[2] == np.float32(0.999)
    with pytest.raises(CaloforgeError, match="threshold"):
        apply_threshold(values, -1.0)
    with pytest.raises(CaloforgeError, match="threshold"):
        evaluate_files("a.h5", "b.h5", "out", threshold=float("nan"))


def test_every_shipped_geometry_has_a_documented_default():
    # the shipped ones (other tests register more geometries in the same process)
    shipped = {"calogan", "atlas89", "clic51"} | {n for n in GEOMETRIES
                                                 if n.startswith("calochallenge_")}
    assert set(READOUT_THRESHOLD_MEV) == shipped
    assert default_threshold("calochallenge_ds1_pions") == 1.0
    assert default_threshold("calochallenge_ds3") == pytest.approx(0.01515, rel=1e-3)
    assert default_threshold("calogan") == 1e-3
    assert default_threshold("no_such_geometry") == 0.0
