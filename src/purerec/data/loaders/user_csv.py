"""A world from the user's own logs: ``--world.source csv --world.data-dir DIR``.

Files in ``DIR`` (UTF-8 CSV, comma-separated, a header row first; column order is free, other
columns are ignored; quoted fields are fine):

``interactions.csv`` (required) -- the platform's logs, one row per (user, item) interaction:
  user_id      any non-empty string or integer.
  item_id      any non-empty string or integer.
  feedback     a number in [0, 1] (e.g. a click 0/1, a rating rescaled to [0, 1]), OR, instead,
  watch_ratio  a number >= 0 (play time / duration), mapped like the KuaiRec loader:
               feedback = min(watch_ratio, 2) / 2.
               Exactly one of the two columns; every row needs a value (no empty field, no NaN).
  timestamp    optional: a number (e.g. Unix seconds) or an ISO 8601 date / date-time
               ("2024-05-01", "2024-05-01 13:45:00"; with a UTC offset, "2024-05-01T13:45:00+02:00"
               or "...Z", converted to UTC; none means UTC), one form for the whole file. Only the
               order matters; it selects the time split below.
``unbiased.csv`` (optional) -- logs in the same schema collected without the platform's bias
  (random exposure, or a fully observed block of users x items, like KuaiRand's random log or
  KuaiRec's small matrix). Its timestamps, if any, are not used.
``items.csv`` (optional) -- item tags: columns item_id and tags, tags a ';'-separated list of
  labels (strings or integers, e.g. "comedy;music"; empty parts are skipped, an empty field is an
  untagged item). Tags are numbered 0..T-1 in sorted label order (integers numerically when
  every label is an integer), T = the number of distinct labels on logged items (at least 1, at
  most 1024). An item listed twice gets the union of its tags; an item absent from the file (or
  no file) is untagged; a row for an item not in the logs is ignored. Optional column
  ``harmful``: the platform's harm label of the item, 1/0 (or true/false; empty = 0), read by
  the preference dynamics (``env.dynamics = "attraction"``, ``purerec.sim.dynamics``): with the column
  present the worlds carry these labels (an item absent from the file is not harmful) instead of
  the synthetic taste-region rule.

Ids. When every user id (likewise item id) is an integer in [0, 2^31), the world keeps it
(``World.user_ids`` / ``item_ids``; "007" and "7" are the same id). Otherwise the ids are
numbered 0..n-1 in sorted string order and those numbers are the world's ids. Ids are matched
across all three files.

Semantics (shared with the KuaiRec loader, ``purerec.data.loaders.common``): duplicate (user, item)
rows are averaged into one interaction; visible features come from the train logs (item_pop =
distinct users logged, item_log_reward = mean logged feedback, item_emb = matrix factorisation of
the logs, popular = top ``world.popular_frac`` of each world's own items by item_pop).

Train / test worlds and the hidden truth (``describe_split`` says which rule a directory gets):

1. ``unbiased.csv`` present: train logs = interactions.csv, test logs = unbiased.csv, exactly
   like KuaiRec (big / small matrix) and KuaiRand (standard / random log): each world's truth is
   fitted on its own logs, so the test world's truth comes from the least-biased part.
2. else, with a ``timestamp`` column (time split): sort the rows by time; the train logs are
   the rows before the timestamp at position floor(0.8 n) of that order, the test logs the rows
   from it on (the latest ~20%; ties at the cut go to test).
3. else (user split): ``round(0.2 * users)`` users (at least 2, leaving at least 2), drawn with
   ``numpy.random.default_rng(world.seed)``, are the test users; their rows are the test logs,
   the other users' rows the train logs.

In 2 and 3 there is no less-biased part, so the hidden truth is ONE sigmoid-MF fit on all of
interactions.csv, shared by both worlds (each world takes its users' and items' rows of it), and
item_log_true (both worlds) = the mean fitted truth over the item's train-log exposures. The
visible features come from the train logs only, so the test logs (later rows, or held-out users)
are never seen by an agent in training. Each world's users and items are those in its own logs;
an item only in the test logs has item_pop 0, item_log_reward 0 and a ~0 embedding row.

Errors (``DataFormatError``, a ``PurerecError``, naming the file, the line -- 1 = the header --
and the column, with the fix): a missing interactions.csv (``MissingFileError``), an empty file,
a missing column, both or neither of feedback / watch_ratio, an empty id, a non-numeric, missing
or out-of-range feedback / watch_ratio, a malformed timestamp, a row with the wrong number of
fields, no data rows, timestamps that cannot be split, fewer than 2 users or 2 items in a world,
more than 1024 tags. A slate larger than the test world's items is caught when a run starts
(``env.slate_size``).
"""

