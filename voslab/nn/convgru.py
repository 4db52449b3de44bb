"""Convolutional GRU (Ballas et al. 2016): LVO's visual memory and AGNN's node update.

    z = sigmoid(W_z * [x, h])            update gate
    r = sigmoid(W_r * [x, h])            reset gate
    h~ = tanh(W_h * [x, r . h])          candidate
    h' = (1 - z) . h + z . h~
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvGRUCell", "ConvGRU"]


class ConvGRUCell(nn.Module):
    """One ConvGRU step. ``forward(x (B, Cin, H, W), h (B, Ch, H, W) or None, return_gates=False)``
    -> h' or ``(h', {"update": z, "reset": r})`` (each (B, Ch, H, W)). h=None starts from zeros.

    ``kernel_size``: 7 in LVO, 1 in AGNN. ``init="orthogonal"`` as in AGNN's code.
    """

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 3, init: str = "default"):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"ConvGRUCell kernel_size must be odd (same padding), got {kernel_size}")
        pad = kernel_size // 2
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(input_channels + hidden_channels, 2 * hidden_channels, kernel_size, padding=pad)
        self.candidate = nn.Conv2d(input_channels + hidden_channels, hidden_channels, kernel_size, padding=pad)
        if init == "orthogonal":
            for conv in (self.gates, self.candidate):
                nn.init.orthogonal_(conv.weight)
                nn.init.zeros_(conv.bias)
        elif init != "default":
            raise ValueError(f"ConvGRUCell init must be 'default' or 'orthogonal', got {init!r}")

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None, return_gates: bool = False):
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_channels, x.shape[2], x.shape[3])
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)  # (B, Ch, H, W) each
        candidate = torch.tanh(self.candidate(torch.cat([x, r * h], dim=1)))  # (B, Ch, H, W)
        h_new = (1 - z) * h + z * candidate
        return (h_new, {"update": z, "reset": r}) if return_gates else h_new


class ConvGRU(nn.Module):
    """Run a ConvGRU over time: ``x (B, T, Cin, H, W) -> outputs (B, T, D*Ch, H, W)``.

    ``direction``: "forward", "backward" (time reversed; outputs stay in frame order) or
    "bidirectional" (two cells; states at each t concatenated [forward, backward], D = 2).
    ``forward(x, h0=None, return_gates=False)`` -> outputs, or ``(outputs, gates)`` with
    ``gates = {"update": (B, T, D*Ch, H, W), "reset": ...}`` concatenated like the outputs.
    ``h0``: initial state (B, D*Ch, H, W) or None (zeros).
    """

    DIRECTIONS = ("forward", "backward", "bidirectional")

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 3,
                 direction: str = "forward", init: str = "default"):
        super().__init__()
        if direction not in self.DIRECTIONS:
            raise ValueError(f"ConvGRU direction must be one of {self.DIRECTIONS}, got {direction!r}")
        self.direction, self.hidden_channels = direction, hidden_channels
        # ModuleDict keys "fw"/"bw" ("forward" would clash with nn.Module.forward)
        names = {"forward": ["fw"], "backward": ["bw"], "bidirectional": ["fw", "bw"]}[direction]
        self.cells = nn.ModuleDict({n: ConvGRUCell(input_channels, hidden_channels, kernel_size, init) for n in names})
        self.out_channels = hidden_channels * len(names)

    def _run(self, cell: ConvGRUCell, x: torch.Tensor, h: torch.Tensor | None, reverse: bool):
        steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
        states, updates, resets = {}, {}, {}
        for t in steps:
            h, g = cell(x[:, t], h, return_gates=True)
            states[t], updates[t], resets[t] = h, g["update"], g["reset"]
        order = range(x.shape[1])
        stack = lambda d: torch.stack([d[t] for t in order], dim=1)  # noqa: E731  (B, T, Ch, H, W)
        return stack(states), stack(updates), stack(resets)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None, return_gates: bool = False):
        if x.dim() != 5:
            raise ValueError(f"ConvGRU expects (B, T, C, H, W), got shape {tuple(x.shape)}")
        initial = [None] * len(self.cells) if h0 is None else list(h0.split(self.hidden_channels, dim=1))
        results = [self._run(cell, x, h, reverse=(name == "bw"))
                   for (name, cell), h in zip(self.cells.items(), initial)]
        outputs, updates, resets = (torch.cat(parts, dim=2) for parts in zip(*results))
        return (outputs, {"update": updates, "reset": resets}) if return_gates else outputs
