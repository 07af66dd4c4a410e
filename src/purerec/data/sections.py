"""The ``[world]`` config section: where a world comes from and how the synthetic one is calibrated
(``purerec.data.datasets`` builds it). Light: dataclasses only, no JAX."""

from __future__ import annotations

import os
from dataclasses import dataclass

from purerec.core.fields import _check, MAX_WORLD


WORLD_SOURCES = ("synthetic", "kuairec", "kuairand", "csv")


PRESETS = ("kuairec", "kuairand")


@dataclass(frozen=True)
class WorldConfig:
    """Where the static world comes from and, for the synthetic generator, its calibration.

    Sizes default to KuaiRec (train = big matrix 7,176 x 10,728; test = small matrix
    1,411 x 3,327, a subset). ``envs/kuairand.toml`` sets the KuaiRand-Pure sizes.

    ``source``: ``synthetic`` (generated; the sizes and ``log_*`` / tag fields calibrate it),
    ``kuairec`` / ``kuairand`` (the public datasets' files in ``data_dir``) or ``csv`` (the user's
    own logs in ``data_dir``: ``interactions.csv`` with user_id, item_id, feedback in [0, 1] or
    watch_ratio, optional timestamp; optional ``unbiased.csv`` and ``items.csv``; schema and the
    train/test split in ``purerec.data.loaders.user_csv``). Real sources read their sizes and tags from
    the files: only ``seed``, ``true_dim``, ``emb_dim``, ``popular_frac`` and ``cache_dir`` apply.
    """

    source: str = "synthetic"
    """Where the world comes from: synthetic, kuairec, kuairand or csv (files in data_dir)."""
    preset: str = "kuairec"
    """Which published statistics the synthetic world is calibrated to: kuairec or kuairand."""
    data_dir: str = ""
    """Directory of the real or user CSV files (empty for the synthetic world)."""
    seed: int = 0
    """Seed of the world generator (and of real data's item embeddings and splits)."""
    n_users: int = 7176
    """Users of the train world (synthetic; real data reads its own)."""
    n_items: int = 10728
    """Items of the train world (synthetic)."""
    n_test_users: int = 1411
    """Users of the held-out test world (synthetic)."""
    n_test_items: int = 3327
    """Items of the test world, a subset of the train world's (synthetic)."""
    n_tags: int = 31
    """Number of item tags (categories) in the synthetic world."""
    tag_zipf: float = 0.1
    """Zipf exponent of tag frequencies (0 = uniform tags)."""
    tag_cutoff: float = 7.0
    """Exponential cutoff of the tag-frequency law p(k) ~ k^-tag_zipf exp(-k / tag_cutoff)."""
    mean_tags_per_item: float = 1.18
    """Mean number of tags per item, in [1, max_tags_per_item]."""
    max_tags_per_item: int = 4
    """Most tags one item can carry."""
    true_dim: int = 16
    """Dimension of the hidden true-preference factors."""
    emb_dim: int = 32
    """Dimension of the visible item embeddings (SVD of the logged feedback)."""
    log_density: float = 0.163
    """Share of the user x item matrix the logging policy fills (KuaiRec big matrix: 0.163)."""
    log_rounds: int = 4
    """Rounds of the rich-get-richer logging process that builds popularity."""
    log_pop_bias: float = 1.0
    """How strongly the logging policy favours already-popular items."""
    log_personalisation: float = 0.2
    """How strongly the logging policy follows each user's true preference."""
    item_bias_std: float = 0.15
    """Std of the items' quality bias in the true response."""
    user_bias_std: float = 0.5
    """Std of the users' activity bias in the true response."""
    pref_scale: float = 1.2
    """Scale of the user taste vectors (sharpness of true preferences)."""
    score_offset: float = -0.6
    """Offset of the true response logit (sets the mean true response)."""
    tag_pref_weight: float = 0.7
    """Weight of tag affinity in the true preference, in [0, 1]."""
    popular_frac: float = 0.2
    """Share of items labelled popular (the paper's top 20% by exposure)."""
    cache_dir: str = ""
    """Where built worlds are cached (empty = $PUREREC_CACHE or ~/.cache/purerec)."""

    def validate(self, p: str = "world") -> None:
        _check(self.source in WORLD_SOURCES, f"{p}.source", self.source, f"one of {WORLD_SOURCES}")
        _check(self.preset in PRESETS, f"{p}.preset", self.preset, f"one of {PRESETS}")
        _check(self.source != "synthetic" or not self.data_dir, f"{p}.data_dir", self.data_dir,
               f"empty with {p}.source = 'synthetic' (the synthetic world reads no files): set {p}.source "
               f"to one of {WORLD_SOURCES[1:]} to load that directory, or drop {p}.data_dir")
        if self.source != "synthetic":
            what = ("your interactions.csv (and optional unbiased.csv, items.csv)" if self.source == "csv"
                    else f"the {self.source} CSV files")
            _check(bool(self.data_dir), f"{p}.data_dir", self.data_dir,
                   f"a directory holding {what} (required when source != 'synthetic')")
            fix = ("put interactions.csv there" if self.source == "csv"
                   else "download the dataset there")
            _check(os.path.isdir(self.data_dir), f"{p}.data_dir", self.data_dir,
                   f"an existing directory; {fix} or use source = 'synthetic'")
        for name in ("n_users", "n_items", "n_test_users", "n_test_items"):
            _check(2 <= getattr(self, name) <= MAX_WORLD, f"{p}.{name}", getattr(self, name),
                   f"an integer in [2, {MAX_WORLD}]")
        _check(1 <= self.n_tags <= 1024, f"{p}.n_tags", self.n_tags, "an integer in [1, 1024]")
        _check(1.0 <= self.mean_tags_per_item <= self.max_tags_per_item, f"{p}.mean_tags_per_item",
               self.mean_tags_per_item, "in [1, max_tags_per_item]")
        _check(1 <= self.max_tags_per_item <= self.n_tags, f"{p}.max_tags_per_item",
               self.max_tags_per_item, "in [1, n_tags]")
        _check(self.tag_cutoff > 0, f"{p}.tag_cutoff", self.tag_cutoff, "> 0")
        _check(self.tag_zipf >= 0, f"{p}.tag_zipf", self.tag_zipf, ">= 0")
        _check(1 <= self.true_dim <= 256, f"{p}.true_dim", self.true_dim, "an integer in [1, 256]")
        _check(1 <= self.emb_dim <= 256, f"{p}.emb_dim", self.emb_dim, "an integer in [1, 256]")
        _check(0.0 < self.log_density < 1.0, f"{p}.log_density", self.log_density, "in (0, 1)")
        _check(1 <= self.log_rounds <= 64, f"{p}.log_rounds", self.log_rounds, "an integer in [1, 64]")
        for name in ("log_pop_bias", "log_personalisation", "item_bias_std", "user_bias_std",
                     "pref_scale", "tag_pref_weight"):
            _check(getattr(self, name) >= 0, f"{p}.{name}", getattr(self, name), ">= 0")
        _check(self.tag_pref_weight <= 1.0, f"{p}.tag_pref_weight", self.tag_pref_weight, "in [0, 1]")
        _check(0.0 < self.popular_frac < 1.0, f"{p}.popular_frac", self.popular_frac, "in (0, 1)")
