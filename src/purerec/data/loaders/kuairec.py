"""KuaiRec loader: (train, test) worlds from big_matrix.csv, small_matrix.csv, item_categories.csv.

Files, all in ``data_dir``:
  big_matrix.csv, small_matrix.csv -- columns user_id, video_id, watch_ratio are read (the other
    columns play_duration, video_duration, time, date, timestamp are not, so small-matrix rows
    with empty time/date -- the force-exposed ones -- load like any other);
  item_categories.csv -- video_id, feat, feat a list like "[27, 9]"; "[]" (or an empty field)
    is an untagged item; tag ids 0..n_tags-1 with n_tags = largest id seen + 1 (cfg.n_tags is
    not used); an item absent from the file is untagged.
Semantics (details in ``purerec.data.loaders.common``):
  r = min(watch_ratio, 2) / 2 (negatives clipped to 0); NaN/empty watch_ratio rows dropped;
  watch_ratio > 5 kept (capped by the transform); duplicate (user, item) rows averaged.
  Train world = big-matrix users x items; test world = small-matrix users x items.
  Visible features of both worlds come from the big matrix (the platform's logs): item_pop =
  distinct users logged, item_emb = MF of the big matrix (dim cfg.emb_dim), item_log_reward =
  mean logged r; popular = top cfg.popular_frac within each world's own items.
  Hidden truth: train = sigmoid-MF fit on the big matrix, test = fit on the small matrix (fully
  observed, the unbiased truth).
"""

from __future__ import annotations

from purerec.data.loaders.common import assemble_worlds, interactions, parse_int_list, tag_table
from purerec.data.loaders.csvio import read_columns, require_file
from purerec.data.sections import WorldConfig
from purerec.sim.world import World

BIG = "big_matrix.csv"
SMALL = "small_matrix.csv"
CATEGORIES = "item_categories.csv"
MATRIX_COLUMNS = {"user_id": "int", "video_id": "int", "watch_ratio": "float"}


def parse_feat(s: str) -> list[int]:
    """'[27, 9]' -> [27, 9]; '[]' or '' -> []."""
    s = s.strip()
    if not s:
        return []
    if not (s.startswith("[") and s.endswith("]")):
        raise ValueError("expected a bracketed list like '[27, 9]'")
    return parse_int_list(s[1:-1])


def read_matrix(path: str):
    """De-duplicated interactions of one KuaiRec matrix file."""
    cols = read_columns(path, MATRIX_COLUMNS)
    return interactions(cols["user_id"], cols["video_id"], cols["watch_ratio"])


def read_tags(path: str):
    cols = read_columns(path, {"video_id": "int", "feat": "str"})
    return tag_table(path, "feat", cols["video_id"], cols["feat"], parse_feat)


def input_files(data_dir: str) -> list[str]:
    """The files ``load_kuairec`` reads (``MissingFileError`` when one is missing)."""
    return [require_file(data_dir, name, "KuaiRec") for name in (BIG, SMALL, CATEGORIES)]


def load_kuairec(data_dir: str, cfg: WorldConfig) -> tuple[World, World]:
    """(train_world, test_world) from the KuaiRec files in ``data_dir``."""
    paths = input_files(data_dir)
    train = read_matrix(paths[0])
    test = read_matrix(paths[1])
    tags = read_tags(paths[2])
    return assemble_worlds(train, test, tags, cfg, files={"train": paths[0], "test": paths[1]})


__all__ = ["load_kuairec", "input_files", "parse_feat", "read_matrix", "read_tags"]
