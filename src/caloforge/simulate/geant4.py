"""The Geant4 engine: calogan showers in full simulation, through geant4-pybind.

The calorimeter is the one of the CaloGAN paper and its Geant4 application: 80 layers
of 2 mm Pb followed by 4 mm liquid argon, 1 m x 1 m, filling z in [-240, 240] mm, in a
vacuum world; physics list FTFP_BERT with its default production cuts; a particle gun at
(0, 0, -288) mm shooting along +z with a kinetic energy uniform in the requested range.

Readout: the deposit is the total energy in Pb and LAr (no sampling fraction), by depth
(layer 0 for z < -150 mm, 1 up to 197 mm, 2 behind) and transverse cell, with one overflow
value per layer outside +-240 mm. The readout cells are Geant4 volumes (replicas of each
slab's central window, the slab at 197 mm cut in two), summed by Geant4's own scorers
(``G4PSEnergyDeposit3D``) in C++: Python runs once per event, not once per step, so the time
per shower is Geant4's. :mod:`caloforge.simulate.readout` is the same mapping in numpy;
the tests check that the two agree.

Geant4 needs its data sets (cross sections, level schemes). geant4-pybind asks on the
terminal to download them when they are missing; this module never lets it ask: it looks
for the data sets first (``GEANT4_DATA_DIR``, the ``G4...DATA`` variables, or geant4-pybind's
own ``~/.geant4_pybind``) and raises a :class:`CaloforgeError` naming what is missing.

Geant4 allows one run manager per process, so the application is built once per process
(:meth:`CaloganGeant4.shared`) and runs events chunk by chunk. Energies are drawn from a
numpy generator and physics from Geant4's engine, both seeded with ``seed`` and both carried
across chunks, so the showers do not depend on ``chunk_size``.

References:
    M. Paganini, L. de Oliveira, B. Nachman, CaloGAN, arXiv:1705.02355;
    J. Allison et al., Recent developments in Geant4, NIM A 835 (2016) 186-225.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.util
import mmap
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError, require_extra
from caloforge.geometry import Geometry, get_geometry
from caloforge.simulate.readout import ShowerAccumulator, check_readout

__all__ = [
    "STACK",
    "SamplingStack",
    "G4_PARTICLES",
    "FTFP_BERT_DATA",
    "geant4_datasets",
    "find_geant4_data",
    "import_geant4",
    "build_calogan",
    "CaloganGeant4",
    "simulate_chunks",
    "time_geant4_shower",
]


@dataclass(frozen=True)
class SamplingStack:
    """The calogan sampling calorimeter as built in Geant4 (lengths in mm).

    Attributes:
        n_layers: number of absorber + gap layers.
        absorber: absorber thickness (Pb, first in each layer).
        gap: active gap thickness (liquid argon).
        size_xy: transverse size, square.
        z_front: front face; the stack ends at ``z_front + n_layers * (absorber + gap)``.
        gun_z: z of the particle gun, on the axis, shooting along +z.
    """

    n_layers: int = 80
    absorber: float = 2.0
    gap: float = 4.0
    size_xy: float = 1000.0
    z_front: float = -240.0
    gun_z: float = -288.0

    @property
    def pitch(self) -> float:
        return self.absorber + self.gap

    @property
    def z_back(self) -> float:
        return self.z_front + self.n_layers * self.pitch

    def slabs(self) -> list[tuple[str, float, float]]:
        """``(material, z_start, z_end)`` of every slab front to back: Pb, LAr, Pb, ..."""
        out = []
        for i in range(self.n_layers):
            z0 = self.z_front + i * self.pitch
            out.append(("Pb", z0, z0 + self.absorber))
            out.append(("LAr", z0 + self.absorber, z0 + self.pitch))
        return out

    def segments(self, geometry: Geometry | str = "calogan"
                 ) -> list[tuple[str, float, float, int]]:
        """The slabs cut where a readout layer starts inside one, each with its readout
        layer: ``(material, z_start, z_end, layer)``.

        For calogan the cut at z = 197 mm splits the LAr gap of layer 72 (194-198 mm) in
        two volumes of the same material, so every deposit is read out by the volume it
        is made in, as CaloGAN's depth cuts say.
        """
        geometry = check_readout(geometry)
        starts = [layer.depth[0] for layer in geometry.layers[1:]]
        out = []
        for material, z0, z1 in self.slabs():
            cuts = [z0, *(s for s in starts if z0 + 1e-9 < s < z1 - 1e-9), z1]
            for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                layer = int(np.searchsorted(starts, 0.5 * (a + b), side="right"))
                out.append((material, a, b, layer))
        return out


STACK = SamplingStack()

# Our particle names -> Geant4's.
G4_PARTICLES = {"eplus": "e+", "eminus": "e-", "gamma": "gamma", "piplus": "pi+"}

# Data sets FTFP_BERT reads (EM models, nuclear levels and de-excitation, particle cross
# sections, the nuclide table, SAID pion/nucleon data), by environment variable.
FTFP_BERT_DATA = ("G4LEDATA", "G4LEVELGAMMADATA", "G4PARTICLEXSDATA", "G4ENSDFSTATEDATA",
                  "G4SAIDXSDATA")

# Folder names of the data sets for Geant4 11.4.1 (geant4-pybind 0.1.3); used when the
# installed geant4-pybind does not tell (see geant4_datasets()).
_GEANT4_11_4_DATASETS = {
    "G4NEUTRONHPDATA": "G4NDL4.7.1",
    "G4LEDATA": "G4EMLOW8.8",
    "G4LEVELGAMMADATA": "PhotonEvaporation6.1.2",
    "G4RADIOACTIVEDATA": "RadioactiveDecay6.1.2",
    "G4PARTICLEXSDATA": "G4PARTICLEXS4.2",
    "G4PIIDATA": "G4PII1.3",
    "G4REALSURFACEDATA": "RealSurface2.2",
    "G4SAIDXSDATA": "G4SAIDDATA2.0",
    "G4ABLADATA": "G4ABLA3.3",
    "G4INCLDATA": "G4INCL1.3",
    "G4ENSDFSTATEDATA": "G4ENSDFSTATE3.0",
    "G4CHANNELINGDATA": "G4CHANNELING2.0",
}

# Where Geant4 looks below GEANT4_DATA_DIR (G4FindDataDir).
_DATA_SUBDIRS = ("", "share/Geant4/data", "share/geant4/data", "share/data", "data")

_DATASET_ENTRY = re.compile(
    r'"name":\s*"([^"]+)",\s*"version":\s*"([^"]+)",\s*"filename":\s*"[^"]*",\s*'
    r'"envvar":\s*"([^"]+)"'
)


@lru_cache(maxsize=1)
def geant4_datasets() -> dict[str, str]:
    """``{environment variable: data set folder}`` for the installed geant4-pybind.

    geant4-pybind carries the list of data sets its Geant4 build expects (the one its own
    downloader uses); it is read from the installed module's file without importing it (an
    import would start the interactive download). Falls back to Geant4 11.4.1's list.
    """
    spec = importlib.util.find_spec("geant4_pybind")
    origin = getattr(spec, "origin", None) if spec is not None else None
    table: dict[str, str] = {}
    if origin and os.path.isfile(origin):
        try:
            with open(origin, "rb") as f, mmap.mmap(f.fileno(), 0,
                                                     access=mmap.ACCESS_READ) as m:
                start = m.find(b"DATASETS = [")
                if start >= 0:
                    text = m[start:start + 8000].decode("latin-1")
                    for name, version, env in _DATASET_ENTRY.findall(text):
                        table[env] = name + version
        except (OSError, ValueError):
            table = {}
    return table or dict(_GEANT4_11_4_DATASETS)


def _find_folder(roots: list[Path], folder: str) -> Path | None:
    for root in roots:
        for sub in _DATA_SUBDIRS:
            path = root / sub / folder
            if path.is_dir():
                return path
    return None


def find_geant4_data(needs: Iterable[str] = FTFP_BERT_DATA,
                     environ: dict | None = None) -> dict[str, Path]:
    """Locate the Geant4 data sets ``needs`` (environment variable names), or raise.

    A data set is found through its own variable (``G4LEDATA=/path/G4EMLOW8.8``), else as
    its folder under ``GEANT4_DATA_DIR`` (as Geant4 itself looks), else, when
    ``GEANT4_DATA_DIR`` is not set, under ``~/.geant4_pybind`` (where geant4-pybind's
    downloader puts them).

    Args:
        needs: environment variables of the data sets required (default: FTFP_BERT's).
        environ: the environment to read (default ``os.environ``).

    Returns:
        ``{variable: folder}`` of the data sets found.

    Raises:
        CaloforgeError: one line naming the missing data sets and ``GEANT4_DATA_DIR``.
    """
    env = os.environ if environ is None else environ
    folders = geant4_datasets()
    base = env.get("GEANT4_DATA_DIR")
    roots = [Path(base)] if base else [Path.home() / ".geant4_pybind"]
    found: dict[str, Path] = {}
    missing: list[str] = []
    for var in needs:
        folder = folders.get(var, var)
        if env.get(var):
            path = Path(env[var])
            if path.is_dir():
                found[var] = path
            else:
                missing.append(f"{folder} ({var}={path} is not a folder)")
            continue
        path = _find_folder(roots, folder)
        if path is None:
            missing.append(folder)
        else:
            found[var] = path
    if missing:
        what = (f"data sets missing under GEANT4_DATA_DIR={base}: {', '.join(missing)}"
                if base else
                f"data not found: GEANT4_DATA_DIR is not set (missing: {', '.join(missing)})")
        raise CaloforgeError(
            f"Geant4 {what}; put the data sets in one folder and set GEANT4_DATA_DIR to it "
            "(see docs/geant4.md), or use --engine parametric"
        )
    return found


@contextlib.contextmanager
def _no_prompt():
    """Make any ``input()`` fail at once instead of waiting on the terminal."""

    def refuse(prompt=""):
        raise EOFError("caloforge does not let geant4_pybind download data interactively")

    saved = builtins.input
    builtins.input = refuse
    try:
        yield
    finally:
        builtins.input = saved


def import_geant4(needs: Iterable[str] = FTFP_BERT_DATA):
    """Import geant4_pybind without ever prompting; raise CaloforgeError when it or its
    data are missing.

    ``GEANT4_DATA_DIR`` is set (to the folder holding the data sets found) before the
    import when it is not set yet: it is what stops geant4-pybind from offering (or, with
    ``CI=true``, starting) a download.

    Args:
        needs: environment variables of the data sets that must exist.

    Returns:
        The ``geant4_pybind`` module.
    """
    if "geant4_pybind" in sys.modules:
        find_geant4_data(needs)
        return sys.modules["geant4_pybind"]
    if importlib.util.find_spec("geant4_pybind") is None:
        require_extra("geant4_pybind", "geant4")  # raises with the pip command
    found = find_geant4_data(needs)
    if not os.environ.get("GEANT4_DATA_DIR"):
        home = Path.home() / ".geant4_pybind"
        paths = list(found.values())
        if paths and all(home in p.parents for p in paths):
            os.environ["GEANT4_DATA_DIR"] = str(home)
        elif paths:
            os.environ["GEANT4_DATA_DIR"] = str(paths[0].parent)
        else:
            raise CaloforgeError("set GEANT4_DATA_DIR to the folder of the Geant4 data sets "
                                 "(see docs/geant4.md)")
    with _no_prompt():
        try:
            return importlib.import_module("geant4_pybind")
        except (ImportError, EOFError) as err:
            raise CaloforgeError(
                f"geant4_pybind failed to initialise ({err}); check GEANT4_DATA_DIR="
                f"{os.environ.get('GEANT4_DATA_DIR')} (see docs/geant4.md)"
            ) from None


def _material(g4, name: str):
    """Pb and vacuum from the NIST database; liquid argon as CaloGAN and Geant4's B4
    example define it (Z = 18, A = 39.95 g/mole, 1.390 g/cm3; NIST's G4_lAr is 1.396)."""
    if name == "LAr":
        lar = g4.G4Material.GetMaterial("caloforge_liquidArgon", False)
        if lar is None:
            lar = g4.G4Material("caloforge_liquidArgon", z=18.0, a=39.95 * g4.g / g4.mole,
                                density=1.390 * g4.g / g4.cm3)
        return lar
    nist = {"Pb": "G4_Pb", "vacuum": "G4_Galactic"}[name]
    return g4.G4NistManager.Instance().FindOrBuildMaterial(nist)


def _slab(g4, material, name: str, thickness: float, layer, size_xy: float,
          check_overlaps: bool):
    """A slab of the stack (mm) whose central ``rows x cols`` window is divided into
    readout cells: slab -> window (placement, copy 0) -> rows (replica along x) -> cells
    (replica along y). Deposits in the slab outside the window are overflow."""
    mm = g4.mm
    (n_rows, n_cols), (dx, dy) = layer.shape, layer.cell_size
    half_t, half_xy = 0.5 * thickness * mm, 0.5 * size_xy * mm
    if n_rows * dx > size_xy or n_cols * dy > size_xy:
        raise CaloforgeError(f"readout layer {layer.name!r} is wider than the calorimeter")
    slab = g4.G4LogicalVolume(g4.G4Box(name, half_xy, half_xy, half_t), material, name)
    window = g4.G4LogicalVolume(
        g4.G4Box(f"{name}_window", 0.5 * n_rows * dx * mm, 0.5 * n_cols * dy * mm, half_t),
        material, f"{name}_window")
    g4.G4PVPlacement(None, g4.G4ThreeVector(), window, f"{name}_window", slab, False, 0,
                     check_overlaps)
    row = g4.G4LogicalVolume(
        g4.G4Box(f"{name}_row", 0.5 * dx * mm, 0.5 * n_cols * dy * mm, half_t),
        material, f"{name}_row")
    g4.G4PVReplica(f"{name}_row", row, window, g4.kXAxis, n_rows, dx * mm)
    cell = g4.G4LogicalVolume(g4.G4Box(f"{name}_cell", 0.5 * dx * mm, 0.5 * dy * mm, half_t),
                              material, f"{name}_cell")
    g4.G4PVReplica(f"{name}_cell", cell, row, g4.kYAxis, n_cols, dy * mm)
    return slab, cell


def build_calogan(g4, geometry: Geometry | str = "calogan", stack: SamplingStack = STACK,
                  check_overlaps: bool = False):
    """Build the calogan calorimeter in Geant4 (no run manager needed).

    Volumes: ``calogan_world`` (vacuum, 1.2 size_xy across, z in +-(|gun_z| + 12) mm)
    holding ``calogan_calorimeter`` (vacuum box filled by the stack) holding the slabs of
    :meth:`SamplingStack.segments`, each placed with copy number = its readout layer; a
    slab's central window is divided into that readout layer's cells by replicas (see
    ``_slab``), so Geant4's scorers read the deposits out in C++, with no Python per step.

    Args:
        g4: the ``geant4_pybind`` module (see :func:`import_geant4`).
        geometry: the readout (calogan).
        stack: the sampling structure (default: CaloGAN's 2 mm Pb + 4 mm LAr).
        check_overlaps: let Geant4 check the placements for overlaps (slow, verbose).

    Returns:
        ``(world_pv, slabs, cells)``: the world physical volume, the slab logical volumes
        (their deposits outside the window are overflow) and ``{readout layer: cell
        logical volumes}``.
    """
    geometry = check_readout(geometry)
    mm = g4.mm
    half_xy = 0.5 * stack.size_xy * mm
    vacuum = _material(g4, "vacuum")
    world_half_z = max(abs(stack.gun_z), abs(stack.z_front), abs(stack.z_back)) + 12.0
    world_lv = g4.G4LogicalVolume(
        g4.G4Box("calogan_world", 1.2 * half_xy, 1.2 * half_xy, world_half_z * mm),
        vacuum, "calogan_world")
    world_pv = g4.G4PVPlacement(None, g4.G4ThreeVector(), world_lv, "calogan_world", None,
                                False, 0, check_overlaps)
    centre = 0.5 * (stack.z_back + stack.z_front)
    calo_lv = g4.G4LogicalVolume(
        g4.G4Box("calogan_calorimeter", half_xy, half_xy,
                 0.5 * (stack.z_back - stack.z_front) * mm),
        vacuum, "calogan_calorimeter")
    g4.G4PVPlacement(None, g4.G4ThreeVector(0, 0, centre * mm), calo_lv,
                     "calogan_calorimeter", world_lv, False, 0, check_overlaps)
    made: dict[tuple, tuple] = {}
    slabs, cells = [], {i: [] for i in range(geometry.n_layers)}
    for material, z0, z1, layer in stack.segments(geometry):
        key = (material, round(z1 - z0, 9), layer)
        if key not in made:
            name = f"calogan_{material}_{key[1]:g}mm_layer{layer}"
            made[key] = _slab(g4, _material(g4, material), name, z1 - z0,
                              geometry.layers[layer], stack.size_xy, check_overlaps)
            slabs.append(made[key][0])
            cells[layer].append(made[key][1])
        g4.G4PVPlacement(None, g4.G4ThreeVector(0, 0, (0.5 * (z0 + z1) - centre) * mm),
                         made[key][0], f"calogan_{material}", calo_lv, False, layer,
                         check_overlaps)
    return world_pv, slabs, cells


@lru_cache(maxsize=1)
def _classes(g4):
    """The thin Geant4 user classes, defined once geant4_pybind is imported."""

    class Detector(g4.G4VUserDetectorConstruction):
        """The calorimeter, with Geant4's scorers on every slab and readout cell.

        ``quantity`` is what the scorers sum: ``"energy"`` (deposit, MeV) or
        ``"track_length"`` (mm, for tests with particles that deposit nothing).
        """

        def __init__(self, geometry: Geometry, quantity: str = "energy"):
            super().__init__()
            self.geometry, self.quantity = geometry, quantity
            self.slabs, self.cells, self.scorers = [], {}, []

        def Construct(self):
            world, self.slabs, self.cells = build_calogan(g4, self.geometry)
            return world

        def ConstructSDandField(self):
            sdm = g4.G4SDManager.GetSDMpointer()
            cell_scorer, slab_scorer = {
                "energy": (g4.G4PSEnergyDeposit3D, g4.G4PSEnergyDeposit),
                "track_length": (g4.G4PSTrackLength3D, g4.G4PSTrackLength),
            }[self.quantity]
            for index, lvs in self.cells.items():
                rows, cols = self.geometry.layers[index].shape
                detector = g4.G4MultiFunctionalDetector(f"calogan_cells{index}")
                sdm.AddNewDetector(detector)
                # Touchable depths in a cell: 0 cell (column), 1 row, 2 window (copy 0):
                # index = row * cols + column, the geometry's flat order.
                scorer = cell_scorer("sum", rows, cols, 1, 1, 0, 2)
                detector.RegisterPrimitive(scorer)
                self.scorers += [detector, scorer]
                for lv in lvs:
                    self.SetSensitiveDetector(lv, detector)
            detector = g4.G4MultiFunctionalDetector("calogan_overflow")
            sdm.AddNewDetector(detector)
            scorer = slab_scorer("sum", 0)  # index: the slab's copy number = readout layer
            detector.RegisterPrimitive(scorer)
            self.scorers += [detector, scorer]
            for lv in self.slabs:
                self.SetSensitiveDetector(lv, detector)

    class Gun(g4.G4VUserPrimaryGeneratorAction):
        """One particle per event from (0, 0, gun_z) along +z; energy uniform in range."""

        def __init__(self):
            super().__init__()
            self.gun = g4.G4ParticleGun(1)
            self.gun.SetParticleMomentumDirection(g4.G4ThreeVector(0, 0, 1))
            self.position = (0.0, 0.0, STACK.gun_z)  # mm
            self.energy_range = (1000.0, 1000.0)  # MeV
            self.rng = np.random.default_rng(0)
            self.energy = 0.0  # MeV, of the current event

        def GeneratePrimaries(self, event):
            self.energy = float(self.rng.uniform(*self.energy_range))
            self.gun.SetParticleEnergy(self.energy * g4.MeV)
            x, y, z = (v * g4.mm for v in self.position)
            self.gun.SetParticlePosition(g4.G4ThreeVector(x, y, z))
            self.gun.GeneratePrimaryVertex(event)

    class Events(g4.G4UserEventAction):
        """At the end of each event, the scorers' sums go to the accumulator."""

        def __init__(self, accumulator: ShowerAccumulator, gun: Gun):
            super().__init__()
            self.accumulator, self.gun = accumulator, gun
            self.aborted = 0
            self.collections: list[tuple[int, int]] | None = None

        def EndOfEventAction(self, event):
            if event.IsAborted():
                self.aborted += 1
                self.accumulator.discard_event()
                return
            geometry = self.accumulator.geometry
            if self.collections is None:
                sdm = g4.G4SDManager.GetSDMpointer()
                self.collections = [
                    (sdm.GetCollectionID(f"calogan_cells{i}/sum"), geometry.layer_offsets[i])
                    for i in range(geometry.n_layers)
                ] + [(sdm.GetCollectionID("calogan_overflow/sum"), geometry.n_voxels)]
            hits = event.GetHCofThisEvent()
            for collection, offset in self.collections:
                entries = list(hits.GetHC(collection))
                if entries:
                    index, value = zip(*entries, strict=True)
                    self.accumulator.add_cells(np.asarray(index) + offset, value)
            self.accumulator.end_event(self.gun.energy)

    class Steps(g4.G4UserSteppingAction):
        def __init__(self, hook):
            super().__init__()
            self.hook = hook

        def UserSteppingAction(self, step):
            self.hook(step)

    class Actions(g4.G4VUserActionInitialization):
        def __init__(self, actions):
            super().__init__()
            self.actions = actions

        def Build(self):
            for action in self.actions:
                self.SetUserAction(action)

    return Detector, Gun, Events, Steps, Actions


@contextlib.contextmanager
def _quiet_stdout(enabled: bool = True):
    """Silence Geant4's banner and physics tables (C++ writes straight to fd 1)."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no usable fd 1 (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


class CaloganGeant4:
    """The calogan calorimeter running in Geant4: one per process.

    Args:
        physics: ``"FTFP_BERT"``, or a callable returning a Geant4 physics list (tests use
            a transport-only list that needs no data; such runs are not physics).
        generator: label written as the files' ``generator`` attribute; ``"geant4"`` only
            for FTFP_BERT energy deposits.
        needs: data sets (environment variables) the physics list reads.
        quantity: what the readout sums: ``"energy"`` (MeV) or, for tests,
            ``"track_length"`` (mm).
        step_hook: called with every ``G4Step`` (diagnostics and tests; slow).
        quiet: silence Geant4's standard output while it initialises.
    """

    _shared: CaloganGeant4 | None = None

    def __init__(self, physics: str | Callable = "FTFP_BERT", generator: str = "geant4",
                 needs: Iterable[str] = FTFP_BERT_DATA, quantity: str = "energy",
                 step_hook: Callable | None = None, quiet: bool = True):
        real = physics == "FTFP_BERT" and quantity == "energy"
        if real and generator != "geant4":
            raise CaloforgeError("FTFP_BERT energy deposits are labelled 'geant4'")
        if not real and generator == "geant4":
            raise CaloforgeError("only FTFP_BERT energy deposits may be labelled 'geant4'")
        if quantity not in ("energy", "track_length"):
            raise CaloforgeError(f"unknown readout quantity {quantity!r}")
        g4 = import_geant4(tuple(needs))
        self.g4 = g4
        self.generator = generator
        self.physics_name = physics if isinstance(physics, str) else getattr(
            physics, "__name__", "custom")
        if g4.G4RunManager.GetRunManager() is not None:
            raise CaloforgeError(
                "a Geant4 run manager already exists in this process; Geant4 allows one, "
                "use CaloganGeant4.shared()"
            )
        Detector, Gun, Events, Steps, Actions = _classes(g4)
        self.accumulator = ShowerAccumulator("calogan")
        with _quiet_stdout(quiet):
            self.run_manager = g4.G4RunManagerFactory.CreateRunManager(
                g4.G4RunManagerType.SerialOnly)
            ui = g4.G4UImanager.GetUIpointer()
            for command in ("/control/verbose 0", "/run/verbose 0", "/event/verbose 0",
                            "/tracking/verbose 0"):
                ui.ApplyCommand(command)
            self.detector = Detector(get_geometry("calogan"), quantity)
            self.physics_list = g4.FTFP_BERT() if physics == "FTFP_BERT" else physics()
            if physics == "FTFP_BERT":
                g4.G4EmParameters.Instance().SetVerbose(0)
                g4.G4HadronicParameters.Instance().SetVerboseLevel(0)
            self.run_manager.SetUserInitialization(self.detector)
            self.run_manager.SetUserInitialization(self.physics_list)
            # Geant4 wants the physics list before any user action (the gun) exists.
            self.gun = Gun()
            self.events = Events(self.accumulator, self.gun)
            actions = [self.gun, self.events]
            if step_hook is not None:
                actions.append(Steps(step_hook))
            self.actions = Actions(actions)
            self.run_manager.SetUserInitialization(self.actions)
            self.run_manager.Initialize()
        version = re.search(r"geant4-(\d+)-(\d+)(?:-patch-(\d+))?", str(g4.G4Version))
        self.geant4_version = (".".join(str(int(v or 0)) for v in version.groups())
                               if version else str(g4.G4VERSION_NUMBER))

    @classmethod
    def shared(cls) -> CaloganGeant4:
        """The process's FTFP_BERT application, built on first use."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def seed(self, seed: int) -> None:
        """Seed Geant4's engine and the energy sampling."""
        self.g4.HepRandom.setTheSeed(int(seed) % 2_147_483_647)
        self.gun.rng = np.random.default_rng(int(seed))

    def run(self, particle: str, n: int, energy_range_MeV: tuple[float, float],
            position_mm: tuple[float, float, float] | None = None) -> ShowerSet:
        """Simulate ``n`` events of Geant4 particle ``particle`` (``"e+"``, ``"pi+"``...)
        with kinetic energies uniform in ``energy_range_MeV``; aborted events are redone.

        ``position_mm`` moves the gun (tests); CaloGAN's is ``(0, 0, -288)``.
        """
        definition = self.g4.G4ParticleTable.GetParticleTable().FindParticle(particle)
        if definition is None:
            raise CaloforgeError(f"Geant4 does not know the particle {particle!r}")
        self.gun.gun.SetParticleDefinition(definition)
        self.gun.energy_range = tuple(float(e) for e in energy_range_MeV)
        self.gun.position = tuple(float(v) for v in (position_mm or (0.0, 0.0, STACK.gun_z)))
        self.accumulator.discard_event()
        for _ in range(10):
            missing = n - len(self.accumulator)
            if missing <= 0:
                break
            self.run_manager.BeamOn(missing)
        if len(self.accumulator) < n:
            raise CaloforgeError(f"Geant4 aborted {self.events.aborted} events; got "
                                 f"{len(self.accumulator)} of {n}")
        return self.accumulator.pop_showers(
            self.generator, physics_list=self.physics_name,
            geant4_version=self.geant4_version,
        )


def _check_geometry(geometry: Geometry | str) -> Geometry:
    geometry = get_geometry(geometry)
    if geometry.name != "calogan":
        raise CaloforgeError(
            f"the geant4 engine builds the calogan calorimeter only, not {geometry.name!r}; "
            "use --engine parametric for other geometries"
        )
    return geometry


def simulate_chunks(geometry: Geometry | str, particle: str, n: int,
                    energy_range: tuple[float, float], angle_range, seed: int,
                    chunk_size: int) -> Iterator[ShowerSet]:
    """Geant4 showers for :func:`caloforge.simulate.simulate` (``engine="geant4"``).

    Args:
        geometry: must be calogan.
        particle: ``"eplus"``, ``"gamma"`` or ``"piplus"``.
        n: number of showers.
        energy_range: incident kinetic energy range in GeV, sampled uniformly.
        angle_range: must be ``None`` (perpendicular incidence).
        seed: seeds Geant4's engine and the energy sampling.
        chunk_size: at most this many showers per yielded ShowerSet (and at most 100:
            a Geant4 shower takes about a second, so progress is reported often).

    Yields:
        ShowerSets in MeV with ``meta["generator"] == "geant4"``.
    """
    _check_geometry(geometry)
    if angle_range is not None:
        raise CaloforgeError("the geant4 engine shoots perpendicular to the calorimeter; "
                             "it takes no angle range")
    if particle not in G4_PARTICLES:
        raise CaloforgeError(f"the geant4 engine has no particle {particle!r}; choose from "
                             f"{', '.join(G4_PARTICLES)}")
    app = CaloganGeant4.shared()
    app.seed(seed)
    lo, hi = (1000.0 * float(e) for e in energy_range)
    chunk_size = max(1, min(int(chunk_size), 100))
    for start in range(0, n, chunk_size):
        chunk = app.run(G4_PARTICLES[particle], min(chunk_size, n - start), (lo, hi))
        chunk.meta.update(particle=particle, seed=int(seed))
        yield chunk


def time_geant4_shower(n: int = 10, particle: str = "eplus",
                       energy_range: tuple[float, float] = (1.0, 100.0), seed: int = 0,
                       warmup: int = 1) -> float:
    """Milliseconds of wall time per calogan shower in Geant4 (FTFP_BERT), on one thread
    (Geant4's serial run manager).

    Initialisation (geometry, physics tables) and ``warmup`` showers are excluded; the
    readout runs in Geant4's C++ scorers, so the time is Geant4's plus about a millisecond
    of Python per shower (the gun and the per-event readout).

    Args:
        n: showers timed.
        particle: ``"eplus"``, ``"gamma"`` or ``"piplus"``.
        energy_range: incident energy range in GeV, sampled uniformly.
        seed: random seed.
        warmup: showers simulated before timing.

    Raises:
        CaloforgeError: geant4-pybind or the Geant4 data sets are missing.
    """
    if n <= 0:
        raise CaloforgeError(f"number of showers must be positive, got {n}")
    g4_particle = G4_PARTICLES.get(particle)
    if g4_particle is None:
        raise CaloforgeError(f"unknown particle {particle!r}; choose from "
                             f"{', '.join(G4_PARTICLES)}")
    app = CaloganGeant4.shared()
    app.seed(seed)
    energies = tuple(1000.0 * float(e) for e in energy_range)
    if warmup > 0:
        app.run(g4_particle, warmup, energies)
    start = time.perf_counter()
    app.run(g4_particle, n, energies)
    return 1000.0 * (time.perf_counter() - start) / n
