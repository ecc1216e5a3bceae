"""Loss and accuracy of a model on a grid over a plane in weight space.

:func:`loss_surface` evaluates a model at the weights
``plane.origin + alphas[i] * plane.d1 + betas[j] * plane.d2`` for every cell
``[i, j]`` of a grid and returns a :class:`Surface` of mean cross-entropy
(nats) and accuracy over a dataset. Axes come from :func:`grid_axis`, which
puts an exact 0.0 on every axis that spans zero, so the cell at (0, 0) is the
plane's origin itself.

Two engines compute the same quantities:

- ``"reference"`` works for any ``nn.Module``. For each grid point it builds
  the weights as a name-to-tensor dict and calls
  ``torch.func.functional_call``, so the caller's model is never written to.
- ``"fast"`` works for ``nn.Sequential`` MLPs of ``nn.Linear`` and ``nn.ReLU``
  layers, as :func:`landscape.model.build_mlp` makes. The first layer's
  pre-activations are affine in the grid coordinates:
  ``x (W + a D1 + b D2)^T = x W^T + a x D1^T + b x D2^T``. The three products
  are computed once for the whole dataset, and each grid point then costs only
  the layers after the first, evaluated for a block of grid points at once
  with batched matrix products (``torch.baddbmm``) over chunks of samples.
  For a 784-128-128-128-10 MLP the first layer accounts for three quarters of
  the multiply-adds, so this removes most of the work. The arithmetic is the
  same in the model's dtype, only grouped differently, so the two engines
  agree to rounding error. For that MLP on 10,000 random samples in float32,
  the loss differed by at most 2.2e-7 relative over a 21 x 21 grid.

Speed on the paper-adam PCA-plane grid (21 x 21 points, the 10,000 MNIST
test images) is measured by the benchmarks in ``benchmarks/``, run with
``scripts/bench.sh``, and ``benchmarks/README.md`` records the results. On a
quiet 2-core AMD EPYC VM with torch 2.14.1, the fast engine took 8.5 ms per
grid point and the reference 36.0 ms with one intra-op thread (4.2 times
faster). With two threads they took 4.7 and 18.7 ms (4.0 times). The ratio
of multiply-adds per sample, 134,400 against 34,048, bounds the speedup at
3.95 when both run their products equally efficiently, and the fast
engine's batched products ran at 74% of that VM's 4096 x 4096 matmul rate.
The fast engine issues many small operations, so it suffers more than the
reference when an intra-op thread waits for a core that another process
keeps busy. With two threads on a VM under such load it was no faster than
the reference.

Example (a 5 x 3 grid, the unperturbed model at cell [2, 1])::

    plane = random_plane(model, seed=0)
    surface = loss_surface(
        model, plane, x, y,
        alphas=grid_axis(-1.0, 1.0, 5), betas=grid_axis(-0.5, 0.5, 3),
    )
    surface.loss.shape        # (5, 3)
    surface.origin_index      # (2, 1)
    save_surface(surface, "surface.npz")
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

import landscape
from landscape.directions import Plane, parameter_list, split_vector
from landscape.train import EVAL_BATCH_SIZE

logger = logging.getLogger(__name__)

ENGINES = ("auto", "fast", "reference")

# Version of the .npz layout written by save_surface.
SURFACE_FORMAT_VERSION = 1

# Minimum time between two progress lines in the log.
PROGRESS_INTERVAL_SECONDS = 5.0

# Fast engine: samples per chunk, and a budget in elements for one block's
# activations (grid points x samples x width) and for one layer's per-point
# weights (grid points x fan-in x fan-out). With width 128 this gives blocks
# of 6 grid points x 512 samples, 1.5 MB of float32 per activation tensor, so
# that it stays in cache between the steps that read it. On a 2-core AMD EPYC
# VM (torch 2.14.1, one thread), chunks of 256 to 2048 samples and blocks of
# 2 to 12 points timed within run-to-run noise of each other.
FAST_SAMPLE_CHUNK = 512
FAST_BLOCK_ELEMENTS = 6 * 512 * 128

# When lo < 0 < hi, grid_axis accepts index positions of 0 within this
# distance of an integer, to allow for rounding in (n - 1) * -lo / (hi - lo).
ZERO_INDEX_TOLERANCE = 1e-9


# --------------------------------------------------------------------------
# Grid axes
# --------------------------------------------------------------------------


def grid_axis(lo: float, hi: float, n: int) -> np.ndarray:
    """Return ``n`` evenly spaced coordinates from ``lo`` to ``hi``, both included.

    The values are those of ``np.linspace(lo, hi, n)`` in float64. When
    ``lo < 0 < hi``, zero must fall on a grid point: ``(n - 1) * -lo / (hi -
    lo)`` must be an integer, for example an odd ``n`` for a symmetric range.
    That point is then set to exactly 0.0, because linspace arithmetic can
    leave a residue (``np.linspace(-0.7, 0.3, 11)[7]`` is 1.1e-16), and the
    surface at 0 must be the unperturbed model. An axis with ``lo == 0`` or ``hi == 0`` starts or ends
    at exactly 0.0; one that does not span 0 has no zero.

    Parameters
    ----------
    lo, hi : float
        First and last coordinate; ``lo < hi``, or ``lo == hi`` when ``n == 1``.
    n : int
        Number of points, at least 1.

    Returns
    -------
    np.ndarray
        float64, shape ``(n,)``, strictly increasing.

    Raises
    ------
    TypeError
        If ``n`` is not an int.
    ValueError
        If a bound is not finite, ``lo >= hi`` (or ``lo != hi`` for
        ``n == 1``), ``n < 1``, or 0 lies strictly between two grid points.
        The message suggests the nearest larger ``n`` that works.

    Examples
    --------
    >>> grid_axis(-1.0, 1.0, 5)
    array([-1. , -0.5,  0. ,  0.5,  1. ])
    >>> float(grid_axis(-0.7, 0.3, 11)[7])
    0.0
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {type(n).__name__} {n!r}")
    lo, hi, n = float(lo), float(hi), int(n)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"lo and hi must be finite, got lo={lo}, hi={hi}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got n={n}")
    if n == 1:
        if lo != hi:
            raise ValueError(
                f"a 1-point axis needs lo == hi, got lo={lo}, hi={hi}; pass n >= 2 "
                "for a range, or lo == hi for a single coordinate"
            )
        return np.array([lo])
    if not lo < hi:
        raise ValueError(f"lo must be less than hi, got lo={lo}, hi={hi}")

    axis = np.linspace(lo, hi, n)
    if lo < 0 < hi:
        position = (n - 1) * -lo / (hi - lo)
        index = round(position)
        if abs(position - index) > ZERO_INDEX_TOLERANCE:
            raise ValueError(
                f"0 lies between grid points of grid_axis({lo}, {hi}, {n}) (at index "
                f"{position:.4g}), so the unperturbed model would not be on the grid; "
                f"{_suggest_n(lo, hi, n)}"
            )
        axis[index] = 0.0
    return axis


