"""Plackett-Luce slates over all items: sampling (Gumbel-top-k), log-likelihood, entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample(key: jax.Array, logits: jax.Array, k: int) -> jax.Array:
    """A slate of k distinct items drawn from the Plackett-Luce model (Gumbel-top-k trick)."""
    g = jax.random.gumbel(key, logits.shape, logits.dtype)
    return jax.lax.top_k(logits + g, k)[1]


def greedy(logits: jax.Array, k: int) -> jax.Array:
    return jax.lax.top_k(logits, k)[1]


def log_prob(logits: jax.Array, slate: jax.Array) -> jax.Array:
    """log P(slate) = sum_j [l_{a_j} - log sum_{i not in a_<j} exp l_i]  for logits f32[N], slate i32[K].

    The remaining mass at position j is (mass of unselected items) + (mass of a_j..a_K), both sums
    of positives, so there is no cancellation even when the slate holds most of the mass.
    """
    m = jax.lax.stop_gradient(jnp.max(logits))
    e = jnp.exp(logits - m)
    sel = e[slate]
    rest = jnp.sum(e.at[slate].set(0.0))
    tail = jnp.cumsum(sel[::-1])[::-1]
    return jnp.sum(logits[slate] - m - jnp.log(rest + tail))


def first_position_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of the first slot's categorical: a tractable exploration bonus for the whole slate."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp)
