"""The three headline claims of convex-like optimizer behaviour on MNIST MLPs.

Each test is parametrized over the selected experiments (``paper-adam`` and
``paper-sgd`` by default) and passes only when the claim is supported: the
whole 95% bootstrap interval over runs lies on the claimed side of the
threshold.
"""

import pytest


@pytest.mark.claim("grad_norm_correlation")
def test_grad_norm_trajectories_correlate(judge_claim):
    judge_claim()


@pytest.mark.claim("final_weight_cosine")
def test_final_weights_nearly_orthogonal(judge_claim):
    judge_claim()


@pytest.mark.claim("accuracy_variance")
def test_accuracy_variance_small(judge_claim):
    judge_claim()
