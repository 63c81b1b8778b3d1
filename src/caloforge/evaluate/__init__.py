"""Evaluation: shower-shape observables, separation power, classifier test, FPD/KPD,
nearest neighbours, plots and the HTML report.

Plain functions on arrays and ShowerSets; :func:`evaluate_files` composes them for two
files (what ``caloforge evaluate`` runs). torch and matplotlib are imported only by the
functions that need them.
"""

from caloforge.evaluate.classifier import (
    INPUTS,
    classifier_inputs,
    classifier_test,
    train_classifier,
)
from caloforge.evaluate.metrics import (
    common_bins,
    fpd,
    frechet_distance,
    histogram_separation_power,
    kpd,
    min_showers_for_distances,
    mmd_polynomial,
    separation_power,
)
from caloforge.evaluate.neighbours import NeighbourSearch, memorisation_ratio, nearest_neighbours
from caloforge.evaluate.observables import (
    Observable,
    cell_energy_histogram,
    feature_matrix,
    observables,
    response_profile,
    shower_shapes,
)
from caloforge.evaluate.pipeline import EvaluationConfig, evaluate_files

__all__ = [
    "INPUTS",
    "Observable",
    "observables",
    "shower_shapes",
    "feature_matrix",
    "cell_energy_histogram",
    "response_profile",
    "common_bins",
    "separation_power",
    "histogram_separation_power",
    "frechet_distance",
    "fpd",
    "kpd",
    "mmd_polynomial",
    "min_showers_for_distances",
    "classifier_inputs",
    "train_classifier",
    "classifier_test",
    "NeighbourSearch",
    "nearest_neighbours",
    "memorisation_ratio",
    "evaluate_files",
    "EvaluationConfig",
]
