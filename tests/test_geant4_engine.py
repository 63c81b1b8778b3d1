"""The Geant4 engine inside Geant4 (geant4-pybind), without Geant4 physics data.

No Geant4 data can be downloaded on the build machines. These tests point Geant4 at a
stand-in data folder made in tmp_path, named and documented NOT PHYSICS: it holds only an
empty nuclide table (``ENSDFSTATE.dat``), which Geant4 reads at start-up even with no
physics. With it they check the geometry as Geant4 navigates it, and run the real event
loop (gun, sensitive detector, event action, readout) with charged geantinos and a
transport-only physics list: no energy is deposited, nothing is labelled "geant4".

Geant4 runs in a subprocess: it allows one run manager per process, and a fatal Geant4
error aborts the process it runs in.

The test with real FTFP_BERT showers runs only where the Geant4 data sets are installed
(``GEANT4_DATA_DIR``) and is marked slow: ``pytest -m slow tests/test_geant4_engine.py``.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("geant4_pybind") is None,
    reason="geant4-pybind is not installed (pip install 'caloforge[geant4]')",
)


@pytest.fixture
def standin_env(tmp_path):
    """Environment for a Geant4 subprocess with stand-in data: NOT PHYSICS."""
    root = tmp_path / "NOT_PHYSICS_geant4_standin_data"
    nuclides = root / "NOT_PHYSICS_G4ENSDFSTATE_standin"
    nuclides.mkdir(parents=True)
    note = ("Stand-in made by caloforge's tests. NOT PHYSICS: no Geant4 data set is here;\n"
            "ENSDFSTATE.dat is empty so that Geant4 starts with a transport-only list.\n")
    (root / "README_NOT_PHYSICS.txt").write_text(note)
    (nuclides / "README_NOT_PHYSICS.txt").write_text(note)
    (nuclides / "ENSDFSTATE.dat").write_text("")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GEANT4_DATA_DIR", "CI")
           and not (k.startswith("G4") and k.endswith("DATA"))}
    env.update(GEANT4_DATA_DIR=str(root), G4ENSDFSTATEDATA=str(nuclides), HOME=str(tmp_path))
    return env


def _run(script: str, env: dict, timeout: float = 120) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, proc.stdout[-2000:]
    return json.loads(results[-1][len("RESULT "):])


GEOMETRY = """
import json
from caloforge.simulate.geant4 import STACK, build_calogan, import_geant4

g4 = import_geant4(needs=())
world, slabs, cells = build_calogan(g4)
g4.G4GeometryManager.GetInstance().CloseGeometry()
nav = g4.G4TransportationManager.GetTransportationManager().GetNavigatorForTracking()
nav.SetWorldVolume(world)

def where(x, y, z):
    pv = nav.LocateGlobalPointAndSetup(g4.G4ThreeVector(x, y, z))
    return pv.GetLogicalVolume().GetMaterial().GetName() if pv is not None else "outside"

def half(lv):
    box = lv.GetSolid()
    return [box.GetXHalfLength(), box.GetYHalfLength(), box.GetZHalfLength()]

