"""Attention blocks against brute-force loops."""
from __future__ import annotations

import math

import pytest
import torch

from voslab.nn.attention import CoAttention, GatedMessage, NonLocal, diffusion


def brute_force_attention(query, key, value, scale):
    """out[b, :, i] = sum_j softmax_j(q_i . k_j * scale) v_j, with explicit loops."""
    B, C, Nq = query.shape
    out = torch.zeros(B, value.shape[1], Nq, dtype=torch.float64)
    P = torch.zeros(B, Nq, key.shape[2], dtype=torch.float64)
    for b in range(B):
        for i in range(Nq):
            logits = torch.tensor([float(query[b, :, i] @ key[b, :, j]) * scale for j in range(key.shape[2])], dtype=torch.float64)
            weights = torch.exp(logits - logits.max())
            weights = weights / weights.sum()
            P[b, i] = weights
            for j in range(key.shape[2]):
                out[b, :, i] += weights[j] * value[b, :, j].double()
    return out, P


def test_diffusion_against_brute_force():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, generator=g), torch.randn(2, 4, 6, generator=g), torch.randn(2, 3, 6, generator=g)
    out, P = diffusion(q, k, v, return_attention=True)
    ref_out, ref_P = brute_force_attention(q, k, v, 1 / math.sqrt(4))
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(P.double(), ref_P, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(diffusion(q, k, v, scale=0.3), brute_force_attention(q, k, v, 0.3)[0].float(), atol=1e-5, rtol=1e-5)
    assert diffusion(q, k, v).shape == (2, 3, 5)


def test_diffusion_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="channel"):
        diffusion(torch.randn(1, 4, 5), torch.randn(1, 3, 5), torch.randn(1, 2, 5))
    with pytest.raises(ValueError, match="positions"):
        diffusion(torch.randn(1, 4, 5), torch.randn(1, 4, 5), torch.randn(1, 2, 6))


def test_parameter_free_non_local_is_self_diffusion():
    x = torch.randn(2, 6, 3, 4)
    z, P = NonLocal(6, parameter_free=True)(x, return_attention=True)
    ref_out, ref_P = brute_force_attention(x.flatten(2), x.flatten(2), x.flatten(2), 1 / math.sqrt(6))
    torch.testing.assert_close(z.double(), ref_out.view(2, 6, 3, 4), atol=1e-5, rtol=1e-5)
    assert P.shape == (2, 12, 12)
    assert len(list(NonLocal(6, parameter_free=True).parameters())) == 0


def test_non_local_with_projections():
    torch.manual_seed(0)
    block = NonLocal(6, inter_channels=3).eval()
    x = torch.randn(2, 6, 3, 4)
    torch.testing.assert_close(block(x), x)  # zero-initialised output BN: starts as the identity
    torch.nn.init.normal_(block.out[1].weight)
    z, P = block(x, return_attention=True)
    with torch.no_grad():
        y, ref_P = brute_force_attention(block.theta(x).flatten(2), block.phi(x).flatten(2), block.g(x).flatten(2), 1 / math.sqrt(3))
        expected = x + block.out(y.float().view(2, 3, 3, 4))
    torch.testing.assert_close(z, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(P.double(), ref_P, atol=1e-6, rtol=1e-5)


def test_co_attention_against_brute_force():
    torch.manual_seed(0)
    block = CoAttention(3, scale=0.5)
    xa, xb = torch.randn(2, 3, 2, 3), torch.randn(2, 3, 3, 2)
    m_a, m_b, maps = block(xa, xb, return_attention=True)
    Wm = block.weight.detach().double()
    fa, fb = xa.flatten(2).double(), xb.flatten(2).double()
    A = torch.zeros(2, 6, 6, dtype=torch.float64)
    for b in range(2):
        for i in range(6):
            for j in range(6):
                A[b, i, j] = fa[b, :, i] @ Wm @ fb[b, :, j] * 0.5
    torch.testing.assert_close(maps["affinity"].double(), A, atol=1e-5, rtol=1e-5)
    ref_a = torch.einsum("bcj,bij->bci", fb, A.softmax(2))  # position i of a gathers from b
    ref_b = torch.einsum("bci,bij->bcj", fa, A.softmax(1))  # position j of b gathers from a
    torch.testing.assert_close(m_a.double(), ref_a.view(2, 3, 2, 3), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m_b.double(), ref_b.view(2, 3, 3, 2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps["a_from_b"].sum(2), torch.ones(2, 6))
    torch.testing.assert_close(maps["b_from_a"].sum(2), torch.ones(2, 6))


def test_gated_message_both_modes():
    torch.manual_seed(0)
    m = torch.randn(2, 4, 3, 5)
    spatial = GatedMessage(4, "spatial")
    out, gate = spatial(m, return_gate=True)
    w = spatial.conv.weight.view(4)
    expected_gate = torch.sigmoid(torch.einsum("c,bchw->bhw", w, m)).unsqueeze(1)
    torch.testing.assert_close(gate, expected_gate)
    torch.testing.assert_close(out, m * expected_gate)
    channel = GatedMessage(4, "channel")
    out, gate = channel(m, return_gate=True)
    conv = channel.conv
    expected = torch.sigmoid(torch.einsum("oc,bc->bo", conv.weight.view(4, 4), m.mean((2, 3))) + conv.bias).view(2, 4, 1, 1)
    torch.testing.assert_close(gate, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, m * expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        GatedMessage(4, "pixel")
