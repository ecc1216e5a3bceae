"""The multilayer perceptrons the experiments train."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def build_mlp(widths: Sequence[int], *, seed: int | None = None) -> nn.Sequential:
    """Build a ReLU MLP with PyTorch's default ``nn.Linear`` initialization.

    Parameters
    ----------
    widths : sequence of int
        Layer widths from input to output; ``(784, 128, 10)`` gives one hidden
        layer of 128 units. The output layer has no activation (logits).
    seed : int, optional
        When given, the initialization is drawn from a generator seeded with
        it, without touching the caller's global RNG state. The model is built
        on the CPU so the same seed gives the same weights on every device.
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths {widths} must list at least two positive sizes")

    def build() -> nn.Sequential:
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def count_parameters(widths: Sequence[int]) -> int:
    """Return the number of weights and biases of :func:`build_mlp` ``(widths)``."""
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))


def flatten_parameters(model: nn.Module) -> torch.Tensor:
    """Return all parameters of ``model`` as one detached float32 CPU vector."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(
        device="cpu", dtype=torch.float32
    )
