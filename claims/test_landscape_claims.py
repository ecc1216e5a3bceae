"""Claims about trajectories and solutions in weight space.

Low-dimensional trajectories and the absence of linear mode connectivity
between independent solutions come from the original study's drafts. The
aligned variants repeat two statistics after weight matching (Ainsworth,
Hayase and Srinivasa, "Git Re-Basin", ICLR 2023, arXiv:2209.04836). Hidden
units can be permuted without changing the function, so raw weight
comparisons may overstate how different two solutions are.
"""

import pytest


@pytest.mark.claim("pca_top2_variance")
def test_trajectory_top2_pca_explains_most_variance(judge_claim):
    judge_claim()


@pytest.mark.claim("linear_mode_barrier")
def test_solutions_not_linearly_connected(judge_claim):
    judge_claim()


@pytest.mark.claim("aligned_weight_cosine")
def test_aligned_final_weights_nearly_orthogonal(judge_claim):
    judge_claim()


@pytest.mark.claim("aligned_linear_mode_barrier")
def test_aligned_solutions_not_linearly_connected(judge_claim):
    judge_claim()