def _suggest_n(lo: float, hi: float, n: int, search: int = 10_000) -> str:
    """Describe the smallest n' > n for which grid_axis(lo, hi, n') contains 0."""
    for candidate in range(n + 1, n + search + 1):
        position = (candidate - 1) * -lo / (hi - lo)
        if abs(position - round(position)) <= ZERO_INDEX_TOLERANCE:
            return f"use n={candidate}, or change lo and hi so that 0 falls on a grid point"
    return "make the range symmetric (lo == -hi) and n odd"


def _check_axis(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """Return ``values`` as a validated float64 axis (see :func:`loss_surface`)."""
    try:
        axis = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a 1-D array of numbers: {error}") from error
    if axis.ndim != 1 or axis.size < 1:
        raise ValueError(f"{name} must be 1-D with at least one value, got shape {axis.shape}")
    if not np.all(np.isfinite(axis)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if axis.size > 1 and not np.all(np.diff(axis) > 0):
        raise ValueError(
            f"{name} must be strictly increasing; build it with grid_axis(lo, hi, n)"
        )
    if axis[0] < 0 < axis[-1] and not np.any(axis == 0.0):
        closest = axis[np.argmin(np.abs(axis))]
        raise ValueError(
            f"{name} spans 0 but does not contain 0.0 exactly (closest value "
            f"{closest!r}), so the unperturbed model is not on the grid; build the "
            "axis with grid_axis(lo, hi, n)"
        )
    return axis


# --------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------


@dataclass(eq=False)
class Surface:
    """Loss and accuracy on a grid over a plane.

    Cell ``[i, j]`` contains the values at ``origin + alphas[i] * d1 + betas[j]
    * d2``, so rows follow ``d1`` and columns follow ``d2``. For a
    matplotlib contour plot with ``alphas`` on the x axis, pass
    ``contour(alphas, betas, loss.T)``.

    Attributes
    ----------
    alphas : np.ndarray
        float64, shape ``(n_alpha,)``, strictly increasing.
    betas : np.ndarray
        float64, shape ``(n_beta,)``, strictly increasing.
    loss : np.ndarray
        float64, shape ``(n_alpha, n_beta)``: mean cross-entropy in nats.
    accuracy : np.ndarray
        float64, shape ``(n_alpha, n_beta)``: fraction of samples whose
        largest logit is the label (ties go to the lowest class index).
    metadata : dict
        JSON-serializable: ``engine``, ``dataset``, ``n_samples``, ``model``
        (``class``, ``n_params``, and ``widths`` for an MLP, else None),
        ``plane`` (``kind`` plus the plane's metadata), ``seconds``,
        ``torch`` and ``landscape`` versions.
    """

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.alphas = np.asarray(self.alphas, dtype=np.float64)
        self.betas = np.asarray(self.betas, dtype=np.float64)
        self.loss = np.asarray(self.loss, dtype=np.float64)
        self.accuracy = np.asarray(self.accuracy, dtype=np.float64)
        if self.alphas.ndim != 1 or self.betas.ndim != 1:
            raise ValueError(
                f"alphas and betas must be 1-D, got shapes {self.alphas.shape} and "
                f"{self.betas.shape}"
            )
        expected = (len(self.alphas), len(self.betas))
        for name in ("loss", "accuracy"):
            shape = getattr(self, name).shape
            if shape != expected:
                raise ValueError(
                    f"Surface.{name} has shape {shape}, expected (n_alpha, n_beta) = {expected}"
                )

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.alphas), len(self.betas))

    @property
    def origin_index(self) -> tuple[int, int] | None:
        """Cell ``(i, j)`` at alpha = beta = 0, or None if the grid misses the origin."""
        rows = np.flatnonzero(self.alphas == 0.0)
        columns = np.flatnonzero(self.betas == 0.0)
        if rows.size == 0 or columns.size == 0:
            return None
        return int(rows[0]), int(columns[0])


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


