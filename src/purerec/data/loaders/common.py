"""Shared steps of the real-data loaders: responses, de-duplication, tags and World assembly.

- Response scale: r = clip(watch_ratio, 0, 2) / 2 in [0, 1]; watch ratios above 5 are kept
  (the transform caps them); rows with a non-finite watch ratio (NaN, empty, inf) are dropped.
- Duplicate (user, item) rows are averaged (on the r scale) into one interaction, so an item's
  exposure count is its number of distinct users and every mean is over distinct pairs.
- Worlds are built from the valid rows only: a user or item all of whose rows were dropped is
  not in the world.
- ``assemble_worlds`` takes the platform's (train) logs and the test logs. Users/items of each
  world are the distinct ids of its own logs, sorted by original id (kept in ``user_ids`` /
  ``item_ids``). Visible features of both worlds come from the platform logs over the union
  of both worlds' items: item_pop = distinct logged users, item_log_reward = mean logged r
  (0 if never logged), item_emb = ``purerec.data.mf.item_embeddings`` of the dense train-users x
  all-items logged r matrix (a never-logged item's column is all zero, so its row is ~0);
  ``popular`` is recomputed within each world's own item set.
- Hidden truth: ``purerec.data.truth.fit_truth`` on each world's own logs (dim = cfg.true_dim).
  item_log_true = mean fitted true response over the item's platform-log exposures: for the
  train world over all of them; for the test world over those by test-world users, scored
  with the test truth (0 where an item has none).
- Keys: jax.random.key(cfg.seed) split into (embedding, train truth, test truth).
- ``joint`` logs (the user-CSV loader, ``purerec.data.loaders.user_csv``, when there is no unbiased
  part): one truth fitted on all of them, shared by both worlds (see ``assemble_worlds``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purerec.core import memory
from purerec.data.loaders.csvio import DataFormatError, line_of_record
from purerec.data.mf import item_embeddings
from purerec.data.sections import WorldConfig
from purerec.data.truth import fit_truth, pair_response
from purerec.sim.world import popular_flags, World


class Interactions(NamedTuple):
    """De-duplicated logs: original user and item ids (int64) and response r (float64) per pair."""

    users: np.ndarray
    items: np.ndarray
    r: np.ndarray


class TagTable(NamedTuple):
    """Item tags from a features file: sorted unique item ids and their multi-hot bool[n, n_tags]."""

    item_ids: np.ndarray
    tags: np.ndarray

    def lookup(self, items: np.ndarray) -> np.ndarray:
        """Multi-hot rows for ``items``; an item missing from the table is untagged."""
        pos = np.searchsorted(self.item_ids, items)
        pos = np.minimum(pos, max(len(self.item_ids) - 1, 0))
        found = (self.item_ids[pos] == items) if len(self.item_ids) else np.zeros(len(items), bool)
        out = np.zeros((len(items), self.tags.shape[1]), bool)
        out[found] = self.tags[pos[found]]
        return out


def response(watch_ratio: np.ndarray) -> np.ndarray:
    """r = clip(watch_ratio, 0, 2) / 2."""
    return np.clip(watch_ratio, 0.0, 2.0) / 2.0


def interactions(users: np.ndarray, items: np.ndarray, watch_ratio: np.ndarray) -> Interactions:
    """Drop non-finite watch ratios, map to r, average duplicate (user, item) rows."""
    keep = np.isfinite(watch_ratio)
    return average_pairs(users[keep], items[keep], response(watch_ratio[keep]))


def average_pairs(users: np.ndarray, items: np.ndarray, r: np.ndarray) -> Interactions:
    """Average the responses ``r`` (already on the [0, 1] scale) of duplicate (user, item) rows."""
    if users.size == 0:
        return Interactions(users, items, r)
    uu, ui = np.unique(users, return_inverse=True)
    iu, ii = np.unique(items, return_inverse=True)
    key = ui.astype(np.int64) * len(iu) + ii
    pairs, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    mean_r = np.bincount(inv, weights=r, minlength=len(pairs)) / counts
    return Interactions(uu[pairs // len(iu)], iu[pairs % len(iu)], mean_r)


def tag_table(path: str, column: str, item_ids: np.ndarray, raw: np.ndarray, parse) -> TagTable:
    """Parse tag strings with ``parse(str) -> list[int]`` (raising ValueError) into a TagTable.

    n_tags = largest tag id seen + 1 (at least 1); an item listed twice gets the union of its tags.
    """
    lists = []
    for k, s in enumerate(raw):
        try:
            tags = parse(s)
        except ValueError as e:
            raise DataFormatError(f"{path}: line {line_of_record(path, k)}, column '{column}': "
                                  f"cannot parse tags {s!r} ({e})") from None
        lists.append(tags)
    n_tags = max([t for ts in lists for t in ts], default=-1) + 1
    n_tags = max(n_tags, 1)
    ids, inv = np.unique(item_ids, return_inverse=True)
    multi = np.zeros((len(ids), n_tags), bool)
    for row, ts in zip(inv, lists):
        multi[row, ts] = True
    return TagTable(ids, multi)


def parse_int_list(s: str, sep: str = ",") -> list[int]:
    """'12,65' -> [12, 65]; '' -> []. Tag ids must be non-negative integers."""
    s = s.strip()
    if not s:
        return []
    out = []
    for part in s.split(sep):
        part = part.strip()
        if not part.isdigit():
            raise ValueError(f"{part!r} is not a non-negative integer tag id")
        out.append(int(part))
    return out


def _item_log_true(true_user, true_item, u_idx, i_idx, n_items):
    if len(u_idx) == 0:
        return np.zeros(n_items, np.float32)
    resp = pair_response(true_user, true_item, u_idx, i_idx)
    total = np.bincount(i_idx, weights=resp, minlength=n_items)
    count = np.bincount(i_idx, minlength=n_items)
    return (total / np.maximum(count, 1)).astype(np.float32)


def _joint_truth(key, joint: Interactions, train: Interactions, tr, te, dim: int):
    """One truth fit on ``joint``; rows for the train (users, items) ``tr`` and test ``te``; the
    item_log_true of both over the train logs' exposures."""
    j_users, j_items = np.unique(joint.users), np.unique(joint.items)
    for ids, have, kind in ((tr[0], j_users, "user"), (te[0], j_users, "user"),
                            (tr[1], j_items, "item"), (te[1], j_items, "item")):
        if not np.isin(ids, have).all():
            raise ValueError(f"assemble_worlds: the joint logs lack some {kind}s of the worlds")
    tu, ti = fit_truth(key, np.searchsorted(j_users, joint.users), np.searchsorted(j_items, joint.items),
                       joint.r, len(j_users), len(j_items), dim)
    log_true = _item_log_true(tu, ti, np.searchsorted(j_users, train.users), np.searchsorted(j_items, train.items),
                              len(j_items))
    out = []
    for users, items in (tr, te):
        pos = np.searchsorted(j_items, items)
        out.append((tu[np.searchsorted(j_users, users)], ti[pos], log_true[pos]))
    (tu_tr, ti_tr, lt_tr), (tu_te, ti_te, lt_te) = out
    return tu_tr, ti_tr, tu_te, ti_te, lt_tr, lt_te


