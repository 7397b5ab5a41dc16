"""Tensor DBSCAN vs sklearn's DBSCAN(metric="precomputed"); relation attention properties."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import DBSCAN

from clipseg.errors import InvalidInputError
from clipseg.relation import dbscan_labels, relation_attention


def _cosine_dist(k):
    kn = F.normalize(k, dim=-1)
    return 1.0 - kn @ kn.transpose(-1, -2)


def _clustered_keys(gen, batch, points, dim=6, centres=4, spread=0.6):
    """Keys drawn around a few random centres: gives clusters, borders and noise."""
    c = torch.randn(batch, centres, dim, generator=gen)
    pick = torch.randint(0, centres, (batch, points), generator=gen)
    k = torch.gather(c, 1, pick.unsqueeze(-1).expand(-1, -1, dim))
    return k + spread * torch.randn(batch, points, dim, generator=gen)


def _check_against_sklearn(dist, ours, eps, min_samples):
    """Same noise, same partition of core points, borders joined to a core neighbour's cluster."""
    d = dist.double().numpy()
    d = np.clip((d + d.T) / 2, 0.0, None)  # sklearn refuses tiny negative rounding errors
    np.fill_diagonal(d, 0.0)
    # sklearn counts d <= eps; ours counts d < eps: nudge eps one step down for sklearn
    sk = DBSCAN(eps=np.nextafter(eps, 0), min_samples=min_samples,
                metric="precomputed").fit(d)
    ref = sk.labels_
    ours = ours.numpy()
    core = np.zeros(len(ref), bool)
    core[sk.core_sample_indices_] = True
    np.testing.assert_array_equal(ours == -1, ref == -1)
    # core points: identical partition up to relabelling (a bijection between labels)
    pairs = set(zip(ours[core].tolist(), ref[core].tolist()))
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    # border points: the cluster of one of their core neighbours (< eps)
    neighbours = d < eps
    for i in np.flatnonzero(~core & (ref != -1)):
        allowed = set(ours[neighbours[i] & core].tolist())
        assert ours[i] in allowed
    # labels numbered 0..n-1
    found = sorted(set(ours[ours >= 0].tolist()))
    assert found == list(range(len(found)))
    return core, ref


@pytest.mark.parametrize("eps,min_samples", [(0.05, 1), (0.1, 2), (0.1, 3), (0.25, 3),
                                             (0.2, 5), (0.3, 6), (1.5, 2)])
def test_parity_with_sklearn_batched(eps, min_samples):
    gen = torch.Generator().manual_seed(int(eps * 1000) + min_samples)
    k = _clustered_keys(gen, batch=4, points=60)
    dist = _cosine_dist(k).double()
    labels = dbscan_labels(dist, eps, min_samples)
    assert labels.shape == (4, 60) and labels.dtype == torch.long
    kinds = set()
    for b in range(4):
        core, ref = _check_against_sklearn(dist[b], labels[b], eps, min_samples)
        kinds |= {"core"} if core.any() else set()
        kinds |= {"noise"} if (ref == -1).any() else set()
        kinds |= {"border"} if (~core & (ref != -1)).any() else set()
    # the cases are not trivial (with min_samples=2 any point with a neighbour is core)
    if min_samples >= 3:
        assert kinds == {"core", "noise", "border"}
    elif min_samples == 2 and eps < 1.0:
        assert kinds == {"core", "noise"}


def test_parity_on_plain_random_distances():
    gen = torch.Generator().manual_seed(3)
    pts = torch.rand(3, 80, 2, generator=gen)
    dist = torch.cdist(pts, pts)
    for eps, ms in [(0.08, 3), (0.12, 4), (0.05, 1)]:
        labels = dbscan_labels(dist, eps, ms)
        for b in range(3):
            _check_against_sklearn(dist[b], labels[b], eps, ms)


def test_chain_is_one_cluster_and_unbatched_input():
    # a long chain needs many propagation steps: points 0.1 apart on a line
    x = torch.arange(50, dtype=torch.float64).unsqueeze(-1) * 0.1
    dist = torch.cdist(x, x)
    labels = dbscan_labels(dist, 0.15, 2)
    assert labels.shape == (50,)
    assert torch.equal(labels, torch.zeros(50, dtype=torch.long))
    # break the chain in the middle: two clusters, numbered by first index
    x[25:] += 1.0
    labels = dbscan_labels(torch.cdist(x, x), 0.15, 2)
    assert torch.equal(labels, torch.tensor([0] * 25 + [1] * 25))


