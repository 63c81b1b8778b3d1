"""FPD/KPD in the pipeline: omitted below the minimum sample size, skipped on request."""

import json

import pytest
from test_evaluate_threshold import photons

from caloforge.cli.main import main
from caloforge.data import write_showers


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("distances")
    return (write_showers(root / "ref.h5", photons(300, 1)),
            write_showers(root / "gen.h5", photons(300, 2)))


def _run(files, out, *options):
    main(["evaluate", str(files[0]), str(files[1]), "-o", str(out), "--no-classifier",
          "--no-plots", "--quiet", *options])
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("n", [2, 50])
def test_tiny_samples_get_no_distances_but_a_warning(files, tmp_path, capsys, n):
    # issue case: 2 showers a side gave "FPD 47 +- 7, KPD 14.5 +- 9e-16"
    metrics = _run(files, tmp_path / "tiny", "--max-showers", str(n))
    assert metrics["fpd"] is None and metrics["kpd"] is None
    assert metrics["distances"].startswith("omitted")
    assert any("FPD and KPD" in w for w in metrics["warnings"])
    out = capsys.readouterr().out
    assert "FPD/KPD omitted" in out and f"got {n} reference" in out


def test_enough_showers_give_distances_and_no_distances_skips_them(files, tmp_path, capsys):
    metrics = _run(files, tmp_path / "full")
    assert metrics["distances"] == "computed"
    assert 300 >= metrics["distances_min_showers"]
    assert len(metrics["fpd"]) == 2 and len(metrics["kpd"]) == 2
    metrics = _run(files, tmp_path / "skip", "--no-distances")
    assert metrics["fpd"] is None and metrics["distances"] == "skipped (--no-distances)"
    assert metrics["settings"]["distances"] is False
    assert "FPD/KPD skipped" in capsys.readouterr().out
    html = (tmp_path / "skip" / "report.html").read_text()
    assert "skipped (--no-distances)" in html