def assemble_worlds(train: Interactions, test: Interactions, tags: TagTable,
                    cfg: WorldConfig, files: dict[str, str] | None = None,
                    joint: Interactions | None = None) -> tuple[World, World]:
    """Build (train_world, test_world) as described in the module docstring; ``files`` names the
    file(s) behind the "train" and "test" logs in error messages.

    ``joint`` (the user-CSV loader without an unbiased file): logs holding every user and item of
    both worlds; then ONE truth is fitted on them (key: the train-truth key) and both worlds take
    their users' and items' rows of it, and item_log_true of both worlds is the mean of that truth
    over the item's train-log exposures (0 where none). Without ``joint``: one fit per world.
    """
    files = files or {}
    for name, logs in (("train", train), ("test", test)):
        if logs.users.size == 0:
            src = f" ({files[name]})" if name in files else ""
            raise DataFormatError(f"the {name} logs{src} have no valid rows (all watch ratios / responses "
                                  f"missing?): check the file's response column")
        for kind, ids in (("user", logs.users), ("video", logs.items)):
            if ids.min() < 0 or ids.max() >= 2**31:
                raise DataFormatError(f"the {name} logs have {kind} ids outside [0, 2^31) "
                                      f"(min {ids.min()}, max {ids.max()}); World stores them as int32")
    tr_users, tr_items = np.unique(train.users), np.unique(train.items)
    te_users, te_items = np.unique(test.users), np.unique(test.items)
    all_items = np.union1d(tr_items, te_items)
    memory.check(memory.logged_world(len(tr_users), len(all_items), len(te_users), len(te_items), cfg))

    # Platform (visible) features from the train logs, over all items.
    lu = np.searchsorted(tr_users, train.users)
    li = np.searchsorted(all_items, train.items)
    n_all = len(all_items)
    pop = np.bincount(li, minlength=n_all).astype(np.float32)
    log_reward = (np.bincount(li, weights=train.r, minlength=n_all) / np.maximum(pop, 1)).astype(np.float32)
    k_mf, k_tr, k_te = jax.random.split(jax.random.key(cfg.seed), 3)
    feedback = np.zeros((len(tr_users), n_all), np.float32)
    mask = np.zeros((len(tr_users), n_all), bool)
    feedback[lu, li] = train.r
    mask[lu, li] = True
    emb = np.asarray(item_embeddings(k_mf, jnp.asarray(feedback), jnp.asarray(mask), dim=cfg.emb_dim))
    del feedback, mask
    item_tags = tags.lookup(all_items)

    if joint is not None:
        tu_tr, ti_tr, tu_te, ti_te, log_true_tr, log_true_te = _joint_truth(
            k_tr, joint, train, (tr_users, tr_items), (te_users, te_items), cfg.true_dim)
    else:
        # Hidden truth, one fit per world on its own logs.
        tr_i = np.searchsorted(tr_items, train.items)
        tu_tr, ti_tr = fit_truth(k_tr, lu, tr_i, train.r, len(tr_users), len(tr_items), cfg.true_dim)
        tu_te, ti_te = fit_truth(k_te, np.searchsorted(te_users, test.users), np.searchsorted(te_items, test.items),
                                 test.r, len(te_users), len(te_items), cfg.true_dim)
        log_true_tr = _item_log_true(tu_tr, ti_tr, lu, tr_i, len(tr_items))
        in_test = np.isin(train.users, te_users) & np.isin(train.items, te_items)
        log_true_te = _item_log_true(tu_te, ti_te, np.searchsorted(te_users, train.users[in_test]),
                                     np.searchsorted(te_items, train.items[in_test]), len(te_items))

    def world(users, items, t_user, t_item, log_true):
        pos = np.searchsorted(all_items, items)
        return World(
            true_user=jnp.asarray(t_user, jnp.float32),
            true_item=jnp.asarray(t_item, jnp.float32),
            item_emb=jnp.asarray(emb[pos], jnp.float32),
            item_tags=jnp.asarray(item_tags[pos]),
            item_pop=jnp.asarray(pop[pos]),
            popular=jnp.asarray(popular_flags(pop[pos], cfg.popular_frac)),
            item_log_reward=jnp.asarray(log_reward[pos]),
            item_log_true=jnp.asarray(log_true),
            user_ids=jnp.asarray(users, jnp.int32),
            item_ids=jnp.asarray(items, jnp.int32),
        )

    return (world(tr_users, tr_items, tu_tr, ti_tr, log_true_tr),
            world(te_users, te_items, tu_te, ti_te, log_true_te))
