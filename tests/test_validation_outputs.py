"""Outputs: never an input or a run's checkpoint, never below a file; no temporary left
after SIGTERM, stale temporaries of dead processes removed by the next write; bad
arguments refused in one line; the export contract states the opset in the file."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from cli_helpers import run_cli
from test_validation import _calogan_arrays, _one_line_error, write

from caloforge import CaloforgeError
from caloforge.data import ShowerWriter, read_showers, write_showers
from caloforge.data.atomic import remove_stale_temporaries, temporary_path
from caloforge.geometry import CALOGAN
from caloforge.models import Conditioning, build_model
from caloforge.models.calogan import CaloGAN
from caloforge.train.checkpoint import save_checkpoint
from caloforge.train.config import TrainConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory holding an (untrained) tiny CaloGAN checkpoint, 1-100 GeV."""
    torch.manual_seed(0)
    model = build_model("calogan", CALOGAN, CaloGAN.tiny_config(),
                        Conditioning(names=("energy",), energy=(1e3, 1e5)))
    model.configure_optimizers()
    rundir = tmp_path_factory.mktemp("run") / "run"
    save_checkpoint(rundir, model, TrainConfig(), 1, particle="eplus")
    return rundir


@pytest.mark.parametrize("command", ["generate", "export", "simulate", "scan"])
def test_output_never_replaces_the_run_checkpoint(command, run, capsys):
    checkpoint = run / "checkpoint.pt"
    before = checkpoint.read_bytes()
    args = {"generate": ["generate", run, "-n", 4, "-q", "-o", checkpoint],
            "export": ["export", run, "-o", checkpoint, "--no-check"],
            "simulate": ["simulate", "-p", "eplus", "-n", 4, "-q", "-o", checkpoint],
            "scan": ["scan", run, "-o", checkpoint]}[command]
    line = _one_line_error(*run_cli(args, capsys))
    assert "checkpoint" in line and "overwrite" in line
    assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]


@pytest.mark.parametrize("command", ["generate", "export", "simulate", "evaluate"])
def test_output_below_a_file_is_one_line(command, run, tmp_path, capsys):
    data = write(tmp_path / "data.h5", _calogan_arrays())
    target = data / "sub"
    args = {"generate": ["generate", run, "-n", 4, "-q", "-o", target],
            "export": ["export", run, "-o", target, "--no-check"],
            "simulate": ["simulate", "-p", "eplus", "-n", 4, "-q", "-o", target],
            "evaluate": ["evaluate", data, data, "-o", target, "--no-classifier", "-q"],
            }[command]
    line = _one_line_error(*run_cli(args, capsys))
    assert "is a file, not a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.h5"]


@pytest.mark.parametrize("command", ["simulate", "generate", "evaluate", "scan", "train"])
@pytest.mark.parametrize("seed", ["-1", "4294967296", "1.5", "abc"])
def test_bad_seed_is_one_line_everywhere(command, seed, run, tmp_path, capsys):
    data = write(tmp_path / "data.h5", _calogan_arrays())
    args = {"simulate": ["simulate", "-p", "eplus", "-n", 4, "-o", tmp_path / "s.h5"],
            "generate": ["generate", run, "-n", 4, "-o", tmp_path / "g.h5"],
            "evaluate": ["evaluate", data, data, "-o", tmp_path / "ev", "--no-classifier"],
            "scan": ["scan", run, "-o", tmp_path / "scan.h5"],
            "train": ["train", "calogan", "--data", data, "--out", tmp_path / "r"]}[command]
    line = _one_line_error(*run_cli([*args, "--seed", seed], capsys))
    assert "--seed" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.h5"]


def test_simulate_names_the_geometries_that_can_be_simulated(tmp_path, capsys):
    line = _one_line_error(*run_cli(["simulate", "-g", "calochallenge_ds1_photons", "-p",
                                     "gamma", "-n", 3, "-o", tmp_path / "x.h5"], capsys))
    assert "calogan (eplus/gamma/piplus)" in line and "clic51 (eminus)" in line
    assert list(tmp_path.iterdir()) == []