from __future__ import annotations

import os
import re
import warnings
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from purerec.data.loaders.common import assemble_worlds, average_pairs, Interactions, response, TagTable
from purerec.data.loaders.csvio import DataFormatError, line_of_record, read_columns, read_header, require_file
from purerec.data.sections import WorldConfig
from purerec.sim.world import World

INTERACTIONS = "interactions.csv"
UNBIASED = "unbiased.csv"
ITEMS = "items.csv"
TAG_SEP = ";"
TEST_FRAC = 0.2
MAX_TAGS = 1024
MIN_PER_WORLD = 2
SCHEMA = ("expected columns user_id, item_id and one of feedback (in [0, 1]) or watch_ratio (>= 0), "
          "optionally timestamp (see `purerec.data.loaders.user_csv` / the README's csv-world schema)")


class Logs(NamedTuple):
    """Raw rows of one interactions file: ids (stripped strings), feedback r in [0, 1], time or None."""

    path: str
    users: np.ndarray
    items: np.ndarray
    r: np.ndarray
    time: np.ndarray | None


def _where(path: str, record: int, column: str) -> str:
    return f"{path}: line {line_of_record(path, record)}, column '{column}'"


def _stripped_ids(path: str, raw: np.ndarray, column: str) -> np.ndarray:
    ids = np.array([s.strip() for s in raw], dtype=object)
    empty = np.flatnonzero(ids == "")
    if empty.size:
        raise DataFormatError(f"{_where(path, int(empty[0]), column)}: empty {column}; every row needs one "
                              f"(delete the row or fill in the id)")
    return ids


def _feedback(path: str, column: str, values: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(values)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{_where(path, k, column)}: expected a number, got {float(values[k])!r} (an empty "
                              f"field reads as nan); every row needs a {column} value: fill it in or delete the row")
    if column == "feedback":
        bad = (values < 0.0) | (values > 1.0)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataFormatError(f"{_where(path, k, column)}: expected a number in [0, 1], got {float(values[k])!r}; "
                                  f"rescale the feedback to [0, 1] (e.g. a 1-5 rating r -> (r - 1) / 4), or "
                                  f"name the column watch_ratio if it is play time / duration")
        return values
    bad = values < 0.0
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{_where(path, k, column)}: expected a watch ratio >= 0, got {float(values[k])!r}")
    return response(values)


def _timestamps(path: str, raw: np.ndarray) -> np.ndarray:
    """float64 order keys (seconds) from numbers or ISO 8601 dates, one form per file (the first row's)."""
    vals = [s.strip() for s in raw]
    if _parses_float(vals[0]):
        ok, form = _parses_float, "a finite number, like the first row's"
        try:
            out = np.asarray(vals, dtype=np.float64)
            if np.isfinite(out).all():
                return out
        except ValueError:
            pass
    else:
        ok, form = _parses_date, ("an ISO 8601 date or date-time (YYYY-MM-DD[ HH:MM:SS][+HH:MM]), like the first "
                                  "row's")
        if all(_iso_like(v) for v in vals):
            try:
                out = _utc_ms(vals)
                if not np.isnat(out).any():
                    return out.astype(np.int64).astype(np.float64) / 1000.0
            except ValueError:
                pass
    for k, v in enumerate(vals):
        if not ok(v):
            raise DataFormatError(f"{_where(path, k, 'timestamp')}: expected {form}, got {raw[k]!r}; use one form "
                                  f"for the whole column (e.g. Unix seconds, or YYYY-MM-DD HH:MM:SS), or drop the "
                                  f"column")
    raise DataFormatError(f"{path}: column 'timestamp': could not read the timestamps")  # pragma: no cover


def _parses_float(v: str) -> bool:
    try:
        return bool(np.isfinite(float(v)))
    except ValueError:
        return False


def _iso_like(v: str) -> bool:
    return len(v) >= 10 and v[4] == "-" and v[7] == "-" and v[:4].isdigit()


# A date-time's UTC offset: Z or +HH[:MM] / -HH[:MM] after the time (a date alone has none).
_OFFSET = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:([Zz])|([+-])(\d{2}):?(\d{2})?)$")


