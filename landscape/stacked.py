"""Several MLPs of one architecture, stored and evaluated as one stack.

The runs of an experiment share every shape, so their parameters can be
stacked along a leading run axis: layer ``l`` of K runs is one ``(K, out,
in)`` weight tensor and one ``(K, out)`` bias tensor. A forward pass is then
one batched matrix product per layer (``torch.baddbmm``) for all runs,
instead of one small product per run, and an elementwise optimizer (Adam,
SGD with or without momentum) over the stacked tensors updates every run
exactly as it would update that run alone, because it never mixes entries.

The runs stay independent: each one's output depends on its own parameters
and inputs only, and the gradient of the sum of the runs' losses with respect
to run k's parameters is the gradient of run k's loss.

Example::

    >>> import torch
    >>> stack = StackedMLP.from_seeds((4, 3, 2), seeds=[1, 2])
    >>> stack.forward(torch.zeros(2, 5, 4)).shape
    torch.Size([2, 5, 2])
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from landscape.model import build_mlp, count_parameters


class StackedMLP:
    """K ReLU MLPs of the same widths with parameters stacked along axis 0.

    Run k's network is the one :func:`landscape.model.build_mlp` builds, with
    weights ``weights[l][k]`` and biases ``biases[l][k]``.

    Parameters
    ----------
    weights : sequence of torch.Tensor
        One ``(K, out, in)`` tensor per layer, from input to output.
    biases : sequence of torch.Tensor
        One ``(K, out)`` tensor per layer.

    Raises
    ------
    ValueError
        If the shapes do not chain from layer to layer or disagree on K, or
        the tensors are on different devices or of different dtypes.
    """

    def __init__(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> None:
        weights, biases = list(weights), list(biases)
        if not weights or len(weights) != len(biases):
            raise ValueError(
                f"need one bias per weight and at least one layer, got {len(weights)} "
                f"weights and {len(biases)} biases"
            )
        n_runs = weights[0].shape[0]
        for index, (weight, bias) in enumerate(zip(weights, biases)):
            if weight.ndim != 3 or bias.shape != (n_runs, weight.shape[1]) or weight.shape[0] != n_runs:
                raise ValueError(
                    f"layer {index}: weight {tuple(weight.shape)} and bias {tuple(bias.shape)} "
                    f"must be (K, out, in) and (K, out) with K = {n_runs}"
                )
            if index and weight.shape[2] != weights[index - 1].shape[1]:
                raise ValueError(
                    f"layer {index} takes {weight.shape[2]} inputs but layer {index - 1} "
                    f"gives {weights[index - 1].shape[1]} outputs"
                )
        tensors = weights + biases
        if len({(t.device, t.dtype) for t in tensors}) != 1:
            raise ValueError("all weights and biases must share one device and one dtype")
        self.weights = weights
        self.biases = biases
        # Flat buffers reused by loss_and_gradients from step to step.
        self._scratch: dict[str, torch.Tensor] = {}

    @classmethod
    def from_models(cls, models: Sequence[nn.Module], device: torch.device | str | None = None) -> StackedMLP:
        """Stack copies of the ``nn.Linear`` layers of MLPs of one architecture."""
        if not models:
            raise ValueError("need at least one model to stack")
        layers = [[m for m in model.modules() if isinstance(m, nn.Linear)] for model in models]
        shapes = {tuple(layer.weight.shape for layer in model_layers) for model_layers in layers}
        if len(shapes) != 1:
            raise ValueError(f"the models have different layer shapes: {sorted(shapes)}")
        if any(layer.bias is None for model_layers in layers for layer in model_layers):
            raise ValueError("every nn.Linear layer must have a bias")
        with torch.no_grad():
            weights = [
                torch.stack([model_layers[i].weight.detach() for model_layers in layers]).to(device)
                for i in range(len(layers[0]))
            ]
            biases = [
                torch.stack([model_layers[i].bias.detach() for model_layers in layers]).to(device)
                for i in range(len(layers[0]))
            ]
        return cls(weights, biases)

    @classmethod
    def from_seeds(
        cls,
        widths: Sequence[int],
        seeds: Sequence[int],
        device: torch.device | str | None = None,
    ) -> StackedMLP:
        """Stack the initializations that ``build_mlp(widths, seed=s)`` gives for each seed."""
        return cls.from_models([build_mlp(widths, seed=seed) for seed in seeds], device)

    @classmethod
    def from_vectors(
        cls,
        widths: Sequence[int],
        vectors: np.ndarray | torch.Tensor,
        device: torch.device | str | None = None,
    ) -> StackedMLP:
        """Build a stack from flat weights, one ``(n_params,)`` row per run in ``parameters()`` order."""
        vectors = torch.as_tensor(vectors, dtype=torch.float32)
        n_params = count_parameters(widths)
        if vectors.ndim != 2 or vectors.shape[1] != n_params:
            raise ValueError(
                f"vectors has shape {tuple(vectors.shape)}, expected (K, {n_params}) for "
                f"widths {tuple(widths)}"
            )
        weights, biases = [], []
        pieces = vectors.split([n for a, b in zip(widths[:-1], widths[1:]) for n in (a * b, b)], dim=1)
        for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            weights.append(pieces[2 * index].reshape(len(vectors), fan_out, fan_in).to(device).clone())
            biases.append(pieces[2 * index + 1].to(device).clone())
        return cls(weights, biases)

    @property
    def n_runs(self) -> int:
        return self.weights[0].shape[0]

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.weights[0].shape[2], *(w.shape[1] for w in self.weights))

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    def parameters(self) -> list[torch.Tensor]:
        """Return the stacked tensors in ``nn.Sequential.parameters()`` order: W1, b1, W2, b2, ..."""
        return [t for pair in zip(self.weights, self.biases) for t in pair]

    def run_parameters(self) -> list[torch.Tensor]:
        """Return each run's slice of each stacked tensor, run by run, with ``.grad`` set.

        The slices are views: an optimizer given them updates the stack in
        place and reads the gradients that :meth:`loss_and_gradients` writes.
        Giving an optimizer one tensor per run rather than the stacked
        tensors keeps a run's arithmetic independent of the other runs.
        PyTorch's fused optimizers vectorize over each tensor, so with
        stacked tensors the elements of one run could fall on a vector
        boundary or in a scalar tail depending on K, and round differently.
        With stacked tensors, fused Adam did change a run's weights.
        """
        self._allocate_gradients()
        views = []
        for k in range(self.n_runs):
            for parameter in self.parameters():
                view = parameter[k]
                view.grad = parameter.grad[k]
                views.append(view)
        return views

    def _allocate_gradients(self) -> None:
        for parameter in self.parameters():
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)

    def requires_grad_(self, requires_grad: bool = True) -> StackedMLP:
        for parameter in self.parameters():
            parameter.requires_grad_(requires_grad)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits of every run.

        Parameters
        ----------
        x : torch.Tensor
            ``(K, B, in)``, a batch per run, or ``(B, in)``, one batch for all runs.

        Returns
        -------
        torch.Tensor
            ``(K, B, out)``.
        """
        n_runs = self.n_runs
        first_weight, first_bias = self.weights[0], self.biases[0]
        if x.ndim == 2:
            # One input for all runs: a single (B, in) x (in, K * out) product.
            fan_out = first_weight.shape[1]
            h = torch.addmm(first_bias.reshape(-1), x, first_weight.reshape(-1, x.shape[1]).t())
            # Contiguous (K, B, out): the later products and ReLUs on the
            # strided transpose took several times as long as this copy.
            h = h.view(len(x), n_runs, fan_out).transpose(0, 1).contiguous()
        elif x.ndim == 3 and x.shape[0] == n_runs:
            h = torch.baddbmm(first_bias.unsqueeze(1), x, first_weight.transpose(1, 2))
        else:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; expected (B, in) or ({n_runs}, B, in)"
            )
        for weight, bias in zip(self.weights[1:], self.biases[1:]):
            h = torch.baddbmm(bias.unsqueeze(1), torch.relu(h), weight.transpose(1, 2))
        return h

    __call__ = forward

    @torch.no_grad()
    def loss_and_gradients(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        dropout: float = 0.0,
        generators: Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """Return each run's mean cross-entropy on its batch and store the gradients in ``.grad``.

        The backward pass is written out with batched matrix products rather
        than left to autograd. For the ReLU MLP it is short, and it writes
        each weight gradient straight into ``.grad`` in the weight's own
        ``(K, out, in)`` layout. Autograd would return the gradient of the
        transposed view that the forward pass multiplies by and copy it into
        that layout. With K = 8 on a 2-core CPU that removed about a third of
        a step's time that was not matrix products.

        Parameters
        ----------
        x : torch.Tensor
            ``(K, B, in)``: one batch per run.
        y : torch.Tensor
            ``(K, B)`` int64 class labels.
        dropout : float, default=0.0
            Probability of zeroing each hidden unit after its ReLU, as
            ``nn.Dropout`` in training mode does: kept units are scaled by
            ``1 / (1 - dropout)``.
        generators : sequence of torch.Generator, optional
            One per run, on the stack's device; run k's masks are drawn from
            ``generators[k]`` alone. Required when ``dropout > 0``.

        Returns
        -------
        torch.Tensor
            ``(K,)``: the mean loss of each run, as ``F.cross_entropy`` gives it.
            The gradients are those of these losses, one run's in its slice of
            each ``.grad`` (allocated on first use, then overwritten).
        """
        n_runs, batch = x.shape[0], x.shape[1]
        if x.ndim != 3 or n_runs != self.n_runs or y.shape != (n_runs, batch):
            raise ValueError(
                f"x {tuple(x.shape)} and y {tuple(y.shape)} must be ({self.n_runs}, B, in) "
                f"and ({self.n_runs}, B)"
            )
        if dropout and (generators is None or len(generators) != n_runs):
            raise ValueError(
                f"dropout {dropout} needs one generator per run ({n_runs}), got "
                f"{None if generators is None else len(generators)}"
            )
        masks = {}
        # Forward, keeping each hidden layer's output for the backward pass.
        # Activations and deltas go to buffers kept from step to step: with
        # K = 8, fresh ones cost about 500 page faults per step.
        inputs = [x]
        h = x
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            out = self._buffer(f"output{index}", (n_runs, batch, weight.shape[1]), x.dtype)
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2), out=out)
            if index < last:
                h.relu_()
                if dropout:
                    masks[index] = self._dropout_mask(h.shape, dropout, generators, index)
                    h.mul_(masks[index])
                inputs.append(h)
        log_probabilities = torch.log_softmax(h, dim=2)  # (K, B, C)
        target = y.unsqueeze(2)
        losses = log_probabilities.gather(2, target).squeeze(2).mean(dim=1).neg_()

        # d(mean loss)/d(logits) = (softmax - one_hot(y)) / B.
        delta = log_probabilities.exp_()
        delta.scatter_add_(2, target, torch.full_like(target, -1, dtype=delta.dtype))
        delta.div_(batch)

        self._allocate_gradients()
        for index in range(last, -1, -1):
            weight, bias = self.weights[index], self.biases[index]
            previous = inputs[index]
            torch.bmm(delta.transpose(1, 2), previous, out=weight.grad)  # (K, out, in)
            torch.sum(delta, dim=1, out=bias.grad)
            if index > 0:
                shape = (n_runs, batch, weight.shape[2])
                delta = torch.bmm(delta, weight, out=self._buffer(f"delta{index}", shape, x.dtype))
                # ReLU's derivative, in place, with the kernel autograd uses for
                # it; masked_fill_ with a boolean mask took five times as long.
                torch.ops.aten.threshold_backward.grad_input(delta, previous, 0.0, grad_input=delta)
                if dropout:
                    delta.mul_(masks[index - 1])
        return losses

    def _dropout_mask(
        self, shape: tuple[int, ...], p: float, generators: Sequence[torch.Generator], layer: int
    ) -> torch.Tensor:
        """Return ``(K, B, H)`` dropout multipliers, 0 or ``1 / (1 - p)``, each run's from its generator."""
        uniform = self._buffer(f"uniform{layer}", shape, torch.float32)
        for k, generator in enumerate(generators):
            torch.rand(shape[1:], generator=generator, out=uniform[k])
        mask = self._buffer(f"mask{layer}", shape, torch.float32)
        torch.ge(uniform, p, out=mask)  # keep with probability 1 - p
        return mask.mul_(1.0 / (1.0 - p))

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Return a contiguous ``shape`` view of the reusable buffer ``name``, grown if needed."""
        numel = math.prod(shape)
        buffer = self._scratch.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype:
            buffer = torch.empty(numel, dtype=dtype, device=self.device)
            self._scratch[name] = buffer
        return buffer[:numel].view(shape)

    @torch.no_grad()
    def flat(self) -> torch.Tensor:
        """Return every run's parameters as a ``(K, n_params)`` tensor on the stack's device."""
        return torch.cat([p.detach().reshape(self.n_runs, -1) for p in self.parameters()], dim=1)

    @torch.no_grad()
    def grad_norms(self) -> torch.Tensor:
        """Return each run's global L2 gradient norm, ``(K,)``; missing gradients count as zero."""
        # vector_norm squares on the fly; pow(2) would allocate a gradient-sized temporary.
        squares = [
            torch.linalg.vector_norm(p.grad.detach().reshape(self.n_runs, -1), dim=1).square()
            for p in self.parameters()
            if p.grad is not None
        ]
        if not squares:
            return torch.zeros(self.n_runs, dtype=self.weights[0].dtype, device=self.device)
        return torch.stack(squares).sum(dim=0).sqrt()

    def module(self, run: int) -> nn.Sequential:
        """Return run ``run`` as a standalone ``build_mlp`` network holding a copy of its weights."""
        model = build_mlp(self.widths).to(self.device)
        layers = [m for m in model if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for layer, weight, bias in zip(layers, self.weights, self.biases):
                layer.weight.copy_(weight[run])
                layer.bias.copy_(bias[run])
        return model
