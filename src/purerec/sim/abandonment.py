"""Session-exit rules: when a simulated user leaves. Each rule is one pure function.

* ``temper`` (default; KuaiSim's temper with the fairness-aware abandonment of the DSRM-HRL
  authors' sibling work): temper starts at ``temper_start`` and each step
      temper += clip(mean_reward - temper_offset, -2, 0)
      temper -= fair_penalty            if |2 p - 1| >= fair_threshold
  where p is a popular share chosen by ``fair_scope`` (``imbalance_counts``):
    - ``slate`` (default; the authors' rule, HG4PFG/HER4IF ``get_leave_signal``): the share of
      popular items in this step's slate alone;
    - ``session``: the share among all items shown to the user this session (this step's slate
      included) -- purerec's earlier rule, kept as an option.
  The user leaves when temper < 1.
* ``tag_repeat`` (DORL / EasyRL4Rec KuaiEnv): at a step t > 0 the user leaves if some tag of a
  newly recommended item already occurs more than ``tag_threshold`` times among the last
  ``tag_window`` recommended items.
* ``none``: only truncation.
Truncation at ``max_len`` is not an exit rule: it is ``truncated`` in ``purerec.sim.env.step``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

TEMPER_CLIP_LOW = -2.0
TEMPER_CLIP_HIGH = 0.0
FAIR_SCOPES = ("slate", "session")


def imbalance_counts(scope: str, slate_size: int, slate_popular: jax.Array, n_shown: jax.Array,
                     n_popular: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(items, popular items) the fairness-aware abandonment measures its share p on.

    ``slate_popular``: popular items in this step's slate; ``n_shown`` / ``n_popular``: the
    session's running totals including this slate.
    """
    if scope == "slate":
        return jnp.int32(slate_size), slate_popular
    if scope == "session":
        return n_shown, n_popular
    raise ValueError(f"fair_scope must be one of {FAIR_SCOPES}, got {scope!r}")


def temper_update(temper: jax.Array, mean_reward: jax.Array, n_shown: jax.Array, n_popular: jax.Array,
                  offset: jax.Array, fair_threshold: jax.Array, fair_penalty: jax.Array):
    """New temper and whether the user leaves (temper < 1); p = n_popular / n_shown (see ``imbalance_counts``)."""
    p_u = n_popular / jnp.maximum(n_shown, 1)
    unbalanced = jnp.abs(2.0 * p_u - 1.0) >= fair_threshold
    temper = temper + jnp.clip(mean_reward - offset, TEMPER_CLIP_LOW, TEMPER_CLIP_HIGH)
    temper = temper - jnp.where(unbalanced, fair_penalty, 0.0)
    return temper, temper < 1.0


def tag_repeat_exit(t: jax.Array, hist_items: jax.Array, slate: jax.Array, item_tags: jax.Array,
                    window: int, threshold: jax.Array) -> jax.Array:
    """True if a tag of the new slate occurs more than ``threshold`` times in the last ``window`` items.

    ``hist_items`` holds the item history before this step, most recent last, -1 = empty.
    """
    recent = hist_items[-window:]
    valid = recent >= 0
    counts = jnp.sum(item_tags[jnp.maximum(recent, 0)] & valid[:, None], axis=0)
    new_tags = jnp.any(item_tags[slate], axis=0)
    return (t > 0) & jnp.any(new_tags & (counts > threshold))
