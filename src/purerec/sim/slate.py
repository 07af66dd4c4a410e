"""Plackett-Luce slates over all items: sampling, log-likelihood, entropy (paper eq. 6's policy).

Sampling draws the K positions one after another from the categorical over the items not yet
taken -- exactly the Plackett-Luce law, as Gumbel-top-k would, but with 2K uniforms per slate
instead of one Gumbel variate per item: items are grouped in blocks of ``BLOCK``, a position
picks a block by its remaining mass and then an item inside it. On a 2-core CPU this is about
6x faster than Gumbel-top-k over 10,728 items, where random-number generation dominated a
rollout step. Slates longer than ``MASK_FROM`` items track the items already taken with a
mask instead of comparing with the chosen ones: the comparison costs O(K^2 x BLOCK) per slate,
which made K = 200 about 14x slower (4096 test sessions: 19 s per step on 3,327 items).

``linear_log_prob_entropy`` is the training-time pair (slate log-likelihood, first-slot entropy)
for logits linear in a few coefficients (the worker's, eq. 6), with a hand-written gradient: one
pass over the items in the forward pass, none in the backward pass. ``log_prob`` and
``first_position_entropy`` are the plain definitions it is tested against.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

BLOCK = 128
MASK_FROM = 32  # slates longer than this track taken items with a mask (see sample_with_log_prob)
TINY = 1e-30  # floor on an item's unnormalised mass: every item stays reachable, sums stay > 0


def _last_positive(x: jax.Array) -> jax.Array:
    return x.shape[0] - 1 - jnp.argmax((x > 0)[::-1])


def sample(key: jax.Array, logits: jax.Array, k: int) -> jax.Array:
    """A slate i32[k] of distinct items drawn from the Plackett-Luce model with logits f32[N]."""
    return sample_with_log_prob(key, logits, k)[0]


def sample_with_log_prob(key: jax.Array, logits: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """A Plackett-Luce slate i32[k] and its log-likelihood, from the masses the draw already has
    (the rollout's behaviour log-probability without a second pass over the items)."""
    n = logits.shape[0]
    bs = min(BLOCK, n)
    nb = -(-n // bs)
    real = (jnp.arange(nb * bs) < n).reshape(nb, bs)
    blocks = jnp.pad(logits, (0, nb * bs - n), constant_values=-jnp.inf).reshape(nb, bs)
    e = jnp.where(real, jnp.maximum(jnp.exp(blocks - jnp.max(blocks)), TINY), 0.0)
    u = jax.random.uniform(key, (k, 2))
    # Items already taken: small slates compare the block with the chosen items (O(k) per
    # position), large ones carry the masses with the taken items zeroed (O(1) per position, one
    # copy of the masses per slate). The same w either way, so the same slates and log-probs.
    masked = k > MASK_FROM

    def position(carry, x):
        block_mass, left, chosen = carry
        j, (u_block, u_item) = x
        cum = jnp.cumsum(block_mass)
        b = jnp.searchsorted(cum, u_block * cum[-1], side="right")
        b = jnp.where(b < nb, b, _last_positive(block_mass))  # guards a rounding overshoot
        if masked:
            w = left[b]
        else:
            idx = b * bs + jnp.arange(bs)
            w = jnp.where((idx[:, None] == chosen[None, :]).any(1), 0.0, e[b])
        cw = jnp.cumsum(w)
        i = jnp.searchsorted(cw, u_item * cw[-1], side="right")
        i = jnp.where(i < bs, i, _last_positive(w))
        # Recompute the block's remaining mass as a sum of positives: exactly 0 once it is empty.
        block_mass = block_mass.at[b].set(jnp.sum(jnp.where(jnp.arange(bs) == i, 0.0, w)))
        if masked:
            left = left.at[b, i].set(0.0)
        return (block_mass, left, chosen.at[j].set(b * bs + i)), jnp.log(w[i]) - jnp.log(cum[-1])

    init = (e.sum(1), e if masked else None, jnp.full((k,), -1, jnp.int32))
    (_, _, chosen), logp = jax.lax.scan(position, init, (jnp.arange(k), (u[:, 0], u[:, 1])))
    return chosen, jnp.sum(logp)


def greedy(logits: jax.Array, k: int) -> jax.Array:
    return jax.lax.top_k(logits, k)[1]


def tail_count(share: jax.Array, k: int) -> jax.Array:
    """Long-tail slots of a K-slate for a long-tail share in [0, 1] (rounded to the nearest slot)."""
    return jnp.clip(jnp.round(share * k), 0, k).astype(jnp.int32)


def grouped_top_k(scores: jax.Array, popular: jax.Array, n_tail: jax.Array, k: int) -> jax.Array:
    """The top ``k - n_tail`` popular items then the top ``n_tail`` long-tail items by ``scores``.

    ``n_tail`` may be traced. Each group needs at least ``k`` items (every world here has them:
    popular items are the top 20% of at least 150).
    """
    lowest = jnp.finfo(scores.dtype).min
    top_pop = jax.lax.top_k(jnp.where(popular, scores, lowest), k)[1]
    top_tail = jax.lax.top_k(jnp.where(popular, lowest, scores), k)[1]
    j = jnp.arange(k)
    n_pop = k - n_tail
    return jnp.where(j < n_pop, top_pop, top_tail[jnp.clip(j - n_pop, 0, k - 1)])


def log_prob(logits: jax.Array, slate: jax.Array) -> jax.Array:
    """log P(slate) = sum_j [l_{a_j} - log R_j]  for logits f32[N], slate i32[K].

    R_j, the mass still available at position j, is (mass of unselected items) + (mass of
    a_j..a_K): both sums of positives, so there is no cancellation even when the slate holds most
    of the mass.
    """
    m = jax.lax.stop_gradient(jnp.max(logits))
    e = jnp.exp(logits - m)
    rest = jnp.sum(e.at[slate].set(0.0))
    return jnp.sum(logits[slate] - m - jnp.log(rest + jnp.cumsum(e[slate][::-1])[::-1]))


def first_position_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of the first slot's categorical: a tractable exploration bonus for the whole slate."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp)


def _linear_chunk(x, basis, basis1, slates):
    """Values and x-Jacobians of (log P(slate), H_1) for a chunk of rows, logits = x @ basis.T.

    ``basis1`` is ``basis`` with a column of ones, so one product gives both the item masses and
    the moments: a[0] = sum_{i not in slate} e_i [b_i, 1],  a[1] = sum_{i not in slate} e_i l_i [b_i, 1]
    (l shifted by its row max). Slate items are zeroed out and added back from the K gathered
    rows, so every mass is a sum of positives (no cancellation when the slate holds most of it).
    """
    d = basis.shape[1]
    rows = jnp.arange(x.shape[0])[:, None]
    l = x @ basis.T
    lm = l - jax.lax.stop_gradient(jnp.max(l, axis=1, keepdims=True))
    e_rest = jnp.exp(lm).at[rows, slates].set(0.0)
    a0, a1 = e_rest @ basis1, (e_rest * lm) @ basis1
    rest, rest_l, a0, a1 = a0[:, d], a1[:, d], a0[:, :d], a1[:, :d]
    ea, lma = jnp.exp(lm[rows, slates]), lm[rows, slates]
    r = rest[:, None] + jnp.cumsum(ea[:, ::-1], 1)[:, ::-1]
    lp = jnp.sum(lma - jnp.log(r), 1)
    z = rest + ea.sum(1)
    mean_l = (rest_l + jnp.sum(ea * lma, 1)) / z
    ent = jnp.log(z) - mean_l
    ba = basis[slates]
    inv = 1.0 / r
    j_lp = -jnp.sum(inv, 1, keepdims=True) * a0 + jnp.einsum("rk,rkd->rd", 1.0 - ea * jnp.cumsum(inv, 1), ba)
    first = a0 + jnp.einsum("rk,rkd->rd", ea, ba)
    second = a1 + jnp.einsum("rk,rkd->rd", ea * lma, ba)
    j_ent = (mean_l[:, None] * first - second) / z[:, None]
    return lp, ent, j_lp, j_ent


def _linear_all(x, basis, slates, rows):
    n = x.shape[0]
    c = rows if n % rows == 0 else n
    basis1 = jnp.concatenate([basis, jnp.ones_like(basis[:, :1])], axis=1)
    split = lambda a: a.reshape((n // c, c) + a.shape[1:])
    out = jax.lax.map(lambda xs: _linear_chunk(xs[0], basis, basis1, xs[1]), (split(x), split(slates)))
    return jax.tree.map(lambda a: a.reshape((n,) + a.shape[2:]), out)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def linear_log_prob_entropy(x: jax.Array, basis: jax.Array, slates: jax.Array, rows: int = 128):
    """(log P(slate), H_1) per row for logits = x @ basis.T, x f32[R, D], basis f32[N, D], slates i32[R, K].

    The logits are linear in the D coefficients x, so the gradient with respect to x is a D-vector
    per row that the forward pass already has the pieces for: the backward pass only scales the
    stored Jacobians, with no second pass over the N items. No gradient flows to ``basis``.
    With R_j the mass left at slot j and p the first slot's softmax:

        d lp / d x = sum_j b_{a_j} - sum_i e_i (sum_{j : i still available at j} 1 / R_j) b_i
        d H  / d x = sum_i p_i (E_p[l] - l_i) b_i
    """
    return tuple(_linear_all(x, basis, slates, rows)[:2])


def _lin_fwd(x, basis, slates, rows):
    lp, ent, j_lp, j_ent = _linear_all(x, basis, slates, rows)
    return (lp, ent), (j_lp, j_ent)


def _lin_bwd(rows, res, g):
    j_lp, j_ent = res
    g_lp, g_ent = g
    return g_lp[:, None] * j_lp + g_ent[:, None] * j_ent, None, None


linear_log_prob_entropy.defvjp(_lin_fwd, _lin_bwd)
