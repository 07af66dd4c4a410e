"""The one rollout: ``unroll`` steps a batch of sessions with a batched policy (``lax.scan``,
auto-reset inside). Training (every agent's ``update``), Stage I's log collection and the
evaluation (``rollout``, a per-session policy vmapped) all run it; ``rollout_stats`` turns a
rollout into the training curves every agent logs, with one definition of each.

Policies:
* batched (``unroll``): ``policy(key, obs, env_state, carry) -> (slates i32[B, K], carry, extras)``;
  ``extras`` is whatever the agent needs back per step (log-probs, values, states, ...);
* one session (``rollout``), stateless ``act(key, obs, env_state, params[, policy_params])`` (the
  reference policies) or with a carry ``act(key, obs, env_state, params, policy_params, carry)
  -> (slate, carry)`` (agents; e.g. an HRL manager's goal held between its decisions).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from purerec.sim import env as E, platform as PL


class Transition(NamedTuple):
    """One rollout, time-major [T, B, ...]."""

    obs: E.Obs  # what the policy saw
    slate: jax.Array  # i32[T, B, K]
    reward: jax.Array  # f32[T, B] observed reward (mean feedback of the slate)
    feedback: jax.Array  # f32[T, B, K] observed feedback per slot
    true_reward: jax.Array  # f32[T, B] the hidden (uncontaminated) reward
    done: jax.Array  # bool[T, B] the session ended at this step (exit or max_len)
    terminated: jax.Array  # bool[T, B] the user left (not the max_len cut)
    n_popular: jax.Array  # i32[T, B] popular items in the slate
    ep_len: jax.Array  # i32[T, B] the ended session's length (0 where not done)
    ep_ret: jax.Array  # f32[T, B] the ended session's return (0 where not done)
    extras: Any  # the policy's per-step outputs
    dynamics: Any = ()  # purerec.sim.dynamics.StepInfo [T, B] under preference dynamics, () otherwise
    platform: Any = ()  # purerec.sim.platform.Info [T] on a platform with memory, () otherwise
    returns: Any = ()  # bool[T, B] the ended session's user comes back (platform.persist = user), () otherwise


def unroll(key: jax.Array, policy: Callable, params: Any, obs: E.Obs, env_state: Any, carry: Any, n_steps: int,
           step: Callable = E.batch_step):
    """``n_steps`` batched steps from (obs, env_state, carry); returns ((obs, env_state, carry), Transition).

    ``step`` is the batched env step (``purerec.sim.env.batch_step``); a learned model with the same
    signature and info keys (DORL's, ``purerec.agents.user_model``) is driven the same way. On a
    platform with memory ``env_state`` is a ``purerec.sim.env.LoopState``; the policy sees its sessions."""

    def body(loop, k):
        obs, state, c = loop
        k_act, k_env = jax.random.split(k)
        slates, c, extras = policy(k_act, obs, E.sessions_of(state), c)
        obs2, state2, reward, term, trunc, info = step(k_env, state, slates, params)
        done = term | trunc
        tr = Transition(obs=obs, slate=slates, reward=reward, feedback=info["feedback"],
                        true_reward=info["true_reward"], done=done, terminated=term, n_popular=info["n_popular"],
                        ep_len=jnp.where(done, info["episode_len"], 0),
                        ep_ret=jnp.where(done, info["episode_return"], 0.0), extras=extras,
                        dynamics=info.get("dynamics", ()), platform=info.get("platform", ()),
                        returns=info.get("returns", ()))
        return (obs2, state2, c), tr

    return jax.lax.scan(body, (obs, env_state, carry), jax.random.split(key, n_steps))


def rollout_stats(tr: Transition, slate_size: int, n_sessions: int, total=lambda x: x) -> dict[str, jax.Array]:
    """The training curves of one rollout (identical for every agent): episodes ended, their mean
    Len and R_cum, R_each, AD (|2p - 1| of the batch's exposure per step, averaged over steps),
    the long-tail share of the slates and Fair = the mean of -|2p - 1| / 2 per slate; on a platform
    with memory also its long-term fairness curves (``purerec.sim.platform.stats``).
    ``total`` sums over session shards; ``n_sessions`` is the sessions of all shards."""
    steps = tr.reward.shape[0]
    episodes = total(tr.done.sum())
    n_done = jnp.maximum(episodes, 1)
    n_pop_t = total(tr.n_popular.sum(1))  # [T]
    p = n_pop_t / (n_sessions * slate_size)
    fair = -0.5 * jnp.abs(2.0 * tr.n_popular / slate_size - 1.0)
    cells = steps * n_sessions
    out = {} if isinstance(tr.platform, tuple) else PL.stats(tr.platform)
    return {
        **out,
        "episodes": episodes,
        "Len": total(tr.ep_len.sum()) / n_done,
        "R_cum": total(tr.ep_ret.sum()) / n_done,
        "R_each": total(tr.reward.sum()) / cells,
        "AD": jnp.mean(jnp.abs(2 * p - 1)),
        "Fair": total(fair.sum()) / cells,
        "tail_share": 1.0 - n_pop_t.sum() / (cells * slate_size),
    }


def batched(act: Callable, params: E.EnvParams, policy_params=None) -> Callable:
    """A per-session ``act(key, obs, env_state, params, policy_params, carry) -> (slate, carry)``
    as a batched ``unroll`` policy (no extras)."""

    def policy(key, obs, state, carry):
        n = carry_size(obs)
        slates, carry = jax.vmap(act, in_axes=(0, 0, 0, None, None, 0))(
            jax.random.split(key, n), obs, state, params, policy_params, carry)
        return slates, carry, ()

    return policy


def carry_size(obs: E.Obs) -> int:
    return obs.t.shape[0]


@partial(jax.jit, static_argnames=("policy", "n_sessions", "n_steps"))
def rollout(key: jax.Array, policy: Callable, params: E.EnvParams, n_sessions: int, n_steps: int,
            policy_params=None, users=None, carry=None):
    """Time-major trajectory dict of ``n_steps`` steps of ``n_sessions`` sessions with a
    per-session policy. ``users`` (optional, i32[n_sessions]) fixes each slot's first user (the
    test protocol's distinct users); later sessions of a slot (auto-reset) draw users at random."""
    if carry is None:
        act1 = policy if policy_params is None else (lambda k, o, s, p: policy(k, o, s, p, policy_params))
        act = lambda k, o, s, p, pp, c: (act1(k, o, s, p), c)
        carry = jnp.zeros((n_sessions,))
    else:
        act = policy
    k_reset, k_run = jax.random.split(key)
    if users is None:
        obs, state = E.batch_reset(k_reset, params, n_sessions)
    else:
        obs, state = jax.vmap(E.reset_user, in_axes=(0, None))(users, params)
        state = E.on_platform(state, params)
    (_, state, _), tr = unroll(k_run, batched(act, params, policy_params), params, obs, state, carry, n_steps)
    out = {"reward": tr.reward, "true_reward": tr.true_reward, "done": tr.done, "terminated": tr.terminated,
           "slates": tr.slate, "n_popular": tr.n_popular}
    if tr.dynamics != ():
        out["dynamics"] = tr.dynamics
    if not isinstance(tr.platform, tuple):
        out["platform"], out["platform_end"] = tr.platform, state.platform
    if not isinstance(tr.returns, tuple):
        out["returns"] = tr.returns
    return out
