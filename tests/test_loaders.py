"""Real-file loaders (KuaiRec, KuaiRand-Pure) on tiny synthetic files in the real schemas."""

from __future__ import annotations

import csv
import dataclasses
import math

import jax
import numpy as np
import pytest

from purerec.config import Config, WorldConfig
from purerec.data.loaders import DataFormatError, load_kuairand, load_kuairec, MissingFileError
from purerec.data.loaders.kuairand import parse_tag
from purerec.data.loaders.kuairec import parse_feat
from purerec.data.truth import fit_truth
from purerec.sim.world import popular_flags

MATRIX_HEADER = ["user_id", "video_id", "play_duration", "video_duration", "time", "date", "timestamp",
                 "watch_ratio"]
LOG_HEADER = ["user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow",
              "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms",
              "profile_stay_time", "comment_stay_time", "is_profile_enter", "is_rand", "tab"]
FEATURES_HEADER = ["video_id", "author_id", "video_type", "upload_dt", "upload_type", "visible_status",
                   "video_duration", "server_width", "server_height", "music_id", "music_type", "tag"]

# KuaiRec big matrix (user, item, watch_ratio); "" = NaN written as an empty field.
BIG = [(10, 100, 0.4), (10, 100, 0.8),  # duplicate: r = (0.2 + 0.4) / 2 = 0.3
       (10, 101, 1.0), (10, 103, 6.0),  # watch ratio > 5: kept, r = 1
       (20, 100, 2.0), (20, 102, 0.5), (20, 104, "nan"),  # NaN row dropped
       (30, 100, 1.0), (30, 101, 0.2), (30, 104, 3.0),
       (40, 100, 0.0), (40, 105, 1.5),
       (50, 106, "")]  # empty watch ratio: dropped, so user 50 / item 106 are not in the world
BIG_USERS = [10, 20, 30, 40]
BIG_ITEMS = [100, 101, 102, 103, 104, 105]
BIG_POP = [4, 2, 1, 1, 1, 1]
BIG_LOG_REWARD = [0.45, 0.3, 0.25, 1.0, 1.0, 0.75]
CATEGORIES = [(100, "[0, 2]"), (101, "[1]"), (102, "[]"), (103, "[2]"), (104, "[0]"), (999, "[3]")]  # 105 absent
TAGS = {100: [0, 2], 101: [1], 102: [], 103: [2], 104: [0], 105: []}
SMALL_USERS = [10, 20, 30, 40]
SMALL_ITEMS = [100, 101, 102, 103, 105]
SMALL_A = {10: 1.0, 20: -1.0, 30: 0.5, 40: -0.3}
SMALL_B = {100: 1.5, 101: -1.0, 102: 0.2, 103: 1.0, 105: -1.6}


def small_ratio(u: int, i: int) -> float:
    """Rank-1 pattern: watch ratio 2 sigmoid(2 a_u b_i), so r = sigmoid(2 a_u b_i)."""
    return 2.0 / (1.0 + math.exp(-2.0 * SMALL_A[u] * SMALL_B[i]))


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def matrix_row(u, i, wr, exposed=True):
    ratio = wr if isinstance(wr, str) else f"{wr:.10g}"
    time, date, ts = ("2020-07-05 00:08:23.438", "20200705", "1593878903.438") if exposed else ("", "", "")
    return [u, i, 5000, 10000, time, date, ts, ratio]


def write_kuairec(d):
    d.mkdir(parents=True, exist_ok=True)
    write_csv(d / "big_matrix.csv", MATRIX_HEADER, [matrix_row(*r) for r in BIG])
    small = [matrix_row(u, i, small_ratio(u, i), exposed=(u + i) % 3 != 0)  # some force-exposed rows
             for u in SMALL_USERS for i in SMALL_ITEMS]
    small.append(matrix_row(10, 100, small_ratio(10, 100)))  # duplicate with the same value
    write_csv(d / "small_matrix.csv", MATRIX_HEADER, small)
    write_csv(d / "item_categories.csv", ["video_id", "feat"], CATEGORIES)
    return d


def kuairec_cfg(**kw) -> WorldConfig:
    return WorldConfig(true_dim=4, emb_dim=3, popular_frac=0.5, seed=3, **kw)


# KuaiRand-Pure logs (user, item, play_time_ms, duration_ms).
STANDARD_1 = [(1, 10, 5000, 10000), (1, 11, 30000, 10000), (2, 10, 10000, 10000),
              (2, 12, 100, 0)]  # duration 0: dropped (item 12's only row)
STANDARD_2 = [(1, 10, 15000, 10000),  # duplicate across files: r = (0.25 + 0.75) / 2 = 0.5
              (3, 11, 0, 10000), (3, 13, 20000, 10000)]
