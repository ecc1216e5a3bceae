import numpy as np
import pytest

from _helpers import one_torch_thread, tiny_experiment
from landscape.data import load_digits
from landscape.directions import Plane
from landscape.fidelity import evaluate_weights, trajectory_on_plane
from landscape.model import build_mlp
from landscape.pca import pca_plane
from landscape.train import train_run


@pytest.fixture(scope="module")
def trained():
    with one_torch_thread():
        dataset = load_digits()
        experiment = tiny_experiment(epochs=5)
        yield experiment, dataset, train_run(experiment, 0, dataset)


def test_evaluate_weights_matches_recorded_test_loss(trained):
    experiment, dataset, run = trained
    model = build_mlp(experiment.widths)

    with one_torch_thread():
        losses = evaluate_weights(model, run.snapshots, dataset.x_test, dataset.y_test)

    np.testing.assert_allclose(losses, run.test_loss, rtol=1e-6)


def test_evaluate_weights_leaves_model_unchanged(trained):
    experiment, dataset, run = trained
    model = build_mlp(experiment.widths, seed=5)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]

    with one_torch_thread():
        evaluate_weights(model, run.snapshots[:2], dataset.x_test, dataset.y_test)

    assert model.training
    for old, new in zip(before, model.parameters()):
        assert (old == new).all()


def test_in_plane_trajectory_has_full_fidelity(trained):
    experiment, dataset, run = trained
    rng = np.random.default_rng(0)
    origin = run.final_weights.astype(np.float64)
    plane = Plane(origin, rng.normal(size=origin.size), rng.normal(size=origin.size))
    coords = rng.normal(size=(4, 2)) * 0.01
    snapshots = np.stack([plane.point(a, b) for a, b in coords]).astype(np.float32)

    with one_torch_thread():
        result = trajectory_on_plane(build_mlp(experiment.widths), plane, snapshots,
                                     dataset.x_test, dataset.y_test, label="in plane")

    np.testing.assert_allclose(result.coords, coords, atol=1e-5)
    np.testing.assert_allclose(result.captured, 1.0, atol=1e-4)
    np.testing.assert_allclose(result.plane_loss, result.real_loss, rtol=1e-4)
    assert result.max_loss_gap < 1e-4


def test_pca_trajectory_fidelity_is_partial_and_consistent(trained):
    experiment, dataset, run = trained
    plane = pca_plane(run.snapshots)

    with one_torch_thread():
        result = trajectory_on_plane(build_mlp(experiment.widths), plane, run.snapshots,
                                     dataset.x_test, dataset.y_test, label="run 0")

    assert result.coords.shape == (len(run.snapshots), 2)
    assert np.all((result.captured >= 0) & (result.captured <= 1))
    # The final snapshot is the plane's origin, so it is captured exactly.
    assert result.captured[-1] == 1.0
    assert result.plane_loss[-1] == pytest.approx(result.real_loss[-1], rel=1e-6)
    np.testing.assert_allclose(result.real_loss, run.test_loss, rtol=1e-6)
    # With 6 snapshots and 2 components, some displacement is off the plane.
    assert result.mean_captured < 1.0
