"""`caloforge quickstart --fast`: the README's main command runs end to end."""

import json

from caloforge.cli.main import main


def test_quickstart_training_demo_fast_writes_a_report(tmp_path, capsys):
    try:
        main(["quickstart", "--dir", str(tmp_path / "qs"), "--train", "--fast", "--device",
              "cpu"])
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
        main(["quickstart", "--dir", str(tmp_path / "qs"), "--train", "--fast", "--device",
              "cpu"])
    except SystemExit as exit_:
        assert exit_.code == 1
    assert "--force" in capsys.readouterr().err


def test_quickstart_judges_a_pretrained_model(tmp_path, capsys, monkeypatch):
    """The default quickstart: no training, the pretrained model against fresh reference
    showers (here a tiny one placed in a temporary pretrained folder)."""
    from caloforge.models import get_model_class
    from caloforge.pretrained import PRETRAINED_ENV, save_pretrained
    from caloforge.simulate import simulate_to_file
    from caloforge.train import train

    data = simulate_to_file(tmp_path / "eplus.h5", "calogan", "eplus", 64, seed=1,
                            progress=False)
    train("calogan", data, tmp_path / "run",
          train_config={"max_steps": 1, "batch_size": 16, "progress": False,
                        "device": "cpu", "tensorboard": False},
          model_config=get_model_class("calogan").tiny_config().to_dict(), log=None)
    save_pretrained(tmp_path / "run", "tiny-eplus", {"summary": "tiny, for tests"},
                    root=tmp_path / "models")
    monkeypatch.setenv(PRETRAINED_ENV, str(tmp_path / "models"))
    args = ["quickstart", "--dir", str(tmp_path / "qs"), "--pretrained", "tiny-eplus",
            "--fast", "--device", "cpu"]
    try:
        main(args)
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    assert "classifier AUC (high)" in out and "training" not in out
    assert not (tmp_path / "qs" / "run").exists()
    metrics = json.loads((tmp_path / "qs" / "evaluation" / "metrics.json").read_text())
    assert metrics["n_generated"] == 600 and metrics["n_reference"] == 600
    try:
        main(args)
    except SystemExit as exit_:
        assert exit_.code == 1
    assert "--force" in capsys.readouterr().err
    try:
        main([*args[:4], "no-such-model", *args[5:], "--force"])
    except SystemExit as exit_:
        assert exit_.code == 1
    assert "tiny-eplus" in capsys.readouterr().err  # the known ones are listed
