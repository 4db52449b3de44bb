"""ConvGRU against a brute-force per-pixel implementation of the equations."""
from __future__ import annotations

import itertools

import pytest
import torch

from voslab.nn.convgru import ConvGRU, ConvGRUCell


def brute_conv(x, weight, bias):
    """'same' 2-D convolution with explicit loops. x (C, H, W), weight (O, C, k, k) -> (O, H, W)."""
    O, C, k, _ = weight.shape
    _, H, W = x.shape
    p = k // 2
    out = torch.zeros(O, H, W, dtype=torch.float64)
    for o, y, xx in itertools.product(range(O), range(H), range(W)):
        acc = float(bias[o])
        for c, i, j in itertools.product(range(C), range(k), range(k)):
            yy, xj = y + i - p, xx + j - p
            if 0 <= yy < H and 0 <= xj < W:
                acc += float(weight[o, c, i, j]) * float(x[c, yy, xj])
        out[o, y, xx] = acc
    return out


def brute_cell(cell, x, h):
    """One GRU step for a single sample (C, H, W) with the textbook equations."""
    hc = cell.hidden_channels
    gates = torch.sigmoid(brute_conv(torch.cat([x, h]), cell.gates.weight.detach(), cell.gates.bias.detach()))
    z, r = gates[:hc], gates[hc:]
    cand = torch.tanh(brute_conv(torch.cat([x.double(), r * h.double()]), cell.candidate.weight.detach(), cell.candidate.bias.detach()))
    return (1 - z) * h + z * cand, z, r


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_cell_against_brute_force(kernel_size):
    torch.manual_seed(kernel_size)
    cell = ConvGRUCell(2, 3, kernel_size)
    x, h = torch.randn(2, 2, 4, 5), torch.randn(2, 3, 4, 5)
    h_new, gates = cell(x, h, return_gates=True)
    for b in range(2):
        ref_h, ref_z, ref_r = brute_cell(cell, x[b].double(), h[b].double())
        torch.testing.assert_close(h_new[b].double(), ref_h, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gates["update"][b].double(), ref_z, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gates["reset"][b].double(), ref_r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cell(x), cell(x, torch.zeros(2, 3, 4, 5)))


def reference_run(cell, x, reverse):
    """Run the cell step by step; return (B, T, Ch, H, W) in frame order."""
    T = x.shape[1]
    h, states = None, [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        h = cell(x[:, t], h)
        states[t] = h
    return torch.stack(states, 1)


def test_runner_directions():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 5, 6)
    fwd = ConvGRU(3, 4, kernel_size=3, direction="forward")
    torch.testing.assert_close(fwd(x), reference_run(fwd.cells["fw"], x, reverse=False))
    bwd = ConvGRU(3, 4, kernel_size=3, direction="backward")
    torch.testing.assert_close(bwd(x), reference_run(bwd.cells["bw"], x, reverse=True))
    bi = ConvGRU(3, 4, kernel_size=7, direction="bidirectional")
    out, gates = bi(x, return_gates=True)
    assert out.shape == (2, 4, 8, 5, 6) and gates["update"].shape == (2, 4, 8, 5, 6) and bi.out_channels == 8
    torch.testing.assert_close(out[:, :, :4], reference_run(bi.cells["fw"], x, reverse=False))
    torch.testing.assert_close(out[:, :, 4:], reference_run(bi.cells["bw"], x, reverse=True))
    # the backward direction's last frame sees only itself: state = cell(x_T, 0)
    _, g_last = bi.cells["bw"](x[:, -1], return_gates=True)
    torch.testing.assert_close(gates["reset"][:, -1, 4:], g_last["reset"])


def test_initial_state_and_errors():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 3, 4, 4)
    gru = ConvGRU(3, 2, direction="bidirectional", init="orthogonal")
    h0 = torch.randn(1, 4, 4, 4)
    out = gru(x, h0)
    torch.testing.assert_close(out[:, 0, :2], gru.cells["fw"](x[:, 0], h0[:, :2]))
    with pytest.raises(ValueError, match="direction"):
        ConvGRU(3, 2, direction="sideways")
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        gru(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        ConvGRUCell(3, 2, kernel_size=4)
