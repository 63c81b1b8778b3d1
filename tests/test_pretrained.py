"""Pretrained models: the package folder, `caloforge models`, `load_pretrained`, and every
command that takes a run directory also taking a pretrained name."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_helpers import run_cli

import caloforge
import caloforge.pretrained as pretrained
from caloforge.errors import CaloforgeError
from caloforge.models import get_model_class
from caloforge.pretrained import (
    PRETRAINED_ENV,
    available_pretrained,
    dequantize_int8,
    load_pretrained,
    model_card,
    quantize_int8,
    resolve_run,
    save_pretrained,
)
from caloforge.simulate import simulate_to_file
from caloforge.train import train
from caloforge.train.checkpoint import load_run

torch.set_num_threads(1)
NAME = "tiny-calogan-eplus"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A pretrained folder holding one tiny CaloGAN trained for one step."""
    work = tmp_path_factory.mktemp("pretrained")
    data = work / "eplus.h5"
    simulate_to_file(data, "calogan", "eplus", 64, energy_range=(10, 50), seed=1,
                     progress=False)
    train("calogan", data, work / "run",
          train_config={"max_steps": 1, "batch_size": 16, "progress": False,
                        "device": "cpu", "tensorboard": False},
          model_config=get_model_class("calogan").tiny_config().to_dict(), log=None)
    folder = save_pretrained(work / "run", NAME,
                             {"summary": "one training step, for tests only",
                              "figures": {"steps": 1, "auc_low": 0.99}},
                             root=work / "models")
    assert folder == work / "models" / NAME
    return work / "models"


@pytest.fixture
def env_root(root, monkeypatch) -> Path:
    monkeypatch.setenv(PRETRAINED_ENV, str(root))
    return root


def test_folder_holds_weights_only_checkpoint_and_card(root):
    folder = root / NAME
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert ckpt["family"] == "calogan" and ckpt["optimizer_state"] == {}
    assert "rng" not in ckpt
    card = json.loads((folder / "card.json").read_text())
    assert card["geometry"] == "calogan" and card["particle"] == "eplus"
    assert card["figures"]["auc_low"] == 0.99
    assert "one training step" in (folder / "card.md").read_text()
    assert available_pretrained(root) == [NAME]
    assert model_card(NAME, root)["summary"] == "one training step, for tests only"


def test_half_storage_halves_the_file_and_loads_as_float32(root, tmp_path):
    run = root.parent / "run"
    folder = save_pretrained(run, "half", {"summary": "fp16"}, root=tmp_path, half=True)
    full, half = root / NAME / "checkpoint.pt", folder / "checkpoint.pt"
    assert half.stat().st_size < 0.6 * full.stat().st_size
    stored = torch.load(half, weights_only=True)["model_state"]
    model = load_pretrained("half", root=tmp_path)
    for key, value in model.state_dict().items():
        if stored[key].is_floating_point():
            assert stored[key].dtype == torch.float16 and value.dtype == torch.float32
            assert torch.equal(value, stored[key].float())


def test_load_pretrained_samples_in_mev(env_root):
    for model in (load_pretrained(NAME), caloforge.load_pretrained(NAME)):
        showers = model.sample(torch.full((5, 1), 2e4), torch.Generator().manual_seed(0))
        assert showers.shape == (5, 504) and (showers >= 0).all()
        assert model.run_info["particle"] == "eplus"


def test_unknown_name_lists_the_known_ones_in_one_line(env_root, capsys):
    with pytest.raises(CaloforgeError, match=f"pretrained models: {NAME}$"):
        load_pretrained("calogan-nope")
    code, _, err = run_cli(["generate", "calogan-nope", "-n", 2, "-o", "x.h5"], capsys)
    assert code == 1 and err.count("\n") == 1 and NAME in err and "Traceback" not in err
    # a path that does not exist still says which checkpoint is missing
    with pytest.raises(CaloforgeError, match="no checkpoint"):
        from caloforge.train import load_run

        load_run(resolve_run(env_root / "nothing"))


def test_models_command_lists_cards(env_root, capsys, monkeypatch):
    code, out, err = run_cli(["models"], capsys)
    assert code == 0, err
    assert NAME in out and "calogan calogan eplus" in out and "auc_low 0.99" in out
    code, out, err = run_cli(["models", "--all-figures"], capsys)
    assert code == 0 and "steps 1, auc_low 0.99" in out
    monkeypatch.setenv(PRETRAINED_ENV, str(env_root / "empty"))
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0 and "no pretrained models" in out