RANDOM = [(1, 10, 2000, 10000), (2, 14, 10000, 10000), (4, 11, 5000, 10000), (2, 13, 7000, 10000),
          (4, 14, 9000, 10000), (1, 13, 12000, 10000)]
VIDEO_TAGS = [(10, "12,65"), (11, ""), (13, "3"), (14, "65")]


def log_row(u, i, play, dur):
    return [u, i, 20220422, 1230, 1650601800000, 1, 0, 0, 0, 0, 0, int(play >= dur), play, dur, 0, 0, 0, 0, 1]


def write_kuairand(d):
    d.mkdir(parents=True, exist_ok=True)
    write_csv(d / "log_standard_4_08_to_4_21_pure.csv", LOG_HEADER, [log_row(*r) for r in STANDARD_1])
    write_csv(d / "log_standard_4_22_to_5_08_pure.csv", LOG_HEADER, [log_row(*r) for r in STANDARD_2])
    write_csv(d / "log_random_4_22_to_5_08_pure.csv", LOG_HEADER, [log_row(*r) for r in RANDOM])
    write_csv(d / "video_features_basic_pure.csv", FEATURES_HEADER,
              [[v, 7, "NORMAL", "2022-01-01", "ShortImport", "public", 10000, 720, 1280, 0, 0, t]
               for v, t in VIDEO_TAGS])
    return d


@pytest.fixture(scope="module")
def kuairec_dir(tmp_path_factory):
    return write_kuairec(tmp_path_factory.mktemp("kuairec"))


@pytest.fixture(scope="module")
def kuairec_worlds(kuairec_dir):
    return load_kuairec(str(kuairec_dir), kuairec_cfg())


@pytest.fixture(scope="module")
def kuairand_worlds(tmp_path_factory):
    d = write_kuairand(tmp_path_factory.mktemp("kuairand"))
    return load_kuairand(str(d), kuairec_cfg())


def responses(world):
    return np.asarray(jax.nn.sigmoid(world.true_user @ world.true_item.T))


# ---------------------------------------------------------------- KuaiRec

def test_kuairec_ids_counts_and_dtypes(kuairec_worlds):
    train, test = kuairec_worlds
    assert train.user_ids.tolist() == BIG_USERS and train.item_ids.tolist() == BIG_ITEMS
    assert test.user_ids.tolist() == SMALL_USERS and test.item_ids.tolist() == SMALL_ITEMS
    assert (train.n_users, train.n_items, test.n_users, test.n_items) == (4, 6, 4, 5)
    for w in (train, test):
        assert w.true_user.shape == (w.n_users, 4 + 2) and w.true_item.shape == (w.n_items, 4 + 2)
        assert w.item_emb.shape == (w.n_items, 3) and np.isfinite(np.asarray(w.item_emb)).all()
        assert w.true_user.dtype == np.float32 and w.item_pop.dtype == np.float32
        assert w.item_tags.dtype == bool and w.popular.dtype == bool
        np.testing.assert_array_equal(np.asarray(w.true_user)[:, -1], 1.0)
        np.testing.assert_array_equal(np.asarray(w.true_item)[:, -2], 1.0)


def test_kuairec_visible_features_from_big_matrix(kuairec_worlds):
    train, test = kuairec_worlds
    np.testing.assert_array_equal(np.asarray(train.item_pop), BIG_POP)
    np.testing.assert_allclose(np.asarray(train.item_log_reward), BIG_LOG_REWARD, rtol=1e-6)
    # Ties at pop 1 broken by lower index: the top 3 of 6 are items 100, 101, 102.
    assert np.asarray(train.popular).tolist() == [True, True, True, False, False, False]
    pos = [BIG_ITEMS.index(i) for i in SMALL_ITEMS]
    np.testing.assert_array_equal(np.asarray(test.item_pop), np.asarray(BIG_POP)[pos])
    np.testing.assert_allclose(np.asarray(test.item_log_reward), np.asarray(BIG_LOG_REWARD)[pos], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(test.item_emb), np.asarray(train.item_emb)[pos], rtol=1e-6)
    # Popular within the test world's own 5 items: round(0.5 * 5) = 2 -> items 100 and 101.
    assert np.asarray(test.popular).tolist() == [True, True, False, False, False]
    np.testing.assert_array_equal(np.asarray(test.popular), popular_flags(np.asarray(test.item_pop), 0.5))


def test_kuairec_tags_multi_hot(kuairec_worlds):
    train, test = kuairec_worlds
    assert train.n_tags == test.n_tags == 4  # largest id in the file (3, item 999) + 1
    for w in (train, test):
        expected = np.zeros((w.n_items, 4), bool)
        for row, item in enumerate(np.asarray(w.item_ids).tolist()):
            expected[row, TAGS[item]] = True
        np.testing.assert_array_equal(np.asarray(w.item_tags), expected)


