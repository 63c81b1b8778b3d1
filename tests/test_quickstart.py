"""`caloforge quickstart --fast`: the README's main command runs end to end."""

import json

from caloforge.cli.main import main


def test_quickstart_fast_writes_a_report(tmp_path, capsys):
    try:
        main(["quickstart", "--dir", str(tmp_path / "qs"), "--fast", "--device", "cpu"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    report = tmp_path / "qs" / "evaluation" / "report.html"
    assert f"report: {report.resolve()}" in out
    assert report.exists()
    metrics = json.loads((tmp_path / "qs" / "evaluation" / "metrics.json").read_text())
    assert metrics["generated"]["generator_label"].lower().startswith("calogan")
    assert "parametric" in metrics["reference"]["generator_label"].lower()
    assert (tmp_path / "qs" / "run" / "checkpoint.pt").exists()
    # a second run refuses to overwrite without --force
    try:
        main(["quickstart", "--dir", str(tmp_path / "qs"), "--fast", "--device", "cpu"])
    except SystemExit as exit_:
        assert exit_.code == 1
    assert "--force" in capsys.readouterr().err
