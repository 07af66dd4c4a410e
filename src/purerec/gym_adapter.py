"""A Gymnasium ``VectorEnv`` over the jitted env, for PyTorch users (tianshou, Stable-Baselines3, ...).

``PurerecVectorEnv`` runs ``num_envs`` sessions in one jitted ``batch_step`` call and hands back
NumPy arrays. ``autoreset_mode`` (``metadata["autoreset_mode"]``) picks Gymnasium's auto-reset
convention (https://farama.org/Vector-Autoreset-Mode):

* ``AutoresetMode.SAME_STEP`` (the default: the pure env's own convention, the numbers of purerec's
  training loop): the observation returned for a finished session is already the first
  observation of its next session, and the final observation is in ``infos["final_obs"]`` (a
  NumPy object array holding one single-env observation dict per finished session, ``None``
  elsewhere, masked by ``infos["_final_obs"]``), with the finished step's info in
  ``infos["final_info"]`` (masked by ``infos["_final_info"]``). Gymnasium's
  ``RecordEpisodeStatistics`` and ``NormalizeReward`` accept it; its observation wrappers do not.
* ``AutoresetMode.NEXT_STEP`` (what Gymnasium's vector observation wrappers -- ``FlattenObservation``,
  ``NormalizeObservation``, ``FilterObservation``, ... -- require): the step that ends a session
  returns its final observation with ``terminated``/``truncated``; the *next* ``step`` call
  ignores that session's action (it is not even checked) and returns the first observation of
  its new session with reward 0, ``terminated = truncated = False`` and zero step infos
  (``true_reward``, ``feedback``, ``true_feedback``, ``n_popular``); the other sessions step as
  usual. No ``final_obs`` / ``final_info`` keys. The new session is the one the pure env's
  auto-reset drew in the ending step (same key), and every session draws from its own share of
  each step's key, so given the same seed and actions the two modes agree on every session up
  to its first end (the reset step of one session leaves the others' numbers alone).

Spaces (W = ``obs_window``, K = ``slate_size``, I = the world's item count, B = ``num_envs``)::

    single_observation_space = Dict(items=MultiDiscrete([I] * W),     # int64, 0 where empty
                                    feedback=Box(0, 1, (W,), float32),  # observed feedback
                                    valid=MultiBinary(W),               # int8
                                    t=Discrete(max_len + 1))            # steps taken
    single_action_space = SlateSpace(I, K)          # K distinct item ids, int64, shape (K,)
    action_space = SlateSpace(I, K, batch_shape=(B,))                  # shape (B, K)

The batched ``observation_space`` comes from ``gymnasium.vector.utils.batch_space``, which this
module teaches ``SlateSpace`` (``batch_space(SlateSpace(I, K), B) == SlateSpace(I, K, (B,))``; also
``iterate``, ``concatenate``, ``create_empty_array`` and the ``flatten`` family, which one-hot
encode a slate as ``MultiDiscrete([I] * K)`` does). ``action_space.sample()`` draws valid slates
(distinct items, uniform over ordered slates) from the space's ``np_random``:
``action_space.seed(s)`` makes the draws reproducible.

An action is a slate of ``K`` *distinct* item ids per session: ``step`` checks the batch on the
host before stepping and raises ``ValueError`` for a wrong shape, a non-integer dtype, an id
outside ``[0, I)``, or a slate that repeats an item (naming the session index and the item), and
leaves the sessions and the key sequence untouched when it does.

Every step's ``infos`` has ``true_reward`` (B,), the slate's mean *true* (uncontaminated)
feedback, plus ``feedback`` and ``true_feedback`` (B, K) and ``n_popular`` (B,). When sessions
end, ``infos["purerec_episode"] = {"r", "l", "t", "true_r"}`` holds purerec's own statistics of
the ended sessions -- return (the float64 sum of the rewards ``step`` returned), length
(purerec's ``Len``, the pure env's ``episode_len``), wall seconds and *true* return (the sum of
``true_reward``); zero where not ended -- with the mask ``infos["_purerec_episode"]``
(Gymnasium's ``_key`` convention for vector infos), in the step that ends them (both modes).
The adapter never writes ``infos["episode"]``: that key belongs to Gymnasium's
``gymnasium.wrappers.vector.RecordEpisodeStatistics``, which can wrap the adapter directly (its
``r``/``l`` then equal ``purerec_episode``'s in either mode, also under ``NormalizeReward``
placed outside it). Pass ``episode_stats=False`` to leave out ``purerec_episode``.

Randomness is a JAX key, split once per call: with ``key = seed_key(seed)``, ``reset`` does
``key, k = jax.random.split(key)`` then ``purerec.sim.env.batch_reset(k, params, num_envs)``, and
every ``step`` does ``key, k = jax.random.split(key)`` then
``purerec.sim.env.batch_step(k, state, slates, params)`` (in ``NEXT_STEP`` mode the sessions being
reset keep their state instead of the step's result; the key sequence is the same). So a run is
reproducible from ``seed`` and the actions, and matches the pure functions driven with the same
key sequence. ``seed_key`` accepts any non-negative Python int (as Gymnasium does):
``jax.random.key(seed)`` for seeds below 2**32 (so small seeds keep their numbers), and above,
``jax.random.key(seed mod 2**32)`` with the higher 32-bit words of ``seed`` folded in
(``jax.random.fold_in``) from the lowest to the highest: distinct seeds give distinct keys, where
``jax.random.key`` alone would silently wrap (2**32 -> 0) or overflow (>= 2**63).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from copy import deepcopy
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
    import gymnasium as gym
    from gymnasium import spaces
    from gymnasium.spaces import utils as space_utils
    from gymnasium.vector import AutoresetMode
    from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate
except ImportError as e:  # pragma: no cover - exercised by a test that hides gymnasium
    raise ImportError(
        "purerec.gym_adapter needs the optional dependency gymnasium (>= 1.0); "
        "install it with `pip install purerec[gym]`"
    ) from e

from purerec.config import Config, ConfigError, env_sections, world_sections
from purerec.sim import env as penv
from purerec.sim.env import EnvParams, EnvState

__all__ = ["PurerecVectorEnv", "SlateSpace", "seed_key"]

_STEP_INFO_KEYS = ("true_reward", "feedback", "true_feedback", "n_popular")
_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)


# -- the slate space ---------------------------------------------------------------------------

class SlateSpace(spaces.Space[np.ndarray]):
    """Slates of ``slate_size`` *distinct* item ids in ``[0, n_items)``, one per index of ``batch_shape``.

    Elements are int64 arrays of shape ``batch_shape + (slate_size,)``; a slate is ordered (position
    0 is shown first). ``sample()`` draws every slate uniformly among the ordered slates of distinct
    items (NumPy ``Generator.choice(..., replace=False)``, slate after slate, from ``np_random``), so
    ``seed(s)`` makes the draws reproducible. ``MultiDiscrete([I] * K)`` cannot express
    distinctness: its samples repeat items, which the env rejects.
    """

    def __init__(self, n_items: int, slate_size: int, batch_shape: Sequence[int] = (),
                 seed: int | np.random.Generator | None = None):
        for name, v in (("n_items", n_items), ("slate_size", slate_size)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"SlateSpace: {name} must be an int >= 1; got {v!r}")
        if slate_size > n_items:
            raise ValueError(f"SlateSpace: slate_size ({slate_size}) must be at most n_items ({n_items}): a "
                             f"slate holds distinct items")
        batch_shape = tuple(int(b) for b in batch_shape)
        if any(b < 1 for b in batch_shape):
            raise ValueError(f"SlateSpace: batch_shape must hold ints >= 1; got {batch_shape}")
        self.n_items, self.slate_size, self.batch_shape = int(n_items), int(slate_size), batch_shape
        super().__init__(batch_shape + (self.slate_size,), np.int64, seed)

    @property
    def is_np_flattenable(self) -> bool:
        return True

    def _item_weights(self, mask: Any, probability: Any) -> np.ndarray | None:
        """The per-item probabilities that ``mask`` / ``probability`` ask for (None = uniform)."""
        if mask is not None and probability is not None:
            raise ValueError("SlateSpace.sample: give mask or probability, not both")
        if mask is None and probability is None:
            return None
        arr = np.asarray(mask if mask is not None else probability)
        name = "mask" if mask is not None else "probability"
        if arr.shape != (self.n_items,):
            raise ValueError(f"SlateSpace.sample: {name} must have shape (n_items,) = ({self.n_items},); "
                             f"got {arr.shape}")
        if mask is not None:
            if arr.dtype != np.int8 or not np.isin(arr, (0, 1)).all():
                raise ValueError("SlateSpace.sample: mask must be an int8 array of 0/1 (1 = the item may be shown)")
            arr = arr.astype(np.float64)
        elif not (np.all(np.isfinite(arr)) and np.all(arr >= 0) and np.isclose(arr.sum(), 1.0)):
            raise ValueError("SlateSpace.sample: probability must be finite, >= 0 and sum to 1")
        if np.count_nonzero(arr) < self.slate_size:
            raise ValueError(f"SlateSpace.sample: {name} allows {np.count_nonzero(arr)} items, fewer than "
                             f"slate_size = {self.slate_size}")
        return arr / arr.sum()

    def sample(self, mask: Any | None = None, probability: Any | None = None) -> np.ndarray:
        """Random slates of distinct items. ``mask`` (int8, shape ``(n_items,)``, 1 = allowed) draws
        uniformly among the allowed items; ``probability`` (shape ``(n_items,)``, summing to 1) draws
        position after position without replacement in proportion to it (Plackett-Luce)."""
        p = self._item_weights(mask, probability)
        rng = self.np_random
        n = int(np.prod(self.batch_shape, dtype=np.int64))
        out = np.empty((n, self.slate_size), np.int64)
        for i in range(n):
            out[i] = rng.choice(self.n_items, self.slate_size, replace=False, p=p)
        return out.reshape(self.shape)

    def contains(self, x: Any) -> bool:
        """An integer array of this shape, ids in ``[0, n_items)``, no item twice within a slate."""
        if isinstance(x, Sequence):
            x = np.asarray(x)
        if not (isinstance(x, np.ndarray) and x.shape == self.shape and np.issubdtype(x.dtype, np.integer)):
            return False
        if not (np.all(x >= 0) and np.all(x < self.n_items)):
            return False
        srt = np.sort(x, axis=-1)
        return not bool(np.any(srt[..., 1:] == srt[..., :-1]))

    def to_jsonable(self, sample_n: Sequence[np.ndarray]) -> list:
        return [np.asarray(s).tolist() for s in sample_n]

    def from_jsonable(self, sample_n: list) -> list[np.ndarray]:
        return [np.asarray(s, np.int64) for s in sample_n]

    def as_multidiscrete(self) -> spaces.MultiDiscrete:
        """The same ids without distinctness (``MultiDiscrete``): the one-hot flattening of both agree."""
        return spaces.MultiDiscrete(np.full(self.shape, self.n_items, np.int64))

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, SlateSpace) and other.n_items == self.n_items
                and other.slate_size == self.slate_size and other.batch_shape == self.batch_shape)

    def __hash__(self) -> int:
        return hash((SlateSpace, self.n_items, self.slate_size, self.batch_shape))

    def __repr__(self) -> str:
        bs = f", batch_shape={self.batch_shape}" if self.batch_shape else ""
        return f"SlateSpace(n_items={self.n_items}, slate_size={self.slate_size}{bs})"


# Gymnasium's space utilities dispatch on the space type (functools.singledispatch).
@batch_space.register(SlateSpace)
def _batch_slate_space(space: SlateSpace, n: int = 1) -> SlateSpace:
    return SlateSpace(space.n_items, space.slate_size, (int(n),) + space.batch_shape,
                      seed=deepcopy(space.np_random))


@iterate.register(SlateSpace)
def _iterate_slates(space: SlateSpace, items: np.ndarray):
    if not space.batch_shape:
        raise TypeError(f"Unable to iterate over a single slate of {space}")
    return iter(items)


@concatenate.register(SlateSpace)
def _concatenate_slates(space: SlateSpace, items, out: np.ndarray) -> np.ndarray:
    return np.stack(list(items), axis=0, out=out)


@create_empty_array.register(SlateSpace)
def _empty_slates(space: SlateSpace, n: int = 1, fn=np.zeros) -> np.ndarray:
    return fn((n,) + space.shape, dtype=space.dtype)


@space_utils.flatdim.register(SlateSpace)
def _flatdim_slates(space: SlateSpace) -> int:
    return space_utils.flatdim(space.as_multidiscrete())


@space_utils.flatten.register(SlateSpace)
def _flatten_slates(space: SlateSpace, x: np.ndarray) -> np.ndarray:
    return space_utils.flatten(space.as_multidiscrete(), x)


@space_utils.unflatten.register(SlateSpace)
def _unflatten_slates(space: SlateSpace, x: np.ndarray) -> np.ndarray:
    return space_utils.unflatten(space.as_multidiscrete(), x)


@space_utils.flatten_space.register(SlateSpace)
def _flatten_slate_space(space: SlateSpace) -> spaces.Box:
    return space_utils.flatten_space(space.as_multidiscrete())


# -- seeds and jitted steps ----------------------------------------------------------------------

def _check_seed(seed: Any, name: str) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            f"{name} must be a non-negative int (one seed drives all sessions); got {seed!r}")
    return int(seed)


def seed_key(seed: int) -> jax.Array:
    """The JAX key of a non-negative int seed of any size (see the module docstring):
    ``jax.random.key(seed)`` below 2**32, else the low 32-bit word's key with each higher word folded in."""
    seed = _check_seed(seed, "seed")
    key = jax.random.key(seed & 0xFFFFFFFF)
    rest = seed >> 32
    while rest:
        key = jax.random.fold_in(key, rest & 0xFFFFFFFF)
        rest >>= 32
    return key


