import json

import numpy as np
import pytest

from _helpers import one_torch_thread, tiny_experiment
from landscape.claims import evaluate_claim, summarize_runs
from landscape.data import load_digits
from landscape.evidence import Evidence
from landscape.geometry import compute_geometry, geometry_of
from landscape.train import train_run


@pytest.fixture(scope="module")
def runs_and_data():
    with one_torch_thread():
        dataset = load_digits()
        experiment = tiny_experiment(runs=3, epochs=4)
        runs = [train_run(experiment, r, dataset) for r in range(experiment.runs)]
    return experiment, runs, dataset


def make_evidence(runs_and_data, cache_dir=None):
    experiment, runs, dataset = runs_and_data
    return Evidence(experiment, runs, dataset, summarize_runs(runs), cache_dir=cache_dir)


def test_geometry_shapes_and_ranges(runs_and_data):
    with one_torch_thread():
        geometry = compute_geometry(make_evidence(runs_and_data))

    assert len(geometry.pca_top2) == 3
    assert all(0 < value <= 1 for value in geometry.pca_top2)
    assert geometry.pairs == [(0, 1), (1, 2), (2, 0)]
    assert len(geometry.barriers) == 3
    assert all(value >= 0 for value in geometry.barriers)
    assert all(value >= 0 for value in geometry.aligned_barriers)
    assert len(geometry.interpolation_t) == 25
    cosine = np.array(geometry.aligned_cosine)
    assert cosine.shape == (3, 3)
    np.testing.assert_allclose(np.diag(cosine), 1.0, atol=1e-9)


def test_geometry_endpoints_match_final_training_losses(runs_and_data):
    experiment, runs, dataset = runs_and_data
    with one_torch_thread():
        geometry = compute_geometry(make_evidence(runs_and_data))
        curves = geometry.interpolations()

    for (i, j), curve in zip(geometry.pairs, curves):
        assert curve.barrier == pytest.approx(geometry.barriers[geometry.pairs.index((i, j))])
        assert curve.t[0] == 0.0
        assert curve.t[-1] == 1.0


def test_geometry_is_cached_and_reused(runs_and_data, tmp_path):
    with one_torch_thread():
        first = geometry_of(make_evidence(runs_and_data, tmp_path), tmp_path)
    files = list((tmp_path / "geometry").glob("*.json"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns

    with one_torch_thread():
        second = geometry_of(make_evidence(runs_and_data, tmp_path), tmp_path)

    assert files[0].stat().st_mtime_ns == stamp
    assert second == first
    assert not list((tmp_path / "geometry").glob("*.tmp-*"))


def test_geometry_unreadable_cache_is_recomputed(runs_and_data, tmp_path, caplog):
    with one_torch_thread():
        first = geometry_of(make_evidence(runs_and_data, tmp_path), tmp_path)
    path = next((tmp_path / "geometry").glob("*.json"))
    path.write_text("{not json")

    with one_torch_thread():
        again = geometry_of(make_evidence(runs_and_data, tmp_path), tmp_path)

    assert again == first
    assert "unreadable" in caplog.text
    assert json.loads(path.read_text())["barriers"] == first.barriers


def test_landscape_claims_judge_on_evidence(runs_and_data):
    experiment, runs, dataset = runs_and_data
    evidence = make_evidence(runs_and_data)
    with one_torch_thread():
        results = {
            claim: evaluate_claim(claim, experiment.name, runs, evidence=evidence)
            for claim in ("pca_top2_variance", "linear_mode_barrier",
                          "aligned_weight_cosine", "aligned_linear_mode_barrier")
        }

    for claim, result in results.items():
        assert result.verdict in ("supported", "refuted", "inconclusive"), claim
        assert result.low <= result.value <= result.high, claim
    geometry = evidence.derived["geometry"]
    assert results["linear_mode_barrier"].value == pytest.approx(np.mean(geometry.barriers))
    assert results["pca_top2_variance"].value == pytest.approx(np.mean(geometry.pca_top2))


def test_landscape_claim_without_evidence_is_rejected(runs_and_data):
    experiment, runs, dataset = runs_and_data
    with pytest.raises(ValueError, match="pass evidence="):
        evaluate_claim("linear_mode_barrier", experiment.name, runs)
