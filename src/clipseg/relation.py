"""Soft-DBSCAN relation term ``G`` of CRA, as batched tensor ops on the input's device.

The paper's relation attention gives weight ``eps`` to every pair of patches that DBSCAN puts in
the same cluster (cosine distance, radius ``eps``) and 0 otherwise. Here DBSCAN runs on a dense
``(B, P, P)`` distance matrix without any Python loop over patches: the neighbourhood graph is a
boolean matrix, clusters (connected components of the core points) are found by min-label
hooking with pointer compression (a few rounds, each O(P^2) and fully batched), and border
points take the smallest cluster label of their core neighbours.

Conventions (the reference is ``sklearn.cluster.DBSCAN(metric="precomputed")``):

* neighbours are pairs with ``dist < eps`` (strict; sklearn uses ``<=``, so the two agree except
  on exact ties, and ``eps`` in sklearn must be nudged down one ulp to compare);
* every point is its own neighbour (the diagonal counts, whatever ``dist`` holds there), and
  the relation is made symmetric (``i, j`` are neighbours when either ``dist[i, j]`` or
  ``dist[j, i]`` is below ``eps``; this only matters for rounding asymmetry);
* a point is *core* when it has at least ``min_samples`` neighbours, itself included;
* clusters are the connected components of the core points; a non-core point with a core
  neighbour is a *border* point and joins one of those neighbours' clusters (sklearn: the first
  cluster that reaches it; here: the cluster with the smallest label); others are noise (-1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import InvalidInputError, describe

__all__ = ["dbscan_labels", "relation_attention", "relation_from_similarity"]


def _check_params(eps: float, min_samples: int) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise InvalidInputError(f"eps: expected a positive number, got {eps!r}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise InvalidInputError(f"min_samples: expected an integer >= 1, got {min_samples!r}")


def _components(adj: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Smallest member index of each active point's connected component.

    Min-label hooking with full pointer compression (Shiloach-Vishkin style): every round, each
    point looks at its neighbours' labels, the root of its tree adopts the smallest label any of
    its members saw, and all pointers are then shortcut to their roots. Labels only ever point at
    members of the same component and only decrease, so the loop ends with every component
    labelled by its smallest index; a round costs O(P^2) and few rounds are needed (the
    propagation doubles along paths instead of advancing one hop per round).

    Parameters
    ----------
    adj : torch.Tensor
        ``(B, P, P)`` bool, symmetric adjacency among active points.
    active : torch.Tensor
        ``(B, P)`` bool.

    Returns
    -------
    torch.Tensor
        ``(B, P)`` int64: the component's minimum index for active points, ``P`` elsewhere.
    """
    b, p = active.shape
    big = torch.full((), p, dtype=torch.long, device=adj.device)
    index = torch.arange(p, device=adj.device).expand(b, p)
    # one extra slot, index P, that points at itself: where inactive points go
    parent = torch.cat([torch.where(active, index, big),
                        torch.full((b, 1), p, dtype=torch.long, device=adj.device)], dim=1)
    while True:
        label = parent[:, :p]
        seen = torch.where(adj, label.unsqueeze(1), big).amin(dim=-1)  # neighbours' labels
        seen = torch.where(active, torch.minimum(seen, label), big)
        hooked = parent.scatter_reduce(1, label, seen, reduce="amin", include_self=True)
        while True:  # full pointer compression
            jumped = torch.gather(hooked, 1, hooked)
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, parent):
            return label
        parent = hooked


