"""Logged data: sessions of the train world's logging policy, for offline and model-based agents.

The platform's logging policy is the rich-get-richer one behind the world's popularity counts:
each slate is a Plackett-Luce draw over logits log(1 + pop_i) (``behaviour_policy``), so the logs'
exposure counts follow the world's popularity (the analogue of KuaiRec's big matrix and
KuaiRand's standard logs). ``uniform_policy`` is random exposure (KuaiRand's random-exposure
traffic), used by Stage I where an env file asks for it.

``collect`` runs the logging policy with ``purerec.sim.rollout.unroll`` (exits and auto-reset as in
training) and returns ``Logs``, a flat pytree an agent learns from inside the compiled program
(``purerec.agents.bcq``, ``purerec.agents.dorl``); ``save`` writes the same logs as NumPy files
for users of other tools (``python train.py logs --out DIR``).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purerec.sim import env as E, slate
from purerec.sim.rollout import unroll


def behaviour_policy(key, obs, state, params: E.EnvParams):
    """The platform's popularity-biased logging policy: Plackett-Luce over log(1 + pop)."""
    return slate.sample(key, params.world.log_pop, params.slate_size)


def uniform_policy(key, obs, state, params: E.EnvParams):
    """Random exposure (KuaiRand's random-exposure traffic): K distinct items uniformly."""
    return jax.lax.top_k(jax.random.uniform(key, (params.world.n_items,)), params.slate_size)[1]


BEHAVIOUR = {"popularity": behaviour_policy, "uniform": uniform_policy}


class Logs(NamedTuple):
    """Logged steps, flat [N] with N = steps x parallel sessions (index = t * sessions + column)."""

    obs: E.Obs  # the window the logging policy saw (state history: items, feedback, valid, t)
    slate: jax.Array  # i32[N, K] the logged slate
    feedback: jax.Array  # f32[N, K] its observed feedback
    reward: jax.Array  # f32[N] the slate's mean observed feedback
    done: jax.Array  # bool[N] the session ended here (exit or max_len)
    terminated: jax.Array  # bool[N] the user left (exit)
    next_obs: E.Obs  # the window after the step (where done: the next session's first window)
    user: jax.Array  # i32[N] the session's user (the world's index)


def collect(key: jax.Array, params: E.EnvParams, n_sessions: int, n_steps: int,
            behaviour: str = "popularity") -> Logs:
    """``n_steps`` steps of ``n_sessions`` parallel sessions of a logging policy, flattened."""
    act = BEHAVIOUR[behaviour]

    def policy(key, obs, state, carry):
        slates = jax.vmap(act, in_axes=(0, 0, 0, None))(jax.random.split(key, n_sessions), obs, state, params)
        return slates, carry, state.user

    k_reset, k_run = jax.random.split(key)
    obs, state = E.batch_reset(k_reset, params, n_sessions)
    (last_obs, _, _), tr = unroll(k_run, policy, params, obs, state, (), n_steps)
    next_obs = jax.tree.map(lambda a, b: jnp.concatenate([a[1:], b[None]], axis=0), tr.obs, last_obs)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    return Logs(obs=jax.tree.map(flat, tr.obs), slate=flat(tr.slate), feedback=flat(tr.feedback),
                reward=flat(tr.reward), done=flat(tr.done), terminated=flat(tr.terminated),
                next_obs=jax.tree.map(flat, next_obs), user=flat(tr.extras))


def exposure_counts(logs: Logs, n_items: int) -> jax.Array:
    """f32[n_items]: how often each item was shown in the logs."""
    return jnp.zeros((n_items,), jnp.float32).at[logs.slate.reshape(-1)].add(1.0)