def test_models_command_shows_headline_figures_in_words():
    from caloforge.cli.models import _headline

    figures = {"auc_low": 0.53, "fpd": 0.004368, "fpd_error": 0.0002,
               "worst_separation_power": 0.0137,
               "response_max_rel_dev_10gev_bins_percent": 0.015,
               "ms_per_shower_batch_10000_torch_2_threads": 0.105}
    line = _headline(figures)
    assert line == ("FPD 0.004368, worst separation power 0.0137, response within "
                    "0.015% per 10-GeV bin, 0.105 ms/shower (batch 10,000, torch, 2 threads)")
    assert "fpd_error" not in line
    assert _headline({"steps": 1}) == "steps 1"  # no headline figure: all of them


def test_commands_take_a_pretrained_name(env_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["generate", NAME, "-n", 7, "--seed", 3, "-o", "gen.h5", "-q"],
                           capsys)
    assert code == 0, err
    with h5py.File(tmp_path / "gen.h5") as f:
        assert f["layer_1"].shape == (7, 12, 12)
        assert np.all(f["energy"][()] >= 10) and np.all(f["energy"][()] <= 50)  # GeV
        assert f.attrs["run"] == str((env_root / NAME).resolve())
    code, _, err = run_cli(["scan", NAME, "-n", 3], capsys)
    assert code == 0, err
    assert (tmp_path / f"{NAME}_scan_energy.png").exists()
    code, out, err = run_cli(["bench", NAME, "--batch-sizes", "1", "--repeats", "1",
                              "--threads", "1", "--no-simulator"], capsys)
    assert code == 0, err
    assert f"calogan eplus ({NAME})" in out
    code, _, err = run_cli(["export", NAME, "-o", "m.onnx", "--no-check"], capsys)
    assert code == 0, err
    assert (tmp_path / "m.onnx").exists()


def test_bad_names_are_refused(root):
    with pytest.raises(CaloforgeError, match="letters, digits"):
        save_pretrained(root / NAME, "../escape", {}, root=root)


SHIPPED = available_pretrained(Path(pretrained.__file__).parent)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_loads_with_weights_only_and_generates(name):
    folder = Path(pretrained.__file__).parent / name
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert ckpt["format"] == "caloforge-run"
    assert (folder / "card.md").is_file() and (folder / "card.json").is_file()
    model = load_pretrained(name, root=folder.parent)
    lo, hi = model.conditioning.energy
    energy = torch.linspace(lo, hi, 64)[:, None]  # MeV
    conditions = energy
    if model.conditioning.angle is not None:  # degrees
        conditions = torch.cat([energy, torch.full_like(energy, sum(model.conditioning.angle)
                                                          / 2)], dim=1)
    showers = model.sample(conditions, torch.Generator().manual_seed(0))
    assert showers.shape == (64, model.geometry.n_voxels)
    assert torch.isfinite(showers).all() and (showers >= 0).all()
    response = showers.sum(dim=1) / energy[:, 0]
    assert 0.2 < float(response.mean()) < 1.2  # deposits in MeV, not GeV or keV


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_reproduces_its_card(name, tmp_path, capsys, monkeypatch):
    """The card's own evaluation command (50,000 showers a side: about 3-4 min a model on
    2 cores) gives its classifier AUCs again within 0.02."""
    import shlex

    card = model_card(name, Path(pretrained.__file__).parent)
    monkeypatch.chdir(tmp_path)
    for command in card["evaluation_command"].split(" && "):
        words = shlex.split(command)
        assert words[0] == "caloforge"
        code, _, err = run_cli(words[1:], capsys)
        assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n_generated"] == card["figures"]["n_generated"]
    for kind, result in metrics["classifier"].items():
        assert result["auc"] == pytest.approx(card["figures"][f"auc_{kind}"], abs=0.02), kind


def test_a_checkpoint_that_does_not_fit_the_model_is_one_line(root, tmp_path, capsys):
    # e.g. a run written before a buffer was added to its family's model
    ckpt = torch.load(root.parent / "run" / "checkpoint.pt", weights_only=True)
    dropped = next(iter(ckpt["model_state"]))
    del ckpt["model_state"][dropped]
    (tmp_path / "old").mkdir()
    torch.save(ckpt, tmp_path / "old" / "checkpoint.pt")
    code, _, err = run_cli(["generate", tmp_path / "old", "-n", 2, "-o", tmp_path / "x.h5",
                            "-q"], capsys)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "does not fit" in err and f"missing: {dropped}" in err
    assert not (tmp_path / "x.h5").exists()


