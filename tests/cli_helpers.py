"""Running the ``caloforge`` command line in-process from tests."""

from caloforge.cli.main import main


def run_cli(args, capsys) -> tuple[int, str, str]:
    """Run ``caloforge ARGS`` (any items, turned into strings); return (exit code, stdout,
    stderr) as captured by pytest's ``capsys``."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err
