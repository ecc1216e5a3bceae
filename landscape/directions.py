"""Directions in weight space and the planes they span.

A direction is one flat vector with an entry for every parameter of a model,
in ``model.parameters()`` order, the same order as the rows of
:attr:`landscape.train.Run.snapshots`. :func:`split_vector` and
:func:`join_tensors` convert between a flat vector and per-parameter tensors.

Random directions are Gaussian and filter-normalized as in Li, Xu, Taylor,
Studer and Goldstein, "Visualizing the Loss Landscape of Neural Nets",
NeurIPS 2018, arXiv:1712.09913. A ReLU network computes the same function
when one layer's weights are multiplied by c > 0 and the next layer's divided
by c. An unnormalized direction therefore moves small-norm filters much
further, relative to their size, than large ones, and plots along it are not
comparable between models. Filter normalization gives every filter of the
direction the norm of the matching filter of the model. A filter of a fully
connected layer is one output row of its weight matrix: the weights that feed
one unit.

A :class:`Plane` is an origin and two directions. :func:`random_plane` builds
one from two random directions, :func:`landscape.pca.pca_plane` from the
principal components of a trajectory, and :func:`project` gives the
coordinates of weight vectors in a plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

# |cosine| at or above this makes two directions span a line, not a plane.
MAX_ABS_COSINE = 1.0 - 1e-9

# Seeds become torch generators only through make_generator, which accepts
# exactly the range that torch.Generator.manual_seed accepts for unsigned seeds.
MAX_SEED = 2**64 - 1


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Return a ``torch.Generator`` on ``device`` seeded with ``seed``.

    The same seed gives the same numbers on the same device type. CPU and
    CUDA generators produce different streams.

    Raises
    ------
    TypeError
        If ``seed`` is not an int (``bool`` is rejected too).
    ValueError
        If ``seed`` is outside ``[0, 2**64 - 1]``.
    """
    _check_seed(seed)
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(seed))
    return generator


def _check_seed(seed: int) -> None:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**64 - 1], got {seed}")


