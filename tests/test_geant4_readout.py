"""The Geant4 engine's parts that need no Geant4: the calogan stack, the readout binning,
the accumulation of deposits into showers, and the data-set checks.

Deposits here are made-up numbers (not physics) and are labelled "test-standin".
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from caloforge import CaloforgeError
from caloforge.geometry import get_geometry
from caloforge.simulate import simulate_showers
from caloforge.simulate.geant4 import (
    FTFP_BERT_DATA,
    STACK,
    CaloganGeant4,
    find_geant4_data,
    geant4_datasets,
)
from caloforge.simulate.readout import (
    ShowerAccumulator,
    bin_deposits,
    check_readout,
    locate,
    readout_index,
)

G = get_geometry("calogan")
STANDIN = "test-standin"


def test_stack_is_designs_calogan():
    slabs = STACK.slabs()
    assert len(slabs) == 160 and STACK.n_layers == 80
    assert [m for m, _, _ in slabs[:4]] == ["Pb", "LAr", "Pb", "LAr"]
    assert {round(b - a, 9) for m, a, b in slabs if m == "Pb"} == {2.0}
    assert {round(b - a, 9) for m, a, b in slabs if m == "LAr"} == {4.0}
    assert slabs[0][1] == -240.0 and slabs[-1][2] == pytest.approx(240.0)
    assert all(np.isclose(a[2], b[1]) for a, b in zip(slabs[:-1], slabs[1:], strict=True))
    assert STACK.size_xy == 1000.0 and STACK.gun_z == -288.0
    # The readout boundaries: -150 mm is a layer boundary (15 layers in front), 197 mm
    # falls inside the LAr of layer 72.
    assert ("Pb", -150.0) == (slabs[30][0], pytest.approx(slabs[30][1]))
    assert slabs[145][0] == "LAr" and slabs[145][1] < 197.0 < slabs[145][2]
    # Geant4 builds the slabs cut there, each with the readout layer of its depth range.
    segments = STACK.segments(G)
    assert len(segments) == 161
    assert segments[145:147] == [("LAr", 194.0, 197.0, 1), ("LAr", 197.0, 198.0, 2)]
    assert [seg[3] for seg in segments] == [0] * 30 + [1] * 116 + [2] * 15
    for _, z0, z1, layer in segments:
        assert locate(G, [0.0], [0.0], [0.5 * (z0 + z1)])[0][0] == layer


def test_locate_known_points():
    points = {  # (x, y, z) mm -> (layer, row, col); rows along x, columns along y
        (0.0, 0.0, -200.0): (0, 1, 48),
        (-239.9, -239.9, -151.0): (0, 0, 0),
        (-240.0, 0.0, -151.0): (0, 0, 48),  # cells are half-open: -240 is in
        (239.9, 239.9, -150.0): (1, 11, 11),  # z = -150 is layer 1
        (0.0, 0.0, 196.99): (1, 6, 6),
        (0.0, 0.0, 197.0): (2, 6, 3),
        (-100.0, 100.0, 239.0): (2, 3, 4),
        (240.0, 0.0, 0.0): (1, -1, -1),  # +240 is out: overflow of layer 1
        (0.0, 300.0, -300.0): (0, -1, -1),  # in front of the stack: layer 0
        (0.0, 0.0, 300.0): (2, 6, 3),  # behind it: layer 2
    }
    x, y, z = (np.array([p[i] for p in points]) for i in range(3))
    layer, row, col = locate(G, x, y, z)
    assert list(zip(layer, row, col, strict=True)) == list(points.values())


def _calogan_reference(x, y, z):
    """CaloGAN's SteppingAction::WhichZBin / WhichXYbin, ported loop for loop."""
    zbin = 0 if z < -150.0 else 1 if z < 197.0 else 2
    nx, ny = (3, 12, 12)[zbin], (96, 12, 6)[zbin]
    xbin = next((i - 1 for i in range(1, nx + 1) if -240 < x < -240 + i * 480 / nx), -1)
    ybin = next((i - 1 for i in range(1, ny + 1) if -240 < y < -240 + i * 480 / ny), -1)
    if xbin == -1 or ybin == -1:
        return 504 + zbin
    return (0, 288, 432)[zbin] + xbin * ny + ybin


