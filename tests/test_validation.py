"""Malformed shower files, one small file per fault class, built here: every reader and
command refuses each in one line (non-zero exit, no traceback, nothing left behind), and
the files that are merely unusual (float16, 3DGAN generated showers) read correctly."""

import h5py
import numpy as np
import pytest
from cli_helpers import run_cli

from caloforge import CaloforgeError
from caloforge.data import file_info, iter_showers, read_showers
from caloforge.geometry import get_geometry

N = 6
DS1 = get_geometry("calochallenge_ds1_photons")


def _calogan_arrays(n=N, seed=0):
    rng = np.random.default_rng(seed)
    energy = rng.uniform(2.0, 90.0, (n, 1))  # GeV
    layers = [rng.exponential(1.0, (n, *shape)) for shape in ((3, 96), (12, 12), (12, 6))]
    total = sum(layer.sum(axis=(1, 2)) for layer in layers)
    scale = 0.95 * energy[:, 0] * 1000.0 / total  # deposits ~95% of E_inc, in MeV
    layers = [layer * scale[:, None, None] for layer in layers]
    return {"layer_0": layers[0], "layer_1": layers[1], "layer_2": layers[2],
            "overflow": np.zeros((n, 3)), "energy": energy}


def write(path, arrays, dtype=np.float32, groups=()):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if value is None:
                continue
            f.create_dataset(key, data=np.asarray(value, dtype=dtype))
        for key in groups:
            f.create_group(key).create_dataset("x", data=np.zeros(3))
    return path


def calogan(path, dtype=np.float32, **changes):
    arrays = _calogan_arrays()
    arrays.update(changes)
    return write(path, arrays, dtype)


def calochallenge(path, n_energy=N, n_showers=N, showers_shape=None):
    rng = np.random.default_rng(2)
    energy = rng.uniform(1e3, 1e5, (n_energy, 1))
    showers = rng.exponential(1.0, showers_shape or (n_showers, DS1.n_voxels))
    if showers.ndim == 2:
        showers *= 0.9 * np.resize(energy[:, 0], n_showers)[:, None] / showers.sum(axis=1,
                                                                                keepdims=True)
    return write(path, {"incident_energies": energy, "showers": showers})


def calogan_group(path):
    arrays = _calogan_arrays()
    del arrays["energy"]
    return write(path, arrays, groups=("energy",))


def corrupt_chunk(path):
    """A valid file whose compressed chunk of layer_1 no longer decodes."""
    arrays = _calogan_arrays(n=64)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value.astype(np.float32), chunks=(8, *value.shape[1:]),
                             compression="gzip")
        info = f["layer_1"].id.get_chunk_info(3)
        offset, size = info.byte_offset, info.size
    with open(path, "r+b") as raw:
        raw.seek(offset)
        raw.write(b"\x00" * size)
    return path