def test_kuairec_truth_and_item_log_true(kuairec_worlds):
    train, test = kuairec_worlds
    # Test truth is the small-matrix fit: reproduces the rank-1 pattern.
    target = np.array([[small_ratio(u, i) / 2 for i in SMALL_ITEMS] for u in SMALL_USERS])
    assert np.corrcoef(responses(test).ravel(), target.ravel())[0, 1] > 0.9
    # item_log_true: mean fitted response over the big-matrix exposures (distinct pairs).
    pairs = sorted({(u, i) for u, i, wr in BIG if wr not in ("", "nan")})
    resp = responses(train)
    exp_tr = [np.mean([resp[BIG_USERS.index(u), BIG_ITEMS.index(i)] for u, j in pairs if j == i])
              for i in BIG_ITEMS]
    np.testing.assert_allclose(np.asarray(train.item_log_true), exp_tr, rtol=1e-5)
    resp = responses(test)
    exp_te = [np.mean([resp[SMALL_USERS.index(u), SMALL_ITEMS.index(i)] for u, j in pairs if j == i])
              for i in SMALL_ITEMS]
    np.testing.assert_allclose(np.asarray(test.item_log_true), exp_te, rtol=1e-5)


def test_kuairec_duplicates_and_caps_reach_the_truth_fit(kuairec_worlds):
    train, _ = kuairec_worlds
    resp = responses(train)
    # The capped (watch ratio 6) pair and the averaged duplicate pair are fitted near their r.
    assert resp[0, BIG_ITEMS.index(103)] > resp[0, BIG_ITEMS.index(100)]