def test_scrambled_interleaved_chains():
    # two long chains whose point indices are shuffled together: many hooking rounds needed
    gen = torch.Generator().manual_seed(9)
    line = torch.arange(100, dtype=torch.float64) * 0.1
    pts = torch.cat([torch.stack([line, torch.zeros(100, dtype=torch.float64)], -1),
                     torch.stack([line, torch.full((100,), 5.0, dtype=torch.float64)], -1)])
    perm = torch.randperm(200, generator=gen)
    pts = pts[perm]
    chain = (perm >= 100).long()  # which chain each shuffled point came from
    labels = dbscan_labels(torch.cdist(pts, pts)[None], 0.15, 2)[0]
    first = int(chain[0])  # clusters are numbered by their smallest point index
    expected = torch.where(chain == first, 0, 1)
    assert torch.equal(labels, expected)


def test_strict_radius():
    dist = torch.tensor([[0.0, 0.5], [0.5, 0.0]])
    assert dbscan_labels(dist, 0.5, 2).tolist() == [-1, -1]  # 0.5 is not < 0.5
    assert dbscan_labels(dist, 0.5001, 2).tolist() == [0, 0]
    assert dbscan_labels(dist, 0.5, 1).tolist() == [0, 1]


def test_min_samples_one_gives_connected_components():
    gen = torch.Generator().manual_seed(5)
    pts = torch.rand(1, 40, 2, generator=gen)
    dist = torch.cdist(pts, pts)
    labels = dbscan_labels(dist, 0.1, 1)[0]
    assert (labels >= 0).all()
    adj = (dist[0] < 0.1).numpy()
    from scipy.sparse.csgraph import connected_components
    n, comp = connected_components(adj, directed=False)
    assert int(labels.max()) + 1 == n
    pairs = set(zip(labels.tolist(), comp.tolist()))
    assert len(pairs) == n


def test_relation_attention_values():
    gen = torch.Generator().manual_seed(7)
    k = _clustered_keys(gen, batch=2, points=40)
    eps, ms = 0.2, 4
    g = relation_attention(k, eps, ms)
    assert g.shape == (2, 40, 40) and g.dtype == torch.float32
    assert set(torch.unique(g).tolist()) == {0.0, torch.tensor(eps).item()}
    torch.testing.assert_close(g, g.transpose(1, 2), atol=0, rtol=0)
    labels = dbscan_labels(_cosine_dist(k.float()), eps, ms)
    for b in range(2):
        lab = labels[b]
        noise = lab == -1
        assert noise.any() and (~noise).any()
        assert (g[b][noise] == 0).all() and (g[b][:, noise] == 0).all()  # incl. the diagonal
        same = (lab[:, None] == lab[None, :]) & ~noise[:, None]
        torch.testing.assert_close(g[b], same.float() * eps, atol=0, rtol=0)
    # rows are L2-normalised inside: scaling keys changes nothing
    torch.testing.assert_close(relation_attention(3.0 * k, eps, ms), g, atol=0, rtol=0)


def test_relation_runs_under_autocast():
    gen = torch.Generator().manual_seed(8)
    k = _clustered_keys(gen, batch=1, points=30)
    ref = relation_attention(k, 0.2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = relation_attention(k, 0.2, 2)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, atol=0, rtol=0)


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 4), torch.zeros(5), torch.zeros(0, 0),
                                 torch.zeros(2, 2, dtype=torch.long)])
def test_bad_distance_input(bad):
    with pytest.raises(InvalidInputError, match="expected a float tensor of shape"):
        dbscan_labels(bad, 0.5, 1)


@pytest.mark.parametrize("eps,ms", [(0.0, 1), (-1.0, 1), (0.5, 0), (0.5, 1.5), (True, 1)])
def test_bad_parameters(eps, ms):
    with pytest.raises(InvalidInputError, match="expected"):
        dbscan_labels(torch.zeros(3, 3), eps, ms)