def test_readout_index_agrees_with_calogans_geant4_application():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-300, 300, (2, 5000))
    z = rng.uniform(-245, 245, 5000)
    ours = readout_index(G, x, y, z)
    assert list(ours) == [_calogan_reference(*p) for p in zip(x, y, z, strict=True)]
    assert ours.min() >= 0 and ours.max() < G.n_voxels + G.n_layers


def test_bin_deposits_conserves_energy_per_event():
    rng = np.random.default_rng(2)
    n = 4000
    x, y = rng.normal(0, 150, (2, n))
    z = rng.uniform(-240, 240, n)
    edep = rng.exponential(1.0, n)
    event = rng.integers(0, 5, n)
    event[event == 3] = 4  # event 3 has no deposit
    voxels, overflow = bin_deposits(G, x, y, z, edep, event=event, n_events=6)
    assert voxels.shape == (6, 504) and overflow.shape == (6, 3)
    totals = np.bincount(event, weights=edep, minlength=6)
    np.testing.assert_allclose(voxels.sum(1) + overflow.sum(1), totals)
    assert np.all(voxels[[3, 5]] == 0) and np.all(overflow[[3, 5]] == 0)
    # The same deposits one by one land where locate() says.
    layer, row, col = locate(G, x[:50], y[:50], z[:50])
    for i in range(50):
        v, o = bin_deposits(G, x[i], y[i], z[i], edep[i])
        if row[i] < 0:
            assert o[0, layer[i]] == pytest.approx(edep[i])
        else:
            image = G.split_layers(v)[layer[i]]
            assert image[0, row[i], col[i]] == pytest.approx(edep[i])


def test_accumulator_makes_showers_event_by_event():
    acc = ShowerAccumulator("calogan")
    acc.add(0.0, 0.0, -200.0, 5.0)  # layer 0, row 1, col 48
    acc.add(0.0, 0.0, -199.0, 1.5)
    acc.add(400.0, 0.0, 0.0, 2.0)  # overflow of layer 1
    assert acc.n_pending == 3
    acc.end_event(10_000.0)
    acc.add(0.0, 0.0, 230.0, 7.0)
    acc.discard_event()  # an aborted event leaves nothing
    acc.end_event(20_000.0)  # an event with no deposit
    acc.add_cells([144, 144, 506], [1.0, 2.0, 4.0])  # read out already (Geant4's scorers)
    acc.add(0.0, 0.0, -200.0, 0.5)
    acc.end_event(30_000.0)
    with pytest.raises(CaloforgeError, match="readout indices"):
        acc.add_cells([507], [1.0])
    showers = acc.pop_showers(STANDIN, particle="eplus")
    assert len(showers) == 3 and len(acc) == 0 and acc.n_pending == 0
    assert showers.meta == {"generator": STANDIN, "particle": "eplus"}
    np.testing.assert_allclose(showers.incident_energy, [10_000.0, 20_000.0, 30_000.0])
    assert showers.layers[0][0, 1, 48] == pytest.approx(6.5)
    assert showers.layers[0][2, 1, 48] == pytest.approx(3.5)  # 144 = row 1, column 48
    np.testing.assert_allclose(showers.overflow, [[0, 2.0, 0], [0, 0, 0], [0, 0, 4.0]])
    assert showers.voxels[1].sum() == 0 and showers.voxels.dtype == np.float32
    assert len(acc.pop_showers(STANDIN)) == 0


def test_non_cartesian_geometries_are_refused():
    for name in ("atlas89", "calochallenge_ds2"):
        with pytest.raises(CaloforgeError, match="no Cartesian readout in mm"):
            check_readout(name)


