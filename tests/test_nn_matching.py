"""FEELVOS matching: chunked/unfold versions against brute-force references."""
from __future__ import annotations

import itertools

import pytest
import torch

from voslab.errors import VOSDataError
from voslab.nn import matching as M


def brute_force_global(query, ref, labels, n_objects):
    """Python loops over pixels: min normalised distance per object."""
    B, C, H, W = query.shape
    out = torch.ones(B, n_objects, H, W)
    for b, y, x in itertools.product(range(B), range(H), range(W)):
        for yr, xr in itertools.product(range(ref.shape[2]), range(ref.shape[3])):
            k = int(labels[b, yr, xr])
            if k >= n_objects:
                continue
            d2 = float(((query[b, :, y, x] - ref[b, :, yr, xr]) ** 2).sum())
            d = 1 - 2 / (1 + torch.exp(torch.tensor(d2)).item())
            out[b, k, y, x] = min(out[b, k, y, x].item(), d)
    return out


def brute_force_local(query, prev, labels, n_objects, window, dilation):
    B, C, H, W = query.shape
    out = torch.ones(B, n_objects, H, W)
    offsets = range(-window * dilation, window * dilation + 1, dilation)
    for b, y, x, dy, dx in itertools.product(range(B), range(H), range(W), offsets, offsets):
        yy, xx = y + dy, x + dx
        if not (0 <= yy < H and 0 <= xx < W):
            continue
        k = int(labels[b, yy, xx])
        if k >= n_objects:
            continue
        d2 = ((query[b, :, y, x] - prev[b, :, yy, xx]) ** 2).sum()
        out[b, k, y, x] = torch.minimum(out[b, k, y, x], 1 - 2 / (1 + torch.exp(d2)))
    return out


@pytest.fixture
def small():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 6, generator=g) * 0.7
    r = torch.randn(2, 4, 4, 5, generator=g) * 0.7
    labels = torch.randint(0, 3, (2, 4, 5), generator=g)
    labels[0, 0, 0] = 255  # void is never matched
    labels[1][labels[1] == 2] = 1  # object 2 absent from sample 1 -> distance 1
    return q, r, labels


def test_pairwise_squared_distance_matches_cdist():
    a, b = torch.randn(2, 3, 7), torch.randn(2, 3, 5)
    expected = torch.cdist(a.transpose(1, 2), b.transpose(1, 2)) ** 2
    torch.testing.assert_close(M.pairwise_squared_distance(a, b), expected, atol=1e-5, rtol=1e-5)


def test_normalize_distance_is_feelvos_formula():
    d2 = torch.tensor([0.0, 0.3, 2.0, 10.0, 1e4])
    expected = 1 - 2 / (1 + torch.exp(d2.double()))
    torch.testing.assert_close(M.normalize_distance(d2).double(), expected, atol=1e-7, rtol=0)


def test_global_matching_against_brute_force(small):
    q, r, labels = small
    expected = brute_force_global(q, r, labels, 4)
    for chunk in (1, 7, None):
        torch.testing.assert_close(M.global_matching(q, r, labels, 4, chunk_size=chunk), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(M.global_matching_naive(q, r, labels, 4), expected, atol=1e-5, rtol=0)
    assert (M.global_matching(q, r, labels, 4)[1, 2] == 1).all()  # absent object
    assert (M.global_matching(q, r, labels, 4)[:, 3] == 1).all()  # object 3 nowhere


def test_global_matching_gradients_match_naive(small):
    q, r, labels = small
    q1, r1 = q.clone().requires_grad_(), r.clone().requires_grad_()
    q2, r2 = q.clone().requires_grad_(), r.clone().requires_grad_()
    w = torch.randn(2, 3, 5, 6)
    (M.global_matching(q1, r1, labels, 3, chunk_size=4) * w).sum().backward()
    (M.global_matching_naive(q2, r2, labels, 3) * w).sum().backward()
    torch.testing.assert_close(q1.grad, q2.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(r1.grad, r2.grad, atol=1e-5, rtol=1e-4)


def test_global_matching_subsampling_keeps_at_most_n_per_object(small):
    q, r, labels = small
    index = M._object_index(labels.flatten(1), 3, "labels")
    kept_ref, kept_index = M.subsample_reference(r.flatten(2), index, 3, 2, torch.Generator().manual_seed(1))
    for b in range(2):
        counts = torch.bincount(kept_index[b], minlength=4)
        expected = torch.bincount(index[b], minlength=4).clamp(max=2)
        assert counts[:3].tolist() == expected[:3].tolist()
        for col in range(kept_ref.shape[2]):  # each kept column is a real reference pixel of its object
            if kept_index[b, col] < 3:
                hits = ((r.flatten(2)[b] - kept_ref[b, :, col : col + 1]).abs().sum(0) == 0) & (index[b] == kept_index[b, col])
                assert hits.any()
    # with a large cap nothing changes
    torch.testing.assert_close(M.global_matching(q, r, labels, 3, max_ref_per_object=1000), M.global_matching_naive(q, r, labels, 3))
    # with a cap, distances can only grow
    assert (M.global_matching(q, r, labels, 3, max_ref_per_object=1) >= M.global_matching_naive(q, r, labels, 3) - 1e-6).all()


@pytest.mark.parametrize("window,dilation", [(1, 1), (2, 1), (1, 2), (8, 1)])
def test_local_matching_against_brute_force(window, dilation):
    g = torch.Generator().manual_seed(window * 10 + dilation)
    q, p = torch.randn(2, 3, 5, 7, generator=g), torch.randn(2, 3, 5, 7, generator=g)
    labels = torch.randint(0, 3, (2, 5, 7), generator=g)
    labels[0, 2, 2] = 255
    expected = brute_force_local(q, p, labels, 4, window, dilation)
    for chunk in (7, 14, None):
        torch.testing.assert_close(M.local_matching(q, p, labels, 4, window, dilation, chunk_size=chunk), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(M.local_matching_naive(q, p, labels, 4, window, dilation), expected, atol=1e-5, rtol=0)


def test_local_matching_gradients_match_naive():
    g = torch.Generator().manual_seed(3)
    q, p = torch.randn(1, 3, 6, 6, generator=g), torch.randn(1, 3, 6, 6, generator=g)
    labels = torch.randint(0, 2, (1, 6, 6), generator=g)
    q1, q2 = q.clone().requires_grad_(), q.clone().requires_grad_()
    w = torch.randn(1, 2, 6, 6)
    (M.local_matching(q1, p, labels, 2, window=2) * w).sum().backward()
    (M.local_matching_naive(q2, p, labels, 2, window=2) * w).sum().backward()
    torch.testing.assert_close(q1.grad, q2.grad, atol=1e-5, rtol=1e-4)


def test_bad_labels_raise_actionable_error(small):
    q, r, labels = small
    with pytest.raises(VOSDataError, match="n_objects"):
        M.global_matching(q, r, labels, 2)
    with pytest.raises(ValueError, match="ref_labels"):
        M.global_matching(q, r, labels[:, :3], 3)
