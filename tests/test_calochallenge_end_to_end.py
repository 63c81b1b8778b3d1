"""A CaloChallenge dataset-1 photon file (368 voxels, binning from the shipped XML) goes
through inspect, train, generate and evaluate unchanged, on a tiny sample."""

import json

import h5py
import numpy as np
import yaml
from cli_helpers import run_cli

from caloforge.data import ShowerSet, file_info, write_showers
from caloforge.geometry import get_geometry
from caloforge.models.calogan import CaloGAN


def challenge_photons(n: int, seed: int) -> ShowerSet:
    """Synthetic stand-in showers (not physics): sparse deposits that sum to ~the
    incident energy, in the dataset-1 photon layout."""
    geometry = get_geometry("calochallenge_ds1_photons")
    rng = np.random.default_rng(seed)
    energy = rng.uniform(1e3, 1e5, n).astype(np.float32)
    mask = rng.random((n, geometry.n_voxels)) < 0.4
    voxels = rng.exponential(1.0, (n, geometry.n_voxels)) * mask
    voxels = voxels / voxels.sum(axis=1, keepdims=True) * energy[:, None] * 0.9
    return ShowerSet(geometry, voxels.astype(np.float32), energy,
                     meta={"particle": "gamma", "generator": "synthetic"})


def run(args, capsys):
    code, out, err = run_cli(args, capsys)
    return code, out + err


def test_ds1_photon_file_trains_generates_and_evaluates(tmp_path, capsys):
    train_file, ref_file = tmp_path / "photons.h5", tmp_path / "photons_ref.h5"
    write_showers(train_file, challenge_photons(96, 0))
    write_showers(ref_file, challenge_photons(96, 1))
    with h5py.File(train_file) as f:  # the published layout, nothing else needed
        assert f["showers"].shape == (96, 368) and f["incident_energies"].shape == (96, 1)

    code, out = run(["inspect", train_file], capsys)
    assert code == 0 and "calochallenge_ds1_photons" in out

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": CaloGAN.tiny_config().to_dict(),
                                      "train": {"batch_size": 16}}))
    rundir = tmp_path / "run"
    code, out = run(["train", "calogan", "--data", train_file, "--out", rundir, "--config",
                     config, "--max-steps", 2, "--device", "cpu", "-q"], capsys)
    assert code == 0, out

    generated = tmp_path / "generated.h5"
    code, out = run(["generate", rundir, "-n", 96, "--energy", "2:90", "-o", generated, "-q"],
                    capsys)
    assert code == 0, out
    info = file_info(generated)
    assert info["geometry"].name == "calochallenge_ds1_photons" and info["n"] == 96
    with h5py.File(generated) as f:
        assert f["showers"].shape == (96, 368)
        e = f["incident_energies"][:]
        assert e.min() >= 2e3 - 1 and e.max() <= 90e3 + 1  # MeV in this format

    outdir = tmp_path / "evaluation"
    code, out = run(["evaluate", ref_file, generated, "-o", outdir, "--classifier-inputs",
                     "low,high", "--epochs", 2, "--no-plots", "-q"], capsys)
    assert code == 0, out
    metrics = json.loads((outdir / "metrics.json").read_text())
    assert metrics["n_reference"] == 96 and metrics["n_generated"] == 96
    assert set(metrics["classifier"]) == {"low", "high"}
    assert all(0.0 <= r["auc"] <= 1.0 for r in metrics["classifier"].values())
    assert metrics["separation_power"]
