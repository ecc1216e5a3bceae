"""Fidelity of a 2-D picture of a trajectory that lives in many dimensions.

A projected trajectory is drawn over the loss surface of a plane, but the
real weights are off that plane. For every snapshot this module gives the
loss at the real weights beside the loss at its projection, and the fraction
of the snapshot's displacement from the plane's origin that the plane
captures. When the two losses differ, the contours under the arrows do not
show what the optimizer saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from landscape.directions import Plane, parameter_list, project, split_vector
from landscape.train import EVAL_BATCH_SIZE
from torch.nn import functional as F


@dataclass
class TrajectoryOnPlane:
    """A trajectory projected on a plane, with its fidelity.

    Attributes
    ----------
    label : str
    coords : np.ndarray
        float64, shape ``(n_snapshots, 2)``: ``(alpha, beta)`` of each projection.
    residual_norm : np.ndarray
        float64, shape ``(n_snapshots,)``: distance from each snapshot to the plane.
    real_loss : np.ndarray
        float64, shape ``(n_snapshots,)``: mean cross-entropy (nats) at the
        real weights.
    plane_loss : np.ndarray
        float64, shape ``(n_snapshots,)``: mean cross-entropy (nats) at the
        projected weights, on the same data.
    captured : np.ndarray
        float64, shape ``(n_snapshots,)``: ``1 - residual² / ||w - origin||²``,
        the fraction of the squared displacement from the plane's origin that
        lies in the plane; 1 for a snapshot at the origin.
    """

    label: str
    coords: np.ndarray
    residual_norm: np.ndarray
    real_loss: np.ndarray
    plane_loss: np.ndarray
    captured: np.ndarray

    @property
    def max_loss_gap(self) -> float:
        """Largest ``|plane_loss - real_loss|`` over the snapshots (nats)."""
        return float(np.max(np.abs(self.plane_loss - self.real_loss)))

    @property
    def mean_captured(self) -> float:
        return float(np.mean(self.captured))


@torch.no_grad()
def evaluate_weights(
    model: nn.Module,
    weights: np.ndarray,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = EVAL_BATCH_SIZE,
) -> np.ndarray:
    """Return the mean cross-entropy (nats) of ``model``'s architecture at each weight vector.

    ``weights`` has shape ``(n_points, n_params)`` in ``model.parameters()``
    order. The model itself is not modified.
    """
    parameters = parameter_list(model)
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in parameters]
    device, dtype = parameters[0].device, parameters[0].dtype
    losses = np.empty(len(weights))
    was_training = model.training
    model.eval()
    try:
        for k, flat in enumerate(weights):
            vector = torch.as_tensor(np.asarray(flat), dtype=dtype, device=device)
            state = dict(zip(names, split_vector(vector, shapes)))
            total = torch.zeros((), dtype=torch.float64, device=device)
            for start in range(0, len(x), batch_size):
                logits = functional_call(model, state, (x[start : start + batch_size],))
                total += F.cross_entropy(
                    logits, y[start : start + batch_size], reduction="sum"
                ).to(torch.float64)
            losses[k] = total.item() / len(x)
    finally:
        model.train(was_training)
    return losses


def trajectory_on_plane(
    model: nn.Module,
    plane: Plane,
    snapshots: np.ndarray,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    label: str,
) -> TrajectoryOnPlane:
    """Project ``snapshots`` on ``plane`` and measure the picture's fidelity.

    Parameters
    ----------
    model : nn.Module
        Supplies the architecture; its weights are not used or changed.
    snapshots : np.ndarray, shape (n_snapshots, n_params)
    x, y : torch.Tensor
        The data the surface under the trajectory is computed on.
    """
    coords, residual = project(snapshots, plane)
    projected = (
        plane.origin[None, :]
        + coords[:, :1] * plane.d1[None, :]
        + coords[:, 1:] * plane.d2[None, :]
    )
    displacement = np.linalg.norm(np.asarray(snapshots, np.float64) - plane.origin, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        captured = np.where(displacement > 0, 1.0 - (residual / displacement) ** 2, 1.0)
    return TrajectoryOnPlane(
        label=label,
        coords=coords,
        residual_norm=residual,
        real_loss=evaluate_weights(model, snapshots, x, y),
        plane_loss=evaluate_weights(model, projected, x, y),
        captured=np.clip(captured, 0.0, 1.0),
    )
