"""The LPPN decoder: a SIREN fed [local coordinate, interpolated cell state]."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SIREN(nn.Module):
    """sin(w0 (W1 x + b1)) -> sin(w0 (W2 . + b2)) -> ... -> linear W_last -> K outputs.

    Init: first layer U(+-1/in); later layers U(+-sqrt(6/in)/w0) (weights and biases).
    """

    def __init__(self, inputs: int, outputs: int, width: int = 32, hidden_layers: int = 3, omega0: float = 10.0):
        super().__init__()
        self.omega0 = float(omega0)
        sizes = [inputs] + [width] * hidden_layers + [outputs]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        with torch.no_grad():
            for index, layer in enumerate(self.layers):
                bound = 1.0 / layer.in_features if index == 0 else math.sqrt(6.0 / layer.in_features) / self.omega0
                layer.weight.uniform_(-bound, bound)
                layer.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """(Q, inputs) -> (Q, outputs). The w0 scale is folded into each sine layer's weights."""
        *hidden, last = self.layers
        for layer in hidden:
            x = torch.addmm(layer.bias * self.omega0, x, (layer.weight * self.omega0).t()).sin_()
        return torch.addmm(last.bias, x, last.weight.t())
