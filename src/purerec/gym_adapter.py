"""A Gymnasium ``VectorEnv`` over the jitted env, for PyTorch users (tianshou, Stable-Baselines3, ...).

``PurerecVectorEnv`` runs ``num_envs`` sessions in one jitted ``batch_step`` call and hands back
NumPy arrays. The pure env resets a finished session inside the same step, so the adapter
declares ``metadata["autoreset_mode"] = AutoresetMode.SAME_STEP`` and follows Gymnasium's
same-step convention: the observation returned for a finished session is already the first
observation of its next session, and the final observation is in ``infos["final_obs"]`` (a
NumPy object array holding one single-env observation dict per finished session, ``None``
elsewhere, masked by ``infos["_final_obs"]``), with the finished step's info in
``infos["final_info"]`` (masked by ``infos["_final_info"]``).

Spaces (W = ``obs_window``, K = ``slate_size``, I = the world's item count)::

    single_observation_space = Dict(items=MultiDiscrete([I] * W),     # int64, 0 where empty
                                    feedback=Box(0, 1, (W,), float32),  # observed feedback
                                    valid=MultiBinary(W),               # int8
                                    t=Discrete(max_len + 1))            # steps taken
    single_action_space = MultiDiscrete([I] * K)                      # a slate of item ids

and the batched ``observation_space`` / ``action_space`` come from
``gymnasium.vector.utils.batch_space`` (so the batched action space is an int64 ``Box`` of shape
``(num_envs, K)``).

An action is a slate of ``K`` *distinct* item ids per session: ``step`` checks the batch on the
host before stepping and raises ``ValueError`` for a wrong shape, a non-integer dtype, an id
outside ``[0, I)``, or a slate that repeats an item (naming the session index and the item), and
leaves the sessions and the key sequence untouched when it does. ``MultiDiscrete`` cannot express
distinctness, so ``action_space.sample()`` may draw a repeat; sample slates with e.g.
``np.argsort(rng.random((num_envs, I)), axis=1)[:, :K]`` instead.

Every step's ``infos`` has ``true_reward`` (B,), the slate's mean *true* (uncontaminated)
feedback, plus ``feedback`` and ``true_feedback`` (B, K) and ``n_popular`` (B,). When sessions
end, ``infos["purerec_episode"] = {"r", "l", "t", "true_r"}`` holds purerec's own statistics of
the ended sessions -- return (the float64 sum of the rewards ``step`` returned), length
(purerec's ``Len``, the pure env's ``episode_len``), wall seconds and *true* return (the sum of
``true_reward``); zero where not ended -- with the mask ``infos["_purerec_episode"]``
(Gymnasium's ``_key`` convention for vector infos).
The adapter never writes ``infos["episode"]``: that key belongs to Gymnasium's
``gymnasium.wrappers.vector.RecordEpisodeStatistics``, which can wrap the adapter directly (its
``r``/``l`` then equal ``purerec_episode``'s, also under ``NormalizeReward`` placed outside it).
Pass ``episode_stats=False`` to leave out ``purerec_episode``.

Randomness is a JAX key, split once per call: with ``key = jax.random.key(seed)``, ``reset``
does ``key, k = jax.random.split(key)`` then ``purerec.env.batch_reset(k, params, num_envs)``,
and every ``step`` does ``key, k = jax.random.split(key)`` then
``purerec.env.batch_step(k, state, slates, params)``. So a run is reproducible from ``seed`` and
the actions, and matches the pure functions driven with the same key sequence.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
    import gymnasium as gym
    from gymnasium import spaces
    from gymnasium.vector import AutoresetMode
    from gymnasium.vector.utils import batch_space
except ImportError as e:  # pragma: no cover - exercised by a test that hides gymnasium
    raise ImportError(
        "purerec.gym_adapter needs the optional dependency gymnasium (>= 1.0); "
        "install it with `pip install purerec[gym]`"
    ) from e

from purerec import env as penv
from purerec.config import Config
from purerec.env import EnvParams, EnvState

__all__ = ["PurerecVectorEnv"]

_STEP_INFO_KEYS = ("true_reward", "feedback", "true_feedback", "n_popular")


def _masked_reset(key: jax.Array, state: EnvState, mask: jax.Array, params: EnvParams):
    """Reset the sessions where ``mask`` is true; keep the others as they are."""
    obs_new, state_new = penv.batch_reset(key, params, mask.shape[0])
    obs_old = jax.vmap(penv.observe, in_axes=(0, None))(state, params)

    def pick(a, b):
        return jax.tree.map(lambda x, y: jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, y), a, b)

    return pick(obs_new, obs_old), pick(state_new, state)


# Jitted once per process and shared by every instance (compiled per batch size and params shape).
_reset_fn = jax.jit(penv.batch_reset, static_argnums=2)
_masked_reset_fn = jax.jit(_masked_reset)
_step_fn = jax.jit(penv.batch_step)


def _check_seed(seed: Any, name: str) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            f"{name} must be a non-negative int (one seed drives all sessions); got {seed!r}")
    return int(seed)


class PurerecVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` parallel recommendation sessions behind the Gymnasium vector API.

    Args:
        params: the env's parameters (``purerec.env.make_params(world, cfg)``).
        num_envs: number of parallel sessions (the batch size B).
        seed: the seed used until ``reset(seed=...)`` gives another.
        episode_stats: add ``infos["purerec_episode"]`` when sessions end (default True).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    render_mode = None

    def __init__(self, params: EnvParams, num_envs: int, seed: int = 0, episode_stats: bool = True):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1; got {num_envs!r}")
        if not isinstance(params, EnvParams):
            raise TypeError(f"params must be a purerec.env.EnvParams (see make_params); got {type(params)}")
        self.params = params
        self.num_envs = int(num_envs)
        self.n_items = int(params.world.n_items)
        self.slate_size = int(params.slate_size)
        self.obs_window = int(params.obs_window)
        self.max_len = int(params.max_len)
        self.episode_stats = bool(episode_stats)

        w = self.obs_window
        self.single_observation_space = spaces.Dict({
            "items": spaces.MultiDiscrete(np.full((w,), self.n_items, np.int64)),
            "feedback": spaces.Box(0.0, 1.0, (w,), np.float32),
            "valid": spaces.MultiBinary(w),
            "t": spaces.Discrete(self.max_len + 1),
        })
        self.single_action_space = spaces.MultiDiscrete(np.full((self.slate_size,), self.n_items, np.int64))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        self._seed = _check_seed(seed, "seed")
        self._key = jax.random.key(self._seed)
        self.state: EnvState | None = None
        self._ep_ret = np.zeros(self.num_envs, np.float64)
        self._ep_true = np.zeros(self.num_envs, np.float64)
        self._ep_start = np.zeros(self.num_envs, np.float64)

    @classmethod
    def from_config(cls, cfg: Config, num_envs: int, world: str = "test", seed: int = 0,
                    **kwargs: Any) -> "PurerecVectorEnv":
        """Build (or load from the cache) the config's worlds and wrap the ``world`` one ("test"/"train")."""
        from purerec.datasets import get_worlds

        if world not in ("train", "test"):
            raise ValueError(f"world must be 'train' or 'test'; got {world!r}")
        train, test = get_worlds(cfg)
        return cls(penv.make_params(train if world == "train" else test, cfg), num_envs, seed, **kwargs)

    # -- conversions -------------------------------------------------------------------------

    def _next_key(self) -> jax.Array:
        self._key, k = jax.random.split(self._key)
        return k

    @staticmethod
    def _np_obs(obs: penv.Obs) -> dict[str, np.ndarray]:
        return {
            "items": np.asarray(obs.items).astype(np.int64),
            "feedback": np.asarray(obs.feedback).astype(np.float32),
            "valid": np.asarray(obs.valid).astype(np.int8),
            "t": np.asarray(obs.t).astype(np.int64),
        }

    def _check_actions(self, actions: Any) -> np.ndarray:
        a = np.asarray(actions)
        want = (self.num_envs, self.slate_size)
        if a.shape != want:
            raise ValueError(f"actions must have shape (num_envs, slate_size) = {want} (a slate of item ids "
                             f"per session); got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
                a = a.astype(np.int64)
            else:
                raise ValueError(f"actions must be integer item ids; got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= self.n_items):
            bad = np.argwhere((a < 0) | (a >= self.n_items))[0]
            raise ValueError(f"item ids must lie in [0, n_items) = [0, {self.n_items}); got "
                             f"{a[tuple(bad)]} at actions[{bad[0]}, {bad[1]}]")
        srt = np.sort(a, axis=1)
        rep = srt[:, 1:] == srt[:, :-1]
        if rep.any():
            env_i, col = np.argwhere(rep)[0]
            item = srt[env_i, col]
            where = np.flatnonzero(a[env_i] == item).tolist()
            raise ValueError(f"action for env {env_i} repeats item {item} (at slate positions "
                             f"{where}): a slate holds distinct items")
        return a.astype(np.int32)

    # -- the Gymnasium API -------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start sessions; ``seed`` restarts the key sequence, ``options={"reset_mask": m}`` resets only ``m``."""
        if seed is not None:
            self._key = jax.random.key(_check_seed(seed, "seed"))
            super().reset(seed=int(seed))
        mask = None if options is None else options.get("reset_mask")
        now = time.perf_counter()
        if mask is None:
            obs, self.state = _reset_fn(self._next_key(), self.params, self.num_envs)
            self._ep_ret[:] = 0.0
            self._ep_true[:] = 0.0
            self._ep_start[:] = now
            return self._np_obs(obs), {}
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must be a bool numpy array of shape ({self.num_envs},); "
                             f"got {type(mask).__name__} {getattr(mask, 'dtype', '')} {getattr(mask, 'shape', '')}")
        if not mask.any():
            raise ValueError("options['reset_mask'] must contain at least one True value")
        if self.state is None:
            raise ValueError("call reset() without a reset_mask first: there are no sessions to keep")
        obs, self.state = _masked_reset_fn(self._next_key(), self.state, jnp.asarray(mask), self.params)
        self._ep_ret[mask] = 0.0
        self._ep_true[mask] = 0.0
        self._ep_start[mask] = now
        return self._np_obs(obs), {}

    def step(self, actions: Any):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        slates = self._check_actions(actions)
        out = _step_fn(self._next_key(), self.state, jnp.asarray(slates), self.params)
        obs, self.state, reward, terminated, truncated, info = out
        obs, reward, terminated, truncated, info = jax.device_get((obs, reward, terminated, truncated, info))
        obs = self._np_obs(obs)
        rewards = np.asarray(reward, np.float64)
        terminations = np.asarray(terminated, np.bool_)
        truncations = np.asarray(truncated, np.bool_)
        infos: dict[str, Any] = {k: np.array(info[k]) for k in _STEP_INFO_KEYS}
        self._ep_ret += rewards
        self._ep_true += infos["true_reward"]

        done = terminations | truncations
        if done.any():
            last = self._np_obs(info["last_obs"])
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = {"items": last["items"][i], "feedback": last["feedback"][i],
                                "valid": last["valid"][i], "t": np.int64(last["t"][i])}
            infos["final_obs"], infos["_final_obs"] = final_obs, done.copy()
            infos["final_info"] = {k: v.copy() for k, v in infos.items() if k in _STEP_INFO_KEYS}
            infos["_final_info"] = done.copy()
            now = time.perf_counter()
            if self.episode_stats:
                infos["purerec_episode"] = {
                    "r": np.where(done, self._ep_ret, 0.0),
                    "l": np.where(done, np.asarray(info["episode_len"], np.int64), 0),
                    "t": np.where(done, np.round(now - self._ep_start, 6), 0.0),
                    "true_r": np.where(done, self._ep_true, 0.0),
                }
                infos["_purerec_episode"] = done.copy()
            self._ep_ret[done] = 0.0
            self._ep_true[done] = 0.0
            self._ep_start[done] = now
        return obs, rewards, terminations, truncations, infos

    def __repr__(self) -> str:
        return (f"PurerecVectorEnv(num_envs={self.num_envs}, n_items={self.n_items}, "
                f"slate_size={self.slate_size}, exit_rule={self.params.exit_rule!r})")
