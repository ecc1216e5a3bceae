"""Loss along the straight line between two solutions, and the loss barrier.

:func:`interpolation_losses` evaluates mean cross-entropy (nats) and accuracy
at ``w(t) = (1 - t) * w_i + t * w_j`` for ``n_points`` evenly spaced ``t``
in [0, 1], both ends included. :func:`loss_barrier` reduces the curve to

    max_t  L(w(t)) - ((1 - t) * L(w_i) + t * L(w_j)),

the largest excess of the loss over the chord between the endpoint losses.
The expression is exactly 0 at both ends, so the barrier is never negative.
It is 0 when the loss along the segment never rises above the chord, for
example when the loss is convex along it. A barrier near 0 means the two
solutions are linearly mode connected. Runs from different seeds can show a
large barrier that shrinks once their hidden units are aligned with
:func:`landscape.rebasin.align_to`.

Two engines compute the same quantities:

- ``"reference"`` works for any ``nn.Module``. For each ``t`` it builds the
  weights as a name-to-tensor dict and calls ``torch.func.functional_call``,
  so the caller's model is never written to.
- ``"fast"`` works for the ``nn.Sequential`` MLPs that
  :func:`landscape.surface.mlp_layers` accepts. The first layer's
  pre-activations are affine in ``t``: ``x W(t)^T + b(t) = (1 - t) (x W_i^T +
  b_i) + t (x W_j^T + b_j)``. Both products are computed once per chunk of
  samples, and the later layers run for all ``t`` at once with batched matrix
  products. The first layer of a 784-128-128-128-10 MLP accounts for three
  quarters of the multiply-adds, so this removes most of the work.

Weights at each ``t`` are interpolated in float64 and then rounded to the
model's dtype, so ``w(0)`` and ``w(1)`` are ``w_i`` and ``w_j`` rounded to
that dtype. For identical float32 endpoints and a float32 model, every
``w(t)`` equals them exactly. The fast engine's first
layer mixes products that were rounded in the model's dtype, so its losses
differ from the reference engine's by rounding error.

:func:`landscape.surface.loss_surface` is not reused here, because its
:class:`~landscape.directions.Plane` rejects a zero ``d1`` (identical
endpoints) and needs a second, non-parallel direction. Its engine also forms
``origin + a * d1`` with ``d1`` rounded to the model's dtype, so the far end
would not be exactly ``w_j``.

Example (barrier between two runs, after aligning the second to the first)::

    widths = experiment.widths
    aligned = align_to(runs[0].final_weights, runs[1].final_weights, widths)
    curve = interpolation_losses(widths, runs[0].final_weights, aligned, x, y)
    curve.t.shape        # (25,)
    curve.barrier        # same as loss_barrier(widths, ..., x, y)
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from landscape.directions import parameter_list, split_vector
from landscape.model import build_mlp
from landscape.surface import mlp_layers
from landscape.train import EVAL_BATCH_SIZE

logger = logging.getLogger(__name__)

ENGINES = ("auto", "fast", "reference")
DEFAULT_N_POINTS = 25

# Fast engine: samples per chunk and interpolation points per block. One
# block's activations are FAST_POINT_BLOCK x FAST_SAMPLE_CHUNK x width values.
# NOTE: these sizes were timed on one machine only, a busy 2-core VM with one
# torch thread. There, 25 points of a 784-128-128-128-10 MLP on 60,000 MNIST
# samples took 9.8 to 12.7 s for chunks of 256 to 2048 samples and blocks of
# 5 to 25 points, within run-to-run noise. Other machines may prefer others.
FAST_SAMPLE_CHUNK = 1024
FAST_POINT_BLOCK = 25


@dataclass(eq=False)
class Interpolation:
    """Loss and accuracy along the segment from ``w_i`` (t = 0) to ``w_j`` (t = 1).

    Attributes
    ----------
    t : np.ndarray
        float64, shape ``(n_points,)``, strictly increasing from exactly 0.0
        to exactly 1.0.
    loss : np.ndarray
        float64, shape ``(n_points,)``: mean cross-entropy in nats at
        ``(1 - t) * w_i + t * w_j``.
    accuracy : np.ndarray
        float64, shape ``(n_points,)``: fraction of samples whose largest
        logit is the label.
    metadata : dict
        ``engine``, ``n_samples``, ``n_params``, ``widths`` (None for a model
        that is not a supported MLP) and ``seconds``.
    """

    t: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.t = np.asarray(self.t, dtype=np.float64)
        self.loss = np.asarray(self.loss, dtype=np.float64)
        self.accuracy = np.asarray(self.accuracy, dtype=np.float64)
        if self.t.ndim != 1 or len(self.t) < 2:
            raise ValueError(f"Interpolation.t must be 1-D with at least 2 points, got shape {self.t.shape}")
        if self.t[0] != 0.0 or self.t[-1] != 1.0 or not np.all(np.diff(self.t) > 0):
            raise ValueError(
                f"Interpolation.t must increase strictly from 0.0 to 1.0, got "
                f"{float(self.t[0])!r} ... {float(self.t[-1])!r}"
            )
        for name in ("loss", "accuracy"):
            shape = getattr(self, name).shape
            if shape != self.t.shape:
                raise ValueError(f"Interpolation.{name} has shape {shape}, expected {self.t.shape} like t")

    @property
    def excess(self) -> np.ndarray:
        """Loss minus the chord ``(1 - t) * loss[0] + t * loss[-1]``, shape ``(n_points,)``."""
        chord = (1.0 - self.t) * self.loss[0] + self.t * self.loss[-1]
        return self.loss - chord

    @property
    def barrier(self) -> float:
        """Maximum of :attr:`excess`: the loss barrier in nats, never negative."""
        return float(np.max(self.excess))

    @property
    def barrier_t(self) -> float:
        """The ``t`` at which :attr:`excess` is largest (the first one among ties)."""
        return float(self.t[int(np.argmax(self.excess))])


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


def interpolation_losses(
    architecture: nn.Module | Sequence[int],
    w_i: np.ndarray | torch.Tensor,
    w_j: np.ndarray | torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_points: int = DEFAULT_N_POINTS,
    engine: str = "auto",
    batch_size: int = EVAL_BATCH_SIZE,
) -> Interpolation:
    """Evaluate loss and accuracy at ``(1 - t) * w_i + t * w_j`` for evenly spaced ``t``.

    Parameters
    ----------
    architecture : nn.Module or sequence of int
        The model whose parameters ``w_i`` and ``w_j`` fill, or the widths of
        a :func:`landscape.model.build_mlp` MLP. A module is never modified
        and its own weights are ignored. Evaluation runs in its parameters'
        dtype and on their device. With widths, it runs in ``x``'s dtype and
        on ``x``'s device.
    w_i, w_j : array-like or torch.Tensor, shape (n_params,)
        Flat weights in ``model.parameters()`` order, for example
        :attr:`landscape.train.Run.final_weights`.
    x : torch.Tensor
        Inputs, shape ``(n_samples, n_features)`` (any ``(n_samples, ...)``
        for the reference engine), floating point.
    y : torch.Tensor
        int64 class labels, shape ``(n_samples,)``, on ``x``'s device.
    n_points : int, default=25
        Number of values of ``t``, ``np.linspace(0, 1, n_points)``, both ends
        included; at least 2.
    engine : {"auto", "fast", "reference"}, default="auto"
        ``"auto"`` uses the fast engine when the model is a supported MLP.
    batch_size : int, default=10000
        Samples per forward pass of the reference engine. With the same
        batch size, its values at ``t = 0`` and ``t = 1`` equal
        :func:`landscape.train.evaluate` of the model at ``w_i`` and ``w_j``.

    Returns
    -------
    Interpolation
        ``loss[k]`` and ``accuracy[k]`` at ``t[k]``; :attr:`Interpolation.barrier`
        is the loss barrier.

    Raises
    ------
    TypeError
        If an argument has the wrong type or dtype.
    ValueError
        If ``w_i`` and ``w_j`` differ in length or do not fit the model,
        contain NaN or infinity, ``x`` and ``y`` do not fit the model or each
        other, ``n_points < 2``, or ``engine`` or ``batch_size`` is invalid.
        All checks run before the first evaluation.

    Notes
    -----
    During the reference engine's loop the model is in eval mode, and each
    submodule's own mode is restored afterwards, also on error.
    """
    model = _resolve_model(architecture, x)
    parameters = parameter_list(model)
    n_params = sum(p.numel() for p in parameters)
    dtype, device = parameters[0].dtype, parameters[0].device
    start, end = _check_endpoints(w_i, w_j, n_params)
    _check_data(x, y, dtype, device)
    if isinstance(n_points, (bool, np.bool_)) or not isinstance(n_points, (int, np.integer)):
        raise TypeError(f"n_points must be an int, got {type(n_points).__name__} {n_points!r}")
    if n_points < 2:
        raise ValueError(
            f"n_points must be at least 2 so that both endpoints are evaluated, got {n_points}"
        )
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")

    layers, reason = mlp_layers(model)
    if engine == "fast" and layers is None:
        raise ValueError(
            f"engine='fast' does not support this model: {reason}; use engine='reference' "
            "or 'auto'"
        )
    chosen = "fast" if layers is not None and engine != "reference" else "reference"
    _check_labels(model, layers, start, x, y)

    t = np.linspace(0.0, 1.0, int(n_points))
    started = time.perf_counter()
    if chosen == "fast":
        loss, accuracy = _fast_engine(model, layers, start, end, x, y, t)
    else:
        loss, accuracy = _reference_engine(model, start, end, x, y, t, batch_size)
    seconds = time.perf_counter() - started
    logger.debug(
        "interpolated %d points on %d samples with the %s engine in %.2f s",
        len(t), len(x), chosen, seconds,
    )

    widths = None
    if layers is not None:
        widths = [layers[0].in_features] + [layer.out_features for layer in layers]
    metadata = {
        "engine": chosen,
        "n_samples": len(x),
        "n_params": n_params,
        "widths": widths,
        "seconds": seconds,
    }
    return Interpolation(t=t, loss=loss, accuracy=accuracy, metadata=metadata)


def loss_barrier(
    architecture: nn.Module | Sequence[int],
    w_i: np.ndarray | torch.Tensor,
    w_j: np.ndarray | torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_points: int = DEFAULT_N_POINTS,
    engine: str = "auto",
    batch_size: int = EVAL_BATCH_SIZE,
) -> float:
    """Return the loss barrier in nats between ``w_i`` and ``w_j``.

    That is ``max_t L(t) - ((1 - t) L(0) + t L(1))`` over the ``n_points``
    values of ``t`` of :func:`interpolation_losses`, which documents the
    parameters. The result is never negative, and a peak between two grid
    values of ``t`` is missed.
    """
    curve = interpolation_losses(
        architecture, w_i, w_j, x, y, n_points=n_points, engine=engine, batch_size=batch_size
    )
    return curve.barrier


def pairs_for_barrier(n_runs: int, n_pairs: int = 8) -> list[tuple[int, int]]:
    """Return ``n_pairs`` distinct pairs of run indices, chosen deterministically.

    Pairs go around the ring of runs at offset 1 first: ``(0, 1), (1, 2), ...,
    (n_runs - 1, 0)``, so with ``n_pairs == n_runs`` every run appears in
    exactly two pairs. Further pairs come from offset 2, then 3, and so on.
    A pair whose two runs already form an earlier pair in the other order is
    skipped. In a pair ``(i, j)``, run ``j`` is the one to align to run ``i``.

    Parameters
    ----------
    n_runs : int
        Number of runs, at least 2.
    n_pairs : int, default=8
        Number of pairs, from 1 to ``n_runs * (n_runs - 1) // 2``.

    Returns
    -------
    list of (int, int)

    Raises
    ------
    TypeError
        If an argument is not an int.
    ValueError
        If ``n_runs < 2`` or ``n_pairs`` is outside its range.

    Examples
    --------
    >>> pairs_for_barrier(4, 4)
    [(0, 1), (1, 2), (2, 3), (3, 0)]
    >>> pairs_for_barrier(4, 6)
    [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (1, 3)]
    """
    for name, value in (("n_runs", n_runs), ("n_pairs", n_pairs)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if n_runs < 2:
        raise ValueError(f"n_runs must be at least 2 to form a pair, got {n_runs}")
    available = n_runs * (n_runs - 1) // 2
    if not 1 <= n_pairs <= available:
        raise ValueError(
            f"n_pairs must be between 1 and {available} (the number of distinct pairs "
            f"of {n_runs} runs), got {n_pairs}"
        )

    pairs: list[tuple[int, int]] = []
    seen: set[frozenset[int]] = set()
    for offset in range(1, n_runs):
        for first in range(n_runs):
            pair = (first, (first + offset) % n_runs)
            if frozenset(pair) in seen:
                continue
            seen.add(frozenset(pair))
            pairs.append(pair)
            if len(pairs) == n_pairs:
                return pairs
    raise AssertionError("unreachable: the ring offsets cover every pair")


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------


def _resolve_model(architecture: nn.Module | Sequence[int], x: torch.Tensor) -> nn.Module:
    """Return the module to evaluate; widths become an MLP in ``x``'s dtype and device."""
    if isinstance(architecture, nn.Module):
        return architecture
    if isinstance(architecture, (str, bytes, torch.Tensor)) or not isinstance(architecture, Sequence):
        raise TypeError(
            "architecture must be an nn.Module or a sequence of layer widths, got "
            f"{type(architecture).__name__}"
        )
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor")
    # The seed keeps the initialization off the global RNG. Its values never
    # matter, because the interpolated weights replace every parameter.
    return build_mlp(architecture, seed=0).to(dtype=x.dtype, device=x.device)