calorimeter = g4.G4LogicalVolumeStore.GetInstance().GetVolume("calogan_calorimeter", False)
out = {
    "slabs": [where(0.0, 0.0, 0.5 * (a + b)) for _, a, b in STACK.slabs()],
    "corners": [where(x, y, -239.0) for x, y in ((499.0, 499.0), (-499.0, 499.0),
                                                 (501.0, 0.0), (0.0, -501.0))],
    "ends": [where(0.0, 0.0, z) for z in (-240.5, -239.5, 239.5, 240.5, -288.0)],
    "boundaries": [where(0.0, 0.0, z) for z in (-238.1, -237.9, -234.1, -233.9)],
    "placements": calorimeter.GetNoDaughters(),
    "calorimeter": half(calorimeter),
    "slab_half": sorted({tuple(half(lv)) for lv in slabs}),
    "cell_half": {i: sorted({tuple(half(lv)[:2]) for lv in lvs}) for i, lvs in cells.items()},
    "density": {lv.GetMaterial().GetName(): lv.GetMaterial().GetDensity() / (g4.g / g4.cm3)
                for lv in slabs},
    "X0": {lv.GetMaterial().GetName(): lv.GetMaterial().GetRadlen() / g4.mm for lv in slabs},
}
g4.G4GeometryManager.GetInstance().OpenGeometry()
print("RESULT", json.dumps(out))
"""


def test_geometry_as_geant4_navigates_it(standin_env):
    out = _run(GEOMETRY, standin_env)
    lar = "caloforge_liquidArgon"
    assert out["slabs"] == ["G4_Pb", lar] * 80  # 80 x (Pb + LAr), Pb first
    assert out["placements"] == 161  # 160 slabs, the LAr gap at z = 197 mm cut in two
    assert out["calorimeter"] == [500.0, 500.0, 240.0]  # 1 m x 1 m, z in [-240, 240]
    assert out["corners"][:2] == ["G4_Pb", "G4_Pb"]
    assert out["corners"][2:] == ["G4_Galactic", "G4_Galactic"]
    assert out["ends"] == ["G4_Galactic", "G4_Pb", lar, "G4_Galactic", "G4_Galactic"]
    assert out["boundaries"] == ["G4_Pb", lar, lar, "G4_Pb"]  # 2 mm Pb, then 4 mm LAr
    # Half thicknesses: Pb 1 mm, LAr 2 mm, and the two parts of the cut gap (3 + 1 mm).
    assert out["slab_half"] == [[500.0, 500.0, t] for t in (0.5, 1.0, 1.5, 2.0)]
    assert out["cell_half"] == {"0": [[80.0, 2.5]], "1": [[20.0, 20.0]], "2": [[20.0, 40.0]]}
    assert out["density"]["G4_Pb"] == pytest.approx(11.35)
    assert out["density"][lar] == pytest.approx(1.39)
    assert out["X0"]["G4_Pb"] == pytest.approx(5.6, abs=0.05)  # PDG: lead X0 = 5.6 mm
    assert out["X0"][lar] == pytest.approx(140.0, rel=0.01)


EVENT_LOOP = """
import json
import numpy as np
from caloforge.simulate.geant4 import CaloganGeant4, import_geant4

g4 = import_geant4(needs=("G4ENSDFSTATEDATA",))

class GeantinosOnly(g4.G4VPhysicsConstructor):
    def __init__(self):
        super().__init__("geantinos_only")

    def ConstructParticle(self):
        g4.G4Geantino.GeantinoDefinition()
        g4.G4ChargedGeantino.ChargedGeantinoDefinition()

    def ConstructProcess(self):
        pass

class TransportOnly(g4.G4VModularPhysicsList):  # transportation only: NOT PHYSICS
    def __init__(self):
        super().__init__()
        self.SetVerboseLevel(0)
        self.constructor = GeantinosOnly()
        self.RegisterPhysics(self.constructor)

steps = []

def hook(step):
    a, b, track = step.GetPreStepPoint(), step.GetPostStepPoint(), step.GetTrack()
    v, d = track.GetVertexPosition(), track.GetMomentumDirection()
    steps.append([a.GetPosition().x, a.GetPosition().y, a.GetPosition().z,
                  b.GetPosition().z, a.GetMaterial().GetName(), v.x, v.y, v.z, d.z])

# The scorers sum track length (mm) here: geantinos deposit no energy.
app = CaloganGeant4(physics=TransportOnly, generator="test-standin-geantino",
                    needs=("G4ENSDFSTATEDATA",), quantity="track_length", step_hook=hook)
app.seed(7)
first = app.run("chargedgeantino", 3, (1000.0, 5000.0))
app.seed(7)
again = app.run("chargedgeantino", 2, (1000.0, 5000.0))
n_steps = len(steps)
rng = np.random.default_rng(0)
points = np.concatenate([rng.uniform(-300, 300, (40, 2)),
                         [[-239.99, 239.99], [239.99, -239.99], [240.01, 0], [0, 0]]])
