"""A platform state shared by all sessions: item popularity that feeds back through what is shown.

Opt-in (``platform.loop = true``; "Worlds with memory"). Without it every session is independent:
item popularity, the popular / long-tail labels and the conformity pull are fixed by the logs.
With it, the batch of concurrent sessions is a population whose exposures move one state:

* ``pop`` (f32[I]): each item's exposure mass, starting at the world's logged exposure count
  ``item_pop``. Each batched step, with n the integer exposure counts of all sessions' slates
  (summed over session shards), ``pop <- rho pop + (1 - rho) (n / sum n) M`` where ``M = sum item_pop``
  (the total mass stays that of the logs, so ``pop_norm = pop / max pop`` keeps today's scale).
  In share terms: share <- rho share + (1 - rho) n / sum n (the long-term-fairness design note).
* ``popular`` (bool[I]): the top ``n_popular`` items by ``pop`` with the world's tie rule
  (``purerec.sim.world.popular_flags``: equal mass, lower index first), recomputed every
  ``relabel_every`` batched steps.

The per-session step reads the current state through ``current_world``: the feedback's conformity
pull (``pop_norm``), the fairness exit, the step's popular count (hence AD and FCPO's cost) use the
current popularity and labels. Agents compose slates with the labels of the logs they were built on
(as FCPO's public code, which computes its groups once). With ``rho = 1`` the mass never moves
(``1 * pop + 0 * x`` is ``pop`` exactly) and relabelling reproduces the world's labels, so every
number is bit-identical to a world without the platform (a test).

Long-term fairness metrics per step (``Info``), updated at each relabel: the exposure Gini of the
last relabel window, of all the platform's exposures since the start and of the exposure mass
(the logs' Gini at the start), the label flips and the popular group's turnover; and the long-tail
items' share of the mass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from purerec.sim.metrics import gini
from purerec.sim.world import World


@struct.dataclass
class Platform:
    pop: jax.Array  # f32[I] exposure mass (starts at the logs' item_pop)
    popular: jax.Array  # bool[I] current labels
    t: jax.Array  # i32 batched steps since the start
    window: jax.Array  # f32[I] exposures since the last relabel
    total: jax.Array  # f32[I] exposures since the start
    gini_window: jax.Array  # f32 exposure Gini of the last full relabel window
    gini_total: jax.Array  # f32 exposure Gini since the start, at the last relabel
    gini_pop: jax.Array  # f32 Gini of the exposure mass, at the last relabel (the logs' at the start)
    prefs: jax.Array | None = None  # f32[U, D] users' profiles as their last session left them (persist = user)


class Info(struct.PyTreeNode):
    """One batched step's platform figures (scalars; ``relabelled`` marks the relabel steps)."""

    relabelled: jax.Array  # bool
    flips: jax.Array  # i32 labels changed at this step (0 where not relabelled)
    turnover: jax.Array  # f32 share of the popular group that is new at this step (0 where not relabelled)
    gini_window: jax.Array  # f32 exposure Gini of the last full relabel window
    gini_total: jax.Array  # f32 exposure Gini of the platform's exposures since the start (last relabel)
    gini_pop: jax.Array  # f32 Gini of the exposure mass, logs included (last relabel)
    tail_share_pop: jax.Array  # f32 long-tail items' share of the exposure mass (current labels)


def init(world: World, persist: bool = False) -> Platform:
    """The platform at the logs: mass = the logged exposure counts, labels = the world's; with
    ``persist`` every user's stored profile is their true preference."""
    n = world.n_items
    return Platform(pop=world.item_pop.astype(jnp.float32), popular=world.popular, t=jnp.int32(0),
                    window=jnp.zeros((n,), jnp.float32), total=jnp.zeros((n,), jnp.float32),
                    gini_window=jnp.float32(0.0), gini_total=jnp.float32(0.0),
                    gini_pop=gini(world.item_pop.astype(jnp.float32)),
                    prefs=world.true_user if persist else None)