def test_kuairec_is_deterministic(kuairec_dir, kuairec_worlds):
    again = load_kuairec(str(kuairec_dir), kuairec_cfg())
    for a, b in zip(jax.tree.leaves(kuairec_worlds), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------- KuaiRand-Pure

def test_kuairand_worlds(kuairand_worlds):
    train, test = kuairand_worlds
    assert train.user_ids.tolist() == [1, 2, 3] and train.item_ids.tolist() == [10, 11, 13]
    assert test.user_ids.tolist() == [1, 2, 4] and test.item_ids.tolist() == [10, 11, 13, 14]
    np.testing.assert_array_equal(np.asarray(train.item_pop), [2, 2, 1])
    np.testing.assert_allclose(np.asarray(train.item_log_reward), [0.5, 0.5, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(test.item_pop), [2, 2, 1, 0])
    np.testing.assert_allclose(np.asarray(test.item_log_reward), [0.5, 0.5, 1.0, 0.0], rtol=1e-6)
    assert np.abs(np.asarray(test.item_emb)[3]).max() < 1e-4  # never logged: ~0 embedding row
    assert np.asarray(train.popular).tolist() == [True, True, False]  # round(1.5) = 2, tie -> index
    assert np.asarray(test.popular).tolist() == [True, True, False, False]
    assert train.n_tags == test.n_tags == 66
    expected = np.zeros((4, 66), bool)
    expected[0, [12, 65]] = True
    expected[2, 3] = True
    expected[3, 65] = True
    np.testing.assert_array_equal(np.asarray(test.item_tags), expected)
    np.testing.assert_array_equal(np.asarray(train.item_tags), expected[:3])
    # Test-world item_log_true: standard-log pairs inside the test world are (1, 10), (2, 10) and
    # (1, 11); item 13 was logged only by user 3 (not a test user) and item 14 never: 0.
    resp = responses(test)
    exp = [np.mean([resp[0, 0], resp[1, 0]]), resp[0, 1], 0.0, 0.0]
    np.testing.assert_allclose(np.asarray(test.item_log_true), exp, rtol=1e-5)


# ---------------------------------------------------------------- truth fit

def test_fit_truth_recovers_rank_one_pattern():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=30), rng.normal(size=40)
    target = 1 / (1 + np.exp(-(1.5 * np.outer(a, b) + 0.3)))
    u, i = np.nonzero(rng.random((30, 40)) < 0.6)
    tu, ti = fit_truth(jax.random.key(0), u, i, target[u, i], 30, 40, dim=4, chunk=256)
    fitted = 1 / (1 + np.exp(-(tu @ ti.T)))
    assert tu.shape == (30, 6) and ti.shape == (40, 6)
    assert np.corrcoef(fitted[u, i], target[u, i])[0, 1] > 0.9
    tu2, ti2 = fit_truth(jax.random.key(0), u, i, target[u, i], 30, 40, dim=4, chunk=256)
    np.testing.assert_array_equal(tu, tu2)


# ---------------------------------------------------------------- parsing and errors

def test_tag_parsers():
    assert parse_feat("[27, 9]") == [27, 9] and parse_feat("[]") == [] and parse_feat("[3]") == [3]
    assert parse_tag("12,65") == [12, 65] and parse_tag("") == [] and parse_tag("nan") == []
    for bad in ("27, 9", "[2, x]", "[-1]", "[1,,2]"):
        with pytest.raises(ValueError):
            parse_feat(bad)
    with pytest.raises(ValueError):
        parse_tag("12;65")


def test_missing_column(tmp_path):
    d = write_kuairec(tmp_path / "data")
    write_csv(d / "big_matrix.csv", MATRIX_HEADER[:-1], [matrix_row(*r)[:-1] for r in BIG])
    with pytest.raises(DataFormatError, match=r"big_matrix\.csv: line 1 \(header\).*watch_ratio"):
        load_kuairec(str(d), kuairec_cfg())


def test_non_numeric_value_names_file_line_and_column(tmp_path):
    d = write_kuairec(tmp_path / "data")
    rows = [matrix_row(*r) for r in BIG]
    rows[2][0] = "abc"  # data row 3 -> line 4
    write_csv(d / "big_matrix.csv", MATRIX_HEADER, rows)
    with pytest.raises(DataFormatError) as e:
        load_kuairec(str(d), kuairec_cfg())
    msg = str(e.value)
    assert "big_matrix.csv" in msg and "line 4" in msg and "column 'user_id'" in msg and "'abc'" in msg


def test_non_numeric_float_after_blank_line(tmp_path):
    d = write_kuairec(tmp_path / "data")
    rows = [matrix_row(*r) for r in BIG]
    rows[5][-1] = "1.2x"
    write_csv(d / "big_matrix.csv", MATRIX_HEADER, rows)
    text = (d / "big_matrix.csv").read_text().splitlines(keepends=True)
    (d / "big_matrix.csv").write_text("".join(text[:2] + ["\n"] + text[2:]))  # blank line 3
    with pytest.raises(DataFormatError, match=r"line 8, column 'watch_ratio'.*'1\.2x'"):
        load_kuairec(str(d), kuairec_cfg())


def test_wrong_field_count(tmp_path):
    d = write_kuairand(tmp_path / "data")
    path = d / "log_random_4_22_to_5_08_pure.csv"
    path.write_text(path.read_text() + "5,10,20220422\n")
    with pytest.raises(DataFormatError, match=r"log_random_4_22_to_5_08_pure\.csv: line 8: expected 19 fields"):
        load_kuairand(str(d), kuairec_cfg())


def test_bad_tag_strings(tmp_path):
    d = write_kuairec(tmp_path / "rec")
    write_csv(d / "item_categories.csv", ["video_id", "feat"], CATEGORIES[:2] + [(102, "[1, a]")])
    with pytest.raises(DataFormatError, match=r"item_categories\.csv: line 4, column 'feat'.*\[1, a\]"):
        load_kuairec(str(d), kuairec_cfg())
    d = write_kuairand(tmp_path / "rand")
    write_csv(d / "video_features_basic_pure.csv", FEATURES_HEADER,
              [[10, 7, "NORMAL", "2022-01-01", "ShortImport", "public", 10000, 720, 1280, 0, 0, "12;65"]])
    with pytest.raises(DataFormatError, match=r"video_features_basic_pure\.csv: line 2, column 'tag'"):
        load_kuairand(str(d), kuairec_cfg())


def test_missing_files(tmp_path):
    d = write_kuairec(tmp_path / "rec")
    (d / "small_matrix.csv").unlink()
    with pytest.raises(MissingFileError) as e:
        load_kuairec(str(d), kuairec_cfg())
    assert "small_matrix.csv" in str(e.value) and str(d) in str(e.value)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, DataFormatError)
    d = write_kuairand(tmp_path / "rand")
    (d / "log_random_4_22_to_5_08_pure.csv").unlink()
    with pytest.raises(MissingFileError, match=r"log_random_\*\.csv") as e:
        load_kuairand(str(d), kuairec_cfg())
    assert str(d) in str(e.value)


# ---------------------------------------------------------------- through get_worlds and the cache

def test_get_worlds_kuairec_with_cache(tmp_path, monkeypatch, kuairec_worlds):
    import purerec.data.datasets as datasets

    d = write_kuairec(tmp_path / "data")
    world_cfg = dataclasses.replace(kuairec_cfg(), source="kuairec", data_dir=str(d),
                                    cache_dir=str(tmp_path / "cache"))
    cfg = Config(world=world_cfg).validate()
    first = datasets.get_worlds(cfg)
    assert len(list((tmp_path / "cache").glob("world-*.npz"))) == 2
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(kuairec_worlds)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def no_build(_cfg):
        raise AssertionError("the second call must load from the cache")

    monkeypatch.setattr(datasets, "build_worlds", no_build)
    second = datasets.get_worlds(cfg)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