def parameter_list(model_or_params: nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Return the parameters of a model, or the given tensors, as a detached list.

    Raises
    ------
    TypeError
        If an element is not a tensor.
    ValueError
        If there are no parameters, or they do not share one device and one
        floating-point dtype.
    """
    if isinstance(model_or_params, nn.Module):
        tensors = list(model_or_params.parameters())
    elif isinstance(model_or_params, torch.Tensor):
        raise TypeError(
            "expected an nn.Module or a list of parameter tensors, got a single "
            "tensor; wrap it in a list"
        )
    else:
        tensors = list(model_or_params)
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"parameter {index} is a {type(tensor).__name__}, expected a torch.Tensor"
            )
    if not tensors:
        raise ValueError("the model has no parameters, so there is no direction to draw")

    devices = sorted({str(t.device) for t in tensors})
    dtypes = sorted({str(t.dtype) for t in tensors})
    if len(devices) > 1 or len(dtypes) > 1:
        raise ValueError(
            f"parameters must share one device and dtype, got devices {devices} and "
            f"dtypes {dtypes}; move the model with model.to(device, dtype) first"
        )
    if not tensors[0].is_floating_point():
        raise ValueError(f"parameters must be floating point, got dtype {dtypes[0]}")
    return [t.detach() for t in tensors]


def split_vector(vector: torch.Tensor, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
    """Split a flat vector into views shaped like ``shapes``, in order.

    Raises
    ------
    ValueError
        If ``vector`` is not 1-D or its length differs from the total size.
    """
    sizes = [math.prod(shape) for shape in shapes]
    if vector.dim() != 1 or vector.numel() != sum(sizes):
        raise ValueError(
            f"vector has shape {tuple(vector.shape)}, expected ({sum(sizes)},) to "
            f"match {len(shapes)} parameters"
        )
    pieces = torch.split(vector, sizes)
    return [piece.view(shape) for piece, shape in zip(pieces, shapes)]


def join_tensors(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat vector, in order (the inverse of :func:`split_vector`)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def filter_normalize(
    direction: torch.Tensor,
    model_or_params: nn.Module | Iterable[torch.Tensor],
    *,
    ignore_1d: bool = False,
) -> torch.Tensor:
    """Return a copy of ``direction`` rescaled filter by filter to the model's norms.

    For a parameter with two or more dimensions, each filter (the slice along
    dimension 0, so one output row of a ``nn.Linear`` weight) is rescaled to
    the Euclidean norm of the same filter in the model. A filter whose model
    norm is zero, or whose direction is zero, becomes zero.

    Parameters with fewer than two dimensions (biases, normalization scales)
    have no filters. With ``ignore_1d=False`` each is rescaled as one vector
    to the norm of the whole parameter. With ``ignore_1d=True`` it is set to
    zero, so the plane never moves it. Li et al. (arXiv:1712.09913) state the
    rule for filters only. The authors' code (``net_plotter.py`` in
    tomgoldstein/loss-landscape) zeroes 1-D directions by default
    (``ignore='biasbn'``) and otherwise replaces them with the parameter
    itself. Rescaling a random vector is our choice.

    Parameters
    ----------
    direction : torch.Tensor
        Flat vector, one entry per parameter, in ``parameters()`` order.
    model_or_params : nn.Module or iterable of torch.Tensor
        The model whose norms the direction takes.
    ignore_1d : bool, default=False
        Set the entries of parameters with fewer than two dimensions to zero.

    Returns
    -------
    torch.Tensor
        A new vector with the device and dtype of ``direction``.
    """
    parameters = parameter_list(model_or_params)
    pieces = split_vector(direction.detach(), [p.shape for p in parameters])
    normalized = []
    for piece, parameter in zip(pieces, parameters):
        if parameter.dim() < 2:
            if ignore_1d:
                normalized.append(torch.zeros_like(piece))
            else:
                normalized.append(_rescale(piece.reshape(1, -1), parameter.reshape(1, -1)))
        else:
            rows = piece.reshape(parameter.shape[0], -1)
            normalized.append(_rescale(rows, parameter.reshape(parameter.shape[0], -1)))
    return join_tensors(normalized)


def _rescale(rows: torch.Tensor, reference_rows: torch.Tensor) -> torch.Tensor:
    """Rescale each row of ``rows`` to the norm of the same row of ``reference_rows``."""
    target = torch.linalg.vector_norm(reference_rows.to(rows.dtype), dim=1)
    current = torch.linalg.vector_norm(rows, dim=1)
    scale = torch.where(current > 0, target / current, torch.zeros_like(current))
    return rows * scale[:, None]


def random_direction(
    model_or_params: nn.Module | Iterable[torch.Tensor],
    *,
    seed: int,
    ignore_1d: bool = False,
) -> torch.Tensor:
    """Draw a Gaussian direction and filter-normalize it to the model.

    The direction is ``torch.randn`` of the total parameter count, drawn from
    a generator seeded with ``seed`` on the parameters' device and in their
    dtype, then passed through :func:`filter_normalize`.

    Parameters
    ----------
    model_or_params : nn.Module or iterable of torch.Tensor
        The parameters, which must share one device and floating dtype.
    seed : int
        Seed in ``[0, 2**64 - 1]``. The same seed, parameter shapes, dtype
        and device type give the same direction.
    ignore_1d : bool, default=False
        Zero the entries of biases and other 1-D parameters instead of
        rescaling them (see :func:`filter_normalize`).

    Returns
    -------
    torch.Tensor
        Flat vector of length ``n_params`` in ``parameters()`` order, on the
        parameters' device and dtype.

    Examples
    --------
    >>> from landscape.model import build_mlp
    >>> model = build_mlp((4, 3, 2), seed=0)
    >>> direction = random_direction(model, seed=1)
    >>> direction.shape, direction.dtype
    (torch.Size([23]), torch.float32)
    >>> rows = direction[:12].view(3, 4)
    >>> torch.allclose(rows.norm(dim=1), model[0].weight.norm(dim=1))
    True
    """
    parameters = parameter_list(model_or_params)
    generator = make_generator(seed, parameters[0].device)
    n_params = sum(p.numel() for p in parameters)
    noise = torch.randn(
        n_params, generator=generator, device=parameters[0].device, dtype=parameters[0].dtype
    )
    return filter_normalize(noise, parameters, ignore_1d=ignore_1d)


def direction_seeds(seed: int) -> tuple[int, int]:
    """Derive the two direction seeds of :func:`random_plane` from one seed.

    ``numpy.random.SeedSequence`` spreads the seed into two unrelated 64-bit
    seeds, so the planes of seeds 0 and 1 share no direction, as they would
    if the second direction simply used ``seed + 1``.
    """
    _check_seed(seed)
    first, second = np.random.SeedSequence(int(seed)).generate_state(2, dtype=np.uint64)
    return int(first), int(second)


@dataclass(frozen=True, eq=False)
class Plane:
    """A 2-D affine slice of weight space: ``origin + alpha * d1 + beta * d2``.

    Attributes
    ----------
    origin, d1, d2 : np.ndarray
        float64, shape ``(n_params,)``, in ``model.parameters()`` order.
        float32 weights convert to float64 exactly, so casting ``origin`` back
        to the model's dtype restores the weights bit for bit. The arrays are
        read-only copies.
    kind : str
        How the plane was built: ``"random"``, ``"pca"`` or ``"joint_pca"``;
        any other string for a plane built by hand.
    metadata : dict
        JSON-serializable facts about the construction, such as seeds or
        explained-variance ratios; each builder documents its keys.

    Raises
    ------
    ValueError
        If the vectors are not 1-D of one length, contain NaN or infinity, or
        ``d1`` and ``d2`` are zero or parallel.
    """

    origin: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    kind: str = "custom"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        vectors = {}
        for name in ("origin", "d1", "d2"):
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                value = value.detach().to(device="cpu", dtype=torch.float64).numpy()
            array = np.array(value, dtype=np.float64, copy=True)
            if array.ndim != 1:
                raise ValueError(f"Plane.{name} must be 1-D, got shape {array.shape}")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"Plane.{name} contains NaN or infinite values")
            array.flags.writeable = False
            vectors[name] = array
        lengths = {name: len(array) for name, array in vectors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"Plane vectors must have one length, got lengths {lengths}")
        for name in ("d1", "d2"):
            if not np.any(vectors[name]):
                raise ValueError(f"Plane.{name} is the zero vector, so it spans no axis")
        for name, array in vectors.items():
            object.__setattr__(self, name, array)
        if abs(self.cosine) >= MAX_ABS_COSINE:
            raise ValueError(
                f"Plane.d1 and Plane.d2 are parallel (cosine {self.cosine:.12f}), so "
                "they span a line, not a plane"
            )

    @property
    def n_params(self) -> int:
        return len(self.origin)

    @property
    def cosine(self) -> float:
        """Cosine similarity between ``d1`` and ``d2`` (0 for orthogonal axes)."""
        return float(
            np.dot(self.d1, self.d2) / (np.linalg.norm(self.d1) * np.linalg.norm(self.d2))
        )

    def point(self, alpha: float, beta: float) -> np.ndarray:
        """Return the weights ``origin + alpha * d1 + beta * d2`` (float64)."""
        return self.origin + alpha * self.d1 + beta * self.d2


def random_plane(model: nn.Module, *, seed: int, ignore_1d: bool = False) -> Plane:
    """Build a plane through the model's weights along two random directions.

    ``d1`` and ``d2`` are :func:`random_direction` draws with the two seeds
    from :func:`direction_seeds`. ``d2`` is then made orthogonal to ``d1``
    (one Gram-Schmidt step, in float64) and rescaled to its norm before that
    step, so both axes keep the filter-normalized scale and plane coordinates
    are Euclidean. Li et al. (arXiv:1712.09913) use the two draws as they are
    and rely on random high-dimensional vectors being nearly orthogonal: for
    ``n_params`` entries the cosine is of order ``1 / sqrt(n_params)``. The
    step changes each row norm of ``d2`` by about that relative amount, so
    ``d2`` is filter-normalized only up to it.

    Parameters
    ----------
    model : nn.Module
        The model whose current weights become the origin.
    seed : int
        Seed in ``[0, 2**64 - 1]``.
    ignore_1d : bool, default=False
        Passed to :func:`random_direction` for both directions.

    Returns
    -------
    Plane
        ``kind="random"``. ``metadata`` has ``seed``, ``direction_seeds``
        (regenerate each raw direction with ``random_direction(model,
        seed=s)``), ``ignore_1d``, ``normalization`` (``"filter"``),
        ``cosine_before_orthogonalization``, ``dtype`` and ``device``.

    Raises
    ------
    ValueError
        If a direction is zero (for example, all weights are zero and
        ``ignore_1d=True``), or the two are parallel.
    """
    parameters = parameter_list(model)
    seeds = direction_seeds(seed)
    d1, d2 = (
        random_direction(parameters, seed=s, ignore_1d=ignore_1d).cpu().to(torch.float64).numpy()
        for s in seeds
    )
    norm1, norm2 = np.linalg.norm(d1), np.linalg.norm(d2)
    if norm1 == 0 or norm2 == 0:
        raise ValueError(
            "a random direction is zero because every parameter it may move has "
            "norm zero; initialize the model or use ignore_1d=False"
        )
    cosine = float(np.dot(d1, d2) / (norm1 * norm2))

    # Gram-Schmidt, then restore the length that filter normalization gave d2.
    d2 = d2 - (np.dot(d2, d1) / np.dot(d1, d1)) * d1
    orthogonal_norm = np.linalg.norm(d2)
    if orthogonal_norm <= 1e-12 * norm2:
        raise ValueError("the two random directions are parallel, so they span no plane")
    d2 *= norm2 / orthogonal_norm

    origin = join_tensors(parameters).cpu().to(torch.float64).numpy()
    return Plane(
        origin=origin,
        d1=d1,
        d2=d2,
        kind="random",
        metadata={
            "seed": int(seed),
            "direction_seeds": list(seeds),
            "ignore_1d": bool(ignore_1d),
            "normalization": "filter",
            "cosine_before_orthogonalization": cosine,
            "dtype": str(parameters[0].dtype).removeprefix("torch."),
            "device": str(parameters[0].device),
        },
    )


def project(trajectory: np.ndarray | torch.Tensor, plane: Plane) -> tuple[np.ndarray, np.ndarray]:
    """Return the plane coordinates of each weight vector and its distance to the plane.

    Coordinates solve the least-squares problem
    ``min ||(w - origin) - [d1 d2] @ (alpha, beta)||`` in float64, so they are
    exact for points in the plane even when ``d1`` and ``d2`` are not
    orthogonal or not unit length: ``plane.point(alpha, beta)`` projects back
    to ``(alpha, beta)`` with residual 0.

    Parameters
    ----------
    trajectory : array or torch.Tensor, shape (n_snapshots, n_params)
        Flattened weights, for example :attr:`landscape.train.Run.snapshots`.
    plane : Plane

    Returns
    -------
    coords : np.ndarray
        float64, shape ``(n_snapshots, 2)``: ``(alpha, beta)`` per snapshot.
    residual_norm : np.ndarray
        float64, shape ``(n_snapshots,)``: Euclidean distance from each
        snapshot to its projection (same units as the weights).

    Raises
    ------
    ValueError
        If the shape does not match the plane, or a row contains NaN or
        infinity (as the rows after a divergence do).
    """
    if isinstance(trajectory, torch.Tensor):
        trajectory = trajectory.detach().cpu().numpy()
    weights = np.asarray(trajectory, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != plane.n_params:
        raise ValueError(
            f"trajectory must have shape (n_snapshots, {plane.n_params}), got "
            f"{weights.shape}; pass a single weight vector as w[None, :]"
        )
    bad_rows = np.flatnonzero(~np.all(np.isfinite(weights), axis=1))
    if bad_rows.size:
        raise ValueError(
            f"trajectory rows {bad_rows.tolist()} contain NaN or infinite values; drop "
            "them first (for a diverged run, use run.snapshots[: run.diverged_epoch + 1])"
        )

    basis = np.stack([plane.d1, plane.d2], axis=1)  # (P, 2)
    offsets = weights - plane.origin  # (T, P)
    coords, *_ = np.linalg.lstsq(basis, offsets.T, rcond=None)  # (2, T)
    coords = coords.T
    residual_norm = np.linalg.norm(offsets - coords @ basis.T, axis=1)
    return coords, residual_norm
