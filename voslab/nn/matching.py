"""FEELVOS pixel-embedding matching (Voigtlaender et al., CVPR'19).

Distances between embeddings are squared L2 distances normalised as
``1 - 2 / (1 + exp(d2))`` (= ``tanh(d2 / 2)``, in [0, 1)). For each object (background = object 0
included) and each query pixel:

- :func:`global_matching`: the smallest distance to any reference-frame pixel of that object
  (computed in chunks of query positions so memory stays bounded);
- :func:`local_matching`: the smallest distance to a previous-frame pixel of that object within a
  (2k+1)^2 window around the same position (1 where none / off-image), vectorised with ``unfold``.

Objects absent from the reference/previous labels get distance 1 everywhere. Label 255 (void) is
never matched. ``*_naive`` versions build the full distance matrix: small inputs only (tests, teaching).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from voslab.errors import VOSDataError

__all__ = [
    "pairwise_squared_distance",
    "normalize_distance",
    "subsample_reference",
    "group_by_object",
    "global_matching",
    "local_matching",
    "global_matching_naive",
    "local_matching_naive",
    "VOID_LABEL",
]

VOID_LABEL = 255
# Largest (B x chunk x N_ref) distance block computed at once by default: 2^24 floats = 64 MiB.
DEFAULT_CHUNK_ELEMENTS = 1 << 24


def pairwise_squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances between columns: a (B, C, N), b (B, C, M) -> (B, N, M), >= 0."""
    a_sq = (a * a).sum(1).unsqueeze(2)  # (B, N, 1)
    b_sq = (b * b).sum(1).unsqueeze(1)  # (B, 1, M)
    return torch.baddbmm(a_sq + b_sq, a.transpose(1, 2), b, alpha=-2.0).clamp_min_(0.0)


def normalize_distance(d2: torch.Tensor) -> torch.Tensor:
    """FEELVOS normalisation ``1 - 2 / (1 + exp(d2))`` of squared distances; written as the equal,
    overflow-free ``tanh(d2 / 2)``. Maps [0, inf] to [0, 1]."""
    return torch.tanh(d2 / 2)


def _object_index(labels: torch.Tensor, n_objects: int, argname: str) -> torch.Tensor:
    """Labels (B, ...) long -> object index in [0, n_objects], where n_objects marks "no object" (void)."""
    if labels.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise TypeError(f"{argname} must hold integer object ids (long), got {labels.dtype}")
    labels = labels.long()
    bad = (labels >= n_objects) & (labels != VOID_LABEL) | (labels < 0)
    if bool(bad.any()):
        raise VOSDataError(
            f"{argname} contains id {int(labels[bad][0])} but n_objects={n_objects} (background counts as "
            f"object 0; void is {VOID_LABEL}); pass n_objects = largest object id + 1"
        )
    return torch.where(labels == VOID_LABEL, torch.full_like(labels, n_objects), labels)