def _utc_ms(vals: list[str]) -> np.ndarray:
    """datetime64[ms] in UTC of ISO 8601 strings; a date-time with an offset (Z, +02:00, -0530) is
    shifted to UTC here (NumPy would warn), one without is read as UTC. ValueError if malformed."""
    naive, shift = [], np.zeros(len(vals), np.int64)
    for k, v in enumerate(vals):
        m = _OFFSET.match(v)
        if m is None:
            naive.append(v)
            continue
        naive.append(m.group(1))
        if m.group(3):
            minutes = int(m.group(4)) * 60 + int(m.group(5) or 0)
            shift[k] = (minutes if m.group(3) == "+" else -minutes) * 60_000
    with warnings.catch_warnings():  # other zone forms NumPy still reads (to UTC) would warn
        warnings.simplefilter("ignore", UserWarning)
        out = np.asarray(naive, dtype="datetime64[ms]")
    return out - shift.astype("timedelta64[ms]")


def _parses_date(v: str) -> bool:
    if not _iso_like(v):
        return False
    try:
        return not np.isnat(_utc_ms([v])[0])
    except ValueError:
        return False


def response_column(path: str, header: list[str]) -> str:
    """'feedback' or 'watch_ratio', whichever the header has; an error when both or neither."""
    has = [c for c in ("feedback", "watch_ratio") if c in header]
    if len(has) == 2:
        raise DataFormatError(f"{path}: line 1 (header): has both 'feedback' and 'watch_ratio'; keep one (feedback "
                              f"in [0, 1], or watch_ratio >= 0 mapped to min(watch_ratio, 2) / 2)")
    if not has:
        raise DataFormatError(f"{path}: line 1 (header): missing the response column: add 'feedback' (a number in "
                              f"[0, 1] per row) or 'watch_ratio' (>= 0); the header has {header}")
    return has[0]


def read_logs(path: str, use_time: bool = True) -> Logs:
    """The rows of an interactions file in the schema above (every value checked)."""
    header = read_header(path)
    missing = [c for c in ("user_id", "item_id") if c not in header]
    if missing:
        raise DataFormatError(f"{path}: line 1 (header): missing required column(s) {missing}; the header has "
                              f"{header}; {SCHEMA}")
    resp = response_column(path, header)
    columns = {"user_id": "str", "item_id": "str", resp: "float"}
    use_time = use_time and "timestamp" in header
    if use_time:
        columns["timestamp"] = "str"
    cols = read_columns(path, columns)
    if cols["user_id"].size == 0:
        raise DataFormatError(f"{path}: no data rows after the header (line 1); add one row per interaction")
    users = _stripped_ids(path, cols["user_id"], "user_id")
    items = _stripped_ids(path, cols["item_id"], "item_id")
    r = _feedback(path, resp, cols[resp])
    time = _timestamps(path, cols["timestamp"]) if use_time else None
    return Logs(path, users, items, r, time)


