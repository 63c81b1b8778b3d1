"""``caloforge`` entry point.

Commands live in one small module each under :mod:`caloforge.cli` and are imported only
when invoked, so ``caloforge --version`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings

import click

from caloforge._version import __version__
from caloforge.errors import CaloforgeError


def _model_names() -> list[str]:
    """Registered model names, read from the ``@register_model("...")`` lines of the
    model modules' source, so that ``--help`` does not import torch."""
    import re
    from pathlib import Path

    # find_spec locates the package without importing it (its __init__ imports torch)
    spec = importlib.util.find_spec("caloforge.models")
    names = []
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted(Path(folder).glob("*.py")):
            names += re.findall(r'^@register_model\("([^"]+)"\)', path.read_text(),
                                re.MULTILINE)
    return sorted(names)


# command name -> (module, attribute, one-line help shown by `caloforge --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "simulate": ("caloforge.cli.simulate", "simulate",
                 "Make reference showers (parametric or Geant4)."),
    "inspect": ("caloforge.cli.inspect", "inspect",
                "Summarise a shower file; plot average layer images."),
    "train": ("caloforge.cli.train", "train",
              f"Train a model ({', '.join(_model_names()) or 'see caloforge.models'}) on a "
              "shower file."),
    "generate": ("caloforge.cli.generate", "generate",
                 "Generate showers from a trained run or a pretrained model."),
    "scan": ("caloforge.cli.scan", "scan",
             "Draw showers from a fixed latent vector while a condition varies."),
    "evaluate": ("caloforge.cli.evaluate", "evaluate",
                 "Compare generated showers with reference ones: metrics and report."),
    "quickstart": ("caloforge.cli.quickstart", "quickstart",
                   "Simulate, train, generate, evaluate and report in minutes."),
    "bench": ("caloforge.cli.bench", "bench",
              "Time generation per shower at several batch sizes."),
    "export": ("caloforge.cli.export", "export",
               "Export a trained generator to ONNX with a parity check."),
    "models": ("caloforge.cli.models", "models",
               "List the pretrained models and their model cards."),
    "data": ("caloforge.cli.data", "data",
             "List and fetch public data sets; convert ROOT ntuples."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx):
        return [name for name, (module, _, _) in COMMANDS.items() if _available(module)]

    def get_command(self, ctx, name):
        if name not in COMMANDS or not _available(COMMANDS[name][0]):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="caloforge")
def cli() -> None:
    """caloforge: fast calorimeter shower simulation with deep generative models.

    Typical flow: `simulate` reference showers, `train` a model on them, `generate`
    showers from it, `evaluate` them against fresh reference showers, `bench` the speed.
    `caloforge quickstart` runs all of it on a small e+ sample in a few minutes.
    """


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as one line, ``warning: ...``, like the errors (no source location)."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`CaloforgeError` becomes one line on stderr and exit status 1,
    a warning one line on stderr."""
    previous, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        _run(argv)
    finally:
        warnings.formatwarning = previous


def _run(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="caloforge", standalone_mode=False)
    except CaloforgeError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as err:
        # one line, like every other error; click's usage block is what --help is for
        where = err.ctx.command_path if err.ctx is not None else "caloforge"
        click.echo(f"error: {err.format_message()} (see {where} --help)", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
