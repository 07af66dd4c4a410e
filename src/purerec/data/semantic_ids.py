"""Semantic IDs: each item as a short code of L tokens (V values each), by residual balanced k-means
over its visible embedding (HSRL, Wang et al. 2025; the public code's ``k_means_acc.py`` /
``build_codebook.py`` fit, ``build_item2sid.py`` encode).

* ``fit``: level 1 clusters the embeddings into V balanced clusters, level 2 clusters the
  residuals (embedding minus its level-1 centre), and so on. *Balanced*: every cluster holds
  floor(n/V) or ceil(n/V) items (``balanced_assign``), so the codes spread the catalogue evenly.
* ``encode``: any item (a test-world item, a new one) gets its code from the fitted codebooks by
  the nearest centre per level (greedy, no balance): new items need no refit.
* ``with_collision_digit``: items that share all L tokens get one more token, their rank among
  the items sharing the code (as TIGER does), so the code names one item (up to V sharers).
* ``stats``: the collision rate and the reconstruction error per level (the world's SID card).

NumPy only (fitted once per world on the host, cached by the caller); ``encode_jax`` is the same
encoding as a JAX function for acting on a world the agent meets at test time.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np


class Codebook(NamedTuple):
    """centres f32[L, V, d]: level l's centres live in the space of the level-l residuals."""

    centres: np.ndarray

    @property
    def levels(self) -> int:
        return self.centres.shape[0]

    @property
    def codes(self) -> int:
        return self.centres.shape[1]


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """f32[n, V]: squared distances of rows x f32[n, d] to centres c f32[V, d]."""
    return (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]


def balanced_assign(dist: np.ndarray) -> np.ndarray:
    """i32[n]: the cluster of each of n points given their distances f32[n, V], every cluster
    holding floor(n/V) or ceil(n/V) points.

    Capacities first: the n mod V clusters nearest to the most points (unconstrained) get
    ceil(n/V), the others floor(n/V), so the capacities sum to n. Then rounds: every unassigned
    point proposes to its nearest cluster that still has room; each cluster keeps its nearest
    proposers up to its room and closes when full. A round assigns at least one point or closes
    a cluster, so it ends, with every point assigned."""
    n, v = dist.shape
    lo, extra = divmod(n, v)
    nearest = dist.argmin(1)
    counts = np.bincount(nearest, minlength=v)
    cap = np.full(v, lo, np.int64)
    cap[np.argsort(-counts, kind="stable")[:extra]] += 1
    out = np.full(n, -1, np.int64)
    room = cap.copy()
    todo = np.arange(n)
    while todo.size:
        d = np.where(room[None, :] > 0, dist[todo], np.inf)
        choice = d.argmin(1)
        best = d[np.arange(todo.size), choice]
        order = np.lexsort((best, choice))  # by cluster, nearest first
        ch = choice[order]
        starts = np.searchsorted(ch, np.arange(v))
        rank = np.arange(todo.size) - starts[ch]
        keep = rank < room[ch]
        out[todo[order[keep]]] = ch[keep]
        room -= np.bincount(ch[keep], minlength=v)
        todo = todo[order[~keep]]
    return out