class IdMap(NamedTuple):
    """Original ids -> the world's int ids: the integers themselves when every id is an integer in
    [0, 2^31) (``integer``), else 0..n-1 in sorted string order."""

    keys: np.ndarray  # object[n]: the sorted distinct id strings
    codes: np.ndarray  # int64: sorted distinct integer ids (integer mode) or 0..n-1
    integer: bool

    @staticmethod
    def build(ids: np.ndarray) -> "IdMap":
        keys = np.unique(ids)
        if keys.size and all(k.isascii() and k.isdigit() for k in keys):
            ints = [int(k) for k in keys]
            if max(ints) < 2**31:
                return IdMap(keys, np.unique(np.array(ints, np.int64)), True)
        return IdMap(keys, np.arange(len(keys), dtype=np.int64), False)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """Codes of ids that are all in the map (the files it was built from)."""
        codes, found = self.lookup(ids)
        assert found.all()
        return codes

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes, found) for any stripped id strings; the code of an id not in the map is -1."""
        if len(self.codes) == 0 or len(ids) == 0:
            return np.full(len(ids), -1, np.int64), np.zeros(len(ids), bool)
        uniq, inv = np.unique(ids, return_inverse=True)
        if self.integer:
            vals = np.array([int(s) if s.isascii() and s.isdigit() and len(s.lstrip("0")) <= 10 else -1
                             for s in uniq], dtype=np.int64)
            pos = np.minimum(np.searchsorted(self.codes, vals), len(self.codes) - 1)
            found = self.codes[pos] == vals
            codes = self.codes[pos]
        else:
            pos = np.minimum(np.searchsorted(self.keys, uniq), len(self.keys) - 1)
            found = self.keys[pos] == uniq
            codes = pos.astype(np.int64)
        inv = inv.reshape(-1)
        return np.where(found, codes, -1)[inv], found[inv]


def _label_order(labels: list[str]) -> list[str]:
    if labels and all(s.lstrip("-").isascii() and s.lstrip("-").isdigit() for s in labels):
        return sorted(labels, key=int)
    return sorted(labels)


HARM_TRUE, HARM_FALSE = ("1", "true"), ("0", "false", "")


def read_harmful(path: str, item_map: IdMap) -> np.ndarray | None:
    """The logged items' codes labelled harmful by an items.csv ``harmful`` column (None when the
    file has no such column); a value other than 1/0/true/false/empty is an error naming its line."""
    if "harmful" not in read_header(path):
        return None
    cols = read_columns(path, {"item_id": "str", "harmful": "str"})
    vals = np.asarray([str(v).strip().lower() for v in cols["harmful"]], dtype=object)
    bad = np.nonzero(~np.isin(vals, HARM_TRUE + HARM_FALSE))[0]
    if bad.size:
        raise DataFormatError(f"{_where(path, int(bad[0]), 'harmful')}: {cols['harmful'][bad[0]]!r} is not a harm "
                              "label; use 1 or 0 (true / false; empty means 0)")
    ids = _stripped_ids(path, cols["item_id"], "item_id")
    codes, found = item_map.lookup(ids)
    return np.unique(codes[found & np.isin(vals, HARM_TRUE)])


def with_harm(world: World, harmful_codes: np.ndarray | None) -> World:
    """``world`` with ``harmful`` set from the labelled item codes (unchanged without labels)."""
    if harmful_codes is None:
        return world
    return world.replace(harmful=jnp.asarray(np.isin(np.asarray(world.item_ids), harmful_codes)))


def read_items(path: str, item_map: IdMap) -> TagTable:
    """Tags of the logged items from an items.csv (rows for other items are ignored)."""
    header = read_header(path)
    missing = [c for c in ("item_id", "tags") if c not in header]
    if missing:
        raise DataFormatError(f"{path}: line 1 (header): missing required column(s) {missing}; the header has "
                              f"{header}; expected columns item_id and tags (labels separated by '{TAG_SEP}')")
    cols = read_columns(path, {"item_id": "str", "tags": "str"})
    ids = _stripped_ids(path, cols["item_id"], "item_id")
    codes, found = item_map.lookup(ids)
    lists = [[t.strip() for t in s.split(TAG_SEP) if t.strip()] for s, f in zip(cols["tags"], found) if f]
    labels = _label_order(sorted({t for ts in lists for t in ts}))
    if len(labels) > MAX_TAGS:
        raise DataFormatError(f"{path}: column 'tags': {len(labels)} distinct tags on the logged items; at most "
                              f"{MAX_TAGS} are supported (merge rare tags, or keep the most frequent {MAX_TAGS})")
    index = {t: k for k, t in enumerate(labels)}
    uniq, inv = np.unique(codes[found], return_inverse=True)
    multi = np.zeros((len(uniq), max(len(labels), 1)), bool)
    for row, ts in zip(inv.reshape(-1), lists):
        multi[row, [index[t] for t in ts]] = True
    return TagTable(uniq, multi)


def describe_split(data_dir: str) -> str:
    """Which train/test rule ``load_user_csv`` applies to ``data_dir`` (see the module docstring)."""
    if os.path.isfile(os.path.join(data_dir, UNBIASED)):
        return f"train = {INTERACTIONS}, test = {UNBIASED}; truth fitted per world (test: the unbiased part)"
    path = os.path.join(data_dir, INTERACTIONS)
    if os.path.isfile(path) and "timestamp" in read_header(path):
        return (f"time split of {INTERACTIONS}: test = the latest {TEST_FRAC:.0%} of rows; "
                f"one truth fitted on all rows")
    return f"user split of {INTERACTIONS}: test = {TEST_FRAC:.0%} of users (seeded); one truth fitted on all rows"


def _check_world(name: str, logs: Interactions, where: str) -> None:
    n_u, n_i = len(np.unique(logs.users)), len(np.unique(logs.items))
    if n_u < MIN_PER_WORLD or n_i < MIN_PER_WORLD:
        raise DataFormatError(f"the {name} world ({where}) would have {n_u} user(s) and {n_i} item(s); each world "
                              f"needs at least {MIN_PER_WORLD} of each: add interactions")


def _time_split(logs: Logs) -> np.ndarray:
    """True for the test rows: timestamp >= the one at position floor(0.8 n) of the sorted order."""
    n = len(logs.time)
    cut = np.sort(logs.time, kind="stable")[min(int(np.floor((1.0 - TEST_FRAC) * n)), n - 1)]
    test = logs.time >= cut
    if test.all():
        raise DataFormatError(f"{logs.path}: column 'timestamp': the latest {TEST_FRAC:.0%} of rows start at the "
                              f"earliest timestamp ({cut:g}), so no rows are left for the train logs; drop the "
                              f"timestamp column to split by users instead, or add an {UNBIASED}")
    return test


def _user_split(users: np.ndarray, seed: int, path: str) -> np.ndarray:
    """True for the rows of the held-out test users."""
    uniq = np.unique(users)
    n = len(uniq)
    if n < 2 * MIN_PER_WORLD:
        raise DataFormatError(f"{path}: {n} distinct user(s); splitting users into a train and a test world needs "
                              f"at least {2 * MIN_PER_WORLD} (add users, or give an {UNBIASED} with the test logs)")
    n_test = min(max(MIN_PER_WORLD, int(round(TEST_FRAC * n))), n - MIN_PER_WORLD)
    test_users = np.random.default_rng(seed).choice(uniq, n_test, replace=False)
    return np.isin(users, test_users)


def input_files(data_dir: str) -> list[str]:
    """The files ``load_user_csv`` reads: interactions.csv (``MissingFileError`` when missing) and
    unbiased.csv / items.csv where present."""
    path = require_file(data_dir, INTERACTIONS, "csv-world")
    return [path] + [p for p in (os.path.join(data_dir, UNBIASED), os.path.join(data_dir, ITEMS)) if os.path.isfile(p)]


def load_user_csv(data_dir: str, cfg: WorldConfig) -> tuple[World, World]:
    """(train_world, test_world) from the CSV files in ``data_dir`` (schema in the module docstring)."""
    path = require_file(data_dir, INTERACTIONS, "csv-world")
    logs = read_logs(path)
    unbiased_path = os.path.join(data_dir, UNBIASED)
    extra = read_logs(unbiased_path, use_time=False) if os.path.isfile(unbiased_path) else None
    user_map = IdMap.build(np.concatenate([logs.users] + ([extra.users] if extra else [])))
    item_map = IdMap.build(np.concatenate([logs.items] + ([extra.items] if extra else [])))
    items_path = os.path.join(data_dir, ITEMS)
    tags = (read_items(items_path, item_map) if os.path.isfile(items_path)
            else TagTable(np.empty(0, np.int64), np.zeros((0, 1), bool)))
    harmful = read_harmful(items_path, item_map) if os.path.isfile(items_path) else None
    users, items = user_map(logs.users), item_map(logs.items)
    worlds = _worlds(logs, extra, users, items, user_map, item_map, tags, cfg, path, unbiased_path)
    return with_harm(worlds[0], harmful), with_harm(worlds[1], harmful)


def _worlds(logs, extra, users, items, user_map, item_map, tags, cfg, path, unbiased_path):
    if extra is not None:
        train = average_pairs(users, items, logs.r)
        test = average_pairs(user_map(extra.users), item_map(extra.items), extra.r)
        _check_world("train", train, path)
        _check_world("test", test, unbiased_path)
        return assemble_worlds(train, test, tags, cfg, files={"train": path, "test": unbiased_path})

    if logs.time is not None:
        is_test = _time_split(logs)
        rule = "time split"
    else:
        is_test = _user_split(users, cfg.seed, path)
        rule = "user split"
    train = average_pairs(users[~is_test], items[~is_test], logs.r[~is_test])
    test = average_pairs(users[is_test], items[is_test], logs.r[is_test])
    _check_world("train", train, f"{path}, {rule}")
    _check_world("test", test, f"{path}, {rule}")
    joint = average_pairs(users, items, logs.r)
    return assemble_worlds(train, test, tags, cfg, files={"train": path, "test": path}, joint=joint)


__all__ = ["load_user_csv", "input_files", "describe_split", "read_logs", "read_items", "IdMap",
           "INTERACTIONS", "UNBIASED", "ITEMS"]