def loss_surface(
    model: nn.Module,
    plane: Plane,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    alphas: Sequence[float] | np.ndarray,
    betas: Sequence[float] | np.ndarray,
    engine: str = "auto",
    batch_size: int = EVAL_BATCH_SIZE,
    dataset_name: str | None = None,
) -> Surface:
    """Evaluate mean cross-entropy and accuracy on a grid over ``plane``.

    The model supplies the architecture and any buffers. Its own weights are
    ignored, because every grid point's weights are
    ``plane.origin + alpha * plane.d1 + beta * plane.d2``, computed in the
    parameters' dtype on their device. The model is not modified, so its
    parameters, buffers, ``requires_grad`` flags and train/eval modes are the
    same afterwards. Neither engine draws random numbers, and the reference
    engine runs the model in eval mode, where PyTorch's own layers draw none.

    Parameters
    ----------
    model : nn.Module
        Maps a batch of ``x`` to logits of shape ``(batch, n_classes)``.
    plane : Plane
        Its vectors must have one entry per parameter of ``model``, in
        ``model.parameters()`` order.
    x : torch.Tensor
        Inputs, shape ``(n_samples, ...)``, in the parameters' dtype and on
        their device. The fast engine needs shape ``(n_samples, in_features)``.
    y : torch.Tensor
        int64 class labels, shape ``(n_samples,)``, on the same device.
    alphas, betas : array-like of float
        Grid coordinates along ``d1`` and ``d2``: 1-D, finite, strictly
        increasing, and containing exactly 0.0 if they span 0. Build them
        with :func:`grid_axis`.
    engine : {"auto", "fast", "reference"}, default="auto"
        ``"auto"`` uses the fast engine when the model is an MLP it supports.
    batch_size : int, default=10000
        Samples per forward pass of the reference engine. With the same
        batch size, the reference value at (0, 0) equals
        :func:`landscape.train.evaluate` of the model at ``plane.origin``.
    dataset_name : str, optional
        Recorded in ``metadata["dataset"]``.

    Returns
    -------
    Surface
        ``loss[i, j]`` and ``accuracy[i, j]`` at ``(alphas[i], betas[j])``,
        shape ``(len(alphas), len(betas))``.

    Raises
    ------
    TypeError
        If ``model``, ``plane``, ``x`` or ``y`` has the wrong type or dtype.
    ValueError
        If shapes, devices, labels, axes, ``engine`` or ``batch_size`` are
        invalid, or ``engine="fast"`` is requested for a model it does not
        support. All checks run before any grid point is evaluated.

    Notes
    -----
    During the reference engine's loop the model is in eval mode, so dropout
    is off and batch-norm layers use their running statistics without
    updating them. Each submodule's mode is restored afterwards, also on error.
    Forward hooks run in the reference engine; the fast engine never calls
    the model and rejects models that have hooks.
    """
    # Validate everything before the first grid point.
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(plane, Plane):
        raise TypeError(f"plane must be a landscape.directions.Plane, got {type(plane).__name__}")
    parameters = parameter_list(model)
    n_params = sum(p.numel() for p in parameters)
    if plane.n_params != n_params:
        raise ValueError(
            f"plane has {plane.n_params} entries per vector but the model has {n_params} "
            "parameters; build the plane from this model's architecture"
        )
    device, dtype = parameters[0].device, parameters[0].dtype
    _check_data(x, y, device, dtype)
    alphas = _check_axis(alphas, "alphas")
    betas = _check_axis(betas, "betas")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")

    layers, reason = mlp_layers(model)
    if engine == "fast" and layers is None:
        raise ValueError(
            f"engine='fast' does not support this model: {reason}; use "
            "engine='reference' or 'auto'"
        )
    chosen = "fast" if engine in ("auto", "fast") and layers is not None else "reference"
    if engine == "auto" and layers is None:
        logger.debug("using the reference engine: %s", reason)
    if chosen == "fast":
        _check_fast_inputs(layers, x, y)
    else:
        _check_reference_output(model, plane, x, y)

    # Evaluate.
    vectors = tuple(_to_tensor(v, parameters[0]) for v in (plane.origin, plane.d1, plane.d2))
    progress = _Progress(len(alphas), len(betas), chosen, len(x))
    if chosen == "fast":
        loss, accuracy = _fast_engine(model, layers, vectors, x, y, alphas, betas, progress)
    else:
        loss, accuracy = _reference_engine(model, vectors, x, y, alphas, betas, batch_size, progress)
    seconds = progress.finish()

    metadata = {
        "engine": chosen,
        "dataset": dataset_name,
        "n_samples": len(x),
        "model": {
            "class": type(model).__name__,
            "n_params": n_params,
            "widths": mlp_widths(model),
        },
        "plane": {"kind": plane.kind, **plane.metadata},
        "seconds": seconds,
        "torch": torch.__version__,
        "landscape": landscape.__version__,
    }
    return Surface(alphas=alphas, betas=betas, loss=loss, accuracy=accuracy, metadata=metadata)


