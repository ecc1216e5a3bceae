"""Weight matching: permute one MLP's hidden units to line them up with another's.

Permuting the units of a hidden layer, together with the rows of that layer's
weight and bias and the columns of the next layer's weight, leaves the
function of a ReLU MLP unchanged. Part of the distance in weight space between
two runs from different seeds is therefore only a different order of their
units. Aligning run B to run A before comparing or interpolating their
weights removes that arbitrary order.

Weight matching is the data-free method of Ainsworth, Hayase and Srinivasa,
"Git Re-Basin: Merging Models modulo Permutation Symmetries", ICLR 2023,
arXiv:2209.04836. For an MLP with linear layers ``W_1 ... W_L`` (biases
``b_1 ... b_L``) it looks for one permutation matrix ``P_l`` per hidden layer
that maximizes

    sum_l <W_l^A, P_l W_l^B P_{l-1}^T>_F + <b_l^A, P_l b_l^B>

with ``P_0`` and ``P_L`` the identity, because the inputs and the logits
have a fixed order. The problem is solved by coordinate descent. For one
hidden layer at a time, with the other permutations fixed, the objective is
linear in ``P_l``, so the best ``P_l`` is the solution of a linear
assignment problem (``scipy.optimize.linear_sum_assignment``). One sweep
visits the hidden layers in a random order drawn from ``seed``. The sweeps
repeat until no permutation changes or ``max_iter`` sweeps have run.

Deliberate departure from the authors' JAX code (samuela/git-re-basin,
``src/weight_matching.py``): that code always adopts the assignment solver's
solution and stops once no layer improves the objective by more than 1e-12.
Here a new permutation replaces the current one only when it raises the
objective by more than a bound on the float64 rounding error of the scores
compared. With ties, as between two identical units, the solver may return
another permutation of equal value, and adopting it could make the sweeps
alternate between equivalent permutations. With this rule the sweeps always
stop, and matching an already aligned pair returns identity permutations.

A network is passed as a flat vector in ``model.parameters()`` order of
:func:`landscape.model.build_mlp` ``(widths)``, which is ``W_1, b_1, W_2,
b_2, ...`` with each ``W_l`` of shape ``(widths[l], widths[l - 1])``, as in
the rows of :attr:`landscape.train.Run.snapshots`. :func:`split_layers` and
:func:`join_layers` convert between that vector and a list of ``(W, b)``
pairs. All arithmetic is in float64. Permuting never rounds, so float32
weights come back with the same values.

Example (align run 1 to run 0)::

    aligned = align_to(runs[0].final_weights, runs[1].final_weights, widths)
    perms = weight_matching(runs[0].final_weights, runs[1].final_weights, widths)
    np.array_equal(aligned, apply_permutation(runs[1].final_weights, widths, perms))  # True
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from landscape.model import count_parameters

logger = logging.getLogger(__name__)

# A proposed permutation replaces the current one only when it raises the
# layer's objective by more than ROUNDING_FACTOR * (K + n) * eps * bound. K is
# the number of products in each score, n the number of units, and bound the
# same scores computed from absolute values, summed over the terms of both
# sums compared. To first order that bounds the float64 rounding in the scores
# and in their sums, and the factor 4 adds a margin.
ROUNDING_FACTOR = 4.0

Layers = list[tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------
# Flat vectors and layers
# --------------------------------------------------------------------------


def _check_widths(widths: Sequence[int]) -> list[int]:
    try:
        values = list(widths)
    except TypeError:
        raise TypeError(
            f"widths must be a sequence of ints, got {type(widths).__name__} {widths!r}"
        ) from None
    for value in values:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"widths must contain ints, got {type(value).__name__} {value!r}")
    values = [int(value) for value in values]
    if len(values) < 2 or min(values) < 1:
        raise ValueError(
            f"widths {values} must list at least two positive sizes (input first, "
            "logits last)"
        )
    return values


def _check_flat(flat: np.ndarray, widths: list[int], name: str) -> np.ndarray:
    """Return ``flat`` as a new, validated float64 vector for an MLP of ``widths``."""
    if isinstance(flat, torch.Tensor):
        flat = flat.detach().cpu().numpy()
    try:
        vector = np.array(flat, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a 1-D array of numbers: {error}") from error
    expected = count_parameters(widths)
    if vector.ndim != 1:
        raise ValueError(f"{name} must be a flat 1-D vector, got shape {vector.shape}")
    if len(vector) != expected:
        raise ValueError(
            f"{name} has {len(vector)} entries, but an MLP with widths {widths} has "
            f"{expected} parameters; pass the widths the weights were trained with"
        )
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return vector


def _check_perms(perms: Sequence[np.ndarray], widths: list[int]) -> list[np.ndarray]:
    hidden = widths[1:-1]
    perms = list(perms)
    if len(perms) != len(hidden):
        raise ValueError(
            f"expected {len(hidden)} permutations, one per hidden layer of widths "
            f"{widths}, got {len(perms)}"
        )
    checked = []
    for index, (perm, width) in enumerate(zip(perms, hidden)):
        array = np.asarray(perm)
        if array.shape != (width,) or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"perms[{index}] must be an integer array of shape ({width},), got "
                f"dtype {array.dtype} and shape {array.shape}"
            )
        if not np.array_equal(np.sort(array), np.arange(width)):
            raise ValueError(
                f"perms[{index}] is not a permutation of 0..{width - 1}: "
                f"{array.tolist()}"
            )
        checked.append(array.astype(np.intp))
    return checked


def split_layers(flat: np.ndarray, widths: Sequence[int]) -> Layers:
    """Split a flat MLP weight vector into ``(W, b)`` pairs, one per linear layer.

    Parameters
    ----------
    flat : array-like, shape (n_params,)
        Weights in ``model.parameters()`` order of
        :func:`landscape.model.build_mlp` ``(widths)``.
    widths : sequence of int
        Layer widths from input to logits.

    Returns
    -------
    list of (np.ndarray, np.ndarray)
        float64 copies: ``W`` of shape ``(widths[l + 1], widths[l])`` and ``b``
        of shape ``(widths[l + 1],)`` for ``l = 0 ... len(widths) - 2``.

    Raises
    ------
    ValueError
        If ``widths`` is invalid, or ``flat`` is not 1-D, has the wrong length
        or contains NaN or infinity.
    """
    widths = _check_widths(widths)
    vector = _check_flat(flat, widths, "flat")
    layers = []
    start = 0
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        weight = vector[start : start + fan_in * fan_out].reshape(fan_out, fan_in)
        start += fan_in * fan_out
        bias = vector[start : start + fan_out]
        start += fan_out
        layers.append((weight, bias))
    return layers


def join_layers(layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Concatenate ``(W, b)`` pairs into one flat float64 vector (the inverse of :func:`split_layers`).

    Raises
    ------
    ValueError
        If a weight is not 2-D, a bias does not have one entry per row of its
        weight, or a layer's fan-in differs from the previous layer's fan-out.
    """
    pieces = []
    previous_out = None
    for index, (weight, bias) in enumerate(layers):
        weight = np.asarray(weight, dtype=np.float64)
        bias = np.asarray(bias, dtype=np.float64)
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise ValueError(
                f"layer {index} must be a 2-D weight (out, in) and a bias (out,), got "
                f"shapes {weight.shape} and {bias.shape}"
            )
        if previous_out is not None and weight.shape[1] != previous_out:
            raise ValueError(
                f"layer {index} has fan-in {weight.shape[1]}, but layer {index - 1} has "
                f"{previous_out} outputs"
            )
        previous_out = weight.shape[0]
        pieces += [weight.reshape(-1), bias]
    if not pieces:
        raise ValueError("layers is empty; an MLP has at least one linear layer")
    return np.concatenate(pieces)