shots = []
for x, y in points:
    s = app.run("geantino", 1, (1000.0, 1000.0), position_mm=(x, y, -288.0))
    shots.append([s.voxels[0].tolist(), s.overflow[0].tolist()])

print("RESULT", json.dumps({
    "steps": steps[:n_steps], "n": len(first), "energies": first.incident_energy.tolist(),
    "again": again.incident_energy.tolist(), "meta": first.meta,
    "first": [first.voxels.tolist(), first.overflow.tolist()],
    "points": points.tolist(), "shots": shots,
}))
"""


def test_event_loop_and_readout_with_transport_only_physics(standin_env):
    import numpy as np

    from caloforge.simulate.geant4 import STACK
    from caloforge.simulate.readout import readout_index

    out = _run(EVENT_LOOP, standin_env)
    assert out["n"] == 3 and out["meta"]["generator"] == "test-standin-geantino"
    assert out["meta"]["geant4_version"].startswith("11.")
    energies = out["energies"]
    assert all(1000.0 <= e <= 5000.0 for e in energies) and len(set(energies)) == 3
    assert out["again"] == energies[:2]  # same seed, same energies
    # Fired from (0, 0, -288) mm along +z, on the axis, through 80 x (Pb + LAr).
    dense = [s for s in out["steps"] if s[4] != "G4_Galactic"]
    assert len(dense) == 5 * 161
    event = dense[:161]
    names = {"Pb": "G4_Pb", "LAr": "caloforge_liquidArgon"}
    assert [(s[4], s[2], s[3]) for s in event] == [
        (names[m], pytest.approx(z0), pytest.approx(z1)) for m, z0, z1, _ in STACK.segments()
    ]
    for s in out["steps"]:
        assert s[:2] == [0.0, 0.0] and s[5:8] == [0.0, 0.0, -288.0] and s[8] == 1.0
    # Each readout layer sums the Pb + LAr path in its depth range: 90, 347 and 43 mm,
    # in the cell the numpy readout names for that (x, y), or in the layer's overflow.
    path = {0: 90.0, 1: 347.0, 2: 43.0}
    for (x, y), (voxels, overflow) in zip(out["points"], out["shots"], strict=True):
        expected = np.zeros(507)
        for layer, z in ((0, -200.0), (1, 0.0), (2, 220.0)):
            expected[readout_index("calogan", x, y, z)[0]] += path[layer]
        np.testing.assert_allclose(voxels + overflow, expected, atol=1e-6)
    voxels, overflow = (np.asarray(a) for a in out["first"])
    np.testing.assert_allclose(voxels.sum(1), 480.0)
    assert voxels[0, 144] == pytest.approx(90.0) and np.all(overflow == 0)


REAL = """
import json
from caloforge.simulate import simulate_showers
from caloforge.simulate.geant4 import time_geant4_shower

s = simulate_showers("calogan", "eplus", 3, energy_range=(10.0, 10.0), seed=1,
                     engine="geant4", chunk_size=2)
fractions = (s.layer_energies() / s.total_energy()[:, None]).mean(0).tolist()
print("RESULT", json.dumps({"meta": s.meta, "n": len(s),
                  "contained": float((s.total_energy() + s.overflow.sum(1)).mean() / 1e4),
                  "fractions": fractions, "ms": time_geant4_shower(n=1, warmup=0)}))
"""


@pytest.mark.slow
def test_real_ftfp_bert_showers_where_geant4_data_is_installed():
    from caloforge import CaloforgeError
    from caloforge.simulate.geant4 import find_geant4_data

    try:
        find_geant4_data()
    except CaloforgeError as err:
        pytest.skip(f"no Geant4 data: {err}")
    out = _run(REAL, dict(os.environ), timeout=900)
    assert out["n"] == 3 and out["meta"]["generator"] == "geant4"
    assert out["meta"]["physics_list"] == "FTFP_BERT"
    # the CaloGAN data (arXiv:1705.02355): about 99% of an e+ energy is contained
    assert 0.9 < out["contained"] <= 1.0
    assert out["fractions"][1] > out["fractions"][0] > out["fractions"][2]
    assert out["ms"] > 0
