"""``caloforge evaluate`` end to end: files in, metrics.json and report.html out."""

import json
import re

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from caloforge import CaloforgeError
from caloforge.cli.main import main
from caloforge.data import ShowerWriter, read_showers, write_showers
from caloforge.evaluate import evaluate_files
from caloforge.geometry import get_geometry
from caloforge.simulate import simulate_showers, simulate_to_file


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread per library: shared CI machines are much slower when oversubscribed."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    made = {}
    for key, geometry, particle, n, seed in [
        ("ref", "calogan", "eplus", 600, 1), ("gen", "calogan", "eplus", 600, 2),
        ("atlas_ref", "atlas89", "gamma", 400, 3), ("atlas_gen", "atlas89", "gamma", 400, 4),
        ("clic_ref", "clic51", "eminus", 40, 5), ("clic_gen", "clic51", "eminus", 40, 6),
    ]:
        made[key] = simulate_to_file(root / f"{key}.h5", geometry, particle, n, seed=seed,
                                     progress=False)
    made["root"] = root
    return made


def _report_images(outdir):
    html = (outdir / "report.html").read_text()
    return html, re.findall(r"<img src='([^']+)'", html)


def test_calogan_metrics_and_report(files, tmp_path):
    out = tmp_path / "out"
    metrics = evaluate_files(files["ref"], files["gen"], out, epochs=3, progress=False,
                             threads=1)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for kind in ("low", "normed", "high"):
        result = on_disk["classifier"][kind]
        assert 0.0 <= result["auc"] <= 1.0 and -1.0 <= result["jsd"] <= 1.0
    assert on_disk["n_reference"] == 600 and on_disk["n_generated"] == 600
    # two independent samples of one distribution: FPD and KPD consistent with 0
    value, error = on_disk["fpd"]
    assert value >= 0 and error > 0 and value <= 3 * error
    value, error = on_disk["kpd"]
    assert abs(value) <= 3 * error
    separation = on_disk["separation_power"]
    for name in ("E_0", "E_tot", "f_1", "E_ratio_2", "d", "l_d", "s_d", "sigma_sd", "sigma_0",
                 "sparsity_1", "centre_x_1", "width_y_2", "response"):
        assert name in separation
    # ... and separation powers near 0: the finite-sample expectation is about
    # bins / (2 N) = 50 / 1200 = 0.04 for 600 showers a side
    assert max(separation.values()) < 0.1
    assert 0 < on_disk["nearest_neighbours"]["ratio"] < 3
    html, images = _report_images(out)
    assert len(images) >= 10
    for name in images:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("average_images.png", "energy_response.png", "nearest_neighbours.png",
                 "hist_E_i.png", "cell_energy.png"):
        assert name in images
    # the banner names the generator and never calls parametric showers Geant4
    assert html.count("generator: <b>parametric") == 2
    assert "generator: <b>Geant4" not in html


def test_memorised_showers_are_flagged_by_nearest_neighbours(files, tmp_path):
    metrics = evaluate_files(files["ref"], files["ref"], tmp_path / "copy", classifier=False,
                             plots=False, progress=False, threads=1)
    assert metrics["nearest_neighbours"]["ratio"] == pytest.approx(0.0, abs=1e-3)
    assert max(metrics["separation_power"].values()) == 0.0
    assert metrics["fpd"][0] == pytest.approx(0.0, abs=1e-6)
    assert metrics["classifier"] == {}


@pytest.mark.parametrize("prefix", ["atlas", "clic"])
def test_cli_on_atlas89_and_clic51(files, tmp_path, prefix, capsys):
    out = tmp_path / prefix
    main(["evaluate", str(files[f"{prefix}_ref"]), str(files[f"{prefix}_gen"]), "-o",
          str(out), "--epochs", "2", "--threads", "1", "--quiet"])
    text = capsys.readouterr().out
    assert "classifier low" in text and "FPD" in text
    assert "calibrated" in text and "raw" in text
    metrics = json.loads((out / "metrics.json").read_text())
    geometry = get_geometry(metrics["geometry"])
    assert metrics["geometry"] == {"atlas": "atlas89", "clic": "clic51"}[prefix]
    assert set(metrics["classifier"]) == {"low", "normed", "high"}
    assert f"E_{geometry.n_layers - 1}" in metrics["separation_power"]
    if prefix == "atlas":
        assert "centre_eta_1" in metrics["separation_power"]
    else:  # angle condition: response against the angle, pooled voxel inputs
        assert "angle" in metrics["energy_response"]
        assert metrics["settings"]["voxel_pooling"] == 3
    _, images = _report_images(out)
    assert all((out / name).exists() for name in images)


