"""`caloforge train`, `generate` and `scan` end to end on a tiny model."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml
from cli_helpers import run_cli

from caloforge.cli.main import main
from caloforge.data import ShowerSet, file_info, read_showers, write_showers
from caloforge.geometry import CALOGAN
from caloforge.models.calogan import CaloGAN


def synthetic_showers(n: int = 64, seed: int = 0) -> ShowerSet:
    rng = np.random.default_rng(seed)
    energy = rng.uniform(2e3, 5e4, n).astype(np.float32)
    mask = rng.random((n, CALOGAN.n_voxels)) < 0.3
    voxels = rng.exponential(1.0, (n, CALOGAN.n_voxels)) * mask
    voxels = voxels / voxels.sum(axis=1, keepdims=True) * energy[:, None] * 0.95
    overflow = rng.random((n, 3)).astype(np.float32)
    return ShowerSet(CALOGAN, voxels.astype(np.float32), energy, overflow=overflow,
                     meta={"particle": "gamma", "generator": "synthetic",
                           "threshold_MeV": 0.5})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained for 2 steps through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "train.h5"
    write_showers(data, synthetic_showers())
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({"train": {"batch_size": 16, "num_threads": 1, "log_every": 1,
                                                "tensorboard": False},
                                      "model": CaloGAN.tiny_config().to_dict()}))
    rundir = root / "run"
    try:
        main(["train", "calogan", "--data", str(data), "--out", str(rundir), "--config",
              str(config), "--max-steps", "2", "--device", "cpu", "--seed", "1", "-q"])
    except SystemExit as exit_:
        assert exit_.code == 0
    return root, data, rundir


def test_train_writes_a_run(trained):
    _, _, rundir = trained
    assert (rundir / "checkpoint.pt").exists()
    assert len((rundir / "log.jsonl").read_text().splitlines()) == 2


def test_generated_file_has_the_training_layout(trained, capsys):
    root, data, rundir = trained
    out = root / "gen.h5"
    code, stdout, err = run_cli(["generate", rundir, "-n", 50, "--energy", "5:40",
                                 "--batch-size", 16, "-o", out, "-q"], capsys)
    assert code == 0, err
    assert "wrote 50 showers" in stdout
    with h5py.File(data) as ref, h5py.File(out) as gen:
        assert set(gen.keys()) == set(ref.keys())
        for key in ref:
            assert gen[key].shape[1:] == ref[key].shape[1:], key
            assert gen[key].dtype == ref[key].dtype, key
        assert gen["layer_0"].shape[0] == 50
        assert gen.attrs["generator"] == "calogan"
        assert gen.attrs["particle"] == "gamma"
    info = file_info(out)
    assert info["format"] == file_info(data)["format"] == "calogan"
    showers = read_showers(out)
    assert (showers.voxels >= 0).all()
    assert 5e3 <= showers.incident_energy.min() and showers.incident_energy.max() <= 40e3


def test_generate_applies_the_training_data_threshold(trained, capsys):
    """The run records its data's readout threshold; generate applies it unless told."""
    from caloforge.train.checkpoint import load_checkpoint

    root, _, rundir = trained
    assert load_checkpoint(rundir)["data"]["threshold_MeV"] == 0.5
    for args, expected in (([], 0.5), (["--threshold", 2], 2.0), (["--threshold", 0], 0.0)):
        out = root / f"thr_{expected}.h5"
        code, _, err = run_cli(["generate", rundir, "-n", 40, "-o", out, "-q", *args], capsys)
        assert code == 0, err
        showers = read_showers(out)
        assert showers.meta["threshold_MeV"] == expected
        v = showers.voxels
        assert np.all((v == 0) | (v >= expected))
    # the model does make deposits below 0.5 MeV: without the threshold they are kept
    assert np.any((v > 0) & (v < 0.5))


def test_generate_threads_sets_torch_threads(trained, capsys):
    import torch

    root, _, rundir = trained
    before = torch.get_num_threads()
    try:
        code, _, err = run_cli(["generate", rundir, "-n", 8, "--threads", 1, "-o",
                                root / "thr.h5", "-q"], capsys)
        assert code == 0, err
        assert torch.get_num_threads() == 1
        code, _, err = run_cli(["generate", rundir, "-n", 8, "--threads", 0, "-o",
                                root / "thr0.h5", "-q"], capsys)
        assert code != 0 and "--threads" in err
    finally:
        torch.set_num_threads(before)


def test_generation_is_reproducible_and_batch_independent(trained, capsys):
    root, _, rundir = trained
    for name, batch in (("a.h5", 16), ("b.h5", 16), ("c.h5", 7)):
        code, _, err = run_cli(["generate", rundir, "-n", 20, "--seed", 5, "-b", batch,
                                "-o", root / name, "-q"], capsys)
        assert code == 0, err
    a, b, c = (read_showers(root / n) for n in ("a.h5", "b.h5", "c.h5"))
    np.testing.assert_array_equal(a.voxels, b.voxels)
    np.testing.assert_array_equal(a.incident_energy, c.incident_energy)


def test_energy_outside_the_trained_range_is_a_one_line_error(trained):
    root, _, rundir = trained
    out = root / "never.h5"
    run = subprocess.run([sys.executable, "-m", "caloforge", "generate", str(rundir), "-n",
                          "10", "--energy", "1:100", "-o", str(out)],
                         capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: energy 1:100 GeV is outside the trained range 2")
    assert not out.exists()


def test_missing_run_and_bad_config_are_one_line_errors(tmp_path, capsys):
    code, _, err = run_cli(["generate", tmp_path / "nope", "-n", 1, "-o", tmp_path / "x.h5"],
                           capsys)
    assert code == 1 and "no checkpoint" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {batch_sise: 3}\n")
    code, _, err = run_cli(["train", "calogan", "--data", tmp_path / "d.h5", "--out",
                            tmp_path / "r", "--config", bad], capsys)
    assert code == 1 and "batch_sise" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["train", "nomodel", "--data", tmp_path / "d.h5", "--out",
                            tmp_path / "r"], capsys)
    assert code == 1 and "unknown model 'nomodel'" in err


def test_scan_varies_energy_from_a_fixed_latent(trained, capsys):
    root, _, rundir = trained
    png = root / "scan.png"
    code, stdout, err = run_cli(["scan", rundir, "--vary", "energy", "-n", 4, "-o", png],
                                capsys)
    assert code == 0, err
    assert png.stat().st_size > 1000
    rows = [line.split() for line in stdout.splitlines()[1:5]]
    energies = [float(r[1]) for r in rows]
    assert energies == sorted(energies) and energies[0] < energies[-1]
    code, _, err = run_cli(["scan", rundir, "--vary", "x", "-n", 3, "--direction", 2,
                            "-o", root / "scan_x.png"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["scan", rundir, "--vary", "x", "--direction", 99, "-o",
                            root / "bad.png"], capsys)
    assert code == 1 and "--direction" in err