# --------------------------------------------------------------------------
# Permutations
# --------------------------------------------------------------------------


def apply_permutation(
    flat: np.ndarray, widths: Sequence[int], perms: Sequence[np.ndarray]
) -> np.ndarray:
    """Permute the hidden units of an MLP without changing the function it computes.

    Unit ``i`` of hidden layer ``l`` in the result is unit ``perms[l][i]`` of
    the input: row ``i`` of ``W_l`` and entry ``i`` of ``b_l`` come from row
    ``perms[l][i]``, and column ``i`` of ``W_{l+1}`` from column
    ``perms[l][i]``. The input and output layers are never permuted.

    Parameters
    ----------
    flat : array-like, shape (n_params,)
        Weights in ``model.parameters()`` order of ``build_mlp(widths)``.
    widths : sequence of int
    perms : sequence of np.ndarray
        One integer permutation of ``range(widths[l + 1])`` per hidden layer,
        ``len(widths) - 2`` in all, as returned by :func:`weight_matching`.

    Returns
    -------
    np.ndarray
        float64, shape ``(n_params,)``: a new array containing the same
        values as ``flat`` in another order.

    Raises
    ------
    ValueError
        If ``flat`` does not fit ``widths``, or ``perms`` has the wrong count,
        a wrong length or is not a permutation.
    """
    widths = _check_widths(widths)
    layers = split_layers(flat, widths)
    perms = _check_perms(perms, widths)
    last = len(layers) - 1
    permuted = []
    for index, (weight, bias) in enumerate(layers):
        rows = perms[index] if index < last else np.arange(weight.shape[0])
        columns = perms[index - 1] if index > 0 else np.arange(weight.shape[1])
        permuted.append((weight[np.ix_(rows, columns)], bias[rows]))
    return join_layers(permuted)