def test_cli_options(files, tmp_path, capsys):
    out = tmp_path / "opts"
    main(["evaluate", str(files["ref"]), str(files["gen"]), "-o", str(out), "--max-showers",
          "300", "--no-classifier", "--no-plots", "--seed", "3", "--quiet"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_reference"] == 300 and metrics["classifier"] == {}
    assert metrics["settings"]["seed"] == 3
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(files["ref"]), str(files["gen"]), "--classifier-inputs", "pixels"])
    assert exit_info.value.code == 2


def _expect_cli_error(args, pattern, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", *map(str, args), "--quiet"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    assert re.search(pattern, err), err


def test_bad_input_is_a_clear_error(files, tmp_path, capsys):
    root = tmp_path
    _expect_cli_error([files["ref"], files["atlas_gen"], "-o", root / "a"],
                      "different geometries", capsys)
    narrow = simulate_to_file(root / "narrow.h5", "calogan", "eplus", 300, seed=7,
                              energy_range=(50.0, 100.0), progress=False)
    _expect_cli_error([files["ref"], narrow, "-o", root / "b"], "incident energy ranges differ",
                      capsys)
    low = simulate_to_file(root / "low.h5", "calogan", "eplus", 300, seed=8,
                           energy_range=(1.0, 10.0), progress=False)
    _expect_cli_error([low, narrow, "-o", root / "c"], "do not overlap", capsys)
    empty = root / "empty.h5"
    with ShowerWriter(empty, "calogan", {"generator": "parametric"}):
        pass
    _expect_cli_error([files["ref"], empty, "-o", root / "d"], "no showers", capsys)
    showers = read_showers(files["gen"], n=50)
    showers.voxels[3, 10] = np.nan
    nan_file = write_showers(root / "nan.h5", showers)
    _expect_cli_error([files["ref"], nan_file, "-o", root / "e"], "NaN", capsys)
    _expect_cli_error([files["ref"], root / "missing.h5", "-o", root / "f"], "not found", capsys)


def test_a_failure_after_reading_leaves_no_output_folder(files, tmp_path, monkeypatch):
    """A fault found late (here: in the classifier stage) removes the folder the run made,
    figures included; a folder the user already had stays."""
    import caloforge.evaluate.pipeline as pipeline

    def fail(*args, **kwargs):
        raise CaloforgeError("late fault")

    monkeypatch.setattr(pipeline, "classifier_stage", fail)
    out = tmp_path / "new"
    with pytest.raises(CaloforgeError, match="late fault"):
        evaluate_files(files["ref"], files["gen"], out, epochs=1, max_showers=300)
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(CaloforgeError, match="late fault"):
        evaluate_files(files["ref"], files["gen"], kept, epochs=1, max_showers=300)
    assert (kept / "notes.txt").read_text() == "mine"


def test_library_errors_for_bad_arguments(files, tmp_path):
    with pytest.raises(CaloforgeError, match="unknown classifier input"):
        evaluate_files(files["ref"], files["gen"], tmp_path, classifier_inputs=("pixels",))
    with pytest.raises(CaloforgeError, match="at least 2"):
        evaluate_files(files["ref"], files["gen"], tmp_path, max_showers=1)


def test_generator_banner_for_a_model_file(files, tmp_path):
    showers = simulate_showers("calogan", "eplus", 200, seed=9)
    model_file = write_showers(tmp_path / "model.h5", showers,
                               attrs={"generator": "caloflow-student"})
    evaluate_files(files["ref"], model_file, tmp_path / "m", classifier=False, plots=False,
                   progress=False, threads=1)
    html = (tmp_path / "m" / "report.html").read_text()
    assert "generator: <b>caloflow-student" in html
    assert "generator: <b>parametric" in html


def test_geometry_extra_sees_every_shower_and_reaches_metrics_and_report(files, tmp_path,
                                                                         monkeypatch):
    from caloforge.evaluate import extras

    class Counting(extras.GeometryExtra):
        title = "counting extra"

        def __init__(self, geometry):
            super().__init__(geometry)
            self.n, self.energy = 0, 0.0

        def update(self, voxels, incident_energy, angle):
            assert voxels.shape[1] == self.geometry.n_voxels
            self.n += len(voxels)
            self.energy += float(voxels.sum())

        @classmethod
        def compare(cls, ref, gen, outdir, plots):
            (outdir / "count.png").write_bytes(b"")
            return ({"n": [ref.n, gen.n], "ratio": gen.energy / ref.energy},
                    [("counts", "count.png")] if plots else [])

    extras._discover()
    monkeypatch.setitem(extras._REGISTRY, "calogan", Counting)
    out = tmp_path / "out"
    metrics = evaluate_files(files["ref"], files["gen"], out, classifier=False, progress=False,
                             threads=1)
    extra = metrics["geometry_specific"]
    assert extra["n"] == [600, 600]
    ref, gen = read_showers(files["ref"]), read_showers(files["gen"])
    assert extra["ratio"] == pytest.approx(gen.voxels.sum() / ref.voxels.sum(), rel=1e-4)
    html, images = _report_images(out)
    assert "counting extra" in html and "count.png" in images