def store_profiles(prefs: jax.Array, users: jax.Array, profiles: jax.Array, ended: jax.Array) -> jax.Array:
    """The profile table after the sessions that ``ended`` (bool[B]) wrote their users' final
    profiles. Two ended sessions of one user in one step: the later slot's is kept (a
    deterministic rule; a scatter with repeated indices is not)."""
    slot = jnp.arange(users.shape[0])
    last = jnp.full((prefs.shape[0],), -1, jnp.int32).at[users].max(jnp.where(ended, slot, -1))
    write = ended & (last[users] == slot)
    return prefs.at[jnp.where(write, users, prefs.shape[0])].set(profiles, mode="drop")


def current_world(world: World, platform: Platform) -> World:
    """The world as the sessions see it now: the current exposure mass and labels."""
    return world.replace(item_pop=platform.pop, popular=platform.popular)


def exposure_counts(slates: jax.Array, n_items: int) -> jax.Array:
    """f32[I]: how often each item is in the batch's slates (i32[B, K]); sums to B K."""
    return jnp.zeros((n_items,), jnp.float32).at[slates.reshape(-1)].add(1.0)


def relabel(pop: jax.Array, n_popular: int) -> jax.Array:
    """bool[I]: the top ``n_popular`` items by mass, ties to the lower index (``popular_flags``' rule)."""
    order = jnp.argsort(-pop, stable=True)
    return jnp.zeros(pop.shape, bool).at[order[:n_popular]].set(True)


def advance(platform: Platform, slates: jax.Array, rho: jax.Array, mass: jax.Array, n_popular: int,
            relabel_every: int, total=lambda x: x) -> tuple[Platform, Info]:
    """The platform after one batched step of ``slates`` (this shard's sessions; ``total`` sums
    over session shards). ``mass`` = the logs' total exposure, ``sum item_pop``."""
    n = total(exposure_counts(slates, platform.pop.shape[0]))
    pop = rho * platform.pop + (1.0 - rho) * (n / jnp.maximum(n.sum(), 1.0)) * mass
    window, tot = platform.window + n, platform.total + n
    t = platform.t + 1
    due = (t % relabel_every) == 0

    def do(_):
        new = relabel(pop, n_popular)
        flips = jnp.sum(new != platform.popular, dtype=jnp.int32)
        turnover = (jnp.sum(new & ~platform.popular) / jnp.maximum(n_popular, 1)).astype(jnp.float32)
        return new, flips, turnover, gini(window), gini(tot), gini(pop), jnp.zeros_like(window)

    def keep(_):
        p = platform
        return p.popular, jnp.int32(0), jnp.float32(0.0), p.gini_window, p.gini_total, p.gini_pop, window

    # the sorts run at relabel steps only (a cond: skipped on CPU between relabels)
    popular, flips, turnover, g_win, g_tot, g_pop, window = jax.lax.cond(due, do, keep, None)
    new = platform.replace(pop=pop, popular=popular, t=t, window=window, total=tot, gini_window=g_win, gini_total=g_tot,
                   gini_pop=g_pop)
    info = Info(relabelled=due, flips=flips, turnover=turnover, gini_window=g_win, gini_total=g_tot, gini_pop=g_pop,
                tail_share_pop=jnp.sum(jnp.where(popular, 0.0, pop)) / jnp.maximum(pop.sum(), 1e-12))
    return new, info


def stats(info: Info) -> dict[str, jax.Array]:
    """Per-update curves of a rollout's platform figures (time-major [T] ``Info``): the Gini values
    at the rollout's end, the label flips summed over its relabels, the mean turnover per relabel."""
    n_rel = jnp.maximum(info.relabelled.sum(), 1)
    return {"gini_window": info.gini_window[-1], "gini_total": info.gini_total[-1], "gini_pop": info.gini_pop[-1],
            "label_flips": info.flips.sum().astype(jnp.float32), "turnover": info.turnover.sum() / n_rel,
            "tail_share_pop": info.tail_share_pop[-1]}


def end_stats(platform: Platform, info: Info) -> dict[str, jax.Array]:
    """A rollout's platform figures at its end (the evaluation's): ``stats`` with the Gini values of
    the final state itself rather than of its last relabel."""
    return {**stats(info), "gini_total": gini(platform.total), "gini_pop": gini(platform.pop)}
