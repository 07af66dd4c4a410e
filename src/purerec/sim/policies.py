"""Reference policies: the rows every comparison is read against.

* ``random``: K distinct items uniformly at random.
* ``most_popular``: the K most exposed items in the logs.
* ``balanced``: the ceil(K/2) most popular items + the rest uniformly from the long tail, every
  step: no learning and no user model, yet never unbalanced (a rule of thumb to beat).
* ``oracle``: top-K by the hidden true preference (an upper bound, not a recommender).
* ``balanced_oracle``: the same split as ``balanced``, each part the top of its group by the
  hidden truth (an upper bound under the balance constraint).

With preference dynamics on (``env.dynamics = "attraction"``) the oracles read the moved profile,
and the table adds the harm paper's rows: ``unif_safe`` (uniform over safe items), ``u0_topk``
(top-K safe items on the initial profile) and ``myopic_topk`` (top-K safe items on the current
profile).

A policy is ``act(key, obs, env_state, params) -> i32[K]`` for one session; ``rollout`` vmaps
it. Only the oracles read ``env_state`` (the hidden user).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from purerec.sim.env import EnvParams, EnvState, Obs
from purerec.sim.slate import grouped_top_k
from purerec.sim.world import true_response


def random_policy(key: jax.Array, obs: Obs, state: EnvState, params: EnvParams) -> jax.Array:
    """K distinct items uniformly at random (Gumbel-top-k over equal logits)."""
    u = jax.random.uniform(key, (params.world.n_items,))
    return jax.lax.top_k(u, params.slate_size)[1]


def most_popular_policy(key: jax.Array, obs: Obs, state: EnvState, params: EnvParams) -> jax.Array:
    """The K most exposed items in the logs, for everyone, every step."""
    return jax.lax.top_k(params.world.item_pop, params.slate_size)[1]


def true_scores(state: EnvState, params: EnvParams) -> jax.Array:
    """The hidden true response of this session's user to every item: under preference dynamics
    that of the current (moved) profile, so the oracles are the myopic top-K of the harm paper."""
    if params.dynamics == "attraction":
        return jax.nn.sigmoid(params.world.true_item @ state.pref)
    return true_response(params.world, state.user, jnp.arange(params.world.n_items))


def oracle_policy(key: jax.Array, obs: Obs, state: EnvState, params: EnvParams) -> jax.Array:
    """The K items with the highest hidden true preference of this session's user (its current
    profile under preference dynamics)."""
    scores = true_scores(state, params)
    return jax.lax.top_k(scores, params.slate_size)[1]


def balanced_split(slate_size: int) -> tuple[int, int]:
    """(popular, long-tail) slots of a balanced slate: ceil(K/2) popular, the rest long-tail."""
    n_pop = -(-slate_size // 2)
    return n_pop, slate_size - n_pop


def balanced_policy(key: jax.Array, obs: Obs, state: EnvState, params: EnvParams) -> jax.Array:
    """The ceil(K/2) most popular items + the rest drawn uniformly (distinct) from the long tail."""
    world = params.world
    n_pop, n_tail = balanced_split(params.slate_size)
    # Popular part: by log exposure; long-tail part: uniform random keys.
    u = jax.random.uniform(key, (world.n_items,))
    scores = jnp.where(world.popular, world.item_pop, u)
    return grouped_top_k(scores, world.popular, jnp.int32(n_tail), params.slate_size)


def balanced_oracle_policy(key: jax.Array, obs: Obs, state: EnvState, params: EnvParams) -> jax.Array:
    """``balanced``'s split, each group's part the top of that group by the hidden truth."""
    world = params.world
    n_pop, n_tail = balanced_split(params.slate_size)
    scores = true_scores(state, params)
    return grouped_top_k(scores, world.popular, jnp.int32(n_tail), params.slate_size)


def unif_safe_policy(key: jax.Array, obs: Obs, state: EnvState, params: EnvParams) -> jax.Array:
    """K distinct safe items uniformly at random (the harm paper's Unif; preference dynamics only)."""
    u = jax.random.uniform(key, (params.world.n_items,))
    return jax.lax.top_k(jnp.where(params.world.harmful, -1.0, u), params.slate_size)[1]


def u0_topk_policy(key: jax.Array, obs: Obs, state: EnvState, params: EnvParams) -> jax.Array:
    """The K safe items best on the user's initial profile u0, every step (the harm paper's U0: it
    ignores the drift; an oracle of the initial preference)."""
    scores = true_response(params.world, state.user, jnp.arange(params.world.n_items))
    return jax.lax.top_k(jnp.where(params.world.harmful, -1.0, scores), params.slate_size)[1]


def myopic_safe_policy(key: jax.Array, obs: Obs, state: EnvState, params: EnvParams) -> jax.Array:
    """The K safe items best on the current (moved) profile, every step (the harm paper's myopic
    top-k; an oracle of the hidden profile)."""
    return jax.lax.top_k(jnp.where(params.world.harmful, -1.0, true_scores(state, params)), params.slate_size)[1]


# Rows added to the reference table when preferences move (``env.dynamics = "attraction"``).
DYNAMICS_REFERENCE_POLICIES = {
    "unif_safe": unif_safe_policy,
    "u0_topk": u0_topk_policy,
    "myopic_topk": myopic_safe_policy,
}


def reference_policies(cfg) -> dict:
    """The reference rows of a config's table: the static ones, and the harm paper's with dynamics."""
    extra = DYNAMICS_REFERENCE_POLICIES if cfg.env.dynamics == "attraction" else {}
    return {**REFERENCE_POLICIES, **extra}


# Bump when a reference policy or the evaluation changes: ``train.py`` caches their rows on disk.
REFERENCE_VERSION = 1

REFERENCE_POLICIES = {
    "random": random_policy,
    "most_popular": most_popular_policy,
    "balanced": balanced_policy,
    "oracle": oracle_policy,
    "balanced_oracle": balanced_oracle_policy,
}
