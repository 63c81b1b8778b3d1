"""Pretrained models shipped in the package, usable offline, and the run-or-name lookup.

Each model is a folder ``caloforge/pretrained/<name>/`` holding

- ``checkpoint.pt``: the run's checkpoint (:mod:`caloforge.train.checkpoint` format, loadable
  with ``torch.load(weights_only=True)``), without optimiser and random states;
- ``card.json``: ``name``, ``family``, ``geometry``, ``particle``, a one-line ``summary``,
  the measured ``figures`` (name -> number) and how they were obtained (``command``);
- ``card.md``: the model card for people (training data and seed, steps, config, version,
  the measured figures and the commands that reproduce them).

Every command that takes a run directory (``generate``, ``bench``, ``export``, ``scan``)
also takes a pretrained name (:func:`resolve_run`). The folder searched is the package's,
or the one named by the environment variable ``CALOFORGE_PRETRAINED_DIR`` (tests, local
collections). The models travel inside the package rather than through a model hub
client (huggingface_hub): they must work offline, right after ``pip install``.

Examples:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as root:
    ...     available_pretrained(root)
    []
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caloforge.errors import CaloforgeError

if TYPE_CHECKING:  # torch is imported only when a model is loaded
    from caloforge.models.base import GenerativeModel

__all__ = ["PRETRAINED_ENV", "pretrained_root", "available_pretrained", "model_card",
           "pretrained_dir", "resolve_run", "load_pretrained", "save_pretrained",
           "quantize_int8", "dequantize_int8"]

PRETRAINED_ENV = "CALOFORGE_PRETRAINED_DIR"
_CHECKPOINT = "checkpoint.pt"  # = caloforge.train.CHECKPOINT_NAME (not imported: no torch)
_CARD_JSON, _CARD_MD = "card.json", "card.md"
#: checkpoint entries a pretrained model does not need (only resuming training does)
_TRAINING_ONLY = ("optimizer_state", "rng", "rng_ranks", "scaler_state")


def pretrained_root(root: str | Path | None = None) -> Path:
    """The folder of pretrained models: ``root``, else ``$CALOFORGE_PRETRAINED_DIR``, else
    the package's own."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(PRETRAINED_ENV) or Path(__file__).parent)


def available_pretrained(root: str | Path | None = None) -> list[str]:
    """Names of the pretrained models in ``root`` (see :func:`pretrained_root`), sorted."""
    folder = pretrained_root(root)
    if not folder.is_dir():
        return []
    return sorted(d.name for d in folder.iterdir() if (d / _CHECKPOINT).is_file())


def _unknown(name: str, root: str | Path | None) -> CaloforgeError:
    known = ", ".join(available_pretrained(root)) or "none in this installation"
    return CaloforgeError(f"no pretrained model {name!r}; pretrained models: {known}")


def pretrained_dir(name: str, root: str | Path | None = None) -> Path:
    """The folder of pretrained model ``name``.

    Raises:
        CaloforgeError: no such model; the message lists the known ones.
    """
    if name not in available_pretrained(root):
        raise _unknown(name, root)
    return pretrained_root(root) / name


