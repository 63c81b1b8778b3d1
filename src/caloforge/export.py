"""ONNX export of a trained generator, with a contract file and a parity check.

The exported graph is the model's :meth:`~caloforge.models.base.GenerativeModel.decode`:
latent noise and conditions in, showers out, the batch size dynamic. A C++ fast-simulation
hook (Geant4's Par04 example runs ONNX models this way) draws the noise itself, so the
contract file next to the model says what to feed it: names, shapes, units, the latent
distribution, the trained conditioning range and the voxel layout of the output.

References:
    Geant4 extended example Par04 (examples/extended/parameterisations/Par04): ONNX
    Runtime inference inside a G4VFastSimulationModel.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from caloforge._version import __version__
from caloforge.data.atomic import atomic_output, check_output_path
from caloforge.errors import CaloforgeError, require_extra
from caloforge.models.base import GenerativeModel

__all__ = ["export_onnx", "onnx_session", "check_parity", "contract_path", "OPSET",
           "PARITY_RTOL", "PARITY_ATOL_MEV"]

OPSET = 18
#: parity tolerance: |onnx - torch| <= PARITY_ATOL_MEV + PARITY_RTOL * |torch| per voxel
PARITY_RTOL = 1e-4
PARITY_ATOL_MEV = 1e-2
_PARITY_BATCHES = (1, 7, 300)
_UNITS = {"energy": "MeV", "angle": "deg"}


class _Decoder(nn.Module):
    """``(latent, conditions) -> showers``: the graph that is exported."""

    def __init__(self, model: GenerativeModel):
        super().__init__()
        self.model = model

    def forward(self, latent: Tensor, conditions: Tensor) -> Tensor:
        return self.model.decode(latent, conditions)


def contract_path(onnx_path: str | Path) -> Path:
    """The contract file that goes with ``model.onnx``: ``model.contract.json``."""
    p = Path(onnx_path)
    return p.with_name(p.stem + ".contract.json")


def _draw_inputs(model: GenerativeModel, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Latent noise and conditions spread over the trained range, on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn((n, *model.latent_shape()), generator=gen)
    cond = model.conditioning
    ranges = [cond.energy if name == "energy" else cond.angle for name in cond.names]
    u = torch.rand((n, len(ranges)), generator=gen, dtype=torch.float64)
    lo = torch.tensor([r[0] for r in ranges], dtype=torch.float64)
    hi = torch.tensor([r[1] for r in ranges], dtype=torch.float64)
    return latent, (lo + u * (hi - lo)).float()


def onnx_session(path: str | Path, threads: int | None = None, device: str = "cpu"):
    """An onnxruntime ``InferenceSession`` for ``path`` (extra ``onnx``).

    Raises:
        CaloforgeError: onnxruntime is missing, or CUDA is asked for without its provider.
    """
    ort = require_extra("onnxruntime", "onnx")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise CaloforgeError("this onnxruntime has no CUDA provider; install "
                                 "onnxruntime-gpu or use --device cpu")
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def check_parity(model: GenerativeModel, path: str | Path,
                 batch_sizes: tuple[int, ...] = _PARITY_BATCHES, seed: int = 0) -> dict:
    """Run the ONNX file and ``model.decode`` on the same inputs and compare.

    Returns:
        ``{"batch_sizes", "max_abs_diff_mev", "max_abs_output_mev", "rtol", "atol_mev",
        "passed"}``; passed means every voxel of every batch is within
        ``atol + rtol * |torch|``.

    Raises:
        CaloforgeError: the ONNX output has another shape than PyTorch's.
    """
    session = onnx_session(path, threads=1)
    worst, largest, passed = 0.0, 0.0, True
    model = model.cpu().eval()
    for i, n in enumerate(batch_sizes):
        latent, conditions = _draw_inputs(model, n, seed + i)
        with torch.no_grad():
            expected = model.decode(latent, conditions).numpy()
        got = session.run(["showers"], {"latent": latent.numpy(),
                                        "conditions": conditions.numpy()})[0]
        if got.shape != expected.shape:
            raise CaloforgeError(f"ONNX output has shape {got.shape}, PyTorch {expected.shape}")
        diff = np.abs(got - expected)
        worst = max(worst, float(diff.max()))
        largest = max(largest, float(np.abs(expected).max()))
        passed &= bool(np.all(diff <= PARITY_ATOL_MEV + PARITY_RTOL * np.abs(expected)))
    return {"batch_sizes": list(batch_sizes), "max_abs_diff_mev": worst,
            "max_abs_output_mev": largest, "rtol": PARITY_RTOL, "atol_mev": PARITY_ATOL_MEV,
            "passed": passed}


def _contract(model: GenerativeModel, opset: int, parity: dict | None) -> dict:
    geometry, cond = model.geometry, model.conditioning
    columns = []
    for name in cond.names:
        rng = cond.energy if name == "energy" else cond.angle
        columns.append({"name": name, "unit": _UNITS.get(name, ""),
                        "trained_range": None if rng is None else list(rng)})
    layers, offset = [], 0
    for i, layer in enumerate(geometry.layers):
        size = int(np.prod(layer.shape))
        layers.append({"index": i, "name": layer.name,
                       "shape": list(layer.shape), "offset": offset, "size": size})
        offset += size
    return {
        "format": "caloforge-onnx-contract",
        "format_version": 1,
        "caloforge_version": __version__,
        "family": model.family,
        "particle": model.run_info.get("particle"),
        "training_step": model.run_info.get("step"),
        "geometry": geometry.name,
        "opset": opset,
        "inputs": [
            {"name": "latent", "dtype": "float32", "shape": ["batch", *model.latent_shape()],
             "distribution": "independent standard normal N(0, 1), a fresh draw per shower"},
            {"name": "conditions", "dtype": "float32", "shape": ["batch", len(columns)],
             "columns": columns,
             "note": "stay inside the trained range; the model was not trained outside it"},
        ],
        "outputs": [
            {"name": "showers", "dtype": "float32", "shape": ["batch", geometry.n_voxels],
             "unit": "MeV", "note": "deposited energy per voxel, layers concatenated in "
             "order, each layer flattened row-major (C order)", "layers": layers},
        ],
        "sampling_notes": model.export_notes(),
        "parity": parity,
    }


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress prints, warnings and log lines (it talks a lot; its
    opset conversion logs a traceback when it fails, which :func:`export_onnx` reports in
    one line instead)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _written_opset(proto) -> int:
    """The default-domain (``ai.onnx``) opset a model proto declares."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise CaloforgeError("the exported graph declares no ONNX opset")


