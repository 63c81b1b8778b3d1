"""ROOT ntuples of cell energies -> our HDF5 files (uproot).

The ROOT files here are made up in tmp_path from random numbers: they are not physics and
are labelled generator="test-standin", never "geant4".
"""

import numpy as np
import pytest

from caloforge import CaloforgeError
from caloforge.data import file_info, read_showers
from caloforge.geometry import get_geometry

uproot = pytest.importorskip("uproot")
ak = pytest.importorskip("awkward")

from caloforge.data.root import convert_root, root_trees  # noqa: E402

STANDIN = "test-standin"
G = get_geometry("calogan")


def _fake(n=9, seed=0):
    """Random cells (MeV), overflow (MeV) and energies (GeV): stand-in numbers, not physics."""
    rng = np.random.default_rng(seed)
    cells = (rng.exponential(10.0, (n, G.n_voxels)) * (rng.random((n, G.n_voxels)) < 0.3))
    overflow = rng.exponential(1.0, (n, G.n_layers))
    energy = rng.uniform(1.0, 100.0, n)
    return cells.astype(np.float32), overflow.astype(np.float32), energy


def _check(out, cells, overflow, energy_gev, generator=STANDIN):
    showers = read_showers(out)
    np.testing.assert_allclose(showers.voxels, cells, rtol=1e-6)
    np.testing.assert_allclose(showers.incident_energy, energy_gev * 1000.0, rtol=1e-6)
    if overflow is not None:
        np.testing.assert_allclose(showers.overflow, overflow, rtol=1e-6)
    assert showers.meta["generator"] == generator
    assert file_info(out).geometry.name == "calogan"


def test_one_fixed_size_branch_with_overflow_in_chunks(tmp_path):
    cells, overflow, energy = _fake(11)
    src = tmp_path / "standin_not_physics.root"
    with uproot.recreate(src) as f:
        tree = f.mktree("showers", {"cells": ("f4", (G.n_voxels + G.n_layers,)), "E": "f8"})
        tree.extend({"cells": np.concatenate([cells, overflow], axis=1), "E": energy})
    out = tmp_path / "out.h5"
    n = convert_root(src, out, cells="cells", energy="E", energy_unit="GeV",
                     generator=STANDIN, particle="eplus", chunk_size=4)
    assert n == 11
    _check(out, cells, overflow, energy)
    info = file_info(out)
    assert info["meta"]["particle"] == "eplus" and info["meta"]["source_tree"] == "showers"


def test_jagged_branch_and_energy_in_mev(tmp_path):
    cells, _, energy = _fake(5, seed=1)
    src = tmp_path / "standin_not_physics.root"
    with uproot.recreate(src) as f:
        tree = f.mktree("t", {"edep": "var * float64", "e_mev": "f8"})
        tree.extend({"edep": ak.Array([row.astype(np.float64) for row in cells]),
                     "e_mev": energy * 1000.0})
    out = tmp_path / "out.h5"
    convert_root(src, out, cells="edep", energy="e_mev", energy_unit="MeV",
                 generator=STANDIN)  # tree left out: the file holds one
    _check(out, cells, None, energy)
    assert np.all(read_showers(out).overflow == 0)


def test_per_layer_branches_like_calogan_and_rntuple(tmp_path):
    cells, overflow, energy = _fake(6, seed=2)
    layers = G.split_layers(cells)
    src = tmp_path / "standin_not_physics.root"
    with uproot.recreate(src) as f:
        # A dict assignment writes an RNTuple with uproot 5.7; mktree a TTree.
        f["rnt"] = {"layer_0": layers[0], "layer_1": layers[1], "layer_2": layers[2],
                    "overflow": overflow, "energy": energy}
    assert set(root_trees(src)) == {"rnt"}
    out = tmp_path / "out.h5"
    convert_root(src, out, tree="rnt", cells="layer_0,layer_1,layer_2", overflow="overflow",
                 energy="energy", generator=STANDIN)
    _check(out, cells, overflow, energy)