def zeroed_middle(path):
    """4 KB zeroed in the middle of a valid (uncompressed, contiguous) file."""
    calogan(path)
    size = path.stat().st_size
    with open(path, "r+b") as raw:
        raw.seek(size // 2)
        raw.write(b"\xff" * 4096)
    return path


# fault class -> (builder, the part of the one-line message that names the fault)
BAD = {
    "layer_0-short": (lambda p: calogan(p, layer_0=_calogan_arrays(N - 1)["layer_0"]),
                      "layer_0 5, layer_1 6"),
    "energy-short": (lambda p: calogan(p, energy=_calogan_arrays(N - 2)["energy"]),
                     "energy 4"),
    "overflow-long": (lambda p: calogan(p, overflow=np.zeros((N + 3, 3))), "overflow 9"),
    "challenge-energies-short": (lambda p: calochallenge(p, n_energy=N - 1),
                                 "incident_energies 5, showers 6"),
    "challenge-showers-short": (lambda p: calochallenge(p, n_showers=N - 1),
                                "incident_energies 6, showers 5"),
    "energy-group": (calogan_group, "'energy' is an HDF5 group"),
    "showers-rank-1": (lambda p: calochallenge(p, showers_shape=(N,)),
                       "'showers' has shape (6,)"),
    "energy-N-2": (lambda p: calogan(p, energy=np.ones((N, 2)) * 10), "'energy' has shape (6, 2)"),
    "layer_1-wrong-shape": (lambda p: calogan(p, layer_1=np.ones((N, 12, 11))),
                            "'layer_1' has shape (6, 12, 11)"),
    "energy-text": (lambda p: _text_energy(p), "holds |S"),
    "energy-MeV": (lambda p: calogan(p, energy=_calogan_arrays()["energy"] * 1000.0),
                   "look like MeV"),
    "challenge-energies-GeV": (lambda p: _challenge_gev(p), "times their incident energy"),
    "voxels-NaN": (lambda p: calogan(p, layer_2=_with(_calogan_arrays()["layer_2"], np.nan)),
                   "'layer_2' holds 1 NaN"),
    "energy-zero": (lambda p: calogan(p, energy=_with(_calogan_arrays()["energy"], 0.0)),
                    "not positive"),
    "voxels-negative": (lambda p: calogan(p, layer_0=_with(_calogan_arrays()["layer_0"], -1.0)),
                        "negative energies"),
    "float64-beyond-float32": (
        lambda p: calogan(p, np.float64, layer_1=_with(_calogan_arrays()["layer_1"], 1e300)),
        "beyond the float32 range"),
    "corrupt-chunk": (corrupt_chunk, "cannot read dataset 'layer_1'"),
    "3dgan-no-energy": (lambda p: write(p, {"ECAL": np.ones((2, 51, 51, 25))}),
                        "needs the incident energy"),
    "calogan-missing-energy": (lambda p: calogan(p, energy=None), "missing: energy"),
    "bytes-overwritten": (zeroed_middle, ""),
    "not-hdf5": (lambda p: p.write_bytes(b"not an HDF5 file at all") and p, "as HDF5"),
    "empty-hdf5": (lambda p: write(p, {}), "not a shower file"),
}


def _with(arr, value):
    arr = np.array(arr, dtype=np.float64)
    arr.reshape(len(arr), -1)[2, 0] = value
    return arr


def _text_energy(path):
    arrays = _calogan_arrays()
    arrays.pop("energy")
    write(path, arrays)
    with h5py.File(path, "a") as f:
        f["energy"] = np.array([b"ten"] * N)
    return path


def _challenge_gev(path):
    calochallenge(path)
    with h5py.File(path, "a") as f:
        f["incident_energies"][...] = f["incident_energies"][...] / 1000.0
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return calogan(tmp_path_factory.mktemp("good") / "good.h5")


@pytest.mark.parametrize("fault", sorted(BAD))
def test_readers_refuse_with_the_fault_named(fault, tmp_path):
    build, words = BAD[fault]
    path = tmp_path / "bad.h5"
    build(path)
    for read in (lambda: list(iter_showers(path)), lambda: read_showers(path),
                 lambda: file_info(path)):
        with pytest.raises(CaloforgeError) as err:
            read()
        message = str(err.value)
        assert "\n" not in message
        assert words in message, message
        assert str(path) in message or "not found" in message


def _one_line_error(code, out, err):
    assert code != 0
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


COMMANDS = {
    "inspect": lambda bad, good, out: ["inspect", bad],
    "inspect-plot": lambda bad, good, out: ["inspect", bad, "--plot", out / "plots"],
    "evaluate-generated": lambda bad, good, out: [
        "evaluate", good, bad, "-o", out / "eval", "--no-classifier", "--no-plots", "-q"],
    "evaluate-reference": lambda bad, good, out: [
        "evaluate", bad, good, "-o", out / "eval", "--no-classifier", "--no-plots", "-q"],
    "train": lambda bad, good, out: [
        "train", "calogan", "--data", bad, "--out", out / "run", "--max-steps", 1,
        "--device", "cpu", "--num-threads", 1, "-q"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("fault", sorted(BAD))
def test_commands_refuse_in_one_line_and_leave_nothing(fault, command, tmp_path, good, capsys):
    build, words = BAD[fault]
    bad = tmp_path / "bad.h5"
    build(bad)
    before = _files(tmp_path)
    code, out, err = run_cli(COMMANDS[command](bad, good, tmp_path), capsys)
    line = _one_line_error(code, out, err)
    if command.startswith(("inspect", "evaluate")):
        assert words in line, line
    assert _files(tmp_path) == before


def test_float16_file_reads_like_float32(tmp_path):
    arrays = _calogan_arrays()
    wide = read_showers(write(tmp_path / "f32.h5", arrays))
    half = read_showers(write(tmp_path / "f16.h5", arrays, dtype=np.float16))
    # energy 2-90 GeV, times 1000 after conversion: would overflow float16 (max 65504)
    assert np.isfinite(half.incident_energy).all()
    np.testing.assert_allclose(half.incident_energy, wide.incident_energy, rtol=1e-3)
    np.testing.assert_allclose(half.voxels, wide.voxels, rtol=1e-3, atol=1e-2)


def test_tev_showers_in_gev_are_not_taken_for_mev(tmp_path):
    arrays = _calogan_arrays()
    arrays["energy"] = arrays["energy"] * 30.0  # 60-2700 GeV, deposits scaled alike
    for i in range(3):
        arrays[f"layer_{i}"] = arrays[f"layer_{i}"] * 30.0
    showers = read_showers(write(tmp_path / "tev.h5", arrays))
    assert showers.incident_energy.max() > 1e6


def test_3dgan_generated_shower_file(tmp_path):
    """As the 3DGAN code writes generated showers: ECAL and Target in GeV, Angle in
    radians, no energy key."""
    rng = np.random.default_rng(3)
    target = rng.uniform(100, 200, 3)
    angle = np.radians([60.0, 90.0, 120.0])
    ecal = rng.exponential(1e-3, (3, 51, 51, 25)) * (rng.random((3, 51, 51, 25)) < 0.05)
    path = write(tmp_path / "gen3d.h5", {"ECAL": ecal, "Target": target, "Angle": angle})
    showers = read_showers(path)
    assert showers.geometry.name == "clic51"
    np.testing.assert_allclose(showers.incident_energy, target * 1000.0, rtol=1e-6)
    np.testing.assert_allclose(showers.angle, [60.0, 90.0, 120.0], rtol=1e-5)
    np.testing.assert_allclose(showers.voxels.sum(axis=1), ecal.sum(axis=(1, 2, 3)) * 1000,
                               rtol=1e-4)
    assert file_info(path).n == 3


def test_3dgan_angle_in_degrees_is_refused(tmp_path):
    ecal = np.full((2, 51, 51, 25), 1e-4)
    path = write(tmp_path / "deg.h5", {"ECAL": ecal, "energy": [150.0, 160.0],
                                       "theta": [60.0, 90.0]})
    with pytest.raises(CaloforgeError, match="looks like degrees"):
        read_showers(path)


def test_inspect_shows_overflow_only_when_the_file_has_it(tmp_path, capsys):
    with_overflow = calogan(tmp_path / "with.h5")
    without = calogan(tmp_path / "without.h5", overflow=None)
    code, out, err = run_cli(["inspect", with_overflow], capsys)
    assert code == 0, err
    assert any(line.startswith("overflow") for line in out.splitlines())
    code, out, err = run_cli(["inspect", without], capsys)
    assert code == 0, err
    assert not any(line.startswith("overflow") for line in out.splitlines())
    assert file_info(without)["has_overflow"] is False