def fit(emb: np.ndarray, levels: int, codes: int, iters: int = 20, seed: int = 0) -> Codebook:
    """Residual balanced k-means: ``levels`` codebooks of ``codes`` centres each, fitted on the rows
    of ``emb`` f32[n, d] (Lloyd iterations with the balanced assignment; centres start at distinct
    random points; a cluster keeps its centre when it is empty, which balance rules out for
    n >= V)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(emb, np.float64)
    n = x.shape[0]
    out = []
    for _ in range(levels):
        start = rng.choice(n, size=min(codes, n), replace=False)
        c = x[start]
        if c.shape[0] < codes:  # fewer points than codes: the spare centres sit far away, unused
            c = np.concatenate([c, np.full((codes - n, x.shape[1]), 1e6)], 0)
        for _ in range(iters):
            a = balanced_assign(_sq_dist(x, c))
            sums = np.zeros_like(c)
            np.add.at(sums, a, x)
            cnt = np.bincount(a, minlength=codes)
            c = np.where(cnt[:, None] > 0, sums / np.maximum(cnt, 1)[:, None], c)
        a = balanced_assign(_sq_dist(x, c))
        out.append(c)
        x = x - c[a]
    return Codebook(np.asarray(out, np.float32))


def assign_fit(emb: np.ndarray, book: Codebook) -> np.ndarray:
    """i32[n, L]: the balanced codes of the points the codebook was fitted on (the fit's own
    assignment, level by level on the residuals)."""
    x = np.asarray(emb, np.float64)
    out = []
    for c in book.centres.astype(np.float64):
        a = balanced_assign(_sq_dist(x, c))
        out.append(a)
        x = x - c[a]
    return np.stack(out, 1).astype(np.int32)


def encode(emb: np.ndarray, book: Codebook) -> np.ndarray:
    """i32[n, L]: the nearest centre per level, on the residuals (any items, no balance)."""
    x = np.asarray(emb, np.float64)
    out = []
    for c in book.centres.astype(np.float64):
        a = _sq_dist(x, c).argmin(1)
        out.append(a)
        x = x - c[a]
    return np.stack(out, 1).astype(np.int32)


def encode_jax(emb, centres):
    """``encode`` in JAX: i32[n, L] of emb f32[n, d] and centres f32[L, V, d]."""
    import jax
    import jax.numpy as jnp

    def level(x, c):
        d = (c * c).sum(1)[None, :] - 2.0 * x @ c.T
        a = jnp.argmin(d, axis=1)
        return x - c[a], a

    _, codes = jax.lax.scan(level, emb.astype(jnp.float32), centres)
    return codes.T.astype(jnp.int32)


def collision_digit(codes: np.ndarray) -> np.ndarray:
    """i32[n]: each item's rank (in item order) among the items that share its whole code."""
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    sorted_groups = inverse[order]
    starts = np.searchsorted(sorted_groups, sorted_groups)
    digit = np.empty(codes.shape[0], np.int64)
    digit[order] = np.arange(codes.shape[0]) - starts
    return digit.astype(np.int32)


def with_collision_digit(codes: np.ndarray, v: int) -> np.ndarray:
    """i32[n, L + 1]: the codes with the collision digit appended (clipped to V - 1: beyond V
    sharers the code no longer names one item)."""
    return np.concatenate([codes, np.minimum(collision_digit(codes), v - 1)[:, None]], 1).astype(np.int32)


def stats(emb: np.ndarray, book: Codebook, codes: np.ndarray) -> dict:
    """The SID card: ``collision_rate`` (share of items whose whole code another item has too),
    ``max_sharing`` (most items on one code) and ``recon_error`` per level (mean squared error of
    the embedding rebuilt from the first l centres, l = 1..L, relative to the embeddings' variance)."""
    x = np.asarray(emb, np.float64)
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    shared = counts[inverse.reshape(-1)] > 1
    var = max(float(((x - x.mean(0)) ** 2).sum(1).mean()), 1e-12)
    rebuilt = np.zeros_like(x)
    errs = []
    for lvl in range(book.levels):
        rebuilt = rebuilt + book.centres[lvl].astype(np.float64)[codes[:, lvl]]
        errs.append(float(((x - rebuilt) ** 2).sum(1).mean()) / var)
    return {"collision_rate": float(shared.mean()), "max_sharing": int(counts.max()), "recon_error": errs}


def key_of(emb: np.ndarray, levels: int, codes: int, iters: int, seed: int) -> str:
    """A cache key of a fit: the embeddings' bytes and the fit's settings."""
    h = hashlib.sha256(np.ascontiguousarray(emb, np.float32).tobytes())
    h.update(f"{levels}/{codes}/{iters}/{seed}".encode())
    return h.hexdigest()[:20]