def _unit_similarity(
    reference: Layers, other: Layers, perms: list[np.ndarray], layer: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Return ``S`` with ``S[i, k]`` the match score of reference unit ``i`` and other unit ``k``.

    The score counts the unit's incoming weights and bias and its outgoing
    weights, with ``other``'s neighbouring layers already permuted by
    ``perms``. Then ``sum_i S[i, perm[i]]`` is the part of the objective that
    depends on hidden layer ``layer``. Also returns the same sums over
    absolute values, which bound the rounding error of ``S``, and the number
    of products in each score.
    """
    n_hidden = len(perms)
    weight_a, bias_a = reference[layer]
    weight_b, bias_b = other[layer]
    if layer > 0:
        weight_b = weight_b[:, perms[layer - 1]]
    next_a = reference[layer + 1][0]
    next_b = other[layer + 1][0]
    if layer + 1 < n_hidden:
        next_b = next_b[perms[layer + 1], :]

    similarity = weight_a @ weight_b.T + np.outer(bias_a, bias_b) + next_a.T @ next_b  # (H, H)
    magnitude = (
        np.abs(weight_a) @ np.abs(weight_b).T
        + np.outer(np.abs(bias_a), np.abs(bias_b))
        + np.abs(next_a).T @ np.abs(next_b)
    )  # (H, H)
    n_products = weight_a.shape[1] + 1 + next_a.shape[0]
    return similarity, magnitude, n_products


def weight_matching(
    reference_flat: np.ndarray,
    other_flat: np.ndarray,
    widths: Sequence[int],
    *,
    seed: int = 0,
    max_iter: int = 100,
) -> list[np.ndarray]:
    """Find hidden-unit permutations of ``other_flat`` that best match ``reference_flat``.

    Runs the coordinate descent described in the module docstring, starting
    from identity permutations. Unless ``max_iter`` runs out, the result is a
    fixed point: no single layer's assignment problem has a strictly better
    solution. That is a local optimum of the whole objective, not necessarily
    the global one. With a single hidden layer, one assignment problem solves
    it exactly.

    Warnings
    --------
    Even when ``other_flat`` is an exact permutation of ``reference_flat``,
    the search can stop at a local optimum short of undoing the permutation
    if the layers are tiny. Widths ``(1, 3, 3, 1)`` with Gaussian weights
    show this. In the tests, permuted copies of MLPs with 64 or 784 inputs
    and hidden layers of 32 or 128 units were recovered exactly.

    Parameters
    ----------
    reference_flat, other_flat : array-like, shape (n_params,)
        Weights of two MLPs with the same ``widths``, in
        ``model.parameters()`` order of ``build_mlp(widths)``.
    widths : sequence of int
        Layer widths from input to logits.
    seed : int, default=0
        Seeds ``np.random.default_rng``, which draws the order in which each
        sweep visits the hidden layers.
    max_iter : int, default=100
        Maximum number of sweeps. If the permutations still change in the last
        one, a warning is logged and the current permutations are returned.

    Returns
    -------
    list of np.ndarray
        One integer array per hidden layer, ``len(widths) - 2`` in all. Pass
        them to :func:`apply_permutation` with ``other_flat``.

    Raises
    ------
    TypeError
        If ``seed`` or ``max_iter`` is not an int.
    ValueError
        If a vector does not fit ``widths``, contains NaN or infinity,
        ``seed < 0`` or ``max_iter < 1``.
    """
    widths = _check_widths(widths)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)):
        raise TypeError(f"max_iter must be an int, got {type(max_iter).__name__} {max_iter!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    reference = split_layers(_check_flat(reference_flat, widths, "reference_flat"), widths)
    other = split_layers(_check_flat(other_flat, widths, "other_flat"), widths)
    rng = np.random.default_rng(seed)

    n_hidden = len(widths) - 2
    perms = [np.arange(width) for width in widths[1:-1]]
    for sweep in range(1, max_iter + 1):
        changed = []
        for layer in rng.permutation(n_hidden):
            similarity, magnitude, n_products = _unit_similarity(reference, other, perms, layer)
            rows, columns = linear_sum_assignment(similarity, maximize=True)
            current = similarity[rows, perms[layer]].sum()
            proposed = similarity[rows, columns].sum()
            bound = magnitude[rows, perms[layer]].sum() + magnitude[rows, columns].sum()
            tolerance = ROUNDING_FACTOR * (n_products + len(rows)) * np.finfo(np.float64).eps * bound
            if proposed > current + tolerance:
                perms[layer] = columns
                changed.append(int(layer))
        logger.debug("weight matching sweep %d: changed layers %s", sweep, changed)
        if not changed:
            logger.debug("weight matching converged after %d sweeps", sweep)
            break
    else:
        logger.warning(
            "weight matching did not converge in max_iter=%d sweeps (layers %s still "
            "changed in the last one); returning the current permutations",
            max_iter, changed,
        )
    return perms


def align_to(
    reference_flat: np.ndarray,
    other_flat: np.ndarray,
    widths: Sequence[int],
    *,
    seed: int = 0,
    max_iter: int = 100,
) -> np.ndarray:
    """Return ``other_flat`` with its hidden units permuted to match ``reference_flat``.

    Shorthand for :func:`apply_permutation` of ``other_flat`` with the
    permutations from :func:`weight_matching`; see there for the parameters.

    Returns
    -------
    np.ndarray
        float64, shape ``(n_params,)``. The network it describes computes the
        same function as ``other_flat``.
    """
    perms = weight_matching(reference_flat, other_flat, widths, seed=seed, max_iter=max_iter)
    return apply_permutation(other_flat, widths, perms)