def test_failed_write_removes_the_temporary_and_the_folders_it_made(tmp_path):
    showers = read_showers(write(tmp_path / "in.h5", _calogan_arrays()))
    target = tmp_path / "new" / "deeper" / "out.h5"
    with pytest.raises(RuntimeError), ShowerWriter(target, "calogan") as writer:
        writer.write(showers)
        assert temporary_path(target).exists()
        raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    mine = temporary_path(tmp_path / "out.h5").name  # .out.h5.caloforge-tmp-HOST-PID
    host = mine.split(".caloforge-tmp-")[1].rsplit("-", 1)[0]
    dead = _dead_pid()
    stale = [tmp_path / mine.replace(f"-{os.getpid()}", f"-{dead}"),
             tmp_path / f".checkpoint.pt.tmp-{dead}"]  # as earlier versions named them
    kept = [tmp_path / mine.replace(f"-{os.getpid()}", f"-{os.getppid()}"),  # a live process
            tmp_path / mine.replace(f"{host}-{os.getpid()}", f"otherhost-{dead}"),  # shared disk
            tmp_path / f".notes.txt.tmp-{dead}",  # not an output of ours
            tmp_path / f".notes.txt.caloforge-tmp-{host}-{dead}x"]
    for path in stale + kept:
        path.write_bytes(b"half a file")
    showers = read_showers(write(tmp_path / "in.h5", _calogan_arrays()))
    write_showers(tmp_path / "out.h5", showers)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert remove_stale_temporaries(tmp_path) == []


def test_checkpoint_write_removes_a_killed_writers_temporary(run):
    from caloforge.train.checkpoint import load_checkpoint, model_from_checkpoint

    leftover = run / f".checkpoint.pt.tmp-{_dead_pid()}"
    leftover.write_bytes(b"x" * 1000)
    model = model_from_checkpoint(load_checkpoint(run))
    model.configure_optimizers()
    save_checkpoint(run, model, TrainConfig(), 1, particle="eplus")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_kill_leaves_no_temporary(sig, tmp_path):
    out = tmp_path / "big.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "caloforge", "simulate", "-p", "eplus", "-n", "2000000",
         "--chunk-size", "500", "-q", "-o", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        # a shell's background job inherits Ctrl-C ignored; a user's terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                p.name.startswith(".big.h5.caloforge-tmp-") for p in tmp_path.iterdir()):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.3)  # some chunks written
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:  # a failed test must not leave a 2-million-shower simulation running
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -sig
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


class _Program:
    """What torch.onnx.export returns, for a graph that declares ``opset``."""

    def __init__(self, opset):
        import onnx

        self.model_proto = onnx.helper.make_model(
            onnx.helper.make_graph([], "g", [], []),
            opset_imports=[onnx.helper.make_opsetid("", opset)])

    def save(self, path, external_data=False):
        import onnx

        onnx.save(self.model_proto, path)


@pytest.mark.parametrize(("asked", "written"), [(13, 18), (17, 18), (20, 20)])
def test_export_contract_states_the_opset_the_exporter_wrote(asked, written, run, tmp_path,
                                                             capsys, monkeypatch):
    """The exporter converts down where it can and silently keeps its own opset where it
    cannot: the file's opset is what counts."""
    pytest.importorskip("onnx")
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: _Program(written))
    code, out, err = run_cli(["export", run, "-o", tmp_path / "m.onnx", "--opset", asked,
                              "--no-check"], capsys)
    if asked != written:
        line = _one_line_error(code, out, err)
        assert f"cannot write opset {asked}: it wrote opset {written}" in line
        assert list(tmp_path.iterdir()) == []
    else:
        assert code == 0, err
        assert json.loads((tmp_path / "m.contract.json").read_text())["opset"] == written


def test_export_opset_newer_than_onnx_knows_is_one_line(run, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    newest = onnx.defs.onnx_opset_version()
    line = _one_line_error(*run_cli(["export", run, "-o", tmp_path / "m.onnx", "--opset",
                                     newest + 1], capsys))
    assert f"up to {newest}" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_real_exporter_opsets(run, tmp_path, capsys):
    """With the installed torch exporter (writes opset 18 and newer, about a minute)."""
    onnx = pytest.importorskip("onnx")
    line = _one_line_error(*run_cli(["export", run, "-o", tmp_path / "a.onnx", "--opset", 13,
                                     "--no-check"], capsys))
    assert "cannot write opset 13" in line
    assert list(tmp_path.iterdir()) == []
    code, _, err = run_cli(["export", run, "-o", tmp_path / "m.onnx", "--opset", 20], capsys)
    assert code == 0, err
    declared = {o.domain: o.version for o in onnx.load(tmp_path / "m.onnx").opset_import}
    contract = json.loads((tmp_path / "m.contract.json").read_text())
    assert contract["opset"] == declared[""] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.contract.json", "m.onnx"]


def test_library_writes_are_not_guarded_outside_a_command(tmp_path):
    """Reading a file then writing it again is allowed to library users (no command)."""
    path = write(tmp_path / "a.h5", _calogan_arrays())
    showers = read_showers(path)
    write_showers(path, showers[:3])
    assert len(read_showers(path)) == 3
    with pytest.raises(CaloforgeError, match="folder"):
        write_showers(tmp_path, showers)
    np.testing.assert_array_equal(read_showers(path).voxels, showers.voxels[:3])