def _train_tiny(family: str, run: Path, steps: int) -> None:
    """A few steps of a family's tiny model on 64 calogan e+ showers, into ``run``."""
    data = run.parent / "eplus.h5"
    simulate_to_file(data, "calogan", "eplus", 64, energy_range=(10, 50), seed=1,
                     progress=False)
    train(family, data, run,
          train_config={"max_steps": steps, "batch_size": 16, "progress": False,
                        "device": "cpu", "tensorboard": False},
          model_config=get_model_class(family).tiny_config().to_dict(), log=None)


def test_a_caloflow_ships_without_its_teacher(tmp_path, capsys, monkeypatch):
    """A distilled flow's pretrained copy may leave out the teacher (the size limit): it
    loads with weights_only, samples with the student, refuses the teacher in one line."""
    _train_tiny("caloflow", tmp_path / "run", steps=3)
    full = save_pretrained(tmp_path / "run", "full", {"summary": "t"}, root=tmp_path / "m")
    lean = save_pretrained(tmp_path / "run", "lean", {"summary": "t"}, root=tmp_path / "m",
                           drop=("teacher",))
    ckpt = torch.load(lean / "checkpoint.pt", weights_only=True)
    assert ckpt["dropped_modules"] == ["teacher"]
    assert not any(k.startswith("teacher.") for k in ckpt["model_state"])
    assert (lean / "checkpoint.pt").stat().st_size < (full / "checkpoint.pt").stat().st_size
    model = load_pretrained("lean", root=tmp_path / "m")
    showers = model.sample(torch.full((4, 1), 20_000.0), torch.Generator().manual_seed(0))
    assert showers.shape == (4, 504) and torch.isfinite(showers).all()
    with pytest.raises(CaloforgeError, match="without its teacher"):
        model.use_sampler("teacher")
    monkeypatch.setenv(PRETRAINED_ENV, str(tmp_path / "m"))
    code, _, err = run_cli(["generate", "lean", "-n", "4", "--sampler", "teacher", "-o",
                            str(tmp_path / "t.h5")], capsys)
    assert code == 1 and "without its teacher" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(CaloforgeError, match="cannot be shipped without student"):
        save_pretrained(tmp_path / "run", "bad", {}, root=tmp_path / "m", drop=("student",))


def test_int8_weights_round_trip_within_half_a_step():
    """Per-row symmetric int8: every weight within half a quantisation step of its
    float32 value, each row's largest |w| exact, shapes kept."""
    w = torch.randn(300, 7, 40) * torch.logspace(-3, 1, 300)[:, None, None]
    q = quantize_int8({"w": w, "small": torch.randn(10, 10), "bias": torch.randn(70_000)})
    assert set(q) == {"w"}  # small tensors and vectors stay as they are
    assert q["w"]["int8"].dtype == torch.int8 and q["w"]["int8"].shape == w.shape
    back = dequantize_int8(q)["w"]
    step = q["w"]["scale"][:, None, None]
    assert ((back - w).abs() <= 0.5 * step * (1 + 1e-5)).all()
    rows = w.reshape(300, -1).abs().amax(1)
    torch.testing.assert_close(back.reshape(300, -1).abs().amax(1), rows)


def test_a_calogan_ships_without_its_discriminator_and_with_int8_weights(tmp_path,
                                                                        monkeypatch):
    """CaloGAN's pretrained copy: generator only, its matrices int8 (the float16
    generator of the shipped size is 8.0 MB); it loads with weights_only and samples
    within a percent of the float32 run's showers."""
    _train_tiny("calogan", tmp_path / "run", steps=2)
    monkeypatch.setattr(pretrained, "INT8_MIN_SIZE", 256)  # the tiny model's matrices
    lean = save_pretrained(tmp_path / "run", "lean", {"summary": "t"}, root=tmp_path / "m",
                           drop=("discriminator",), int8=True)
    ckpt = torch.load(lean / "checkpoint.pt", weights_only=True)
    assert ckpt["dropped_modules"] == ["discriminator"] and ckpt["quantized_state"]
    assert not any(k.startswith("discriminator.") for k in ckpt["model_state"])
    assert not set(ckpt["quantized_state"]) & set(ckpt["model_state"])
    model = load_pretrained("lean", root=tmp_path / "m")
    full = load_run(tmp_path / "run")
    e = torch.full((8, 1), 20_000.0)
    lean_showers = model.sample(e, torch.Generator().manual_seed(0))
    full_showers = full.sample(e, torch.Generator().manual_seed(0))
    assert lean_showers.shape == (8, 504) and torch.isfinite(lean_showers).all()
    torch.testing.assert_close(lean_showers.sum(1), full_showers.sum(1), rtol=0.01, atol=1.0)