def _as_float64(vector: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(vector, torch.Tensor):
        vector = vector.detach().cpu().numpy()
    try:
        array = np.array(vector, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a 1-D array of numbers: {error}") from error
    if array.ndim != 1:
        raise ValueError(f"{name} must be a flat 1-D vector, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _check_endpoints(w_i, w_j, n_params: int) -> tuple[np.ndarray, np.ndarray]:
    start = _as_float64(w_i, "w_i")
    end = _as_float64(w_j, "w_j")
    if len(start) != len(end):
        raise ValueError(
            f"w_i and w_j must have the same length, got {len(start)} and {len(end)}"
        )
    if len(start) != n_params:
        raise ValueError(
            f"w_i and w_j have {len(start)} entries, but the model has {n_params} "
            "parameters; pass the architecture the weights were trained with"
        )
    return start, end


def _check_data(x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (n_samples, ...) with n_samples >= 1, got {tuple(x.shape)}")
    if x.dtype != dtype:
        raise TypeError(f"x has dtype {x.dtype} but the model's parameters have {dtype}; pass x.to({dtype})")
    if y.dtype != torch.int64:
        raise TypeError(f"y must contain int64 class labels, got dtype {y.dtype}; pass y.long()")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
    if x.device != device or y.device != device:
        raise ValueError(
            f"x is on {x.device} and y on {y.device}, but the model's parameters are on "
            f"{device}; move them with .to({str(device)!r})"
        )
    if int(y.min()) < 0:
        raise ValueError(f"y contains negative labels (minimum {int(y.min())})")


def _check_labels(
    model: nn.Module, layers: list[nn.Linear] | None, start: np.ndarray, x: torch.Tensor, y: torch.Tensor
) -> None:
    """Check that the labels fit the model's outputs and, for an MLP, that x fits its input."""
    if layers is not None:
        if x.dim() != 2 or x.shape[1] != layers[0].in_features:
            raise ValueError(
                f"x must have shape (n_samples, {layers[0].in_features}) for this MLP, got "
                f"{tuple(x.shape)}; flatten the inputs with x.reshape(len(x), -1)"
            )
        n_classes = layers[-1].out_features
    else:
        with _eval_mode(model), torch.no_grad():
            logits = functional_call(model, _weights_dict(model, start), (x[:1],))
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"the model must return logits of shape (batch, n_classes), got {shape}")
        n_classes = logits.shape[1]
    if int(y.max()) >= n_classes:
        raise ValueError(
            f"y contains label {int(y.max())}, but the model has {n_classes} outputs "
            f"(labels 0 to {n_classes - 1})"
        )


# --------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------


def _weights_dict(model: nn.Module, flat: np.ndarray) -> dict[str, torch.Tensor]:
    named = list(model.named_parameters())
    tensor = torch.from_numpy(flat).to(dtype=named[0][1].dtype, device=named[0][1].device)
    pieces = split_vector(tensor, [parameter.shape for _, parameter in named])
    return {name: piece for (name, _), piece in zip(named, pieces)}


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


def _reference_engine(
    model: nn.Module,
    start: np.ndarray,
    end: np.ndarray,
    x: torch.Tensor,
    y: torch.Tensor,
    t: np.ndarray,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    loss = np.empty(len(t))
    accuracy = np.empty(len(t))
    with _eval_mode(model), torch.no_grad():
        for k, value in enumerate(t):
            weights = _weights_dict(model, (1.0 - value) * start + value * end)
            total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
            correct = torch.zeros((), dtype=torch.int64, device=x.device)
            # Summed as landscape.train.evaluate sums, so the endpoints match it.
            for first in range(0, len(x), batch_size):
                logits = functional_call(model, weights, (x[first : first + batch_size],))
                target = y[first : first + batch_size]
                total_loss += F.cross_entropy(logits, target, reduction="sum").to(torch.float64)
                correct += (logits.argmax(dim=1) == target).sum()
            loss[k] = total_loss.item() / len(x)
            accuracy[k] = correct.item() / len(x)
    return loss, accuracy


def _layer_slices(model: nn.Module, layers: list[nn.Linear]) -> list[tuple[slice, slice | None]]:
    """Return, per linear layer, where its weight and bias sit in the flat vector."""
    offsets = {}
    position = 0
    for parameter in model.parameters():
        offsets[id(parameter)] = slice(position, position + parameter.numel())
        position += parameter.numel()
    return [
        (offsets[id(layer.weight)], None if layer.bias is None else offsets[id(layer.bias)])
        for layer in layers
    ]


def _fast_engine(
    model: nn.Module,
    layers: list[nn.Linear],
    start: np.ndarray,
    end: np.ndarray,
    x: torch.Tensor,
    y: torch.Tensor,
    t: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    dtype, device = x.dtype, x.device
    slices = _layer_slices(model, layers)

    def cut(vector: np.ndarray, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight_slice, bias_slice = slices[index]
        shape = (layers[index].out_features, layers[index].in_features)
        weight = torch.from_numpy(vector[weight_slice].reshape(shape))
        bias = None if bias_slice is None else torch.from_numpy(vector[bias_slice])
        to = dict(dtype=dtype, device=device)
        return weight.to(**to), None if bias is None else bias.to(**to)

    # 1. First layer at both endpoints, and the mixing coefficients (1 - t, t).
    first_i, first_j = cut(start, 0), cut(end, 0)
    mixing = torch.from_numpy(np.stack([1.0 - t, t], axis=1)).to(dtype=dtype, device=device)  # (T, 2)

    # 2. Later layers at every t, interpolated in float64. Hidden weights are
    #    stored transposed, (T, in, out), for h @ W^T.
    later = []
    for index in range(1, len(layers)):
        weight_slice, bias_slice = slices[index]
        shape = (layers[index].out_features, layers[index].in_features)
        weight = np.stack([((1.0 - s) * start[weight_slice] + s * end[weight_slice]).reshape(shape) for s in t])
        weight_t = torch.from_numpy(weight).to(dtype=dtype, device=device).transpose(1, 2).contiguous()
        bias = None
        if bias_slice is not None:
            stacked = np.stack([(1.0 - s) * start[bias_slice] + s * end[bias_slice] for s in t])
            bias = torch.from_numpy(stacked).to(dtype=dtype, device=device)[:, None, :]  # (T, 1, out)
        later.append((weight_t, bias))

    # 3. Chunks of samples, and within each chunk, blocks of t values.
    loss_sum = torch.zeros(len(t), dtype=torch.float64, device=device)
    correct = torch.zeros(len(t), dtype=torch.int64, device=device)
    with torch.no_grad():
        for first in range(0, len(x), FAST_SAMPLE_CHUNK):
            inputs = x[first : first + FAST_SAMPLE_CHUNK]
            target = y[first : first + FAST_SAMPLE_CHUNK]
            pre = torch.stack([F.linear(inputs, *first_i), F.linear(inputs, *first_j)])  # (2, c, H1)
            c, width = pre.shape[1], pre.shape[2]
            for low in range(0, len(t), FAST_POINT_BLOCK):
                high = min(low + FAST_POINT_BLOCK, len(t))
                block = slice(low, high)
                h = torch.mm(mixing[block], pre.view(2, c * width)).view(high - low, c, width)  # (G, c, H1)
                for weight_t, bias in later:
                    h.relu_()
                    if bias is None:
                        h = torch.bmm(h, weight_t[block])
                    else:
                        h = torch.baddbmm(bias[block], h, weight_t[block])  # (G, c, out)
                logits = h  # (G, c, C)
                n_classes = logits.shape[2]
                per_sample = F.cross_entropy(
                    logits.reshape(-1, n_classes), target.repeat(high - low), reduction="none"
                )
                loss_sum[block] += per_sample.view(high - low, c).sum(dim=1, dtype=torch.float64)
                correct[block] += (logits.argmax(dim=2) == target).sum(dim=1)

    n_samples = len(x)
    return loss_sum.cpu().numpy() / n_samples, correct.cpu().numpy() / n_samples