def _masked_reset(key: jax.Array, state: EnvState, mask: jax.Array, params: EnvParams):
    """Reset the sessions where ``mask`` is true; keep the others as they are."""
    obs_new, state_new = penv.batch_reset(key, params, mask.shape[0])
    obs_old = jax.vmap(penv.observe, in_axes=(0, None))(state, params)

    def pick(a, b):
        return jax.tree.map(lambda x, y: jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, y), a, b)

    return pick(obs_new, obs_old), pick(state_new, state)


def _step_holding(key: jax.Array, state: EnvState, slates: jax.Array, hold: jax.Array, params: EnvParams):
    """``batch_step`` for every session but those in ``hold`` (NEXT_STEP's resets): they keep their
    state -- the new session the previous step's auto-reset drew -- and report its first observation
    with reward 0, no termination and zero step infos."""
    obs, new_state, reward, terminated, truncated, info = penv.batch_step(key, state, slates, params)
    obs_held = jax.vmap(penv.observe, in_axes=(0, None))(state, params)
    at = lambda x: hold.reshape((-1,) + (1,) * (x.ndim - 1))  # noqa: E731
    pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(at(x), x, y), a, b)  # noqa: E731
    info = jax.tree.map(lambda x: jnp.where(at(x), jnp.zeros_like(x), x), info)
    return (pick(obs_held, obs), pick(state, new_state), jnp.where(hold, 0.0, reward).astype(reward.dtype),
            terminated & ~hold, truncated & ~hold, info)


