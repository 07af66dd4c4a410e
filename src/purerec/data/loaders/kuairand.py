"""KuaiRand-Pure loader: (train, test) worlds from the standard and random logs.

Files, all in ``data_dir``:
  log_standard_*.csv -- every file matching the glob (sorted) is the platform's train logs;
  log_random_*.csv -- every matching file is the test logs (random exposure, unbiased);
    columns user_id, video_id (int), play_time_ms, duration_ms (numbers; empty -> NaN) are read;
  video_features_basic_pure.csv -- video_id and tag, tag like "12,65"; an empty field or "nan"
    is an untagged item; n_tags = largest tag id seen + 1; an item absent from the file is untagged.
Semantics (details in ``purerec.data.loaders.common``):
  watch ratio = play_time_ms / duration_ms; rows with duration_ms <= 0 or a missing value are
  dropped; r = min(watch ratio, 2) / 2; duplicate (user, item) rows (also across files) averaged.
  Train world = users/items of the standard logs; test world = users/items of the random logs.
  Visible features from the standard logs (an item only in the random log: pop 0, log reward 0,
  embedding row ~0); popular = top cfg.popular_frac within each world's items.
  Hidden truth: train = sigmoid-MF fit on the standard logs, test = fit on the random logs.
"""

from __future__ import annotations

import numpy as np

from purerec.data.loaders.common import assemble_worlds, interactions, parse_int_list, tag_table
from purerec.data.loaders.csvio import read_columns, require_file, require_glob
from purerec.data.sections import WorldConfig
from purerec.sim.world import World

STANDARD = "log_standard_*.csv"
RANDOM = "log_random_*.csv"
FEATURES = "video_features_basic_pure.csv"
LOG_COLUMNS = {"user_id": "int", "video_id": "int", "play_time_ms": "float", "duration_ms": "float"}


def parse_tag(s: str) -> list[int]:
    """'12,65' -> [12, 65]; '' or 'nan' -> []."""
    s = s.strip()
    if s.lower() in ("", "nan"):
        return []
    return parse_int_list(s)


def read_logs(paths: list[str]):
    """De-duplicated interactions of one or more KuaiRand log files."""
    users, items, ratios = [], [], []
    for path in paths:
        cols = read_columns(path, LOG_COLUMNS)
        dur = cols["duration_ms"]
        valid = dur > 0
        ratio = np.full(dur.shape, np.nan)
        np.divide(cols["play_time_ms"], dur, out=ratio, where=valid)
        users.append(cols["user_id"])
        items.append(cols["video_id"])
        ratios.append(ratio)
    return interactions(np.concatenate(users), np.concatenate(items), np.concatenate(ratios))


def read_tags(path: str):
    cols = read_columns(path, {"video_id": "int", "tag": "str"})
    return tag_table(path, "tag", cols["video_id"], cols["tag"], parse_tag)


def _files(data_dir: str) -> tuple[list[str], list[str], str]:
    return (require_glob(data_dir, STANDARD, "KuaiRand-Pure standard-log"),
            require_glob(data_dir, RANDOM, "KuaiRand-Pure random-log"),
            require_file(data_dir, FEATURES, "KuaiRand-Pure"))


def input_files(data_dir: str) -> list[str]:
    """The files ``load_kuairand`` reads (``MissingFileError`` when one is missing)."""
    standard, random, features = _files(data_dir)
    return [*standard, *random, features]


def load_kuairand(data_dir: str, cfg: WorldConfig) -> tuple[World, World]:
    """(train_world, test_world) from the KuaiRand-Pure files in ``data_dir``."""
    standard, random, features = _files(data_dir)
    return assemble_worlds(read_logs(standard), read_logs(random), read_tags(features), cfg,
                           files={"train": ", ".join(standard), "test": ", ".join(random)})
