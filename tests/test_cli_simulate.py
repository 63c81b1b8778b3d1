"""``caloforge simulate``: the command line, its output file, and bad input."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from caloforge.cli._options import parse_range
from caloforge.cli.main import main
from caloforge.errors import CaloforgeError


def _run(argv, capsys):
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    try:
        main(argv)
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    out = capsys.readouterr()
    return status, out.out, out.err


def test_simulate_writes_a_calogan_file(tmp_path, capsys):
    out = tmp_path / "eplus.h5"
    status, stdout, _ = _run(["simulate", "--geometry", "calogan", "--particle", "eplus",
                              "-n", "300", "--energy", "1:100", "--seed", "1", "-o", str(out),
                              "--quiet"], capsys)
    assert status == 0
    assert "wrote 300 eplus showers (parametric, parametric-5)" in stdout
    with h5py.File(out, "r") as f:
        assert f["layer_0"].shape == (300, 3, 96)
        assert f["energy"].shape == (300, 1)
        assert 1.0 <= f["energy"][:].min() and f["energy"][:].max() <= 100.0  # GeV
        assert f.attrs["generator"] == "parametric" and f.attrs["seed"] == 1


def test_same_seed_same_file_from_the_cli(tmp_path, capsys):
    paths = []
    for chunk in ("64", "1000"):
        path = tmp_path / f"g{chunk}.h5"
        _run(["simulate", "-p", "gamma", "-n", "200", "--seed", "5", "--chunk-size", chunk,
              "-o", str(path), "-q"], capsys)
        paths.append(path)
    with h5py.File(paths[0], "r") as a, h5py.File(paths[1], "r") as b:
        for key in a:
            np.testing.assert_array_equal(a[key][:], b[key][:])


def test_default_ranges_and_angles(tmp_path, capsys):
    out = tmp_path / "clic.h5"
    status, _, _ = _run(["simulate", "-g", "clic51", "-p", "eminus", "-n", "2",
                         "--angle", "60:120", "-o", str(out), "-q"], capsys)
    assert status == 0
    with h5py.File(out, "r") as f:
        assert f["ECAL"].shape == (2, 51, 51, 25)
        assert np.all((f["energy"][:] >= 100) & (f["energy"][:] <= 200))  # default, GeV
        theta = np.degrees(f["theta"][:])
        assert np.all((theta >= 60) & (theta <= 120))
    status, _, _ = _run(["simulate", "-g", "atlas89", "-p", "gamma", "-n", "20",
                         "-o", str(tmp_path / "atlas.h5"), "-q"], capsys)
    assert status == 0


def test_progress_bar_is_shown(tmp_path, capsys):
    status, _, stderr = _run(["simulate", "-p", "eplus", "-n", "50",
                              "-o", str(tmp_path / "x.h5")], capsys)
    assert status == 0 and "50/50" in stderr  # tqdm, on stderr


@pytest.mark.parametrize("args,message", [
    (["--energy", "100:1"], "reversed"),
    (["--energy", "nan:10"], "finite"),
    (["--energy=-5:10"], "below the minimum"),
    (["--energy", "ten"], "two numbers"),
    (["--particle", "muon"], "unknown particle"),
    (["--geometry", "nope"], "unknown geometry"),
    (["--angle", "60:120"], "no angle"),
    (["-n", "0"], "positive"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, message):
    out = tmp_path / "out.h5"
    argv = ["simulate", "--particle", "eplus", "-n", "10", "-o", str(out), "-q"]
    # Later options override earlier ones in click, so append the bad one.
    status, stdout, stderr = _run(argv + args, capsys)
    assert status != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # no partial output, no temporary file


def test_geant4_engine_missing_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "caloforge.simulate.geant4" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    out = tmp_path / "g4.h5"
    status, _, stderr = _run(["simulate", "-p", "eplus", "-n", "5", "-q", "--engine",
                              "geant4", "-o", str(out)], capsys)
    assert status == 1
    assert "pip install 'caloforge[geant4]'" in stderr and len(stderr.splitlines()) == 1
    assert not out.exists()


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status, _, stderr = _run(["simulate", "-p", "eplus", "-n", "5", "-q",
                              "-o", str(blocker / "out.h5")], capsys)
    assert status != 0 and stderr.startswith("error:") and "Traceback" not in stderr


def test_subprocess_error_has_no_traceback(tmp_path):
    out = tmp_path / "x.h5"
    proc = subprocess.run([sys.executable, "-m", "caloforge", "simulate", "--particle",
                           "eplus", "-n", "10", "--energy", "100:1", "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: --energy: range 100:1 is reversed; write 1:100"]
    assert not out.exists()


def test_help_explains_units(capsys):
    status, stdout, _ = _run(["simulate", "--help"], capsys)
    assert status == 0
    assert "GeV" in stdout and "degrees" in stdout and "MeV" in stdout


@pytest.mark.parametrize("text,expected", [("1:100", (1.0, 100.0)), ("10", (10.0, 10.0)),
                                           (" 2.5:3 ", (2.5, 3.0))])
def test_parse_range(text, expected):
    assert parse_range(text) == expected


@pytest.mark.parametrize("text", ["1:2:3", "a:b", "inf:1", "5:1", ""])
def test_parse_range_rejects(text):
    with pytest.raises(CaloforgeError):
        parse_range(text, "--energy", "GeV")
