"""The shared training loop: exact resume, atomic checkpoints, logs, configs, data order."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from caloforge.data import ShowerSet, write_showers
from caloforge.errors import CaloforgeError
from caloforge.geometry import CALOGAN
from caloforge.models.calogan import CaloGAN, CaloGANConfig
from caloforge.train import (
    StepBatchSampler,
    TrainConfig,
    load_checkpoint,
    load_run,
    load_run_config,
    train,
)
from caloforge.train import checkpoint as checkpoint_module

TINY = CaloGAN.tiny_config().to_dict()
LOOP = {"batch_size": 16, "checkpoint_every": 2, "log_every": 1, "seed": 3,
        "device": "cpu", "progress": False, "tensorboard": False, "num_threads": 1}


def synthetic_showers(n: int = 96, seed: int = 0) -> ShowerSet:
    """Sparse, energy-scaled deposits: enough structure for a loop test, no simulator."""
    rng = np.random.default_rng(seed)
    energy = rng.uniform(1e3, 1e5, n).astype(np.float32)
    mask = rng.random((n, CALOGAN.n_voxels)) < 0.3
    voxels = rng.exponential(1.0, (n, CALOGAN.n_voxels)) * mask
    voxels = voxels / voxels.sum(axis=1, keepdims=True) * energy[:, None] * 0.95
    return ShowerSet(CALOGAN, voxels.astype(np.float32), energy, meta={"particle": "eplus",
                                                                       "generator": "synthetic"})


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.h5"
    write_showers(path, synthetic_showers())
    return path


def weights(rundir):
    return load_checkpoint(rundir)["model_state"]


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class Killed(Exception):
    pass


def test_resume_after_a_kill_gives_the_same_weights(data_file, tmp_path):
    full, broken = tmp_path / "full", tmp_path / "broken"
    train("calogan", data_file, full, train_config={**LOOP, "max_steps": 5},
          model_config=TINY, log=None)

    def kill_at_3(step, metrics):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train("calogan", data_file, broken, train_config={**LOOP, "max_steps": 5},
              model_config=TINY, on_step=kill_at_3, log=None)
    assert load_checkpoint(broken)["step"] == 2
    train("calogan", data_file, broken, train_config={"max_steps": 5}, resume=True, log=None)
    ckpt_full, ckpt_resumed = load_checkpoint(full), load_checkpoint(broken)
    assert ckpt_resumed["step"] == 5
    assert_same_state(ckpt_full["model_state"], ckpt_resumed["model_state"])
    opt_full = ckpt_full["optimizer_state"]["generator"]["state"]
    opt_res = ckpt_resumed["optimizer_state"]["generator"]["state"]
    for i in opt_full:
        assert torch.equal(opt_full[i]["exp_avg"], opt_res[i]["exp_avg"])
    # the log has each step once: lines the killed run wrote after its checkpoint are gone
    lines = (broken / "log.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == [1, 2, 3, 4, 5]


def test_resume_in_a_new_process_after_a_hard_kill(data_file, tmp_path):
    """A real kill (os._exit, no clean-up) after the step-2 checkpoint, then `caloforge
    train --resume` in a fresh process: identical weights to an uninterrupted run."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"train": {**LOOP, "max_steps": 4}, "model": TINY}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = textwrap.dedent(f"""
        import os
        from caloforge.train import train, load_run_config
        t, m = load_run_config({str(config)!r})
        def kill(step, metrics):
            if step == 3:
                os._exit(9)
        train("calogan", {str(data_file)!r}, {str(killed)!r}, train_config=t,
              model_config=m, on_step=kill, log=None)
    """)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True)
    assert run.returncode == 9, run.stderr
    assert load_checkpoint(killed)["step"] == 2
    cli = [sys.executable, "-m", "caloforge", "train", "calogan", "--out", str(killed),
           "--resume", "-q"]
    run = subprocess.run(cli, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    train("calogan", data_file, full, train_config={**LOOP, "max_steps": 4},
          model_config=TINY, log=None)
    assert_same_state(weights(full), weights(killed))


def test_checkpoint_is_atomic(data_file, tmp_path, monkeypatch):
    rundir = tmp_path / "run"
    train("calogan", data_file, rundir, train_config={**LOOP, "max_steps": 2},
          model_config=TINY, log=None)
    good = (rundir / "checkpoint.pt").read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train("calogan", data_file, rundir, train_config={"max_steps": 4}, resume=True,
              log=None)
    assert (rundir / "checkpoint.pt").read_bytes() == good
    assert sorted(p.name for p in rundir.iterdir()) == ["checkpoint.pt", "log.jsonl"]


def test_checkpoint_holds_what_generation_needs(data_file, tmp_path):
    rundir = tmp_path / "run"
    train("calogan", data_file, rundir, train_config={**LOOP, "max_steps": 2},
          model_config=TINY, log=None)
    ckpt = load_checkpoint(rundir)
    for key in ("family", "model_config", "train_config", "geometry", "conditioning",
                "particle", "caloforge_version", "step", "model_state", "optimizer_state",
                "rng"):
        assert key in ckpt
    assert ckpt["family"] == "calogan" and ckpt["particle"] == "eplus"
    lo, hi = ckpt["conditioning"]["energy"]
    energies = synthetic_showers().incident_energy
    assert lo == pytest.approx(energies.min()) and hi == pytest.approx(energies.max())
    model = load_run(rundir)
    assert not model.training and model.run_info["particle"] == "eplus"
    records = [json.loads(line) for line in (rundir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert {"d_loss_real", "g_loss", "time_s", "epoch"} <= set(records[0])


def test_existing_run_needs_resume(data_file, tmp_path):
    rundir = tmp_path / "run"
    train("calogan", data_file, rundir, train_config={**LOOP, "max_steps": 1},
          model_config=TINY, log=None)
    with pytest.raises(CaloforgeError, match="--resume"):
        train("calogan", data_file, rundir, train_config={**LOOP, "max_steps": 1},
              model_config=TINY, log=None)
    with pytest.raises(CaloforgeError, match="already at step 1"):
        train("calogan", data_file, rundir, resume=True, train_config={"max_steps": 1},
              log=None)
    with pytest.raises(CaloforgeError, match="cannot change batch_size"):
        train("calogan", data_file, rundir, resume=True,
              train_config={"max_steps": 3, "batch_size": 8}, log=None)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CaloforgeError, match="no checkpoint"):
        load_run(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CaloforgeError, match="cannot read checkpoint"):
        load_run(tmp_path)


def test_train_config_yaml_round_trip(tmp_path):
    config = TrainConfig(batch_size=64, max_steps=10, num_threads=1, device="cpu")
    model = CaloGANConfig(latent_size=32, disc_lc_channels=(8, 4, 4), voxel_power=0.5)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"train": config.to_dict(), "model": model.to_dict()}))
    train_d, model_d = load_run_config(path)
    assert TrainConfig.from_dict(train_d) == config
    assert CaloGANConfig.from_dict(model_d) == model
    assert TrainConfig.from_yaml(path, section="train") == config
    assert config.replace(max_steps="20").max_steps == 20


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(CaloforgeError, match="unknown setting.*batchsize.*valid: batch_size"):
        TrainConfig.from_dict({"batchsize": 3})
    with pytest.raises(CaloforgeError, match="expected an integer"):
        TrainConfig.from_dict({"max_steps": 2.5})
    with pytest.raises(CaloforgeError, match="at least 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(CaloforgeError, match="expected 3 values"):
        CaloGANConfig.from_dict({"disc_lc_channels": [1, 2]})
    path = tmp_path / "bad.yaml"
    path.write_text("trian: {}\n")
    with pytest.raises(CaloforgeError, match="unknown section"):
        load_run_config(path)
    with pytest.raises(CaloforgeError, match="not found"):
        load_run_config(tmp_path / "missing.yaml")


def test_batch_order_is_a_function_of_step():
    a = StepBatchSampler(100, 10, seed=1, max_steps=25)
    b = StepBatchSampler(100, 10, seed=1, max_steps=25, start_step=13)
    batches = list(a)
    assert len(batches) == 25
    assert list(b) == batches[13:]
    # one epoch covers every shower once
    assert sorted(i for batch in batches[:10] for i in batch) == list(range(100))
    assert batches[:10] != batches[10:20]  # a new permutation each epoch
    assert list(StepBatchSampler(100, 10, seed=2, max_steps=25)) != batches
    # ranks share a step's showers without overlap
    r0 = StepBatchSampler(100, 10, seed=1, max_steps=5, rank=0, world_size=2)
    r1 = StepBatchSampler(100, 10, seed=1, max_steps=5, rank=1, world_size=2)
    for x, y in zip(r0, r1, strict=True):
        assert len(x) == len(y) == 10 and not set(x) & set(y)
    with pytest.raises(CaloforgeError, match="larger than"):
        StepBatchSampler(5, 10, seed=0, max_steps=1)


SHIPPED_CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    from caloforge.models import get_model_class
    from caloforge.train.config import TrainConfig, load_run_config

    train, model = load_run_config(path)
    TrainConfig.from_dict(train)
    # configs/FAMILY[_variant].yaml; unknown keys are refused, so a typo fails here
    get_model_class(path.stem.split("_")[0]).Config.from_dict(model)