def model_card(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """The ``card.json`` of pretrained model ``name`` (empty fields if it has none), plus
    ``name`` and ``path`` (the card's markdown file).

    Raises:
        CaloforgeError: no such model, or an unreadable card.
    """
    folder = pretrained_dir(name, root)
    card: dict[str, Any] = {}
    if (folder / _CARD_JSON).is_file():
        try:
            card = json.loads((folder / _CARD_JSON).read_text())
        except (OSError, ValueError) as err:
            raise CaloforgeError(f"cannot read the card of {name}: {err}") from None
    return {"summary": "", "figures": {}, **card, "name": name,
            "path": str(folder / _CARD_MD)}


def resolve_run(spec: str | Path, root: str | Path | None = None) -> Path:
    """The run directory that ``spec`` names: an existing path, or a pretrained name.

    A ``spec`` that is neither an existing path nor a pretrained name is returned as a
    path when it looks like one (has a ``/`` or ends in ``.pt``), so that loading it says
    which checkpoint is missing.

    Raises:
        CaloforgeError: a bare name that is neither a folder nor a pretrained model; the
            message lists the pretrained models.
    """
    path = Path(spec)
    if path.exists():
        return path
    text = str(spec)
    if text in available_pretrained(root):
        return pretrained_root(root) / text
    if "/" in text or os.sep in text or text.endswith(".pt"):
        return path
    known = ", ".join(available_pretrained(root)) or "none in this installation"
    raise CaloforgeError(f"{text!r} is neither a run directory (no such folder) nor a "
                         f"pretrained model; pretrained models: {known}")


def load_pretrained(name: str, device: str = "cpu",
                    root: str | Path | None = None) -> GenerativeModel:
    """The pretrained model ``name``, ready to sample, in eval mode on ``device``.

    Args:
        name: one of :func:`available_pretrained` (``caloforge models`` lists them).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``...
        root: the folder to look in (default: :func:`pretrained_root`).

    Raises:
        CaloforgeError: no such model (the message lists the known ones), or an
            unreadable checkpoint.
    """
    from caloforge.train.checkpoint import load_run

    return load_run(pretrained_dir(name, root), device)


def save_pretrained(rundir: str | Path, name: str, card: dict[str, Any],
                    root: str | Path | None = None, card_text: str = "",
                    half: bool = False, drop: tuple[str, ...] = (),
                    int8: bool = False) -> Path:
    """Turn a trained run into pretrained model ``name``: the checkpoint without its
    training-only states, ``card.json`` and ``card.md``.

    Args:
        rundir: the trained run (its ``checkpoint.pt``).
        name: the model's name (a folder name: letters, digits, ``-``, ``_``).
        card: ``summary`` (one line), ``figures`` (name -> number), ``command`` and any
            further plain entries; family, geometry, particle, step and version are added
            from the checkpoint.
        root: the folder to write into (default: :func:`pretrained_root`).
        card_text: the markdown model card (default: one generated from ``card``).
        half: store float32 weights as float16 (half the size on disk; they are float32
            again once loaded, so figures must be measured on the stored model).
        drop: sub-modules to leave out, among the family's ``optional_modules`` (CaloFlow:
            ``("teacher",)``, which the student does not need to sample; CaloGAN:
            ``("discriminator",)``).
        int8: store the large weight matrices (at least 65,536 entries) as int8 with one
            float32 scale per output row (symmetric, ``scale = max |w| / 127``), a quarter
            of their float32 size; they are dequantised to float32 when loaded, so, as
            with ``half``, figures must be measured on the stored model.

    Returns:
        The model's folder.

    Raises:
        CaloforgeError: a bad name, an unreadable checkpoint or a sub-module the family
            cannot do without.
    """
    import torch

    from caloforge.models import get_model_class
    from caloforge.train.checkpoint import load_checkpoint

    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise CaloforgeError(f"pretrained model name {name!r}: use letters, digits, - and _")
    ckpt = load_checkpoint(rundir)
    for key in _TRAINING_ONLY:
        ckpt.pop(key, None)
    ckpt["optimizer_state"] = {}
    if drop:
        allowed = get_model_class(ckpt["family"]).optional_modules
        bad = [d for d in drop if d not in allowed]
        if bad:
            raise CaloforgeError(f"a {ckpt['family']} model cannot be shipped without "
                                 f"{', '.join(bad)}; it may leave out: "
                                 f"{', '.join(allowed) or 'nothing'}")
        ckpt["model_state"] = {k: v for k, v in ckpt["model_state"].items()
                               if k.split(".")[0] not in drop}
        ckpt["dropped_modules"] = list(drop)
    if int8:
        ckpt["quantized_state"] = quantize_int8(ckpt["model_state"])
        ckpt["model_state"] = {k: v for k, v in ckpt["model_state"].items()
                               if k not in ckpt["quantized_state"]}
    if half:
        ckpt["model_state"] = {k: v.half() if v.dtype == torch.float32 else v
                               for k, v in ckpt["model_state"].items()}
    folder = pretrained_root(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, folder / _CHECKPOINT)
    full = {"name": name, "family": ckpt["family"], "geometry": ckpt["geometry"]["name"],
            "particle": ckpt["particle"], "step": ckpt["step"],
            "caloforge_version": ckpt["caloforge_version"], **card}
    (folder / _CARD_JSON).write_text(json.dumps(full, indent=2) + "\n")
    (folder / _CARD_MD).write_text(card_text or _card_markdown(full))
    return folder


#: the smallest weight tensor :func:`quantize_int8` stores as int8
INT8_MIN_SIZE = 65_536


def quantize_int8(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Symmetric per-row int8 copies of the large floating-point weights of ``state``.

    Every floating-point tensor with at least two dimensions and :data:`INT8_MIN_SIZE`
    entries is stored as ``{"int8": q, "scale": s}``, ``q = round(w / s)`` with one
    float32 scale ``s = max |w| / 127`` per output row (the first dimension): post-training
    weight quantisation as in B. Jacob et al., "Quantization and Training of Neural
    Networks for Efficient Integer-Arithmetic-Only Inference", arXiv:1712.05877, with the
    weights dequantised to float32 when loaded (:func:`dequantize_int8`), so the model
    runs as before, only with the rounded weights.

    Returns:
        name -> ``{"int8": tensor (the weight's shape, int8), "scale": (rows,) float32}``.
    """
    import torch

    out = {}
    for key, w in state.items():
        if not (torch.is_tensor(w) and w.is_floating_point() and w.dim() >= 2
                and w.numel() >= INT8_MIN_SIZE):
            continue
        rows = w.detach().float().reshape(w.shape[0], -1)
        scale = (rows.abs().amax(dim=1) / 127.0).clamp_min(1e-30)
        q = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
        out[key] = {"int8": q.reshape(w.shape), "scale": scale}
    return out


def dequantize_int8(quantized: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The float32 weights of :func:`quantize_int8`'s output: name -> tensor."""
    return {key: (d["int8"].float().reshape(d["int8"].shape[0], -1) * d["scale"][:, None]
                  ).reshape(d["int8"].shape)
            for key, d in quantized.items()}


def _card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# {card['name']}", "", card.get("summary", ""), "",
             f"- family: {card['family']}", f"- geometry: {card['geometry']}",
             f"- particle: {card['particle']}", f"- training steps: {card['step']}",
             f"- caloforge version: {card['caloforge_version']}", "", "## Measured figures", ""]
    lines += [f"- {k}: {v}" for k, v in card.get("figures", {}).items()] or ["- none yet"]
    if card.get("command"):
        lines += ["", "## Reproduce", "", "```", str(card["command"]), "```"]
    return "\n".join(lines) + "\n"