def dbscan_labels(dist: torch.Tensor, eps: float, min_samples: int) -> torch.Tensor:
    """DBSCAN cluster labels from precomputed pairwise distances, batched.

    Parameters
    ----------
    dist : torch.Tensor
        ``(B, P, P)`` (or ``(P, P)``) symmetric distances, any float dtype and device.
    eps : float
        Neighbourhood radius; neighbours are pairs with ``dist < eps`` (strict).
    min_samples : int
        Neighbours (the point itself included) a point needs to be a core point.

    Returns
    -------
    torch.Tensor
        ``(B, P)`` (or ``(P,)``) int64 on ``dist.device``; ``-1`` = noise, clusters numbered
        ``0, 1, ...`` per batch element in order of their smallest core point index.

    Raises
    ------
    InvalidInputError
        When ``dist`` is not a square (batched) matrix or the parameters are out of range.
    """
    _check_params(eps, min_samples)
    squeeze = dist.ndim == 2
    if squeeze:
        dist = dist.unsqueeze(0)
    if dist.ndim != 3 or dist.shape[-1] != dist.shape[-2] or dist.shape[-1] < 1 \
            or not dist.is_floating_point():
        raise InvalidInputError(
            f"dist: expected a float tensor of shape (B, P, P) or (P, P), got {describe(dist)}")
    b, p, _ = dist.shape
    eye = torch.eye(p, dtype=torch.bool, device=dist.device)
    neighbours = dist < eps
    # symmetrise (rounding can make a computed distance matrix very slightly asymmetric)
    neighbours = neighbours | neighbours.transpose(1, 2) | eye  # (B, P, P)
    core = neighbours.sum(dim=-1) >= min_samples  # (B, P)
    core_adj = neighbours & core.unsqueeze(1) & core.unsqueeze(2)
    root = _components(core_adj, core)  # (B, P), P for non-core

    # border points: smallest root among their core neighbours
    big = torch.full((), p, dtype=torch.long, device=dist.device)
    border_root = torch.where(neighbours & core.unsqueeze(1), root.unsqueeze(1), big).amin(-1)
    root = torch.where(core, root, border_root)

    # renumber roots 0, 1, ... in index order
    index = torch.arange(p, device=dist.device).expand(b, p)
    is_root = core & (root == index)
    cluster_of_index = torch.cumsum(is_root.long(), dim=1) - 1  # (B, P)
    labels = torch.gather(cluster_of_index, 1, root.clamp(max=p - 1))
    labels = torch.where(root < p, labels, torch.full_like(labels, -1))
    return labels.squeeze(0) if squeeze else labels


def relation_from_similarity(sim: torch.Tensor, eps: float, min_samples: int) -> torch.Tensor:
    """:func:`relation_attention` from the cosine similarities ``k k^T`` (unit rows) themselves.

    CRA computes ``k k^T`` for its attention anyway; passing it here saves a second ``(P, P)``
    product. ``sim`` is ``(B, P, P)`` float; the result is that of :func:`relation_attention`.
    """
    if sim.ndim != 3 or sim.shape[-1] != sim.shape[-2] or not sim.is_floating_point():
        raise InvalidInputError(f"sim: expected a float tensor (B, P, P), got {describe(sim)}")
    labels = dbscan_labels(1.0 - sim.float(), eps, min_samples)
    same = (labels.unsqueeze(2) == labels.unsqueeze(1)) & (labels >= 0).unsqueeze(2)
    return same.float() * float(eps)


def relation_attention(k: torch.Tensor, eps: float, min_samples: int) -> torch.Tensor:
    """CRA's relation attention ``G(k)``: ``eps`` for pairs in the same DBSCAN cluster, else 0.

    Parameters
    ----------
    k : torch.Tensor
        ``(B, P, C)`` per-token features (rows are L2-normalised here, in float32).
    eps : float
        Cosine-distance radius (``d = 1 - cos``) and the weight given to related pairs.
    min_samples : int
        DBSCAN ``min_samples`` (itself included).

    Returns
    -------
    torch.Tensor
        ``(B, P, P)`` float32, symmetric; rows and columns of noise points are all zero
        (a noise point is not related even to itself).
    """
    if k.ndim != 3 or not k.is_floating_point():
        raise InvalidInputError(f"k: expected a float tensor (B, P, C), got {describe(k)}")
    kn = F.normalize(k.float(), dim=-1)
    return relation_from_similarity(kn @ kn.transpose(1, 2), eps, min_samples)