# Jitted once per process and shared by every instance (compiled per batch size and params shape).
_reset_fn = jax.jit(penv.batch_reset, static_argnums=2)
_masked_reset_fn = jax.jit(_masked_reset)
_step_fn = jax.jit(penv.batch_step)
_step_holding_fn = jax.jit(_step_holding)


def _autoreset_mode(mode: Any) -> AutoresetMode:
    """``AutoresetMode.NEXT_STEP`` / ``SAME_STEP``, or their names or values as strings."""
    if isinstance(mode, AutoresetMode) and mode in _MODES:
        return mode
    if isinstance(mode, str):
        for m in _MODES:
            if mode.strip().lower() in (m.name.lower(), m.value.lower()):
                return m
    raise ValueError(f"autoreset_mode must be AutoresetMode.NEXT_STEP or AutoresetMode.SAME_STEP (or 'next_step' / "
                     f"'same_step'); got {mode!r} (DISABLED is not offered: the pure env always auto-resets)")


class PurerecVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` parallel recommendation sessions behind the Gymnasium vector API.

    Args:
        params: the env's parameters (``purerec.sim.env.make_params(world, env_sections(cfg))``).
        num_envs: number of parallel sessions (the batch size B).
        seed: the seed used until ``reset(seed=...)`` gives another (any non-negative int).
        episode_stats: add ``infos["purerec_episode"]`` when sessions end (default True).
        autoreset_mode: ``AutoresetMode.SAME_STEP`` (default, the pure env's convention) or
            ``AutoresetMode.NEXT_STEP`` (Gymnasium's observation wrappers); see the module docstring.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    render_mode = None

    def __init__(self, params: EnvParams, num_envs: int, seed: int = 0, episode_stats: bool = True,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1; got {num_envs!r}")
        if not isinstance(params, EnvParams):
            raise TypeError(f"params must be a purerec.sim.env.EnvParams (see make_params); got {type(params)}")
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.params = params
        self.num_envs = int(num_envs)
        self.n_items = int(params.world.n_items)
        self.slate_size = int(params.slate_size)
        self.obs_window = int(params.obs_window)
        self.max_len = int(params.max_len)
        self.episode_stats = bool(episode_stats)
        if params.loop:
            raise ConfigError("platform.loop", True, "false for the Gymnasium adapter: its sessions are independent "
                              "(a platform with memory runs inside purerec's own loop, purerec.sim.env.batch_step)")
        if self.slate_size > self.n_items:
            raise ConfigError("env.slate_size", self.slate_size,
                              f"at most {self.n_items}: the world has only {self.n_items} items (a slate holds "
                              f"distinct items)")

        w = self.obs_window
        self.single_observation_space = spaces.Dict({
            "items": spaces.MultiDiscrete(np.full((w,), self.n_items, np.int64)),
            "feedback": spaces.Box(0.0, 1.0, (w,), np.float32),
            "valid": spaces.MultiBinary(w),
            "t": spaces.Discrete(self.max_len + 1),
        })
        self.single_action_space = SlateSpace(self.n_items, self.slate_size)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        self._seed = _check_seed(seed, "seed")
        self._key = seed_key(self._seed)
        self.state: EnvState | None = None
        self._ep_ret = np.zeros(self.num_envs, np.float64)
        self._ep_true = np.zeros(self.num_envs, np.float64)
        self._ep_start = np.zeros(self.num_envs, np.float64)
        self._pending = np.zeros(self.num_envs, np.bool_)  # NEXT_STEP: sessions the next step resets

    @classmethod
    def from_config(cls, cfg: Config, num_envs: int, world: str = "test", seed: int = 0,
                    **kwargs: Any) -> "PurerecVectorEnv":
        """Build (or load from the cache) the config's worlds and wrap the ``world`` one ("test"/"train").

        The config is validated first and then checked against the loaded worlds (as ``train.py``
        does): a bad field raises ``purerec.config.ConfigError`` naming it."""
        from purerec.data.datasets import get_worlds
        from purerec.run.experiment import check_loaded_worlds

        if world not in ("train", "test"):
            raise ValueError(f"world must be 'train' or 'test'; got {world!r}")
        cfg = cfg.validate()
        train, test = get_worlds(world_sections(cfg))
        check_loaded_worlds(cfg, train, test)
        return cls(penv.make_params(train if world == "train" else test, env_sections(cfg)), num_envs, seed, **kwargs)

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

    def _check_actions(self, actions: Any, ignore: np.ndarray | None = None) -> np.ndarray:
        """The checked slates, int32; the rows in ``ignore`` (NEXT_STEP's resets) are not looked at."""
        a = np.asarray(actions)
        want = (self.num_envs, self.slate_size)
        if a.shape != want:
            raise ValueError(f"actions must have shape (num_envs, slate_size) = {want} (a slate of item ids "
                             f"per session); got shape {a.shape}")
        if ignore is not None and ignore.any():
            a = np.array(a, dtype=a.dtype if a.dtype != object else np.int64)
            a[ignore] = np.arange(self.slate_size)
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
            self._key = seed_key(seed)
            super().reset(seed=int(seed))
        mask = None if options is None else options.get("reset_mask")
        now = time.perf_counter()
        if mask is None:
            obs, self.state = _reset_fn(self._next_key(), self.params, self.num_envs)
            self._ep_ret[:] = 0.0
            self._ep_true[:] = 0.0
            self._ep_start[:] = now
            self._pending[:] = False
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
        self._pending[mask] = False
        return self._np_obs(obs), {}

    def step(self, actions: Any):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        next_step = self.autoreset_mode is AutoresetMode.NEXT_STEP
        hold = self._pending.copy() if next_step and self._pending.any() else None
        slates = self._check_actions(actions, hold)
        if hold is None:
            out = _step_fn(self._next_key(), self.state, jnp.asarray(slates), self.params)
        else:
            out = _step_holding_fn(self._next_key(), self.state, jnp.asarray(slates), jnp.asarray(hold),
                                   self.params)
        obs, self.state, reward, terminated, truncated, info = out
        obs, reward, terminated, truncated, info = jax.device_get((obs, reward, terminated, truncated, info))
        obs = self._np_obs(obs)
        rewards = np.asarray(reward, np.float64)
        terminations = np.asarray(terminated, np.bool_)
        truncations = np.asarray(truncated, np.bool_)
        infos: dict[str, Any] = {k: np.array(info[k]) for k in _STEP_INFO_KEYS}
        now = time.perf_counter()
        if hold is not None:  # their new sessions start now
            self._ep_start[hold] = now
        self._ep_ret += rewards
        self._ep_true += infos["true_reward"]

        done = terminations | truncations
        if next_step:
            self._pending = done.copy()
        if done.any():
            last = self._np_obs(info["last_obs"])
            if next_step:  # the ended sessions' final observations are the step's observations
                for f in obs:
                    obs[f][done] = last[f][done]
            else:
                final_obs = np.full(self.num_envs, None, dtype=object)
                for i in np.flatnonzero(done):
                    final_obs[i] = {"items": last["items"][i], "feedback": last["feedback"][i],
                                    "valid": last["valid"][i], "t": np.int64(last["t"][i])}
                infos["final_obs"], infos["_final_obs"] = final_obs, done.copy()
                infos["final_info"] = {k: v.copy() for k, v in infos.items() if k in _STEP_INFO_KEYS}
                infos["_final_info"] = done.copy()
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
                f"slate_size={self.slate_size}, exit_rule={self.params.exit_rule!r}, "
                f"autoreset_mode={self.autoreset_mode.name})")
