"""ONNX export (parity with PyTorch for every model family) and ``caloforge bench``.

Export needs the ``onnx`` extra, which the ``dev`` extra installs, so these run in CI.
"""

import json
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_models_contract import CASES, build, fake_batch

from caloforge.bench import Timing, bench_runs, markdown_table, time_per_shower
from caloforge.cli.main import cli
from caloforge.errors import CaloforgeError
from caloforge.export import PARITY_ATOL_MEV, contract_path, export_onnx, onnx_session
from caloforge.train.checkpoint import save_checkpoint
from caloforge.train.config import TrainConfig

torch.set_num_threads(1)


def trained_tiny(name, conditions):
    """A tiny model after one training step (batch-norm statistics no longer trivial)."""
    model = build(name, conditions)
    model.training_step(fake_batch(model.geometry, 8), step=1)
    return model.eval()


@pytest.mark.parametrize(("name", "conditions"), CASES)
def test_export_matches_pytorch_at_any_batch_size(name, conditions, tmp_path):
    model = trained_tiny(name, conditions)
    path = tmp_path / "model.onnx"
    contract = export_onnx(model, path)
    assert contract["parity"]["passed"]
    assert contract["parity"]["max_abs_diff_mev"] <= PARITY_ATOL_MEV + 1e-4 * max(
        contract["parity"]["max_abs_output_mev"], 1.0)
    assert json.loads(contract_path(path).read_text()) == contract
    # the batch size is dynamic: sizes never seen at export time run and agree
    session = onnx_session(path)
    gen = torch.Generator().manual_seed(5)
    for n in (1, 13):
        latent = torch.randn((n, *model.latent_shape()), generator=gen)
        conditions_ = fake_batch(model.geometry, n, seed=n)["conditions"]
        got = session.run(["showers"], {"latent": latent.numpy(),
                                        "conditions": conditions_.numpy()})[0]
        with torch.no_grad():
            expected = model.decode(latent, conditions_).numpy()
        assert got.shape == (n, model.geometry.n_voxels)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=PARITY_ATOL_MEV)


def test_contract_documents_inputs_outputs_and_layout(tmp_path):
    model = trained_tiny("calogan", ("energy",))
    contract = export_onnx(model, tmp_path / "g.onnx")
    latent, conditions = contract["inputs"]
    assert latent["name"] == "latent" and latent["shape"] == ["batch", *model.latent_shape()]
    assert "normal" in latent["distribution"]
    assert conditions["columns"][0]["unit"] == "MeV"
    assert conditions["columns"][0]["trained_range"] == list(model.conditioning.energy)
    out = contract["outputs"][0]
    assert out["unit"] == "MeV" and out["shape"] == ["batch", model.geometry.n_voxels]
    sizes = [layer["size"] for layer in out["layers"]]
    assert sum(sizes) == model.geometry.n_voxels
    assert [layer["offset"] for layer in out["layers"]] == list(np.cumsum([0] + sizes[:-1]))
    assert contract["family"] == "calogan" and contract["geometry"] == model.geometry.name
    assert contract["sampling_notes"] == []  # the graph is what sample() runs