def _check_data(x: torch.Tensor, y: torch.Tensor, device: torch.device, dtype: torch.dtype) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(
            f"x must have shape (n_samples, ...) with n_samples >= 1, got {tuple(x.shape)}"
        )
    if x.dtype != dtype:
        raise TypeError(
            f"x has dtype {x.dtype} but the model's parameters have {dtype}; pass "
            f"x.to({dtype})"
        )
    if y.dtype != torch.int64:
        raise TypeError(f"y must contain int64 class labels, got dtype {y.dtype}; pass y.long()")
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"y must have shape (n_samples,) = ({x.shape[0]},) to match x, got {tuple(y.shape)}"
        )
    if x.device != device or y.device != device:
        raise ValueError(
            f"x is on {x.device} and y on {y.device}, but the model's parameters are on "
            f"{device}; move them with .to({str(device)!r})"
        )
    if int(y.min()) < 0:
        raise ValueError(f"y contains negative labels (minimum {int(y.min())})")


def _check_fast_inputs(layers: list[nn.Linear], x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 2 or x.shape[1] != layers[0].in_features:
        raise ValueError(
            f"x must have shape (n_samples, {layers[0].in_features}) for this MLP, got "
            f"{tuple(x.shape)}; flatten the inputs with x.reshape(len(x), -1)"
        )
    n_classes = layers[-1].out_features
    if int(y.max()) >= n_classes:
        raise ValueError(
            f"y contains label {int(y.max())}, but the model has {n_classes} outputs "
            f"(labels 0 to {n_classes - 1})"
        )


def _check_reference_output(model: nn.Module, plane: Plane, x: torch.Tensor, y: torch.Tensor) -> None:
    """Run one sample through the model at the origin to check the logits' shape."""
    weights = _weights_dict(model, _to_tensor(plane.origin, next(model.parameters())))
    with _eval_mode(model), torch.no_grad():
        logits = functional_call(model, weights, (x[:1],))
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (batch, n_classes), got {shape}")
    n_classes = logits.shape[1]
    if int(y.max()) >= n_classes:
        raise ValueError(
            f"y contains label {int(y.max())}, but the model has {n_classes} outputs "
            f"(labels 0 to {n_classes - 1})"
        )


def _to_tensor(vector: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Copy a (read-only) plane vector to a tensor with the dtype and device of ``like``."""
    return torch.from_numpy(vector.copy()).to(dtype=like.dtype, device=like.device)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode, then restore every submodule's own mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _weights_dict(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a flat vector into a ``{name: tensor}`` dict for ``functional_call``."""
    named = list(model.named_parameters())
    pieces = split_vector(flat, [parameter.shape for _, parameter in named])
    return {name: piece for (name, _), piece in zip(named, pieces)}


def _evaluate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
) -> tuple[float, float]:
    """Return mean cross-entropy (nats) and accuracy, summed as :func:`landscape.train.evaluate` does."""
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(x), batch_size):
        logits = forward(x[start : start + batch_size])
        target = y[start : start + batch_size]
        total_loss += F.cross_entropy(logits, target, reduction="sum").to(torch.float64)
        correct += (logits.argmax(dim=1) == target).sum()
    return total_loss.item() / len(x), correct.item() / len(x)


