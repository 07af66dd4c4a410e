"""Plackett-Luce slates over all items: sampling, log-likelihood, entropy (paper eq. 6's policy).

Sampling draws the K positions one after another from the categorical over the items not yet
taken -- exactly the Plackett-Luce law, as Gumbel-top-k would, but with 2K uniforms per slate
instead of one Gumbel variate per item: items are grouped in blocks of ``BLOCK``, a position
picks a block by its remaining mass and then an item inside it. On a 2-core CPU this is about
6x faster than Gumbel-top-k over 10,728 items, where random-number generation dominated a
rollout step.

``log_prob_entropy`` is the training-time pair (slate log-likelihood, first-slot entropy) with a
hand-written gradient: both share one pass of exponentials over all items, forward and backward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BLOCK = 128
TINY = 1e-30  # floor on an item's unnormalised mass: every item stays reachable, sums stay > 0


def _last_positive(x: jax.Array) -> jax.Array:
    return x.shape[0] - 1 - jnp.argmax((x > 0)[::-1])


def sample(key: jax.Array, logits: jax.Array, k: int) -> jax.Array:
    """A slate i32[k] of distinct items drawn from the Plackett-Luce model with logits f32[N]."""
    n = logits.shape[0]
    bs = min(BLOCK, n)
    nb = -(-n // bs)
    real = jnp.arange(nb * bs) < n
    e = jnp.maximum(jnp.exp(logits - jnp.max(logits)), TINY)
    e = jnp.where(real, jnp.pad(e, (0, nb * bs - n)), 0.0).reshape(nb, bs)
    u = jax.random.uniform(key, (k, 2))

    def position(carry, x):
        block_mass, chosen = carry
        j, (u_block, u_item) = x
        cum = jnp.cumsum(block_mass)
        b = jnp.searchsorted(cum, u_block * cum[-1], side="right")
        b = jnp.where(b < nb, b, _last_positive(block_mass))  # guards a rounding overshoot
        idx = b * bs + jnp.arange(bs)
        w = jnp.where((idx[:, None] == chosen[None, :]).any(1), 0.0, e[b])
        cw = jnp.cumsum(w)
        i = jnp.searchsorted(cw, u_item * cw[-1], side="right")
        i = jnp.where(i < bs, i, _last_positive(w))
        # Recompute the block's remaining mass as a sum of positives: exactly 0 once it is empty.
        block_mass = block_mass.at[b].set(jnp.sum(jnp.where(jnp.arange(bs) == i, 0.0, w)))
        return (block_mass, chosen.at[j].set(b * bs + i)), None

    init = (e.sum(1), jnp.full((k,), -1, jnp.int32))
    (_, chosen), _ = jax.lax.scan(position, init, (jnp.arange(k), (u[:, 0], u[:, 1])))
    return chosen


def greedy(logits: jax.Array, k: int) -> jax.Array:
    return jax.lax.top_k(logits, k)[1]


def _remaining_mass(e: jax.Array, slate: jax.Array) -> jax.Array:
    """R_j = mass of the items still available at position j, f32[K].

    (mass of unselected items) + (mass of a_j..a_K): both sums of positives, so there is no
    cancellation even when the slate holds most of the mass.
    """
    rest = jnp.sum(e.at[slate].set(0.0))
    return rest + jnp.cumsum(e[slate][::-1])[::-1]


def log_prob(logits: jax.Array, slate: jax.Array) -> jax.Array:
    """log P(slate) = sum_j [l_{a_j} - log R_j]  for logits f32[N], slate i32[K]."""
    m = jax.lax.stop_gradient(jnp.max(logits))
    e = jnp.exp(logits - m)
    return jnp.sum(logits[slate] - m - jnp.log(_remaining_mass(e, slate)))


def first_position_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of the first slot's categorical: a tractable exploration bonus for the whole slate."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp)


def _lpe_forward(logits, slate):
    m = jnp.max(logits)
    e = jnp.exp(logits - m)
    z = jnp.sum(e)
    r = _remaining_mass(e, slate)
    lp = jnp.sum(logits[slate] - m - jnp.log(r))
    ent = jnp.log(z) - jnp.sum(e * (logits - m)) / z
    return (lp, ent), (e, z, r, m)


@jax.custom_vjp
def log_prob_entropy(logits: jax.Array, slate: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log_prob(logits, slate), first_position_entropy(logits))`` with a fused gradient:

    d lp / d l_i = [i in slate] - e_i * sum_{j : i available at j} 1 / R_j
    d H  / d l_i = -p_i (log p_i + H),  p = e / Z.
    """
    return _lpe_forward(logits, slate)[0]


def _lpe_fwd(logits, slate):
    out, (e, z, r, m) = _lpe_forward(logits, slate)
    return out, (logits, slate, e, z, r, m, out[1])


def _lpe_bwd(res, g):
    logits, slate, e, z, r, m, ent = res
    g_lp, g_ent = g
    inv = 1.0 / r
    logp = logits - m - jnp.log(z)
    grad = -g_lp * e * jnp.sum(inv) - g_ent * (e / z) * (logp + ent)
    # A slate item a_j is available only at positions 1..j: give back the later positions' share.
    later = jnp.sum(inv) - jnp.cumsum(inv)
    grad = grad.at[slate].add(g_lp * (1.0 + e[slate] * later))
    return grad, None


log_prob_entropy.defvjp(_lpe_fwd, _lpe_bwd)
