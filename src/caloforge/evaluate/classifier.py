"""The classifier test: a neural network trained to tell reference from generated showers.

By the Neyman-Pearson lemma the best test between two samples is their likelihood ratio;
a classifier that cannot beat chance (AUC ~ 0.5) on held-out showers means the generated
distribution matches the reference in all voxels at once. Setup as in the CaloChallenge
evaluation (``evaluate.py``): both samples cut to the same size, each split 60/20/20 into
train/validation/test; a fully connected network (two hidden layers of 512 LeakyReLU
nodes, dropout 0.2) trained with Adam (lr 2e-4, batches of 1000) on the binary
cross-entropy; the epoch with the best validation score is kept (here: the lowest
validation loss; training stops after ``patience`` epochs without improvement, or once
the validation AUC exceeds 0.9995, the analogue of the CaloChallenge's stop at validation
accuracy 1); an isotonic regression fitted on the validation predictions calibrates the
output; AUC and the Jensen-Shannon divergence ``JSD = (log 2 - BCE) / log 2`` of the
calibrated output are measured on the test split.

Three inputs, as in the CaloChallenge (the incident energy, and the angle where the
geometry has one, always included):

- ``low``: ``log10(E_inc / MeV)`` and the voxels scaled as ``100 * E_voxel / E_inc``;
- ``normed``: ``log10(E_inc)``, voxels divided by their layer's energy, and
  ``log10(E_layer / MeV + 1e-8)``;
- ``high``: ``log10(E_inc)`` and the shower-shape feature vector
  (:func:`caloforge.evaluate.observables.feature_matrix`).

One difference: the inputs are standardised before the network (mean 0, variance 1 per
feature over the *reference* showers of the training split), which makes training converge
in fewer epochs on CPU. The scale comes from the reference alone: with statistics pooled
over both samples, a few far-off generated values (one shower in a thousand with a stray
deposit) inflate a feature's spread until the network can no longer see the feature, and
the model that makes them scores a lower AUC than one that does not.

References:
    C. Krause, D. Shih, "CaloFlow: fast and accurate generation of calorimeter showers
    with normalizing flows", Phys. Rev. D 107 (2023) 113003, arXiv:2106.05285 (classifier
    as the "ultimate metric").

    CaloChallenge 2022 evaluation code, https://github.com/CaloChallenge/homepage
    (``code/evaluate.py``).

    C. Krause, M. Faucci Giannelli, G. Kasieczka, B. Nachman, D. Salamani, D. Shih,
    A. Zaborowska et al., "CaloChallenge 2022: a community challenge for fast calorimeter
    simulation", arXiv:2410.21611.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from caloforge.data import ShowerSet
from caloforge.data.threshold import apply_threshold, default_threshold
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry

__all__ = [
    "INPUTS",
    "pool_factor",
    "pool_voxels",
    "pooled_layer_sizes",
    "low_level_input",
    "normed_input",
    "high_level_input",
    "classifier_inputs",
    "train_classifier",
    "classifier_test",
    "torch_device",
]

INPUTS = ("low", "normed", "high")
_SEPARATED_AUC = 0.9995  # validation AUC at which training stops early


def pool_factor(geometry: Geometry, max_inputs: int = 10_000) -> int:
    """Smallest transverse pooling factor that keeps the voxel inputs at ``max_inputs``.

    1 for calogan (504) and atlas89 (89); 3 for clic51 (51 x 51 x 25 -> 17 x 17 x 25).
    """
    factor = 1
    while sum(pooled_layer_sizes(geometry, factor)) > max_inputs:
        factor += 1
    return factor


def pool_voxels(voxels: np.ndarray, geometry: Geometry, factor: int) -> np.ndarray:
    """Sum ``factor x factor`` blocks of cells in each layer (edges zero-padded).

    Args:
        voxels: ``(N, n_voxels)`` in MeV.
        geometry: their geometry.
        factor: block size; 1 returns the voxels unchanged.

    Returns:
        ``(N, n_pooled)`` float32, layer-major like the input.
    """
    if factor == 1:
        return np.asarray(voxels, dtype=np.float32)
    out = []
    for layer, arr in zip(geometry.layers, geometry.split_layers(voxels), strict=True):
        rows, cols = layer.shape
        pr, pc = -(-rows // factor) * factor, -(-cols // factor) * factor
        padded = np.zeros((len(arr), pr, pc), dtype=np.float32)
        padded[:, :rows, :cols] = arr
        pooled = padded.reshape(len(arr), pr // factor, factor, pc // factor, factor)
        out.append(pooled.sum(axis=(2, 4)).reshape(len(arr), -1))
    return np.concatenate(out, axis=1)


def pooled_layer_sizes(geometry: Geometry, factor: int) -> list[int]:
    """Cells per layer after :func:`pool_voxels` with ``factor``."""
    return [-(-r // factor) * -(-c // factor) for r, c in (layer.shape for layer in
                                                           geometry.layers)]


def _conditions(incident_energy: np.ndarray, angle: np.ndarray | None) -> list[np.ndarray]:
    cols = [np.log10(np.asarray(incident_energy, dtype=np.float64)).reshape(-1, 1)]
    if angle is not None:
        cols.append(np.asarray(angle, dtype=np.float64).reshape(-1, 1) / 100.0)
    return cols


def low_level_input(voxels: np.ndarray, incident_energy: np.ndarray,
                    angle: np.ndarray | None = None) -> np.ndarray:
    """``low`` input: ``[log10(E_inc), (angle / 100 deg), 100 * voxels / E_inc]``, float32."""
    voxels = np.asarray(voxels, dtype=np.float32)
    scaled = 100.0 * voxels / np.asarray(incident_energy, dtype=np.float32).reshape(-1, 1)
    return np.concatenate([*(c.astype(np.float32) for c in _conditions(incident_energy, angle)),
                           scaled], axis=1)


def normed_input(voxels: np.ndarray, layer_sizes: Sequence[int], incident_energy: np.ndarray,
                 angle: np.ndarray | None = None) -> np.ndarray:
    """``normed`` input: ``[log10(E_inc), (angle), voxels / E_layer, log10(E_layer + 1e-8)]``.

    Args:
        voxels: ``(N, sum(layer_sizes))`` in MeV, layer-major.
        layer_sizes: number of (possibly pooled) cells per layer.
    """
    voxels = np.asarray(voxels, dtype=np.float32)
    offsets = np.concatenate([[0], np.cumsum(layer_sizes)])
    if voxels.shape[1] != offsets[-1]:
        raise CaloforgeError(f"voxels have {voxels.shape[1]} columns, layers {offsets[-1]}")
    energies = np.stack([voxels[:, a:b].sum(axis=1) for a, b in
                         zip(offsets[:-1], offsets[1:], strict=True)], axis=1)
    normed = np.empty_like(voxels)
    for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
        normed[:, a:b] = voxels[:, a:b] / (energies[:, i:i + 1] + 1e-16)
    return np.concatenate([*(c.astype(np.float32) for c in _conditions(incident_energy, angle)),
                           normed, np.log10(energies + 1e-8).astype(np.float32)], axis=1)


def high_level_input(features: np.ndarray, incident_energy: np.ndarray,
                     angle: np.ndarray | None = None) -> np.ndarray:
    """``high`` input: ``[log10(E_inc), (angle), features]``, float32."""
    return np.concatenate([*_conditions(incident_energy, angle),
                           np.asarray(features, dtype=np.float64)], axis=1).astype(np.float32)


def classifier_inputs(showers: ShowerSet, kind: str, pool: int | None = None) -> np.ndarray:
    """Build one classifier input (``"low"``, ``"normed"`` or ``"high"``) from showers.

    Args:
        showers: the showers.
        kind: which input.
        pool: transverse pooling of the voxels for ``low``/``normed`` (default
            :func:`pool_factor` of the geometry).
    """
    geometry = showers.geometry
    if kind == "high":
        from caloforge.evaluate.observables import feature_matrix, shower_shapes

        features, _ = feature_matrix(shower_shapes(showers), geometry)
        return high_level_input(features, showers.incident_energy, showers.angle)
    pool = pool_factor(geometry) if pool is None else pool
    voxels = pool_voxels(showers.voxels, geometry, pool)
    if kind == "low":
        return low_level_input(voxels, showers.incident_energy, showers.angle)
    if kind == "normed":
        return normed_input(voxels, pooled_layer_sizes(geometry, pool),
                            showers.incident_energy, showers.angle)
    raise CaloforgeError(f"unknown classifier input {kind!r}; choose from {', '.join(INPUTS)}")


def torch_device(device: str):
    """The torch device for ``"cpu"``/``"cuda"``; a CaloforgeError if CUDA is missing."""
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise CaloforgeError("CUDA was requested but is not available; use --device cpu")
    return torch.device(device)


def _split(n: int, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    cuts = (np.cumsum(fractions)[:-1] * n).astype(int)
    return np.split(order, cuts)


def _bce(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1.0 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def _splits(reference: np.ndarray, generated: np.ndarray, seed: int,
            split: Sequence[float]) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """Train/validation/test sets of both samples cut to the same size, standardised.

    Returns:
        ``([(x, y) for train, validation, test], showers per sample in train)``; ``y`` is
        1 for reference and 0 for generated showers (as the CaloChallenge), ``x`` float32
        standardised with the mean and standard deviation of the training split's
        reference showers (generated outliers must not set the scale).

    Raises:
        CaloforgeError: when a split would hold fewer than 4 showers.
    """
    rng = np.random.default_rng(seed)
    n = min(len(reference), len(generated))
    ref_idx = _split(n, split, rng)
    gen_idx = _split(n, split, rng)
    ref_keep = rng.permutation(len(reference))[:n]
    gen_keep = rng.permutation(len(generated))[:n]
    parts = []
    for i in range(3):
        x = np.concatenate([reference[ref_keep[ref_idx[i]]], generated[gen_keep[gen_idx[i]]]])
        y = np.concatenate([np.ones(len(ref_idx[i])), np.zeros(len(gen_idx[i]))])
        parts.append((x.astype(np.float32, copy=False), y.astype(np.float32)))
    if min(len(y) for _, y in parts) < 4:
        raise CaloforgeError(f"too few showers for the classifier test ({n} per sample)")
    x_reference = parts[0][0][:len(ref_idx[0])]
    mean = x_reference.mean(axis=0, dtype=np.float64)
    std = x_reference.std(axis=0, dtype=np.float64)
    std[std < 1e-8] = 1.0
    for x, _ in parts:
        x -= mean.astype(np.float32)
        x /= std.astype(np.float32)
    return parts, [len(i) for i in ref_idx]


def _network(n_inputs: int, hidden: Sequence[int], dropout: float):
    """Fully connected classifier: LeakyReLU hidden layers with dropout, one logit out."""
    import torch

    layers: list[torch.nn.Module] = []
    width = n_inputs
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.LeakyReLU(), torch.nn.Dropout(dropout)]
        width = h
    layers.append(torch.nn.Linear(width, 1))
    return torch.nn.Sequential(*layers)


def _predict(model, x: np.ndarray, device) -> np.ndarray:
    """Probabilities (sigmoid of the logit) for the rows of ``x``, float64."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for lo in range(0, len(x), 8192):
            chunk = torch.from_numpy(x[lo:lo + 8192]).to(device)
            out.append(torch.sigmoid(model(chunk)).squeeze(1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _fit(model, train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray,
         np.ndarray], device, epochs: int, patience: int, batch: int, lr: float,
         progress: bool, desc: str) -> tuple[int, int]:
    """Train with Adam on the BCE; keep the weights of the lowest validation loss.

    Stops after ``patience`` epochs without improvement or once the validation AUC reaches
    ``_SEPARATED_AUC``. Returns ``(best epoch, epochs run)``; ``model`` holds the best
    weights afterwards.
    """
    import torch
    from sklearn.metrics import roc_auc_score
    from tqdm.auto import tqdm

    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xt = torch.from_numpy(train[0]).to(device)
    yt = torch.from_numpy(train[1]).to(device)
    x_val, y_val = validation
    best_loss, best_epoch, best_state, stale = np.inf, 0, None, 0
    bar = tqdm(range(epochs), desc=desc or "classifier", unit="epoch", leave=False,
               disable=not progress)
    epoch = 0
    for epoch in bar:
        model.train()
        order = torch.randperm(len(yt), device=device)
        for lo in range(0, len(yt), batch):
            idx = order[lo:lo + batch]
            loss = loss_fn(model(xt[idx]).squeeze(1), yt[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        p_val = _predict(model, x_val, device)
        val_loss = _bce(p_val, y_val)
        bar.set_postfix(val_loss=f"{val_loss:.4f}")
        if val_loss < best_loss - 1e-5:
            best_loss, best_epoch, stale = val_loss, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        # Separated samples (the CaloChallenge stops at validation accuracy 1): more
        # epochs would only sharpen the output, not change the verdict.
        separated = roc_auc_score(y_val, p_val) >= _SEPARATED_AUC
        if stale >= patience or separated:
            break
    bar.close()
    model.load_state_dict(best_state)
    return best_epoch, epoch + 1


def _one_run(reference: np.ndarray, generated: np.ndarray, seed: int, device, epochs: int,
             patience: int, batch_size: int, lr: float, hidden: Sequence[int],
             dropout: float, split: Sequence[float], progress: bool, desc: str) -> dict:
    """One classifier run: split, train, calibrate on validation, score on test."""
    import torch
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score

    start = time.perf_counter()
    (train, validation, test), sizes = _splits(reference, generated, seed, split)
    batch = int(min(batch_size, max(64, len(train[1]) // 20)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _network(train[0].shape[1], hidden, dropout).to(device)
        best_epoch, epochs_run = _fit(model, train, validation, device, epochs, patience,
                                      batch, lr, progress, desc)
        p_val, p_test = _predict(model, validation[0], device), _predict(model, test[0], device)
    calibrator = IsotonicRegression(out_of_bounds="clip", y_min=1e-6, y_max=1.0 - 1e-6)
    calibrator.fit(p_val, validation[1])
    p_cal = calibrator.predict(p_test)
    y_test = test[1]
    return {
        "auc": float(roc_auc_score(y_test, p_cal)),
        "jsd": float((np.log(2.0) - _bce(p_cal, y_test)) / np.log(2.0)),
        "auc_uncalibrated": float(roc_auc_score(y_test, p_test)),
        "best_epoch": int(best_epoch),
        "epochs_run": int(epochs_run),
        "n_train": int(sizes[0]),
        "n_validation": int(sizes[1]),
        "n_test": int(sizes[2]),
        "seconds": round(time.perf_counter() - start, 2),
    }


def train_classifier(reference: np.ndarray, generated: np.ndarray, repeat: int = 1,
                     seed: int = 0, device: str = "cpu", epochs: int = 50, patience: int = 5,
                     batch_size: int = 1000, lr: float = 2e-4,
                     hidden: Sequence[int] = (512, 512), dropout: float = 0.2,
                     split: Sequence[float] = (0.6, 0.2, 0.2), progress: bool = False,
                     desc: str = "", threads: int | None = None) -> dict:
    """Train the classifier ``repeat`` times on fresh splits; AUC and JSD on the test split.

    Args:
        reference, generated: ``(N, n_inputs)`` inputs of the two samples (e.g. from
            :func:`classifier_inputs`); the larger one is subsampled to the smaller size.
        repeat: independent runs (new split, new initialisation) for an error bar.
        seed: random seed of the first run; run ``k`` uses ``seed + k``.
        device: ``"cpu"`` or ``"cuda"``.
        epochs: most epochs per run.
        patience: epochs without a better validation loss before stopping.
        batch_size: showers per step (smaller for small samples: 20 steps an epoch at least).
        lr: Adam learning rate.
        hidden: widths of the hidden layers.
        dropout: dropout probability after each hidden layer.
        split: train/validation/test fractions of each sample.
        progress: show a progress bar over epochs.
        desc: label of the progress bar.
        threads: torch CPU threads while training (default: torch's setting). On a machine
            shared with other jobs 1 is often much faster than oversubscribed cores.

    Returns:
        ``{"auc", "auc_error", "jsd", "jsd_error", "auc_uncalibrated",
        "auc_uncalibrated_error", "n_inputs", "runs": [...]}``: ``auc`` after the isotonic
        calibration (its steps create ties, which can lower the AUC), ``auc_uncalibrated``
        of the network's raw output; the errors are the standard deviation over runs
        (``None`` for one run).
    """
    reference = np.asarray(reference, dtype=np.float32)
    generated = np.asarray(generated, dtype=np.float32)
    if reference.ndim != 2 or generated.ndim != 2 or reference.shape[1] != generated.shape[1]:
        raise CaloforgeError(f"classifier inputs must be (N, d) with the same d, got "
                             f"{reference.shape} and {generated.shape}")
    if not (np.all(np.isfinite(reference)) and np.all(np.isfinite(generated))):
        raise CaloforgeError("classifier inputs contain NaN or infinite values")
    if repeat < 1:
        raise CaloforgeError(f"repeat must be at least 1, got {repeat}")
    import torch

    device_ = torch_device(device)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    runs = []
    try:
        for k in range(repeat):
            tag = f"{desc} run {k + 1}/{repeat}" if repeat > 1 else desc
            runs.append(_one_run(reference, generated, seed + k, device_, epochs,
                                 patience, batch_size, lr, hidden, dropout, split, progress,
                                 tag))
    finally:
        torch.set_num_threads(previous_threads)

    def summary(key: str) -> tuple[float, float | None]:
        values = np.array([r[key] for r in runs])
        return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)

    auc, auc_error = summary("auc")
    jsd, jsd_error = summary("jsd")
    raw, raw_error = summary("auc_uncalibrated")
    return {"auc": auc, "auc_error": auc_error, "jsd": jsd, "jsd_error": jsd_error,
            "auc_uncalibrated": raw, "auc_uncalibrated_error": raw_error,
            "n_inputs": int(reference.shape[1]), "runs": runs}


def classifier_test(reference: ShowerSet, generated: ShowerSet,
                    inputs: Sequence[str] = INPUTS, repeat: int = 1, seed: int = 0,
                    device: str = "cpu", epochs: int = 50, threshold: float | None = None,
                    **kwargs) -> dict:
    """The classifier test on two ShowerSets, for each of ``inputs``.

    Both samples are thresholded first, as ``caloforge evaluate`` does: cells below
    ``threshold`` MeV (negative values included) count as empty.

    Args:
        reference, generated: showers of the same geometry.
        inputs: any of ``"low"``, ``"normed"``, ``"high"``.
        repeat, seed, device, epochs, kwargs: as :func:`train_classifier`.
        threshold: readout threshold, MeV per cell (default: the geometry's,
            :func:`caloforge.data.threshold.default_threshold`; 0 keeps every deposit).

    Returns:
        ``{input: result of train_classifier}``.

    Raises:
        CaloforgeError: different geometries, an unknown input or a negative threshold.
    """
    if reference.geometry.name != generated.geometry.name:
        raise CaloforgeError(f"cannot compare showers of geometries {reference.geometry.name!r}"
                             f" and {generated.geometry.name!r}")
    if threshold is None:
        threshold = default_threshold(reference.geometry)
    if threshold > 0:
        reference, generated = (
            dataclasses.replace(s, voxels=apply_threshold(s.voxels, threshold))
            for s in (reference, generated))
    out = {}
    for kind in inputs:
        if kind not in INPUTS:
            raise CaloforgeError(f"unknown classifier input {kind!r}; choose from "
                                 f"{', '.join(INPUTS)}")
        out[kind] = train_classifier(classifier_inputs(reference, kind),
                                     classifier_inputs(generated, kind), repeat=repeat,
                                     seed=seed, device=device, epochs=epochs, desc=kind,
                                     **kwargs)
    return out