def _standin_tree(root, folders):
    """Empty folders with the data sets' names: stand-ins, NOT PHYSICS."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "README_NOT_PHYSICS.txt").write_text(
        "Stand-in folders made by caloforge's tests. NOT PHYSICS: no Geant4 data inside.\n")
    for folder in folders:
        (root / folder).mkdir()
    return root


def test_find_geant4_data(tmp_path):
    table = geant4_datasets()
    assert table["G4LEDATA"].startswith("G4EMLOW")
    assert table["G4ENSDFSTATEDATA"].startswith("G4ENSDFSTATE")
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(CaloforgeError, match="GEANT4_DATA_DIR is not set") as err:
        find_geant4_data(environ={"HOME": str(home)})
    assert table["G4LEDATA"] in str(err.value)
    base = _standin_tree(tmp_path / "NOT_PHYSICS_standin_data",
                         [table[v] for v in FTFP_BERT_DATA if v != "G4LEDATA"])
    with pytest.raises(CaloforgeError, match="missing under GEANT4_DATA_DIR") as err:
        find_geant4_data(environ={"GEANT4_DATA_DIR": str(base)})
    assert table["G4LEDATA"] in str(err.value) and table["G4SAIDXSDATA"] not in str(err.value)
    elsewhere = _standin_tree(tmp_path / "NOT_PHYSICS_elsewhere", [table["G4LEDATA"]])
    env = {"GEANT4_DATA_DIR": str(base), "G4LEDATA": str(elsewhere / table["G4LEDATA"])}
    found = find_geant4_data(environ=env)
    assert set(found) == set(FTFP_BERT_DATA)
    assert found["G4LEDATA"] == elsewhere / table["G4LEDATA"]
    with pytest.raises(CaloforgeError, match="is not a folder"):
        find_geant4_data(environ={**env, "G4LEDATA": str(tmp_path / "nothing")})


def test_find_geant4_data_in_geant4_pybinds_own_folder(tmp_path, monkeypatch):
    table = geant4_datasets()
    monkeypatch.setenv("HOME", str(tmp_path))
    _standin_tree(tmp_path / ".geant4_pybind", [table[v] for v in FTFP_BERT_DATA])
    found = find_geant4_data(environ={})
    assert found["G4LEDATA"] == tmp_path / ".geant4_pybind" / table["G4LEDATA"]


def test_only_ftfp_bert_may_be_labelled_geant4():
    with pytest.raises(CaloforgeError, match="only FTFP_BERT"):
        CaloganGeant4(physics=lambda: None, generator="geant4")
    with pytest.raises(CaloforgeError, match="labelled 'geant4'"):
        CaloganGeant4(physics="FTFP_BERT", generator="something-else")
    with pytest.raises(CaloforgeError, match="only FTFP_BERT energy"):
        CaloganGeant4(physics="FTFP_BERT", quantity="track_length")


def _without_geant4_data(monkeypatch, home):
    for var in list(os.environ):
        if var == "GEANT4_DATA_DIR" or (var.startswith("G4") and var.endswith("DATA")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(home))


def test_simulate_geant4_without_data_raises_one_clear_error(tmp_path, monkeypatch):
    _without_geant4_data(monkeypatch, tmp_path)
    with pytest.raises(CaloforgeError) as err:
        simulate_showers("calogan", "eplus", 2, engine="geant4")
    message = str(err.value)
    assert "\n" not in message
    assert "GEANT4_DATA_DIR" in message or "caloforge[geant4]" in message
    with pytest.raises(CaloforgeError, match="calogan calorimeter only"):
        simulate_showers("atlas89", "gamma", 2, engine="geant4")


def test_cli_never_waits_on_geant4_pybinds_download_prompt(tmp_path):
    """No data, CI=true (geant4-pybind would download) and a stdin that stays open (it
    would wait on its prompt): the CLI must print one error line at once."""
    env = {k: v for k, v in os.environ.items()
           if k != "GEANT4_DATA_DIR" and not (k.startswith("G4") and k.endswith("DATA"))}
    env.update(HOME=str(tmp_path), CI="true")
    proc = subprocess.Popen(
        [sys.executable, "-m", "caloforge", "simulate", "--engine", "geant4", "--particle",
         "eplus", "-n", "2", "-o", str(tmp_path / "never.h5")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.stdin.close()
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "GEANT4_DATA_DIR" in lines[0] or "caloforge[geant4]" in lines[0]
    assert "Downloading" not in out + err and "Would you like" not in out + err
    assert not (tmp_path / ".geant4_pybind").exists() and not (tmp_path / "never.h5").exists()