def _parity(model: GenerativeModel, path: Path, opset: int) -> dict:
    """:func:`check_parity`, with an onnxruntime that cannot load the opset as one line."""
    try:
        return check_parity(model, path)
    except CaloforgeError:
        raise
    except Exception as err:
        if not type(err).__module__.startswith("onnxruntime"):
            raise
        ort = require_extra("onnxruntime", "onnx")
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CaloforgeError(f"onnxruntime {ort.__version__} cannot run the opset-{opset} "
                             f"export ({first}); export with a lower --opset, e.g. "
                             f"{OPSET}") from None


def export_onnx(model: GenerativeModel, path: str | Path, *, opset: int = OPSET,
                check: bool = True) -> dict:
    """Export ``model.decode`` to ONNX at ``path`` and write the contract file beside it.

    The file is written to a temporary name and renamed, so a failed export leaves no
    half file. With ``check`` the ONNX file is run with onnxruntime against PyTorch
    (:func:`check_parity`) and an export that disagrees raises. The contract states the
    opset the file declares; an opset the exporter cannot write is refused.

    Args:
        model: a trained model (see :func:`caloforge.train.load_run`) with a latent space.
        path: the ``.onnx`` file to write.
        opset: ONNX opset version (the installed torch exporter writes 18 and newer).
        check: run the parity check.

    Returns:
        The contract (also written to :func:`contract_path`).

    Raises:
        CaloforgeError: a model that cannot be exported
            (:meth:`~caloforge.models.base.GenerativeModel.export_problem`); an opset the
            exporter does not write or onnxruntime cannot run; a failed parity check; an
            output that is a folder, below a file, or an input of the running command (the
            checkpoint).
    """
    problem = model.export_problem()
    if problem is not None:
        raise CaloforgeError(problem)
    require_extra("onnxscript", "onnx")
    onnx = require_extra("onnx", "onnx")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise CaloforgeError(f"opset {opset} is newer than the installed onnx "
                             f"{onnx.__version__} knows (up to {newest}); use --opset "
                             f"{min(OPSET, newest)}")
    path = Path(path)
    cpath = contract_path(path)
    check_output_path(cpath)
    model = model.cpu().eval()
    latent, conditions = _draw_inputs(model, 4, seed=0)
    batch = torch.export.Dim("batch", min=1, max=2**20)
    with atomic_output(path) as tmp:
        with torch.no_grad(), _quiet():
            program = torch.onnx.export(
                _Decoder(model).eval(), (latent, conditions), dynamo=True, opset_version=opset,
                input_names=["latent", "conditions"], output_names=["showers"],
                dynamic_shapes=({0: batch}, {0: batch}), verbose=False,
            )
        # The exporter writes its own opset and converts down where it can; where it cannot
        # it keeps its own, with a warning. The file's opset is the one that counts.
        written = _written_opset(program.model_proto)
        if written != opset:
            raise CaloforgeError(
                f"this exporter (torch {torch.__version__}) cannot write opset {opset}: it "
                f"wrote opset {written}; use --opset {written}"
            )
        # weights inside the one file, so the model travels as a single file
        program.save(tmp, external_data=False)
        parity = _parity(model, tmp, written) if check else None
        if parity is not None and not parity["passed"]:
            raise CaloforgeError(
                f"ONNX export disagrees with PyTorch: max |diff| "
                f"{parity['max_abs_diff_mev']:.3g} MeV beyond {PARITY_ATOL_MEV:g} MeV + "
                f"{PARITY_RTOL:g} x |value|"
            )
        os.chmod(tmp, 0o666 & ~_umask())
    contract = _contract(model, written, parity)
    with atomic_output(cpath) as ctmp:
        ctmp.write_text(json.dumps(contract, indent=2) + "\n")
    return contract
