"""Slate heads: the one place where an agent's item scores become a slate, for every agent.

A head is an axis of the benchmark, independent of the learner (``[slate]`` in the config):

* ``topk``: the K items with the highest scores (eq. 6's literal rule; what A2C, TD3, DNaIR,
  SAC4IR, BCQ, DORL, FCPO and MOFIR's papers or public code do at test time).
* ``grouped``: a slate with ``n_tail`` long-tail items and ``K - n_tail`` popular ones, each part the
  top of its group by score. The long-tail share is ``fixed`` (``slate.tail_share``, a traced
  field, so a sweep over it shares one program) or ``learned``: read from the agent's own action
  (HRL's goal w_fair / (w_acc + w_fair), MOFIR's share output, an extra action coordinate or an
  extra discrete choice for the other agents; ``learned_share``).
* ``native``: the method's own rule, as its paper and public code have it (``AgentSpec.native``
  names it per agent with its source). For every agent registered today that is a top-K of its
  scores at test time; what differs is training-time slate exploration, which stays with the
  agent (DNaIR's epsilon-replacement, SAC4IR's sampled slates).
* ``auto`` (the default): the agent's default head (``AgentSpec.default_head``), which is its
  native head unless the README shows, with numbers, that another one serves users better.

Agents call ``compose`` (deterministic slates) and ``sample`` (Plackett-Luce slates, per group
under a grouped head) and never pick items themselves; ``resolve`` turns the config into a
static ``Head`` once per program.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from purerec.sim import slate as S

RULES = ("topk", "grouped")


class Head(NamedTuple):
    """A resolved, static slate head: ``rule`` in RULES and whether the tail share is learned."""

    rule: str
    learned: bool

    @property
    def share_dims(self) -> int:
        """Extra action coordinates an agent with a continuous action adds for its learned share."""
        return int(self.rule == "grouped" and self.learned)

    @property
    def label(self) -> str:
        return "topk" if self.rule == "topk" else f"grouped-{'learned' if self.learned else 'fixed'}"


def resolve(cfg) -> Head:
    """The static head of a run: ``slate.head`` with ``auto`` / ``native`` looked up in the registry."""
    from purerec.agents import spec_of

    spec = spec_of(cfg)
    head, tail = cfg.slate.head, cfg.slate.tail
    if head == "auto":
        head = spec.default_head[0]
    if tail == "auto":
        tail = spec.default_head[1]
    if head == "native":
        head = spec.native_rule
    return Head(rule=head, learned=(head == "grouped" and tail == "learned"))


def share_of(head: Head, fixed_share: jax.Array, learned_share: jax.Array | None) -> jax.Array:
    """The long-tail share a grouped slate uses: the learned one under ``tail = learned``."""
    if head.learned:
        if learned_share is None:
            raise ValueError("a learned tail needs the agent's learned share")
        return learned_share
    return jnp.asarray(fixed_share, jnp.float32)


def compose(head: Head, scores: jax.Array, popular: jax.Array, k: int, fixed_share: jax.Array,
            learned_share: jax.Array | None = None) -> jax.Array:
    """The deterministic slate i32[..., k] of scores f32[..., N] (any leading batch axes)."""
    if head.rule == "topk":
        return jax.lax.top_k(scores, k)[1]
    share = share_of(head, fixed_share, learned_share)
    share = jnp.broadcast_to(share, scores.shape[:-1])
    flat_scores = scores.reshape(-1, scores.shape[-1])
    n_tail = S.tail_count(share.reshape(-1), k)
    out = jax.vmap(S.grouped_top_k, in_axes=(0, None, 0, None))(flat_scores, popular, n_tail, k)
    return out.reshape(*scores.shape[:-1], k)


def sample(head: Head, key: jax.Array, logits: jax.Array, popular: jax.Array, k: int, fixed_share: jax.Array,
           learned_share: jax.Array | None = None) -> jax.Array:
    """A Plackett-Luce slate i32[k] of one session's logits f32[N]: over all items (``topk``) or,
    under a grouped head, ``K - n_tail`` popular items then ``n_tail`` long-tail items, each part
    drawn by Plackett-Luce inside its group."""
    if head.rule == "topk":
        return S.sample(key, logits, k)
    n_tail = S.tail_count(share_of(head, fixed_share, learned_share), k)
    k_pop, k_tail = jax.random.split(key)
    pop = S.sample(k_pop, jnp.where(popular, logits, -jnp.inf), k)
    tail = S.sample(k_tail, jnp.where(popular, -jnp.inf, logits), k)
    j = jnp.arange(k)
    n_pop = k - n_tail
    return jnp.where(j < n_pop, pop, tail[jnp.clip(j - n_pop, 0, k - 1)])


def share_choices(k: int) -> jax.Array:
    """The long-tail shares an agent with a discrete action can choose under a learned tail:
    0, 1/K, ..., 1 (one per possible number of long-tail slots)."""
    return jnp.arange(k + 1, dtype=jnp.float32) / k


def of_hyper_action(head: Head, a: jax.Array, basis: jax.Array, popular: jax.Array, k: int,
                    fixed_share: jax.Array) -> jax.Array:
    """The slate of hyper-actions a f32[..., d + 1 (+ 1)] over the item basis f32[N, d + 1]
    (A2C, DORL, TD3, FCPO): the scores are basis @ a[:d + 1]; under a learned tail the extra last
    coordinate is the tail share's logit (share = sigmoid, 0.5 at a zero output)."""
    d = basis.shape[-1]
    scores = a[..., :d] @ basis.T
    learned = jax.nn.sigmoid(a[..., d]) if head.learned else None
    return compose(head, scores, popular, k, fixed_share, learned)