def test_scalar_cell_branches_are_ordered_by_number(tmp_path):
    """The original CaloGAN ntuple: cell_0 ... cell_506 (504 cells + 3 overflow) and
    TotalEnergy in GeV."""
    cells, overflow, energy = _fake(4, seed=3)
    both = np.concatenate([cells, overflow], axis=1)
    src = tmp_path / "standin_not_physics.root"
    branches = {f"cell_{i}": both[:, i] for i in range(both.shape[1])}
    with uproot.recreate(src) as f:
        tree = f.mktree("fancy_tree", {**{k: "f4" for k in branches}, "TotalEnergy": "f8"})
        tree.extend({**branches, "TotalEnergy": energy})
    out = tmp_path / "out.h5"
    convert_root(src, out, tree="fancy_tree", cells="cell_*", generator=STANDIN)
    _check(out, cells, overflow, energy)


def test_cli_convert_root(tmp_path, capsys):
    from caloforge.cli.main import main

    cells, _, energy = _fake(3, seed=4)
    src = tmp_path / "standin_not_physics.root"
    with uproot.recreate(src) as f:
        tree = f.mktree("t", {"cells": ("f4", (G.n_voxels,)), "TotalEnergy": "f8"})
        tree.extend({"cells": cells, "TotalEnergy": energy})
    out = tmp_path / "out.h5"
    main(["data", "convert-root", str(src), "--tree", "t", "--cells", "cells",
          "--generator", STANDIN, "-o", str(out)])
    assert "wrote 3 showers" in capsys.readouterr().out
    _check(out, cells, None, energy)


def test_cli_error_is_one_line(tmp_path, capsys):
    from caloforge.cli.main import main

    src = tmp_path / "standin_not_physics.root"
    with uproot.recreate(src) as f:
        tree = f.mktree("t", {"x": "f8"})
        tree.extend({"x": np.zeros(2)})
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "convert-root", str(src), "--cells", "cells", "-o",
              str(tmp_path / "o.h5")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no branch 'cells'" in err and "\n" not in err


def test_errors_name_what_is_wrong(tmp_path):
    cells, _, energy = _fake(3, seed=5)
    src = tmp_path / "standin_not_physics.root"
    with uproot.recreate(src) as f:
        for name in ("a", "b"):
            tree = f.mktree(name, {"cells": ("f4", (100,)), "bad": "var * float64",
                                   "TotalEnergy": "f8"})
            tree.extend({"cells": cells[:, :100],
                         "bad": ak.Array([np.ones(504), np.ones(503), np.ones(504)]),
                         "TotalEnergy": energy})
    out = tmp_path / "out.h5"
    with pytest.raises(CaloforgeError, match="2 trees"):
        convert_root(src, out, cells="cells")
    with pytest.raises(CaloforgeError, match="no tree 'c'"):
        convert_root(src, out, tree="c", cells="cells")
    with pytest.raises(CaloforgeError, match="holds 100 values per entry, expected 504"):
        convert_root(src, out, tree="a", cells="cells")
    with pytest.raises(CaloforgeError, match="different numbers of cells"):
        convert_root(src, out, tree="a", cells="bad")
    with pytest.raises(CaloforgeError, match="no branch 'E'"):
        convert_root(src, out, tree="a", cells="cells", energy="E")
    with pytest.raises(CaloforgeError, match="no branch matches"):
        convert_root(src, out, tree="a", cells="cell_*")
    with pytest.raises(CaloforgeError, match="unknown energy unit"):
        convert_root(src, out, tree="a", cells="cells", energy_unit="J")
    assert not out.exists()
    not_root = tmp_path / "not_root.root"
    not_root.write_text("not a ROOT file")
    with pytest.raises(CaloforgeError, match="cannot read"):
        convert_root(not_root, out, cells="cells")
    with pytest.raises(CaloforgeError, match="file not found"):
        convert_root(tmp_path / "missing.root", out, cells="cells")