def session_ids(done: np.ndarray, n_sessions: int) -> np.ndarray:
    """i64[N]: a distinct id per logged session, numbered by column then order of start."""
    d = np.asarray(done).reshape(-1, n_sessions)  # [T, B]
    started = np.concatenate([np.zeros((1, n_sessions), np.int64), np.cumsum(d[:-1], axis=0)], axis=0)
    per_col = started[-1] + 1  # sessions per column
    offset = np.concatenate([[0], np.cumsum(per_col)[:-1]])
    return (started + offset[None, :]).reshape(-1)


COLUMNS = {
    "session": "i64[N] session id (distinct per logged session)",
    "user": "i32[N] user index in the world (user_ids maps it to the source id)",
    "t": "i32[N] step within the session (0 = first slate)",
    "history_items": "i32[N, W] the last W shown items before the step (item indices; see history_valid)",
    "history_feedback": "f32[N, W] their observed feedback",
    "history_valid": "bool[N, W] which history slots hold an item",
    "slate": "i32[N, K] the logged slate (item indices; item_ids maps them to source ids)",
    "feedback": "f32[N, K] the observed feedback of each slate item, in [0, 1]",
    "reward": "f32[N] the slate's mean observed feedback",
    "done": "bool[N] the session ended after this step (exit or max_len)",
    "exit": "bool[N] the user left after this step (the fairness-aware abandonment rule)",
    "user_ids": "i32[U] source id of each user index",
    "item_ids": "i32[I] source id of each item index",
    "item_pop": "f32[I] the world's logged exposure count of each item",
}


def check_out_dir(out_dir: str) -> None:
    """``train.py logs --out DIR``: never replaces earlier logs, never writes into a run or sweep
    directory (checked before the logs are collected)."""
    from purerec.core.errors import RunDirError

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise RunDirError(f"--out {out_dir}: is a file, not a directory; choose another --out")
    for name, what in (("config.json", "a run directory"), ("sweep.json", "a sweep directory"),
                       ("runs", "a sweep directory")):
        if os.path.exists(os.path.join(out_dir, name)):
            raise RunDirError(f"--out {out_dir}: is {what} ({name}); logs are not written into it, choose another "
                              f"--out")
    for name in ("logs.npz", "logs.json"):
        if os.path.exists(os.path.join(out_dir, name)):
            raise RunDirError(f"--out {out_dir}: already holds {name}; nothing was changed. Choose another --out "
                              f"(or delete the old logs first)")


def save(logs: Logs, out_dir: str, n_sessions: int, world, meta: dict) -> str:
    """Write the logs as ``logs.npz`` (the columns in ``COLUMNS``) and ``logs.json`` (the schema and
    ``meta``) in ``out_dir``, each atomically (a temp file, then rename). Returns the npz path."""
    from purerec.core.atomic import atomic_write

    check_out_dir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    cols = {
        "session": session_ids(logs.done, n_sessions),
        "user": np.asarray(logs.user, np.int32),
        "t": np.asarray(logs.obs.t, np.int32),
        "history_items": np.asarray(logs.obs.items, np.int32),
        "history_feedback": np.asarray(logs.obs.feedback, np.float32),
        "history_valid": np.asarray(logs.obs.valid, bool),
        "slate": np.asarray(logs.slate, np.int32),
        "feedback": np.asarray(logs.feedback, np.float32),
        "reward": np.asarray(logs.reward, np.float32),
        "done": np.asarray(logs.done, bool),
        "exit": np.asarray(logs.terminated, bool),
        "user_ids": np.asarray(world.user_ids, np.int32),
        "item_ids": np.asarray(world.item_ids, np.int32),
        "item_pop": np.asarray(world.item_pop, np.float32),
    }
    path = os.path.join(out_dir, "logs.npz")
    atomic_write(path, lambda fh: np.savez_compressed(fh, **cols), binary=True)
    info = {"columns": COLUMNS, "rows": int(cols["reward"].shape[0]),
            "sessions": int(cols["session"].max()) + 1, **meta}
    atomic_write(os.path.join(out_dir, "logs.json"), lambda fh: json.dump(info, fh, indent=1))
    return path
