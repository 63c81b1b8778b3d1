"""``caloforge inspect``: summary, average-image plots, and bad files."""

import h5py
import numpy as np
import pytest

from caloforge.cli.main import main
from caloforge.simulate import simulate_to_file


def _run(argv, capsys):
    try:
        main(argv)
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture(scope="module")
def eplus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inspect") / "eplus.h5"
    simulate_to_file(path, "calogan", "eplus", 400, progress=False, energy_range=(10, 50),
                     seed=1)
    return path


def test_summary_fits_one_screen(eplus_file, capsys):
    status, out, _ = _run(["inspect", str(eplus_file)], capsys)
    assert status == 0
    lines = out.splitlines()
    assert len(lines) <= 24
    text = out
    for expected in ("calogan", "eplus", "parametric", "400", "GeV", "layer_0", "layer_2"):
        assert expected in text
    energy = next(line for line in lines if line.startswith("energy"))
    low, high = (float(x) for x in energy.split()[1:4:2])
    assert 10 <= low < high <= 50
    fractions = [float(line.split()[1]) for line in lines if line.strip().startswith("layer_")]
    assert len(fractions) == 3 and abs(sum(fractions) - 1) < 1e-3
    assert fractions[1] > fractions[0] > fractions[2]


def test_plot_writes_average_images(eplus_file, tmp_path, capsys):
    folder = tmp_path / "plots"
    status, out, _ = _run(["inspect", str(eplus_file), "--plot", str(folder)], capsys)
    assert status == 0
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert len(pngs) == 4 and "average_layers.png" in pngs
    for p in folder.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_clic51_summary_stays_short(tmp_path, capsys):
    path = tmp_path / "clic.h5"
    simulate_to_file(path, "clic51", "eminus", 3, progress=False, seed=0)
    status, out, _ = _run(["inspect", str(path)], capsys)
    assert status == 0 and len(out.splitlines()) <= 24 and "angle" in out


def _write_calogan(path, energy):
    n = len(energy)
    with h5py.File(path, "w") as f:
        f["layer_0"] = np.ones((n, 3, 96), np.float32)
        f["layer_1"] = np.ones((n, 12, 12), np.float32)
        f["layer_2"] = np.ones((n, 12, 6), np.float32)
        f["overflow"] = np.zeros((n, 3), np.float32)
        f["energy"] = np.asarray(energy, np.float32).reshape(n, 1)


def _bad_files(tmp_path):
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["images"] = np.zeros((3, 10, 10))
    nan = tmp_path / "nan.h5"
    _write_calogan(nan, [10.0, np.nan])
    negative = tmp_path / "negative.h5"
    _write_calogan(negative, [10.0, -3.0])
    return {"missing": (tmp_path / "missing.h5", "not found"),
            "corrupt": (corrupt, "cannot read"),
            "other layout": (other, "not a shower file"),
            "nan": (nan, "NaN"),
            "negative": (negative, "positive")}


@pytest.mark.parametrize("case", ["missing", "corrupt", "other layout", "nan", "negative"])
def test_bad_files_are_one_clear_line(tmp_path, capsys, case):
    path, message = _bad_files(tmp_path)[case]
    folder = tmp_path / "plots"
    status, out, err = _run(["inspect", str(path), "--plot", str(folder)], capsys)
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in err
    assert not folder.exists()  # nothing written


def test_plot_into_a_file_is_a_clear_error(eplus_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status, _, err = _run(["inspect", str(eplus_file), "--plot", str(blocker / "sub")], capsys)
    assert status == 1 and err.startswith("error:") and "Traceback" not in err
