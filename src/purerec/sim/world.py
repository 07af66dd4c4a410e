"""The static data of one simulated platform: a frozen pytree.

Hidden from agents (the simulator's ground truth):
  ``true_user``, ``true_item`` -- factors of the true preference response
  r*(u, i) = sigmoid(<true_user[u], true_item[i]>) (biases folded into the factors), and
  ``item_log_true`` -- mean true response over each item's logged exposures.
Visible to agents (what a real platform knows from its logs):
  ``item_emb`` (matrix factorisation of the logged, contaminated feedback), ``item_tags``,
  ``item_pop`` (exposure count in the logs), ``popular`` (top ``popular_frac`` by exposure),
  ``item_log_reward`` (mean observed feedback in the logs), and, only in worlds with preference
  dynamics (``env.dynamics = "attraction"``), ``harmful`` (the platform's harm labels; None
  otherwise, so the default world is unchanged: ``purerec.sim.dynamics.label_harm``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class World:
    true_user: jax.Array  # f32[U, D]   hidden
    true_item: jax.Array  # f32[I, D]   hidden
    item_emb: jax.Array  # f32[I, E]    visible
    item_tags: jax.Array  # bool[I, T]  visible
    item_pop: jax.Array  # f32[I]       visible: exposure count in the logs
    popular: jax.Array  # bool[I]       visible
    item_log_reward: jax.Array  # f32[I] visible
    item_log_true: jax.Array  # f32[I]   hidden
    user_ids: jax.Array  # i32[U] ids in the source data (or synthetic universe)
    item_ids: jax.Array  # i32[I]
    harmful: jax.Array | None = None  # bool[I] visible harm labels (dynamics worlds only)

    @property
    def n_users(self) -> int:
        return self.true_user.shape[0]

    @property
    def n_items(self) -> int:
        return self.true_item.shape[0]

    @property
    def n_tags(self) -> int:
        return self.item_tags.shape[1]

    @property
    def pop_norm(self) -> jax.Array:
        """Exposure count scaled to [0, 1] by the most exposed item (drives conformity)."""
        return self.item_pop / jnp.maximum(jnp.max(self.item_pop), 1.0)

    @property
    def log_pop(self) -> jax.Array:
        """log(1 + pop): eq. 6's log(pop_i), shifted by one so never-logged items stay finite."""
        return jnp.log1p(self.item_pop)


def true_response(world: World, user: jax.Array, items: jax.Array) -> jax.Array:
    """r*(u, i) in [0, 1] for one user (scalar id) and an array of item ids."""
    return jax.nn.sigmoid(world.true_item[items] @ world.true_user[user])


def popular_flags(item_pop: np.ndarray, frac: float) -> np.ndarray:
    """Top ``frac`` of items by exposure count (ties broken by item index, lower first)."""
    n = item_pop.shape[0]
    n_pop = max(1, int(round(frac * n)))
    order = np.lexsort((np.arange(n), -np.asarray(item_pop)))
    flags = np.zeros(n, dtype=bool)
    flags[order[:n_pop]] = True
    return flags


def subset_world(world: World, users: np.ndarray, items: np.ndarray, popular_frac: float) -> World:
    """A world on a subset of users and items (e.g. KuaiRec's small matrix inside the big one).

    Visible features are the platform's, taken from the parent's logs; the popular flag is
    recomputed as the top ``popular_frac`` of the subset's items.
    """
    users = np.asarray(users)
    items = np.asarray(items)
    pop = np.asarray(world.item_pop)[items]
    return World(
        true_user=world.true_user[users],
        true_item=world.true_item[items],
        item_emb=world.item_emb[items],
        item_tags=world.item_tags[items],
        item_pop=jnp.asarray(pop),
        popular=jnp.asarray(popular_flags(pop, popular_frac)),
        item_log_reward=world.item_log_reward[items],
        item_log_true=world.item_log_true[items],
        user_ids=world.user_ids[users],
        item_ids=world.item_ids[items],
        harmful=None if world.harmful is None else world.harmful[items],
    )


def save_world(path: str, world: World) -> None:
    """Write a world to ``path`` (.npz) atomically: a temp file, then rename."""
    from purerec.core.atomic import atomic_write

    atomic_write(path, lambda fh: np.savez(fh, **{k: np.asarray(v) for k, v in world.__dict__.items()
                                                                   if v is not None}), binary=True)


def load_world(path: str) -> World:
    with np.load(path) as data:
        return World(**{k: jnp.asarray(data[k]) for k in data.files})