def _reference_engine(
    model: nn.Module,
    vectors: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    alphas: np.ndarray,
    betas: np.ndarray,
    batch_size: int,
    progress: _Progress,
) -> tuple[np.ndarray, np.ndarray]:
    origin, d1, d2 = vectors
    loss = np.empty((len(alphas), len(betas)))
    accuracy = np.empty((len(alphas), len(betas)))
    with _eval_mode(model), torch.no_grad():
        for i, alpha in enumerate(alphas):
            for j, beta in enumerate(betas):
                # Same expression and dtype as the fast engine's per-point weights.
                point = origin + float(alpha) * d1 + float(beta) * d2
                weights = _weights_dict(model, point)

                def forward(inputs: torch.Tensor) -> torch.Tensor:
                    return functional_call(model, weights, (inputs,))

                loss[i, j], accuracy[i, j] = _evaluate(forward, x, y, batch_size)
            progress.update((i + 1) * len(betas))
    return loss, accuracy


# --------------------------------------------------------------------------
# Fast engine for MLPs
# --------------------------------------------------------------------------


def mlp_layers(model: nn.Module) -> tuple[list[nn.Linear] | None, str]:
    """Return the ``nn.Linear`` layers of an MLP the fast engine supports, or a reason.

    Supported: an ``nn.Sequential`` (without an overridden ``forward``) of
    ``nn.Linear`` layers with an ``nn.ReLU`` between each pair and none at the
    end, with or without biases, no forward hooks, and no parameters other
    than the layers' weights and biases. Subclasses of ``nn.Linear`` are
    rejected because their forward may differ. That includes layers with
    ``torch.nn.utils.parametrize`` parametrizations, which parametrize turns
    into a ``ParametrizedLinear`` subclass.

    NOTE: global hooks registered with
    ``torch.nn.modules.module.register_module_forward_hook`` are not
    detected, and the fast engine does not run them.

    Returns
    -------
    layers : list of nn.Linear or None
        None when the model is not supported.
    reason : str
        Why the model is not supported, or ``""``.
    """
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return None, f"the model is a {type(model).__name__}, not an nn.Sequential"
    children = list(model)
    if not children:
        return None, "the nn.Sequential is empty"
    layers: list[nn.Linear] = []
    for index, child in enumerate(children):
        expected = nn.Linear if index % 2 == 0 else nn.ReLU
        if type(child) is not expected:
            return None, (
                f"layer {index} is {type(child).__name__}, expected {expected.__name__} "
                "(Linear and ReLU must alternate, starting and ending with Linear)"
            )
        if index % 2 == 0:
            layers.append(child)
    if len(children) % 2 == 0:
        return None, "the last layer is ReLU, expected Linear (the fast engine needs logits)"
    # Forward hooks live in private dicts; torch has no public way to list them.
    for index, module in enumerate([model, *children]):
        if module._forward_hooks or module._forward_pre_hooks:
            where = "the nn.Sequential" if index == 0 else f"layer {index - 1}"
            return None, f"{where} has forward hooks, which the fast engine would skip"
    layer_params = sum(p.numel() for layer in layers for p in layer.parameters())
    if layer_params != sum(p.numel() for p in model.parameters()):
        return None, "the model has parameters outside its Linear layers"
    return layers, ""


