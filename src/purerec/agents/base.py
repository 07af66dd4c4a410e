"""What every agent module builds, and the small helpers all of them share.

An agent is a set of pure functions (``Agent``) made once per program by its module's
``make(cfg, params, axis_name)``:

* ``init(key, frozen, hyper) -> S``: the agent's whole training state (networks, optimisers,
  target networks, replay buffer, the sessions it is running, its key and ``hyper``), a pytree.
* ``update(frozen, S) -> (S, logs)``: one update: a rollout of ``train.rollout_len`` steps of
  ``train.num_envs`` sessions (``purerec.sim.rollout.unroll``) and the learning on it. ``logs`` holds
  ``purerec.sim.rollout.rollout_stats`` (the same curves for every agent) and the agent's own
  losses, all scalars.
* ``policy_params(frozen, S)``: what acting needs, nothing more.
* ``act.greedy`` / ``act.sample``: one session acting, ``(key, obs, env_state, params, pp, carry)
  -> (slate, carry)``; greedy = the agent's deterministic test-time rule, sample = its training
  (exploring) policy. The carry is per-session memory (HRL's goal), ``init_carry(n)`` for n.
* ``state_specs(axis_name)``: partition specs of S for session shards, or None when the agent
  does not support them (a config error).
* ``for_world(pp, params) -> pp``: the policy params completed with what acting on ``params``'
  world needs and would otherwise recompute every step (HSRL's Semantic IDs of that world's
  items); the evaluation calls it once per world. Identity by default; ``act`` works without it.

``hyper`` is a dict of traced scalars keyed by dotted config path (the fields declared
``traced`` in the sections the run reads), so runs that differ only in them share a program.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from purerec.core.fields import Sections
from purerec.sim import env as E


class Acts(NamedTuple):
    greedy: Callable
    sample: Callable


class Agent(NamedTuple):
    init: Callable
    update: Callable
    policy_params: Callable
    act: Acts
    init_carry: Callable = lambda n: jnp.zeros((n,))
    state_specs: Callable | None = None
    for_world: Callable = lambda pp, params: pp


def env_params(params: E.EnvParams, hyper: dict) -> E.EnvParams:
    """The env params with the traced dynamics fields taken from ``hyper`` (the attraction model's
    when the dynamics are on, the platform's decay when its loop is on: ``hyper`` holds them only then)."""
    params = params.replace(temper_offset=hyper["env.temper_offset"], fair_threshold=hyper["env.fair_threshold"],
                            fair_penalty=hyper["env.fair_penalty"])
    if params.dynamics == "attraction":
        params = params.replace(**{f: hyper[f"attraction.{f}"] for f in ("alpha_h", "alpha_nh", "beta", "harm_lambda")})
    if params.loop:
        params = params.replace(rho=hyper["platform.rho"])
    return params


@dataclass(frozen=True)
class Shards:
    """Session shards (data parallelism over a mapped device axis; identity without one)."""

    axis_name: str | None
    n: int

    def sum(self, x: Any) -> Any:
        """Sum over the shards."""
        return x if self.axis_name is None else jax.tree.map(lambda a: jax.lax.psum(a, self.axis_name), x)

    def own(self, key: jax.Array) -> jax.Array:
        """This shard's random stream from a key every shard holds."""
        return key if self.axis_name is None else jax.random.fold_in(key, jax.lax.axis_index(self.axis_name))

    def mean(self, x: jax.Array) -> jax.Array:
        """The mean of x over all shards' elements."""
        return x.mean() if self.axis_name is None else self.sum(x.sum()) / (x.size * self.n)


def no_session_shards(cfg: Sections, axis_name: str | None, kind: str) -> None:
    """The config error of an agent that does not split its sessions over devices."""
    if axis_name is not None:
        from purerec.core.errors import ConfigError

        raise ConfigError("train.session_shards", cfg.train.session_shards,
                          f"1: {kind} does not split sessions over devices")


def shards_of(cfg: Sections, axis_name: str | None) -> Shards:
    return Shards(axis_name, cfg.train.session_shards if axis_name else 1)
