"""Larger samples (slow): the issue's checks with more statistical power."""

import pytest

from caloforge.evaluate import evaluate_files
from caloforge.simulate import simulate_to_file

pytestmark = pytest.mark.slow

N = 20_000


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_large")
    return {name: simulate_to_file(root / f"{name}.h5", "calogan", particle, N, seed=seed,
                                   progress=False)
            for name, particle, seed in [("eplus_a", "eplus", 31), ("eplus_b", "eplus", 32),
                                         ("gamma", "gamma", 33)]}


def test_two_reference_samples_are_indistinguishable(samples, tmp_path):
    m = evaluate_files(samples["eplus_a"], samples["eplus_b"], tmp_path, plots=False,
                       progress=False, threads=1)
    for kind, result in m["classifier"].items():
        assert result["auc"] <= 0.55, (kind, result["auc"])
    value, error = m["fpd"]
    assert value <= 2 * error
    value, error = m["kpd"]
    assert abs(value) <= 3 * error
    # finite-sample expectation of S: about bins / (2 N) = 50 / 40000
    separation = m["separation_power"]
    assert max(separation.values()) < 0.005
    assert 0.5 < m["nearest_neighbours"]["ratio"] < 2.0


def test_eplus_and_gamma_are_told_apart(samples, tmp_path):
    m = evaluate_files(samples["eplus_a"], samples["gamma"], tmp_path, plots=False,
                       progress=False, threads=1)
    for kind, result in m["classifier"].items():
        print(kind, result["auc"], result["jsd"])
        assert result["auc"] > 0.6, (kind, result["auc"])
    value, error = m["fpd"]
    assert value > 5 * error