def epsilon_greedy(head: Head, key: jax.Array, scores: jax.Array, popular: jax.Array, k: int,
                   fixed_share: jax.Array, epsilon: jax.Array, learned_share: jax.Array | None = None) -> jax.Array:
    """One session's epsilon-greedy slate i32[k] (DNaIR's and BCQ's exploration): the head's
    deterministic slate, each slot replaced with probability ``epsilon`` by a random item outside
    it. Under ``topk`` that is ``purerec.agents.dnair.epsilon_slate`` exactly; under a grouped head
    a replacement is drawn from the replaced item's own group, so the slate keeps its split."""
    from purerec.agents.dnair import epsilon_slate

    if head.rule == "topk":
        return epsilon_slate(key, scores, k, epsilon)
    top = compose(head, scores, popular, k, fixed_share, learned_share)
    k_mask, k_pop, k_tail = jax.random.split(key, 3)
    repl = jnp.where(popular[top], _draw_in_group(k_pop, top, popular), _draw_in_group(k_tail, top, ~popular))
    return jnp.where(jax.random.uniform(k_mask, (k,)) < epsilon, repl, top)


def _draw_in_group(key: jax.Array, slate: jax.Array, group: jax.Array) -> jax.Array:
    """len(slate) distinct items of ``group`` (bool[N]) outside ``slate``, uniformly (Gumbel top-k)."""
    g = jax.random.gumbel(key, group.shape)
    g = jnp.where(group, g, -jnp.inf).at[slate].set(-jnp.inf)
    return jax.lax.top_k(g, slate.shape[-1])[1]


# --- a learned share for agents with per-item values (DNaIR, BCQ, SAC4IR) -------------------------
# Their action is a slate scored item by item; under ``tail = learned`` it gains one discrete
# choice, j in 0..K long-tail slots (share j / K), valued by a head of K + 1 outputs that the
# agent learns by its own method (``share_choices``).


def group_values(values: jax.Array, popular: jax.Array, k: int) -> jax.Array:
    """f32[..., K + 1]: for j = 0..K, the sum of the top K - j popular and the top j long-tail
    ``values`` (f32[..., N]): the best slate's total per-item value with j long-tail slots."""
    lowest = jnp.finfo(values.dtype).min
    top_pop = jax.lax.top_k(jnp.where(popular, values, lowest), k)[0]
    top_tail = jax.lax.top_k(jnp.where(popular, lowest, values), k)[0]
    zero = jnp.zeros(values.shape[:-1] + (1,), values.dtype)
    cs_pop = jnp.concatenate([zero, jnp.cumsum(top_pop, -1)], -1)  # [..., K + 1]: sum of the top m
    cs_tail = jnp.concatenate([zero, jnp.cumsum(top_tail, -1)], -1)
    return jnp.flip(cs_pop, -1) + cs_tail  # j -> cs_pop[K - j] + cs_tail[j]


def tail_slots(slate: jax.Array, popular: jax.Array) -> jax.Array:
    """i32[...]: the long-tail items of slates i32[..., K] (the share choice j a slate made)."""
    return jnp.sum(~popular[slate], axis=-1).astype(jnp.int32)


def slate_of_choice(head: Head, scores: jax.Array, popular: jax.Array, k: int, fixed_share: jax.Array,
                    j: jax.Array | None) -> jax.Array:
    """The head's deterministic slate, with j long-tail slots under a learned tail."""
    return compose(head, scores, popular, k, fixed_share, None if j is None else j.astype(jnp.float32) / k)
