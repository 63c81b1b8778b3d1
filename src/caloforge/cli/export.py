"""``caloforge export``: a trained generator as an ONNX file plus its contract."""

from __future__ import annotations

import click


@click.command()
@click.argument("rundir")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The .onnx file to write; the contract goes beside it "
              "(NAME.contract.json).")
@click.option("--opset", type=click.IntRange(13), default=None,
              help="ONNX opset version. [default: 18]")
@click.option("--no-check", is_flag=True,
              help="Skip the onnxruntime vs PyTorch parity check.")
def export(rundir, output, opset, no_check) -> None:
    """Export the generator trained in RUNDIR (a run directory or a pretrained name) to
    ONNX, with a dynamic batch size.

    The graph takes `latent` (batch x latent size, standard normal noise) and
    `conditions` (batch x conditions: incident energy in MeV, and the polar angle in
    degrees where the model uses one) and returns `showers` (batch x voxels, MeV). The
    contract file beside it states names, shapes, units, the trained ranges and the voxel
    layout. The export is checked against PyTorch with onnxruntime (extra `onnx`).

    \b
    Example:
      caloforge export runs/eplus -o eplus_calogan.onnx
    """
    from caloforge.export import OPSET, contract_path, export_onnx
    from caloforge.pretrained import resolve_run
    from caloforge.train import load_run

    model = load_run(resolve_run(rundir), device="cpu")
    contract = export_onnx(model, output, opset=opset or OPSET, check=not no_check)
    click.echo(f"wrote {output} and {contract_path(output)}")
    parity = contract["parity"]
    if parity is not None:
        click.echo(f"parity with PyTorch at batch {parity['batch_sizes']}: max |diff| "
                   f"{parity['max_abs_diff_mev']:.3g} MeV (largest output "
                   f"{parity['max_abs_output_mev']:.4g} MeV; tolerance {parity['atol_mev']:g} "
                   f"MeV + {parity['rtol']:g} x |value|): passed")
