"""The CLI's basic contract."""

import subprocess
import sys
import time

import pytest
from cli_helpers import run_cli


def test_version_is_fast_and_does_not_import_torch():
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys; from caloforge.cli.main import main\n"
         "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
         "print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert "caloforge, version" in out.stdout
    assert out.stdout.strip().endswith("False")
    assert time.perf_counter() - start < 5.0  # generous: shared machines are noisy


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "caloforge", "--help"],
                         capture_output=True, text=True, check=True)
    assert "simulate" in out.stdout


@pytest.mark.parametrize("args", [["simulate", "-n", "abc"], ["nosuch"],
                                  ["simulate", "--chunk-size", "0"], ["evaluate"]])
def test_usage_errors_are_one_line(args, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0]
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_extra_names_the_extra_for_pip_and_for_a_clone():
    from caloforge.errors import CaloforgeError, require_extra

    with pytest.raises(CaloforgeError) as info:
        require_extra("caloforge_no_such_module", "onnx")
    message = str(info.value)
    assert "caloforge_no_such_module is not installed" in message
    assert "pip install 'caloforge[onnx]'" in message and "pip install -e '.[onnx]'" in message
    assert "\n" not in message