def mlp_widths(model: nn.Module) -> list[int] | None:
    """Return the layer widths (input first, logits last) of a supported MLP, else None."""
    layers, _ = mlp_layers(model)
    if layers is None:
        return None
    return [layers[0].in_features] + [layer.out_features for layer in layers]


def _layer_spans(model: nn.Module, layers: list[nn.Linear], vectors: tuple[torch.Tensor, ...]) -> list[_LinearSpan]:
    """Cut each layer's weight and bias at the origin and along d1 and d2 out of the flat vectors."""
    offsets = {}
    start = 0
    for parameter in model.parameters():
        offsets[id(parameter)] = slice(start, start + parameter.numel())
        start += parameter.numel()
    spans = []
    for layer in layers:
        shape = (layer.out_features, layer.in_features)
        weight = tuple(v[offsets[id(layer.weight)]].view(shape) for v in vectors)
        bias = None if layer.bias is None else tuple(v[offsets[id(layer.bias)]] for v in vectors)
        spans.append(_LinearSpan(weight, bias))
    return spans


@dataclass(frozen=True)
class _LinearSpan:
    """A linear layer's weight and bias, each as (origin, d1 part, d2 part)."""

    weight: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # each (out, in)
    bias: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # each (out,)

    def at(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the weight ``(G, out, in)`` and bias ``(G, out)`` at G grid points."""
        weight = _point(self.weight, a.view(-1, 1, 1), b.view(-1, 1, 1))
        bias = None if self.bias is None else _point(self.bias, a.view(-1, 1), b.view(-1, 1))
        return weight, bias


def _point(parts: tuple[torch.Tensor, ...], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Same order of operations as the reference engine's origin + a * d1 + b * d2.
    origin, along_d1, along_d2 = parts
    return origin + a * along_d1 + b * along_d2


@torch.no_grad()
def _fast_engine(
    model: nn.Module,
    layers: list[nn.Linear],
    vectors: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    alphas: np.ndarray,
    betas: np.ndarray,
    progress: _Progress,
) -> tuple[np.ndarray, np.ndarray]:
    n_samples = len(x)
    dtype, device = x.dtype, x.device
    spans = _layer_spans(model, layers, vectors)

    # 1. First layer, once for all samples: pre[k] = x @ W_k^T + b_k for the
    #    origin (k = 0) and the d1 and d2 parts (k = 1, 2), through the same
    #    addmm call that nn.Linear makes.
    width = layers[0].out_features
    pre = torch.empty((3, n_samples, width), dtype=dtype, device=device)  # (3, N, H1)
    for k in range(3):
        weight = spans[0].weight[k]
        if spans[0].bias is None:
            torch.mm(x, weight.t(), out=pre[k])
        else:
            torch.addmm(spans[0].bias[k], x, weight.t(), out=pre[k])

    # 2. Grid points in row-major order: point p is cell (p // n_beta, p % n_beta).
    grid_alpha = torch.as_tensor(np.repeat(alphas, len(betas)), dtype=dtype, device=device)
    grid_beta = torch.as_tensor(np.tile(betas, len(alphas)), dtype=dtype, device=device)
    n_points = len(grid_alpha)
    chunk = min(FAST_SAMPLE_CHUNK, n_samples)
    max_width = max(layer.out_features for layer in layers)
    max_weight = max((layer.weight.numel() for layer in layers[1:]), default=1)
    block = max(
        1,
        min(
            n_points,
            FAST_BLOCK_ELEMENTS // (chunk * max_width),
            FAST_BLOCK_ELEMENTS // max_weight,
        ),
    )

    # 3. Blocks of grid points, each over all samples in chunks.
    loss_sum = torch.empty(n_points, dtype=torch.float64, device=device)
    correct = torch.empty(n_points, dtype=torch.int64, device=device)
    for first in range(0, n_points, block):
        last = min(first + block, n_points)
        loss_sum[first:last], correct[first:last] = _fast_block(
            spans[1:], pre, y, grid_alpha[first:last], grid_beta[first:last], chunk
        )
        progress.update(last)

    shape = (len(alphas), len(betas))
    loss = (loss_sum.cpu().numpy() / n_samples).reshape(shape)
    accuracy = (correct.cpu().numpy() / n_samples).reshape(shape)
    return loss, accuracy


def _fast_block(
    later: list[_LinearSpan],
    pre: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return summed cross-entropy and correct counts over all samples at G grid points.

    ``later`` contains the layers after the first, and ``pre`` is the first layer's
    ``(3, N, H1)`` pre-activations at the origin and along d1 and d2.
    """
    G = len(a)
    _, n_samples, width = pre.shape
    coefficients = torch.stack([torch.ones_like(a), a, b], dim=1)  # (G, 3)

    # Per-point weights of the later layers. Hidden layers are stored
    # transposed, (G, in, out), for h @ W^T; the output layer as (G, C, in),
    # so that logits come out as (G, C, chunk) with samples contiguous.
    hidden = []
    for span in later[:-1]:
        weight, bias = span.at(a, b)
        hidden.append((weight.transpose(1, 2).contiguous(), None if bias is None else bias[:, None, :]))
    if later:
        output_weight, output_bias = later[-1].at(a, b)
        output_bias = None if output_bias is None else output_bias[:, :, None]  # (G, C, 1)

    loss_sum = torch.zeros(G, dtype=torch.float64, device=pre.device)
    correct = torch.zeros(G, dtype=torch.int64, device=pre.device)
    for start in range(0, n_samples, chunk):
        c = min(chunk, n_samples - start)

        # First layer at all G points: 1 * pre[0] + a * pre[1] + b * pre[2].
        h = torch.mm(coefficients, pre[:, start : start + c].reshape(3, c * width))
        h = h.view(G, c, width)  # (G, c, H1)
        if not later:
            logits = h.transpose(1, 2)  # (G, C, c)
        else:
            h.relu_()
            for weight, bias in hidden:
                h = torch.bmm(h, weight) if bias is None else torch.baddbmm(bias, h, weight)
                h.relu_()  # (G, c, H)
            h_t = h.transpose(1, 2)  # (G, H, c)
            if output_bias is None:
                logits = torch.bmm(output_weight, h_t)
            else:
                logits = torch.baddbmm(output_bias, output_weight, h_t)  # (G, C, c)

        chunk_loss, chunk_correct = _cross_entropy_sums(logits, y[start : start + c])
        loss_sum += chunk_loss
        correct += chunk_correct
    return loss_sum, correct


@functools.lru_cache(maxsize=None)
def _exp_floor(dtype: torch.dtype, n_classes: int) -> float | None:
    """Return the lower clamp for ``logits - max`` before ``exp``, or None to skip it.

    ``exp`` of an argument below ``log(finfo.tiny)`` returns a subnormal
    number or 0, and PyTorch's vectorized ``exp`` then takes a slow path: on a
    2-core AMD EPYC (Zen 1) VM with torch 2.14.1 it ran 10 to 50 times slower.
    On the paper-adam PCA-plane grid 0.9% of the shifted logits fall there.
    A clamped term grows by less than ``exp(floor)``. The sum it joins is at
    least 1, because the largest logit contributes ``exp(0)``. So the sum
    changes by at most its last bit when ``n_classes * exp(floor)`` is below
    half an ulp of 1. That holds for float32, float64 and bfloat16, not for float16.
    On the paper-adam grid the losses came out bit for bit the same.
    """
    info = torch.finfo(dtype)
    floor = math.ceil(math.log(info.tiny))
    if n_classes * math.exp(floor) >= info.eps / 2:
        return None
    return float(floor)


def _cross_entropy_sums(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return per-point summed cross-entropy (float64) and correct counts, overwriting ``logits``.

    ``logits`` has shape ``(G, C, c)`` and ``target`` shape ``(c,)``. The
    loss is ``max + log(sum(exp(logits - max))) - logits[target]``, the
    stable form that ``F.cross_entropy`` also uses, with ``logits - max``
    clamped from below at :func:`_exp_floor`. ``max`` along classes returns
    the first index among ties, as ``argmax`` does.
    """
    G, n_classes, c = logits.shape
    maximum, predicted = logits.max(dim=1)  # (G, c) each
    target_logit = logits.gather(1, target.view(1, 1, c).expand(G, 1, c)).squeeze(1)  # (G, c)
    shifted = logits.sub_(maximum.unsqueeze(1))
    floor = _exp_floor(logits.dtype, n_classes)
    if floor is not None:
        shifted.clamp_min_(floor)
    log_sum_exp = shifted.exp_().sum(dim=1).log_().add_(maximum)
    loss = (log_sum_exp - target_logit).sum(dim=1, dtype=torch.float64)
    hits = (predicted == target).sum(dim=1)
    return loss, hits


# --------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------


class _Progress:
    """Progress of a grid evaluation, logged through ``logger``.

    A grid that runs longer than PROGRESS_INTERVAL_SECONDS gets INFO lines:
    at most one per interval, each after a completed block of points, and
    one at the end. Shorter grids log their start and end at DEBUG level.
    """

    def __init__(self, n_alpha: int, n_beta: int, engine: str, n_samples: int) -> None:
        self.n_alpha, self.n_beta = n_alpha, n_beta
        self.n_points = n_alpha * n_beta
        self.started = self.last_report = time.perf_counter()
        logger.debug(
            "evaluating a %d x %d grid (%d points) on %d samples with the %s engine",
            n_alpha, n_beta, self.n_points, n_samples, engine,
        )

    def update(self, points_done: int) -> None:
        now = time.perf_counter()
        if now - self.last_report < PROGRESS_INTERVAL_SECONDS or points_done >= self.n_points:
            return
        self.last_report = now
        logger.info(
            "grid rows %d/%d done (%d/%d points, %.0f%%) after %.1f s",
            points_done // self.n_beta, self.n_alpha, points_done, self.n_points,
            100 * points_done / self.n_points, now - self.started,
        )

    def finish(self) -> float:
        seconds = time.perf_counter() - self.started
        level = logging.INFO if seconds >= PROGRESS_INTERVAL_SECONDS else logging.DEBUG
        logger.log(
            level,
            "grid of %d points done in %.1f s (%.1f ms per point)",
            self.n_points, seconds, 1000 * seconds / self.n_points,
        )
        return seconds


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def save_surface(surface: Surface, path: str | os.PathLike) -> Path:
    """Write ``surface`` to ``path`` as ``.npz``, atomically, and return the path.

    The archive contains the arrays ``alphas``, ``betas``, ``loss`` and
    ``accuracy`` and a JSON ``header`` with the format version and
    ``surface.metadata``. The data go to a temporary file beside ``path``,
    which is then renamed over it, so readers never see a half-written file.
    The file is written to exactly ``path``; no suffix is added.

    Raises
    ------
    TypeError
        If the metadata cannot be encoded as JSON.
    """
    path = Path(path)
    header = {"format_version": SURFACE_FORMAT_VERSION, "metadata": surface.metadata}
    try:
        header_text = json.dumps(header)
    except (TypeError, ValueError) as error:
        raise TypeError(f"surface metadata is not JSON-serializable: {error}") from error

    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            np.savez(
                handle,
                header=np.array(header_text),
                alphas=surface.alphas,
                betas=surface.betas,
                loss=surface.loss,
                accuracy=surface.accuracy,
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_surface(path: str | os.PathLike) -> Surface:
    """Read a surface written by :func:`save_surface`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable surface archive, has another format
        version, or its arrays have inconsistent shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no surface file at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(str(archive["header"]))
            arrays = {name: archive[name] for name in ("alphas", "betas", "loss", "accuracy")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{path} is not a surface file written by save_surface: "
            f"{type(error).__name__}: {error}"
        ) from error
    version = header.get("format_version")
    if version != SURFACE_FORMAT_VERSION:
        raise ValueError(
            f"{path} has surface format version {version!r}; this landscape "
            f"{landscape.__version__} reads version {SURFACE_FORMAT_VERSION}"
        )
    try:
        return Surface(**arrays, metadata=header.get("metadata", {}))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