def subsample_reference(ref: torch.Tensor, index: torch.Tensor, n_objects: int, max_per_object: int,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep at most ``max_per_object`` random reference pixels per object (FEELVOS training: 1024).

    ref (B, C, N), index (B, N) in [0, n_objects] (n_objects = ignored) -> (B, C, L), (B, L) with
    L = the largest number kept in the batch; padding columns get the ignore index.
    """
    B, N = index.shape
    if generator is None:
        noise = torch.rand(B, N, device=index.device)
    else:
        noise = torch.rand(B, N, generator=generator, device=generator.device).to(index.device)
    order = torch.argsort(index.double() * 2 + noise, dim=1)  # grouped by object, random inside each group
    sorted_index = index.gather(1, order)  # (B, N)
    counts = F.one_hot(sorted_index, n_objects + 1).sum(1)  # (B, K+1)
    group_start = torch.cumsum(counts, 1) - counts  # (B, K+1)
    rank = torch.arange(N, device=index.device) - group_start.gather(1, sorted_index)  # rank inside its group
    keep = (rank < max_per_object) & (sorted_index < n_objects)  # (B, N)
    L = max(int(keep.sum(1).max()), 1)
    first = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :L]  # kept columns first
    columns = order.gather(1, first)  # (B, L) positions in the original reference
    kept_index = torch.where(keep.gather(1, first), index.gather(1, columns), torch.full_like(columns, n_objects))
    kept_ref = ref.gather(2, columns.unsqueeze(1).expand(-1, ref.shape[1], -1))  # (B, C, L)
    return kept_ref, kept_index


def group_by_object(ref: torch.Tensor, index: torch.Tensor, n_objects: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split reference columns by object, batched: for each object k, ``(R_k (B, C, L_k), r_sq_k (B, L_k))``
    where L_k is the largest pixel count of object k in the batch; padding columns are zero with
    ``r_sq = inf`` so that they never win a minimum."""
    B, C, N = ref.shape
    order = torch.argsort(index, dim=1, stable=True)  # (B, N) pixels grouped by object
    counts = F.one_hot(index, n_objects + 1).sum(1)  # (B, K+1)
    starts = torch.cumsum(counts, 1) - counts  # (B, K+1)
    ref_sq = (ref * ref).sum(1)  # (B, N)
    groups = []
    for k in range(n_objects):
        length = int(counts[:, k].max())
        steps = torch.arange(length, device=ref.device)  # (L,)
        valid = steps.unsqueeze(0) < counts[:, k : k + 1]  # (B, L)
        slots = (starts[:, k : k + 1] + steps).clamp(max=N - 1)  # (B, L) positions in ``order``
        columns = order.gather(1, slots)  # (B, L) reference pixel of each slot
        R = ref.gather(2, columns.unsqueeze(1).expand(B, C, length)) * valid.unsqueeze(1)  # (B, C, L)
        r_sq = torch.where(valid, ref_sq.gather(1, columns), torch.full_like(valid, float("inf"), dtype=ref.dtype))
        groups.append((R, r_sq))
    return groups


def _nearest_in_group(query: torch.Tensor, R: torch.Tensor, r_sq: torch.Tensor) -> torch.Tensor:
    """Min squared distance from each query column to the group: query (B, C, Q) -> (B, Q) (inf if empty).

    Uses min_j |q - r_j|^2 = |q|^2 + min_j (|r_j|^2 - 2 q.r_j), so the (B, Q, L) block is one baddbmm."""
    if R.shape[2] == 0:
        return query.new_full((query.shape[0], query.shape[2]), float("inf"))
    partial = torch.baddbmm(r_sq.unsqueeze(1), query.transpose(1, 2), R, alpha=-2.0)  # (B, Q, L)
    return (partial.amin(dim=2) + (query * query).sum(1)).clamp_min(0.0)  # (B, Q)


def global_matching(
    query_emb: torch.Tensor,
    ref_emb: torch.Tensor,
    ref_labels: torch.Tensor,
    n_objects: int,
    chunk_size: int | None = None,
    max_ref_per_object: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Global matching to a reference frame.

    The reference pixels are grouped by object once; then, per object and per chunk of query
    positions, one (B, chunk, L_k) distance block is formed and reduced by ``amin`` (so all
    objects together cost one full distance matrix, never held at once).

    Args:
        query_emb: (B, C, H, W) current-frame embeddings. ref_emb: (B, C, Hr, Wr).
        ref_labels: (B, Hr, Wr) long object ids (0 = background, 255 = void).
        n_objects: number of objects including the background.
        chunk_size: query positions per chunk; default keeps each (B, chunk, L_k) block at
            ``DEFAULT_CHUNK_ELEMENTS`` floats. With gradients on, each chunk is recomputed in the
            backward pass (activation checkpointing), so training memory stays bounded too.
        max_ref_per_object: keep at most this many random reference pixels per object.

    Returns:
        (B, n_objects, H, W) normalised distance in [0, 1].
    """
    B, C, H, W = query_emb.shape
    if ref_emb.shape[:2] != (B, C) or ref_labels.shape != (B, *ref_emb.shape[2:]):
        raise ValueError(
            f"global_matching: query_emb {tuple(query_emb.shape)}, ref_emb {tuple(ref_emb.shape)} and ref_labels "
            f"{tuple(ref_labels.shape)} must be (B, C, H, W), (B, C, Hr, Wr) and (B, Hr, Wr)"
        )
    query = query_emb.flatten(2).float()  # (B, C, HW)
    ref = ref_emb.flatten(2).float()  # (B, C, N)
    index = _object_index(ref_labels.flatten(1), n_objects, "ref_labels")  # (B, N)
    if max_ref_per_object is not None:
        ref, index = subsample_reference(ref, index, n_objects, max_ref_per_object, generator)
    use_checkpoint = torch.is_grad_enabled() and (query.requires_grad or ref.requires_grad)
    per_object = []
    for R, r_sq in group_by_object(ref, index, n_objects):
        chunk = chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // (B * max(R.shape[2], 1)))
        parts = []
        for start in range(0, H * W, chunk):
            q = query[:, :, start:start + chunk]  # (B, C, Q)
            if use_checkpoint:
                parts.append(checkpoint(_nearest_in_group, q, R, r_sq, use_reentrant=False))
            else:
                parts.append(_nearest_in_group(q, R, r_sq))
        per_object.append(torch.cat(parts, dim=1))  # (B, HW)
    d2 = torch.stack(per_object, dim=1)  # (B, K, HW)
    return normalize_distance(d2).view(B, n_objects, H, W)


def _window_offsets(window: int, dilation: int) -> int:
    if window < 0 or dilation < 1:
        raise ValueError(f"local_matching needs window >= 0 and dilation >= 1, got window={window}, dilation={dilation}")
    return window * dilation


def _row_band(matrix: torch.Tensor, size: int, dilation: int) -> torch.Tensor:
    """Band of a row-vs-row matrix (N, W, W + 2r) -> (N, W, size) with band[n, x, j] = matrix[n, x, x + j*dilation]."""
    n, w, wp = matrix.shape
    return matrix.as_strided((n, w, size), (w * wp, wp + 1, dilation), matrix.storage_offset())


def local_matching(
    query_emb: torch.Tensor,
    prev_emb: torch.Tensor,
    prev_labels: torch.Tensor,
    n_objects: int,
    window: int = 15,
    dilation: int = 1,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Local matching to the previous frame within a (2*window+1)^2 neighbourhood (offsets spaced
    by ``dilation``). Off-image positions and pixels of other objects do not match (distance 1).

    Vectorised: one pass per window row ``dy`` (2*window+1 passes, not (2*window+1)^2). In a pass,
    every query row is compared with the shifted previous-frame row by one batched matmul
    (B*rows, W, C) @ (B*rows, C, W + 2r); the (2*window+1) horizontal offsets are the band
    ``[x, x + j*dilation]`` of that matrix (a strided view). Labels and norms of the candidates
    come from ``Tensor.unfold`` views. ``chunk_size`` (query positions per block, rounded to whole
    rows) bounds the (B*rows, W, W + 2r) block.

    Args: query_emb, prev_emb (B, C, H, W); prev_labels (B, H, W) long. Returns (B, n_objects, H, W).
    """
    B, C, H, W = query_emb.shape
    if prev_emb.shape != query_emb.shape or prev_labels.shape != (B, H, W):
        raise ValueError(
            f"local_matching: query_emb {tuple(query_emb.shape)}, prev_emb {tuple(prev_emb.shape)} and prev_labels "
            f"{tuple(prev_labels.shape)} must be (B, C, H, W), (B, C, H, W) and (B, H, W)"
        )
    reach = _window_offsets(window, dilation)
    size, span = 2 * window + 1, 2 * reach + 1
    query = query_emb.float()
    prev_pad = F.pad(prev_emb.float(), (reach, reach, reach, reach))  # (B, C, H+2r, W+2r)
    index = _object_index(prev_labels, n_objects, "prev_labels")  # (B, H, W), n_objects = no object
    index_pad = F.pad(index, (reach, reach, reach, reach), value=n_objects)  # off-image = no object
    prev_sq = (prev_pad * prev_pad).sum(1)  # (B, H+2r, W+2r)
    rows = max(1, chunk_size // W if chunk_size else DEFAULT_CHUNK_ELEMENTS // (B * W * (W + 2 * reach)))
    blocks = []
    for r0 in range(0, H, rows):
        r1 = min(H, r0 + rows)
        h = r1 - r0
        q_rows = query[:, :, r0:r1].permute(0, 2, 3, 1).reshape(B * h, W, C)  # (B*h, W, C)
        q_sq = (q_rows * q_rows).sum(2, keepdim=True)  # (B*h, W, 1)
        best = query.new_full((B, h * W, n_objects + 1), float("inf"))
        for dy in range(0, 2 * reach + 1, dilation):
            band = slice(r0 + dy, r1 + dy)
            p_rows = prev_pad[:, :, band].permute(0, 2, 1, 3).reshape(B * h, C, W + 2 * reach)  # (B*h, C, W+2r)
            dot = _row_band(torch.bmm(q_rows, p_rows), size, dilation)  # (B*h, W, size)
            cand_sq = prev_sq[:, band].unfold(2, span, 1)[..., ::dilation].reshape(B * h, W, size)
            d2 = (q_sq + cand_sq - 2 * dot).clamp_min(0.0).reshape(B, h * W, size)
            cand_index = index_pad[:, band].unfold(2, span, 1)[..., ::dilation].reshape(B, h * W, size)
            best = best.scatter_reduce(2, cand_index, d2, reduce="amin", include_self=True)
        blocks.append(best[..., :n_objects].transpose(1, 2).reshape(B, n_objects, h, W))
    return normalize_distance(torch.cat(blocks, dim=2))  # (B, K, H, W)


# ------------------------------------------------------------------------------------------
# naive references: the full distance matrix (small inputs only)
# ------------------------------------------------------------------------------------------
def _min_over_masked(d2: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """d2 (B, Q, N), allowed (B, K, Q, N) bool -> (B, K, Q) min over allowed (inf if none)."""
    return d2.unsqueeze(1).masked_fill(~allowed, float("inf")).amin(dim=3)


def global_matching_naive(query_emb, ref_emb, ref_labels, n_objects: int) -> torch.Tensor:
    """Reference for :func:`global_matching`: full (B, HW, N) distance matrix, one mask per object."""
    B, C, H, W = query_emb.shape
    d2 = pairwise_squared_distance(query_emb.flatten(2).float(), ref_emb.flatten(2).float())  # (B, HW, N)
    labels = ref_labels.flatten(1)  # (B, N)
    objects = torch.arange(n_objects, device=labels.device).view(1, -1, 1, 1)
    allowed = (labels.view(B, 1, 1, -1) == objects).expand(B, n_objects, H * W, labels.shape[1])
    return normalize_distance(_min_over_masked(d2, allowed)).view(B, n_objects, H, W)


def local_matching_naive(query_emb, prev_emb, prev_labels, n_objects: int, window: int = 15, dilation: int = 1) -> torch.Tensor:
    """Reference for :func:`local_matching`: full (B, HW, HW) matrix masked to the window."""
    B, C, H, W = query_emb.shape
    d2 = pairwise_squared_distance(query_emb.flatten(2).float(), prev_emb.flatten(2).float())  # (B, HW, HW)
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy, dx = ys[None, :] - ys[:, None], xs[None, :] - xs[:, None]  # (HW, HW) offset from query to candidate
    in_window = (dy.abs() <= window * dilation) & (dx.abs() <= window * dilation) & (dy % dilation == 0) & (dx % dilation == 0)
    labels = prev_labels.flatten(1)  # (B, HW)
    objects = torch.arange(n_objects).view(1, -1, 1, 1)
    allowed = (labels.view(B, 1, 1, -1) == objects) & in_window.to(labels.device)
    return normalize_distance(_min_over_masked(d2, allowed)).view(B, n_objects, H, W)
