"""R independent MLPs run as one module: weights of shape (R, in, out), one batched matmul per layer.

The toy sweeps train many small networks that never share parameters (the Gaussian critics, one per rho and seed;
the toy policies, one per seed and scenario). Stacking them on a leading axis turns R small Python loops into one:
Adam and SGD are elementwise and the summed loss gives each copy its own gradient, so a stacked run equals R
separate runs up to float rounding (``tests/test_toy_dynamics.py``, ``tests/test_toy_gaussian.py`` check it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class StackedMLP(nn.Module):
    """R MLPs: Linear, then ReLU + Linear for each further layer. Weights (R, in, out), biases (R, 1, out)."""

    def __init__(self, weights: Sequence[Tensor], biases: Sequence[Tensor]):
        super().__init__()
        self.weights = nn.ParameterList(nn.Parameter(w.detach().clone()) for w in weights)
        self.biases = nn.ParameterList(nn.Parameter(b.detach().clone()) for b in biases)

    @classmethod
    def uniform(cls, copies: int, widths: Sequence[int], gen: torch.Generator) -> StackedMLP:
        """Fresh copies with ``nn.Linear``'s default initialisation, U(-1/sqrt(in), 1/sqrt(in)), drawn from
        ``gen`` layer by layer (weight, then bias)."""
        weights, biases = [], []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            bound = 1.0 / math.sqrt(a)
            weights.append((torch.rand(copies, a, b, generator=gen) * 2 - 1) * bound)
            biases.append((torch.rand(copies, 1, b, generator=gen) * 2 - 1) * bound)
        return cls(weights, biases)

    @classmethod
    def from_sequentials(cls, nets: Sequence[nn.Sequential]) -> StackedMLP:
        """Stack ``nn.Sequential`` MLPs of the same shape (their Linear layers; ReLU between them)."""
        layers = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        weights = [torch.stack([net[i].weight.T for net in layers]) for i in range(len(layers[0]))]
        biases = [torch.stack([net[i].bias[None] for net in layers]) for i in range(len(layers[0]))]
        return cls(weights, biases)

    @property
    def copies(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, h: Tensor) -> Tensor:
        """(R, B, in) -> (R, B, out)."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = F.relu(h)
        return h
