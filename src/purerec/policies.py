"""Reference policies: uniform random, most-popular and the oracle upper bound.

A policy is ``act(key, obs, env_state, params) -> i32[K]`` for one session; ``rollout`` vmaps
it. Only the oracle reads ``env_state`` (the hidden user): it ranks items by the true
preference and is an upper bound, not a recommender.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from purerec.env import EnvParams, EnvState, Obs
from purerec.world import true_response


def random_policy(key: jax.Array, obs: Obs, state: EnvState, params: EnvParams) -> jax.Array:
    """K distinct items uniformly at random (Gumbel-top-k over equal logits)."""
    u = jax.random.uniform(key, (params.world.n_items,))
    return jax.lax.top_k(u, params.slate_size)[1]


def most_popular_policy(key: jax.Array, obs: Obs, state: EnvState, params: EnvParams) -> jax.Array:
    """The K most exposed items in the logs, for everyone, every step."""
    return jax.lax.top_k(params.world.item_pop, params.slate_size)[1]


def oracle_policy(key: jax.Array, obs: Obs, state: EnvState, params: EnvParams) -> jax.Array:
    """The K items with the highest hidden true preference of this session's user."""
    scores = true_response(params.world, state.user, jnp.arange(params.world.n_items))
    return jax.lax.top_k(scores, params.slate_size)[1]


REFERENCE_POLICIES = {
    "random": random_policy,
    "most_popular": most_popular_policy,
    "oracle": oracle_policy,
}