def test_failed_parity_leaves_no_file(tmp_path, monkeypatch):
    import caloforge.export as export

    model = trained_tiny("calogan", ("energy",))
    monkeypatch.setattr(export, "PARITY_ATOL_MEV", -1.0)  # nothing can pass
    with pytest.raises(CaloforgeError, match="disagrees with PyTorch"):
        export.export_onnx(model, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def _run(tmp_path):
    model = trained_tiny("calogan", ("energy",))
    rundir = tmp_path / "run"
    save_checkpoint(rundir, model, TrainConfig(), 1, particle="eplus")
    return rundir


def test_export_cli_and_missing_run(tmp_path):
    rundir = _run(tmp_path)
    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(rundir), "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code == 0, res.output
    assert "passed" in res.output
    assert (tmp_path / "m.onnx").exists() and (tmp_path / "m.contract.json").exists()
    res = runner.invoke(cli, ["export", str(tmp_path / "nope"), "-o", str(tmp_path / "x.onnx")])
    assert res.exit_code != 0


def test_time_per_shower_skips_batches_beyond_the_budget():
    calls = []

    def sample(b):
        calls.append(b)
        time.sleep(0.02)

    timings = time_per_shower(sample, [1, 2, 4], name="slow", backend="numpy", repeats=3,
                              warmup=1, max_seconds=0.01)
    assert [t.batch_size for t in timings] == [1, 2, 4]
    assert timings[0].ms_per_shower > 0 and timings[0].repeats == 1
    assert timings[1].ms_per_shower is None and "skipped" in timings[1].note
    assert calls == [1, 1]  # one warm-up, one timed call, nothing for the larger batches
    table = markdown_table(timings, [1, 2, 4], {"quoted thing": {4: 2.0}})
    assert "| slow | numpy |" in table and "| quoted thing | quoted |" in table


def test_time_per_shower_times_a_long_call_once_without_warm_up(monkeypatch):
    import types

    import caloforge.bench

    # a clock that only the calls advance (5 ms per shower), so that the decisions do not
    # depend on how loaded the machine is
    clock = [0.0]
    monkeypatch.setattr(caloforge.bench, "time",
                        types.SimpleNamespace(perf_counter=lambda: clock[0]))
    calls = []

    def sample(b):
        calls.append(b)
        clock[0] += 0.005 * b

    # batch 10 is predicted at 0.05 s: within the 0.08 s budget, but over a quarter of it
    timings = time_per_shower(sample, [1, 10], name="slow", backend="numpy", repeats=2,
                              warmup=1, max_seconds=0.08)
    assert calls == [1, 1, 1, 10]  # warm-up and two calls at 1; one call, no warm-up, at 10
    assert timings[1].repeats == 1 and timings[1].ms_per_shower >= 5.0


def test_bench_times_torch_onnx_and_the_simulator_side_by_side(tmp_path):
    rundir = _run(tmp_path)
    result = bench_runs([str(rundir)], [1, 3], backends=("torch", "onnxruntime"), repeats=1,
                        geant4=1, log=lambda m: None)
    timings = [Timing(**t) for t in result["timings"]]
    kinds = {(t.backend, t.batch_size) for t in timings}
    assert {("torch", 1), ("torch", 3), ("onnxruntime", 1), ("onnxruntime", 3)} <= kinds
    # the tiny model's geometry has no simulator: the default calogan e+ is timed instead
    assert any(t.backend == "numpy" for t in timings)
    assert all(t.ms_per_shower > 0 for t in timings)
    assert result["hardware"]["cores"] >= 1
    # Geant4 data are not on this machine: a note, not a failure
    assert any("Geant4" in n for n in result["notes"]) or any(
        t.backend == "geant4" for t in timings)


def test_bench_cli_writes_json(tmp_path):
    rundir = _run(tmp_path)
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(cli, ["bench", str(rundir), "--batch-sizes", "2,1",
                                   "--threads", "1", "--repeats", "1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "| batch 1 | batch 2 |" in res.output
    assert "| CaloGAN (paper, arXiv:1712.10321; Intel Xeon CPU) | quoted |" in res.output
    assert ("| Geant4 11.4 (electromagnetic physics, data-free models), 1 thread, this "
            "machine class | quoted | - | - | 1093 |") in res.output
    assert "seed 00" not in res.output
    data = json.loads(out.read_text())
    assert data["batch_sizes"] == [1, 2]
    res = CliRunner().invoke(cli, ["bench", str(rundir), "--batch-sizes", "0"])
    assert res.exit_code != 0


def test_a_sampler_the_model_does_not_have_is_one_error(tmp_path):
    rundir = _run(tmp_path)
    with pytest.raises(CaloforgeError, match="single sampler"):
        bench_runs([f"{rundir}:teacher"], [1], repeats=1, simulator=False, log=lambda m: None)
    res = CliRunner().invoke(cli, ["generate", str(rundir), "-n", "2", "--sampler", "fast",
                                   "-o", str(tmp_path / "g.h5")])
    assert res.exit_code != 0 and not (tmp_path / "g.h5").exists()
