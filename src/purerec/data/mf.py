"""Matrix factorisation of logged feedback: the item embeddings a real platform would have.

The logged (contaminated) feedback matrix is centred on its observed mean, unobserved
entries are set to zero (the PureSVD convention: "not shown" carries information about
exposure, as it does on a real platform), and a rank-``dim`` truncated SVD is computed by
randomised subspace iteration (Halko, Martinsson & Tropp 2011). Item embeddings are
V * sqrt(S), rescaled to unit mean squared norm.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


@partial(jax.jit, static_argnames=("dim", "power_iters"))
def item_embeddings(key: jax.Array, feedback: jax.Array, mask: jax.Array, dim: int,
                    power_iters: int = 2) -> jax.Array:
    """Item embeddings f32[I, dim] from a dense feedback matrix f32[U, I] and its mask bool[U, I]."""
    n_obs = jnp.maximum(mask.sum(), 1)
    mu = jnp.where(mask, feedback, 0.0).sum() / n_obs
    m = jnp.where(mask, feedback - mu, 0.0)
    rank = min(dim + 8, min(m.shape))
    omega = jax.random.normal(key, (m.shape[1], rank), m.dtype)
    y, _ = jnp.linalg.qr(m @ omega)
    for _ in range(power_iters):
        z, _ = jnp.linalg.qr(m.T @ y)
        y, _ = jnp.linalg.qr(m @ z)
    b = y.T @ m
    _, s, vt = jnp.linalg.svd(b, full_matrices=False)
    k = min(dim, s.shape[0])
    emb = vt[:k].T * jnp.sqrt(s[:k])
    emb = jnp.pad(emb, ((0, 0), (0, dim - k)))
    scale = jnp.sqrt(jnp.mean(jnp.sum(emb**2, axis=1)))
    return emb / jnp.maximum(scale, 1e-8)
