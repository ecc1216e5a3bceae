import numpy as np
import pytest

from _helpers import one_torch_thread, tiny_experiment
from landscape.claims import summarize_runs
from landscape.data import load_digits
from landscape.evidence import Evidence
from landscape.geometry import geometry_of
from landscape.planes import comparable, comparisons, experiment_views
from landscape.train import train_run


@pytest.fixture(scope="module")
def two_experiments():
    with one_torch_thread():
        dataset = load_digits()
        adam = tiny_experiment(name="tiny-adam", runs=3, epochs=4)
        sgd = tiny_experiment(name="tiny-sgd", optimizer="sgd", lr=0.1, runs=3, epochs=4)
        evidence = []
        for experiment in (adam, sgd):
            runs = [train_run(experiment, r, dataset) for r in range(experiment.runs)]
            evidence.append(Evidence(experiment, runs, dataset, summarize_runs(runs)))
    return evidence


def test_experiment_views_have_figures_and_fidelity(two_experiments, tmp_path):
    evidence = two_experiments[0]
    evidence.cache_dir = tmp_path
    with one_torch_thread():
        geometry = geometry_of(evidence, tmp_path)
        views = experiment_views(evidence, geometry)

    assert len(views) == 4
    fidelity = views[0].numbers["fidelity"]["tiny-adam run 0"]
    assert 0 <= fidelity["min_captured"] <= fidelity["mean_captured"] <= 1
    assert fidelity["max_loss_gap"] >= 0
    assert len(views[0].numbers["explained_variance_ratio"]) == 2
    assert abs(views[2].numbers["axis_cosine"]) < 1e-6
    assert len(list((tmp_path / "surfaces").glob("*.npz"))) == 2


def test_experiment_views_reuse_cached_surfaces(two_experiments, tmp_path):
    evidence = two_experiments[0]
    evidence.cache_dir = tmp_path
    with one_torch_thread():
        experiment_views(evidence)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "surfaces").glob("*.npz")}

    with one_torch_thread():
        experiment_views(evidence)

    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "surfaces").glob("*.npz")} == stamps


def test_comparison_of_shared_initialization(two_experiments):
    adam, sgd = two_experiments
    adam.cache_dir = sgd.cache_dir = None
    assert comparable(adam, sgd)

    with one_torch_thread():
        found = comparisons([adam, sgd])

    assert len(found) == 1
    numbers = found[0].numbers
    final_adam = adam.runs[0].final_weights.astype(np.float64)
    final_sgd = sgd.runs[0].final_weights.astype(np.float64)
    assert numbers["distance"] == pytest.approx(np.linalg.norm(final_adam - final_sgd))
    assert 0 <= numbers["displacement_angle_degrees"] <= 180
    assert numbers["test_accuracy"]["tiny-sgd"] == sgd.runs[0].final_accuracy
    assert len(found[0].views) == 3


def test_experiments_with_other_seeds_are_not_comparable(two_experiments):
    adam, _ = two_experiments
    shifted = Evidence(
        tiny_experiment(name="other-seeds", seed_base=7, runs=3, epochs=4),
        adam.runs, adam.dataset, adam.summary,
    )
    assert not comparable(adam, shifted)


def test_comparisons_pair_each_experiment_with_the_first_comparable(two_experiments):
    adam, sgd = two_experiments
    adam.cache_dir = sgd.cache_dir = None
    twin = Evidence(
        tiny_experiment(name="tiny-twin", runs=3, epochs=4), sgd.runs, sgd.dataset, sgd.summary,
    )

    with one_torch_thread():
        found = comparisons([adam, sgd, twin])

    assert [(c.first, c.second) for c in found] == [("tiny-adam", "tiny-sgd"), ("tiny-adam", "tiny-twin")]
