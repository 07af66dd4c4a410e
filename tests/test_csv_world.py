"""The ``csv`` world source (the user's own logs), its errors, the calibration card and a tiny run.

Expected values are computed here from the rows in plain NumPy, independently of the loader.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os

import jax
import numpy as np
import pytest

from purerec.config import ConfigError, load_config
from purerec.data import calibration
from purerec.data.loaders import DataFormatError, load_user_csv, MissingFileError
from purerec.data.loaders.user_csv import _user_split, describe_split
from purerec.sim.world import popular_flags, World

ROOT = os.path.join(os.path.dirname(__file__), "..")


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def cfg_of(d, **world):
    ov = {"world.source": "csv", "world.data_dir": str(d), "world.cache_dir": "", "world.true_dim": 4,
          "world.emb_dim": 3, "world.popular_frac": 0.5, "world.seed": 3}
    ov.update({f"world.{k}": v for k, v in world.items()})
    return load_config(None, ov)


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def responses(world):
    return np.asarray(jax.nn.sigmoid(world.true_user @ world.true_item.T))


# ---------------------------------------------------------------- a hand-made log

# 10 users with string ids, 6 items; (user, item, feedback); one duplicate pair.
NAMES = ["ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal", "ivy", "jon"]
HAND = [("ann", "i1", 1.0), ("ann", "i2", 0.5), ("ann", "i1", 0.0),  # duplicate: 0.5
        ("bob", "i1", 0.8), ("bob", "i3", 0.2),
        ("cat", "i1", 0.9), ("cat", "i2", 0.1), ("cat", "i4", 0.6),
        ("dan", "i2", 0.4), ("dan", "i5", 1.0),
        ("eve", "i1", 0.7), ("eve", "i6", 0.3),
        ("fay", "i3", 0.0), ("fay", "i4", 1.0),
        ("gus", "i1", 0.6), ("gus", "i5", 0.2),
        ("hal", "i2", 0.9), ("hal", "i6", 0.5),
        ("ivy", "i1", 0.3), ("ivy", "i3", 0.7),
        ("jon", "i4", 0.8), ("jon", "i2", 0.6)]


def expected_logs(rows):
    """{(user, item): mean feedback} of (user, item, feedback) rows."""
    acc = {}
    for u, i, r in rows:
        acc.setdefault((u, i), []).append(r)
    return {k: float(np.mean(v)) for k, v in acc.items()}


@pytest.fixture(scope="module")
def hand_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hand")
    write_csv(d / "interactions.csv", ["item_id", "user_id", "feedback", "extra"],  # any order, extra ignored
              [(i, u, r, "x") for u, i, r in HAND])
    write_csv(d / "items.csv", ["item_id", "tags"],
              [("i1", "comedy;music"), ("i2", "news"), ("i3", ""), ("i1", "pets;"), ("zzz", "sport")])
    return d


@pytest.fixture(scope="module")
def hand_worlds(hand_dir):
    return load_user_csv(str(hand_dir), cfg_of(hand_dir).world)


def test_user_split_ids_and_visible_features(hand_worlds):
    train, test = hand_worlds
    # String ids -> 0..n-1 in sorted order (NAMES is sorted; items i1..i6 -> 0..5).
    tr_names = [NAMES[k] for k in np.asarray(train.user_ids)]
    te_names = [NAMES[k] for k in np.asarray(test.user_ids)]
    assert len(te_names) == 2 and len(tr_names) == 8  # max(2, round(0.2 * 10)) test users
    assert sorted(tr_names + te_names) == NAMES
    pairs = expected_logs(HAND)
    tr_pairs = {k: v for k, v in pairs.items() if k[0] in tr_names}
    te_pairs = {k: v for k, v in pairs.items() if k[0] in te_names}
    assert [f"i{k + 1}" for k in np.asarray(train.item_ids)] == sorted({i for _, i in tr_pairs})
    assert [f"i{k + 1}" for k in np.asarray(test.item_ids)] == sorted({i for _, i in te_pairs})
    for world in (train, test):  # visible features come from the train users' logs only
        items = [f"i{k + 1}" for k in np.asarray(world.item_ids)]
        pop = [sum(1 for (_, i) in tr_pairs if i == it) for it in items]
        reward = [np.mean([v for (_, i), v in tr_pairs.items() if i == it]) if p else 0.0 for it, p in zip(items, pop)]
        np.testing.assert_array_equal(np.asarray(world.item_pop), pop)
        np.testing.assert_allclose(np.asarray(world.item_log_reward), reward, rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(world.popular), popular_flags(np.asarray(pop, float), 0.5))
        assert world.item_emb.shape == (world.n_items, 3) and np.isfinite(np.asarray(world.item_emb)).all()


def test_user_split_shares_one_truth(hand_worlds):
    train, test = hand_worlds
    tr_items, te_items = np.asarray(train.item_ids).tolist(), np.asarray(test.item_ids).tolist()
    common = sorted(set(tr_items) & set(te_items))
    assert common
    for it in common:  # one joint fit: the same item factors in both worlds
        np.testing.assert_array_equal(np.asarray(train.true_item)[tr_items.index(it)],
                                      np.asarray(test.true_item)[te_items.index(it)])
    # item_log_true (both worlds) = mean fitted truth over the item's train-log exposures.
    tr_names = [NAMES[k] for k in np.asarray(train.user_ids)]
    pairs = [k for k in expected_logs(HAND) if k[0] in tr_names]
    tu = np.asarray(train.true_user)
    for world, items in ((train, tr_items), (test, te_items)):
        ti = np.asarray(world.true_item)
        exp = []
        for it in items:
            vals = [sig(tu[tr_names.index(u)] @ ti[items.index(it)]) for u, i in pairs if i == f"i{it + 1}"]
            exp.append(np.mean(vals) if vals else 0.0)
        np.testing.assert_allclose(np.asarray(world.item_log_true), exp, rtol=1e-5, atol=1e-7)


def test_user_split_is_seeded():
    users = np.repeat(np.arange(20), 3)
    a, b = _user_split(users, 0, "f"), _user_split(users, 0, "f")
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(users[a])) == 4  # round(0.2 * 20)
    assert all((users[a] == u).sum() in (0, 3) for u in range(20))  # all of a user's rows, or none
    assert len({tuple(_user_split(users, s, "f")) for s in range(5)}) > 1


def test_tags_from_items_csv(hand_worlds):
    train, _ = hand_worlds
    # Labels sorted: comedy 0, music 1, news 2, pets 3 (sport: item zzz is not in the logs).
    assert train.n_tags == 4
    table = {0: [0, 1, 3], 1: [2], 2: []}  # i1: union of its two rows; i3 empty; i4..i6 absent
    for row, it in enumerate(np.asarray(train.item_ids).tolist()):
        expected = np.zeros(4, bool)
        expected[table.get(it, [])] = True
        np.testing.assert_array_equal(np.asarray(train.item_tags)[row], expected)


def test_integer_ids_are_kept_and_watch_ratio_is_mapped(tmp_path):
    rows = [("10", "007", 0.5), ("10", "7", 3.0),  # "007" and "7" are one item: r = (0.25 + 1) / 2
            ("20", "7", 1.0), ("20", "12", 2.0), ("30", "12", 0.0), ("30", "3", 1.5),
            ("40", "3", 0.2), ("40", "12", 0.4), ("50", "7", 1.2), ("50", "3", 0.8)]
    write_csv(tmp_path / "interactions.csv", ["user_id", "item_id", "watch_ratio"], rows)
    train, test = load_user_csv(str(tmp_path), cfg_of(tmp_path).world)
    ids = sorted(np.asarray(train.user_ids).tolist() + np.asarray(test.user_ids).tolist())
    assert ids == [10, 20, 30, 40, 50]
    assert set(np.asarray(train.item_ids).tolist()) <= {3, 7, 12}
    tr_users = set(np.asarray(train.user_ids).tolist())
    r = {}
    for u, i, wr in rows:
        if int(u) in tr_users:
            r.setdefault((int(u), int(i)), []).append(min(wr, 2.0) / 2.0)
    for row, it in enumerate(np.asarray(train.item_ids).tolist()):
        vals = [np.mean(v) for (u, i), v in r.items() if i == it]
        assert train.item_pop[row] == len(vals)
        np.testing.assert_allclose(float(train.item_log_reward[row]), np.mean(vals), rtol=1e-6)


def timed_rows():
    # 12 users x 4 items; timestamps t = 10 * row index, with a tie at the cut.
    rows = []
    for k in range(30):
        rows.append((f"u{k % 12}", f"v{k % 4}", round(0.1 + 0.8 * ((k * 7) % 10) / 10, 2), 10 * k))
    rows[24] = rows[24][:3] + (rows[23][3],)  # rows 23 and 24 share a timestamp
    return rows


def test_time_split(tmp_path):
    rows = timed_rows()
    write_csv(tmp_path / "interactions.csv", ["user_id", "item_id", "feedback", "timestamp"], rows)
    assert describe_split(str(tmp_path)).startswith("time split")
    train, test = load_user_csv(str(tmp_path), cfg_of(tmp_path).world)
    t = np.array([r[3] for r in rows], float)
    cut = np.sort(t)[int(np.floor(0.8 * len(t)))]  # position 24: its tie (row 23) goes to test too
    is_test = t >= cut
    assert is_test.sum() == 7
    users = sorted({r[0] for r, te in zip(rows, is_test) if te}, key=lambda s: s)
    user_order = sorted({r[0] for r in rows})  # string ids, sorted
    assert [user_order[k] for k in np.asarray(test.user_ids)] == users
    tr_pairs = expected_logs([r[:3] for r, te in zip(rows, is_test) if not te])
    pop = [sum(1 for (_, i) in tr_pairs if i == f"v{k}") for k in np.asarray(train.item_ids)]
    np.testing.assert_array_equal(np.asarray(train.item_pop), pop)
    # ISO 8601 timestamps in the same order give the same worlds.
    iso = [r[:3] + (str(np.datetime64("2024-01-01T00:00:00") + np.timedelta64(int(r[3]), "s")).replace("T", " "),)
           for r in rows]
    d2 = tmp_path / "iso"
    d2.mkdir()
    write_csv(d2 / "interactions.csv", ["user_id", "item_id", "feedback", "timestamp"], iso)
    again = load_user_csv(str(d2), cfg_of(d2).world)
    for a, b in zip(jax.tree.leaves((train, test)), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unbiased_file_gives_the_test_world_and_its_truth(tmp_path):
    a = {"a": 1.0, "b": -1.0, "c": 0.5, "d": -0.3}
    b = {"x": 1.5, "y": -1.0, "z": 0.2, "w": 1.0, "v": -1.6}
    biased = [(u, i, 0.9) for u in ("a", "b", "c", "e") for i in ("x", "y", "q")]
    full = [(u, i, sig(2 * a[u] * b[i])) for u in a for i in b]
    write_csv(tmp_path / "interactions.csv", ["user_id", "item_id", "feedback", "timestamp"],
              [r + (k,) for k, r in enumerate(biased)])
    write_csv(tmp_path / "unbiased.csv", ["user_id", "item_id", "feedback"], full)
    assert describe_split(str(tmp_path)).startswith("train = interactions.csv, test = unbiased.csv")
    train, test = load_user_csv(str(tmp_path), cfg_of(tmp_path).world)
    users = sorted(set(a) | {"e"})
    items = sorted(set(b) | {"q"})
    assert [users[k] for k in np.asarray(train.user_ids)] == ["a", "b", "c", "e"]
    assert [users[k] for k in np.asarray(test.user_ids)] == sorted(a)
    assert [items[k] for k in np.asarray(test.item_ids)] == sorted(b)
    # Test-world visible features from interactions.csv: x, y logged by 4 users, the rest never.
    np.testing.assert_array_equal(np.asarray(test.item_pop), [4 if items[k] in "xy" else 0
                                                              for k in np.asarray(test.item_ids)])
    target = np.array([[sig(2 * a[u] * b[i]) for i in sorted(b)] for u in sorted(a)])
    assert np.corrcoef(responses(test).ravel(), target.ravel())[0, 1] > 0.9


# ---------------------------------------------------------------- errors: file, line, column

GOOD_HEADER = ["user_id", "item_id", "feedback"]


def _rows(n_users=6):
    return [[f"u{u}", f"i{(u + k) % 4}", "0.5"] for u in range(n_users) for k in range(2)]


def _write(d, header=GOOD_HEADER, rows=None, text=None, name="interactions.csv"):
    d.mkdir(parents=True, exist_ok=True)
    if text is not None:
        (d / name).write_text(text)
    else:
        write_csv(d / name, header, _rows() if rows is None else rows)
    return d


def _bad_row(col, value, k=3):
    rows = _rows()
    rows[k][col] = value
    return rows


ERROR_CASES = {
    "empty file": (dict(text=""), r"interactions\.csv: line 1: the file is empty"),
    "header only": (dict(rows=[]), r"interactions\.csv: no data rows after the header"),
    "missing item_id": (dict(header=["user_id", "feedback"], rows=[["u1", "0.5"]]),
                        r"interactions\.csv: line 1 \(header\): missing required column\(s\) \['item_id'\].*"
                        r"expected columns user_id, item_id"),
    "no response column": (dict(header=["user_id", "item_id", "rating"], rows=[["u", "i", "3"]]),
                           r"interactions\.csv: line 1 \(header\): missing the response column: add 'feedback'"),
    "both response columns": (dict(header=["user_id", "item_id", "feedback", "watch_ratio"],
                                   rows=[["u", "i", "0.5", "1"]]), r"line 1 \(header\): has both"),
    "non-numeric feedback": (dict(rows=_bad_row(2, "good")),
                             r"interactions\.csv: line 5, column 'feedback': expected a number .*'good'"),
    "feedback above 1": (dict(rows=_bad_row(2, "4")),
                         r"interactions\.csv: line 5, column 'feedback': expected a number in \[0, 1\], got 4\.0; "
                         r"rescale"),
    "negative feedback": (dict(rows=_bad_row(2, "-0.1", k=0)), r"line 2, column 'feedback'.*\[0, 1\]"),
    "empty feedback": (dict(rows=_bad_row(2, "", k=7)), r"line 9, column 'feedback': expected a number, got nan"),
    "negative watch ratio": (dict(header=["user_id", "item_id", "watch_ratio"], rows=_bad_row(2, "-2")),
                             r"line 5, column 'watch_ratio': expected a watch ratio >= 0"),
    "empty user id": (dict(rows=_bad_row(0, "  ")), r"line 5, column 'user_id': empty user_id"),
    "wrong field count": (dict(text="user_id,item_id,feedback\nu1,i1,0.5\nu2,i2\n"),
                          r"interactions\.csv: line 3: expected 3 fields"),
    "bad timestamp": (dict(header=GOOD_HEADER + ["timestamp"],
                           rows=[r + [str(k) if k != 4 else "yesterday"] for k, r in enumerate(_rows())]),
                      r"line 6, column 'timestamp': expected a finite number, like the first row's, got 'yesterday'"),
    "mixed timestamp forms": (dict(header=GOOD_HEADER + ["timestamp"],
                                   rows=[r + ["2024-01-0%d" % (k % 9 + 1) if k != 2 else "17"]
                                         for k, r in enumerate(_rows())]),
                              r"line 4, column 'timestamp': expected an ISO 8601 date"),
    "equal timestamps": (dict(header=GOOD_HEADER + ["timestamp"], rows=[r + ["5"] for r in _rows()]),
                         r"column 'timestamp': .* no rows are left for the train logs; drop the timestamp column"),
    "too few users": (dict(rows=_rows(3)), r"interactions\.csv: 3 distinct user\(s\); splitting users .* at least 4"),
    "one item": (dict(rows=[[f"u{u}", "i0", "0.5"] for u in range(8)]),
                 r"the train world \(.*interactions\.csv, user split\) would have 6 user\(s\) and 1 item\(s\)"),
    "gzip": (dict(text=None, rows=[]), r"gzip-compressed"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_malformed_interactions_name_file_line_and_column(tmp_path, case):
    kwargs, pattern = ERROR_CASES[case]
    d = _write(tmp_path / "data", **kwargs)
    if case == "gzip":
        (d / "interactions.csv").write_bytes(b"\x1f\x8b\x08\x00rest")
    with pytest.raises(DataFormatError, match=pattern) as e:
        load_user_csv(str(d), cfg_of(d).world)
    assert str(d / "interactions.csv") in str(e.value)


def test_missing_interactions_file_and_bad_items_csv(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(MissingFileError) as e:
        load_user_csv(str(d), cfg_of(d).world)
    assert "interactions.csv" in str(e.value) and str(d) in str(e.value) and isinstance(e.value, FileNotFoundError)
    d = _write(tmp_path / "items")
    write_csv(d / "items.csv", ["item_id", "tag"], [["i1", "a"]])
    with pytest.raises(DataFormatError, match=r"items\.csv: line 1 \(header\): missing required column\(s\) \['tags'\]"):
        load_user_csv(str(d), cfg_of(d).world)
    write_csv(d / "items.csv", ["item_id", "tags"], [["i1", "a"], ["", "b"]])
    with pytest.raises(DataFormatError, match=r"items\.csv: line 3, column 'item_id': empty item_id"):
        load_user_csv(str(d), cfg_of(d).world)
    _write(d, rows=_rows(), name="unbiased.csv")
    (d / "items.csv").unlink()
    write_csv(d / "unbiased.csv", GOOD_HEADER, [["u1", "i1", "2"]])
    with pytest.raises(DataFormatError, match=r"unbiased\.csv: line 2, column 'feedback'.*\[0, 1\]"):
        load_user_csv(str(d), cfg_of(d).world)


def test_config_accepts_csv_and_explains_data_dir(tmp_path):
    with pytest.raises(ConfigError, match=r"world\.data_dir.*interactions\.csv"):
        load_config(None, {"world.source": "csv"})
    with pytest.raises(ConfigError, match=r"world\.data_dir.*existing directory; put interactions\.csv there"):
        load_config(None, {"world.source": "csv", "world.data_dir": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match=r"world\.source.*'csv'"):
        load_config(None, {"world.source": "movielens"})
    assert load_config(None, {"world.source": "csv", "world.data_dir": str(tmp_path)}).world.source == "csv"


# ---------------------------------------------------------------- calibration card

def hand_world(pop, popular, reward, true, n_users):
    n = len(pop)
    f = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return World(true_user=np.zeros((n_users, 2), np.float32), true_item=np.zeros((n, 2), np.float32),
                 item_emb=np.zeros((n, 2), np.float32), item_tags=np.zeros((n, 1), bool), item_pop=f(pop),
                 popular=np.asarray(popular, bool), item_log_reward=f(reward), item_log_true=f(true),
                 user_ids=np.arange(n_users, dtype=np.int32), item_ids=np.arange(n, dtype=np.int32))


def np_gini(x):
    """Mean absolute difference form: sum_ij |x_i - x_j| / (2 n^2 mean)."""
    x = np.asarray(x, float)
    return np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())


def np_r2(x, y):
    """1 - SS_res / SS_tot of a least-squares line."""
    slope, icept = np.polyfit(x, y, 1)
    res = y - (slope * x + icept)
    return 1 - np.sum(res ** 2) / np.sum((y - y.mean()) ** 2)


def test_card_on_a_hand_made_world():
    pop = np.array([0, 1, 2, 3, 10, 4.0])
    popular = [False, False, False, False, True, True]
    reward = np.array([0, 0.2, 0.5, 0.4, 0.9, 0.6])
    true = np.array([0, 0.5, 0.4, 0.6, 0.5, 0.5])
    w = hand_world(pop, popular, reward, true, n_users=5)
    c = calibration.card(w, hand_world([1, 1], [True, False], [0, 0], [0, 0], 3), "synthetic", 0.3, "hand")
    assert (c.users, c.items, c.interactions, c.test_users, c.test_items) == (5, 6, 20, 3, 2)
    assert c.density == pytest.approx(20 / 30)
    assert c.exposure_gini == pytest.approx(np_gini(pop))
    assert c.exposure_gini == pytest.approx(0.5)  # by hand: sum_k (2k - 7) x_(k) = 60, / (6 * 20)
    assert c.popular_share == pytest.approx(14 / 20)
    assert c.mean_feedback == pytest.approx(np.sum(pop * reward) / 20)
    seen = pop > 0
    o = c.observation1
    assert o.n_items == 5
    assert o.reward_vs_exposure_observed == pytest.approx(np_r2(pop[seen], reward[seen]))
    assert o.reward_vs_exposure_true == pytest.approx(np_r2(pop[seen], true[seen]))
    assert o.plays_vs_shows_observed == pytest.approx(np_r2(pop[seen], (pop * reward)[seen]))
    assert o.plays_vs_shows_true == pytest.approx(np_r2(pop[seen], (pop * true)[seen]))
    # The caveat in numbers: the true mean barely tracks exposure, the true plays do.
    assert o.reward_vs_exposure_true < 0.1 < 0.9 < o.plays_vs_shows_true
    text = calibration.format_card(c)
    assert "Gini over items 0.500" in text and "70.0% of exposures" in text and "cannot show bias by itself" in text
    # Undefined R^2 (every item shown equally often) is None / "n/a", not NaN.
    flat = calibration.observation1(hand_world([2, 2, 2], [True, False, False], [0.1, 0.2, 0.3], [0.5] * 3, 2))
    assert flat.reward_vs_exposure_observed is None and "n/a" in calibration.format_observation1(flat)
    assert calibration.CalibrationCard.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_card_of_a_csv_world_through_get_worlds(hand_dir, hand_worlds, tmp_path, capsys):
    from purerec.data import datasets

    cfg = cfg_of(hand_dir, cache_dir=str(tmp_path / "cache"))
    train, test = datasets.get_worlds(cfg, verbose=True)
    for a, b in zip(jax.tree.leaves((train, test)), jax.tree.leaves(hand_worlds)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    out = capsys.readouterr().out
    cards = list((tmp_path / "cache").glob("world-*-card.json"))
    assert len(cards) == 1 and f"calibration card: {cards[0]}" in out
    assert "user split of interactions.csv" in out and "plays vs shows" in out
    data = json.loads(cards[0].read_text())
    # Independent numbers from the rows: the train users' distinct pairs.
    tr_names = [NAMES[k] for k in np.asarray(train.user_ids)]
    pairs = {k: v for k, v in expected_logs(HAND).items() if k[0] in tr_names}
    items = sorted({i for _, i in pairs})
    pop = np.array([sum(1 for (_, i) in pairs if i == it) for it in items], float)
    mean = np.array([np.mean([v for (_, i), v in pairs.items() if i == it]) for it in items])
    top = np.lexsort((np.arange(len(pop)), -pop))[: max(1, round(0.5 * len(pop)))]
    assert (data["users"], data["items"], data["interactions"]) == (8, len(items), len(pairs))
    assert data["density"] == pytest.approx(len(pairs) / (8 * len(items)))
    assert data["exposure_gini"] == pytest.approx(np_gini(pop))
    assert data["popular_share"] == pytest.approx(pop[top].sum() / pop.sum())
    assert data["mean_feedback"] == pytest.approx(np.mean(list(pairs.values())))
    assert data["observation1"]["reward_vs_exposure_observed"] == pytest.approx(np_r2(pop, mean), rel=1e-5)
    assert data["observation1"]["plays_vs_shows_observed"] == pytest.approx(np_r2(pop, pop * mean), rel=1e-5)
    assert (data["test_users"], data["test_items"]) == (test.n_users, test.n_items)
    # From the cache in a new process (simulated): printed again from the stored JSON.
    datasets._cards_shown.clear()
    datasets.get_worlds(cfg, verbose=True)
    out = capsys.readouterr().out
    assert "built" not in out and f"calibration card: {cards[0]}" in out


def test_observation1_benchmark_on_a_csv_world(hand_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("observation1", os.path.join(ROOT, "benchmarks", "observation1.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--data-dir", str(hand_dir), "--world.cache-dir", str(tmp_path), "--world.true-dim", "4",
                "--world.emb-dim", "3", "--no-synthetic"])
    out = capsys.readouterr().out
    assert "csv world" in out and "mean reward vs exposure" in out and "plays vs shows" in out
    assert "cannot show bias by itself" in out


# ---------------------------------------------------------------- training on a CSV world

def pattern_rows(n_users=40, n_items=30, seed=0):
    """A popularity-biased log of a rank-1 preference pattern, string ids, with tags."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n_users), rng.normal(size=n_items)
    head = np.exp(-np.arange(n_items) / 8)
    rows = [(f"user{u}", f"item{i}", round(float(sig(1.5 * a[u] * b[i] + head[i])), 4))
            for u in range(n_users) for i in range(n_items) if rng.random() < 0.2 + 0.7 * head[i]]
    return rows, a, b


@pytest.fixture(scope="module")
def pattern_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pattern")
    rows, _, _ = pattern_rows()
    write_csv(d / "interactions.csv", ["user_id", "item_id", "feedback"], rows)
    write_csv(d / "items.csv", ["item_id", "tags"], [(f"item{i}", ";".join(f"t{k}" for k in range(i % 3 + 1)))
                                                     for i in range(30)])
    return d


def test_joint_truth_fits_the_logs(pattern_dir):
    train, test = load_user_csv(str(pattern_dir), cfg_of(pattern_dir).world)
    rows, _, _ = pattern_rows()
    names = sorted({u for u, _, _ in rows})
    items = sorted({i for _, i, _ in rows})
    fitted = {}
    for w in (train, test):
        resp = responses(w)
        for ru, u in enumerate(np.asarray(w.user_ids)):
            for ri, i in enumerate(np.asarray(w.item_ids)):
                fitted[(names[u], items[i])] = resp[ru, ri]
    pairs = [(fitted[(u, i)], r) for u, i, r in rows if (u, i) in fitted]
    assert len(pairs) == len(rows)  # every logged pair is inside its user's world
    assert np.corrcoef(np.array(pairs).T)[0, 1] > 0.9
    assert train.n_tags == 3


def test_train_on_a_csv_world_end_to_end(pattern_dir, tmp_path, capsys):
    from purerec.run import evaluation
    from purerec.run.experiment import run
    from purerec.sim.env import make_params
    from purerec.sim.policies import REFERENCE_POLICIES

    ov = {"world.source": "csv", "world.data_dir": str(pattern_dir), "world.cache_dir": str(tmp_path / "cache"),
          "world.true_dim": 4, "world.emb_dim": 4, "agent.kind": "hrl", "env.slate_size": 5,
          "train.num_envs": 16, "train.rollout_len": 8, "train.total_updates": 2, "train.chunk_updates": 1,
          "train.seeds": [1], "train.stage1_sessions": 32, "encoder.train_steps": 20,
          "eval.n_sessions": 16, "eval.repeats": 1}
    # A slate larger than the loaded test world is a config error before anything trains.
    with pytest.raises(ConfigError, match=r"env\.slate_size.*at most \d+: the loaded (train|test) world has only"):
        run(load_config(None, {**ov, "env.slate_size": 31}), run_dir=str(tmp_path / "big"), progress=False,
            log=lambda *a: None)
    assert not os.path.exists(tmp_path / "big")
    out = capsys.readouterr().out  # the run built the world and printed its card with the JSON's path
    assert "built csv worlds" in out and "calibration card (csv; user split" in out
    assert "plays vs shows" in out and f"calibration card: {tmp_path / 'cache'}" in out
    cfg = load_config(None, ov)
    res = run(cfg, run_dir=str(tmp_path / "run"), progress=False, log=lambda *a: None, evaluate_at_end=False)
    assert res["updates"] == 2
    lines = [json.loads(ln) for ln in open(tmp_path / "run" / "metrics.jsonl")]
    assert len(lines) == 2 and all(math.isfinite(v) for ln in lines for v in ln.values() if isinstance(v, float))
    saved = json.load(open(tmp_path / "run" / "config.json"))
    assert saved["world"]["source"] == "csv" and saved["world"]["data_dir"] == str(pattern_dir)
    # The held-out test world runs sessions (the reference random policy, 8 distinct users).
    from purerec.data.datasets import get_worlds

    _, test = get_worlds(cfg)
    row = evaluation.test_protocol(REFERENCE_POLICIES["random"], make_params(test, cfg), cfg.eval)
    assert row["Len"] >= 1 and 0.0 <= row["R_each"] <= 1.0


def test_harm_labels_from_an_items_csv_column(tmp_path):
    """items.csv's optional ``harmful`` column becomes the worlds' harm labels (used by the
    preference dynamics instead of the synthetic rule); a bad label names its line."""
    from purerec.data.datasets import get_worlds

    d = tmp_path / "harm"
    d.mkdir()
    write_csv(d / "interactions.csv", ["item_id", "user_id", "feedback"], [(i, u, r) for u, i, r in HAND])
    write_csv(d / "items.csv", ["item_id", "tags", "harmful"],
              [("i1", "a", "0"), ("i2", "b", "1"), ("i4", "", "TRUE"), ("i5", "c", ""), ("zzz", "d", "1")])
    train, test = load_user_csv(str(d), cfg_of(d).world)
    for w in (train, test):
        names = [f"i{k + 1}" for k in np.asarray(w.item_ids)]
        assert [n for n, h in zip(names, np.asarray(w.harmful)) if h] == [n for n in names if n in ("i2", "i4")]
    # the dynamics keep the file's labels (no synthetic rule)
    cfg = load_config(None, {"world.source": "csv", "world.data_dir": str(d), "world.cache_dir": "",
                             "world.true_dim": 4, "world.emb_dim": 3, "world.popular_frac": 0.5, "world.seed": 3,
                             "env.dynamics": "attraction", "env.slate_size": 2})
    tr2, _ = get_worlds(cfg, use_cache=False)
    np.testing.assert_array_equal(np.asarray(tr2.harmful), np.asarray(train.harmful))
    # without the column: no labels
    d2 = tmp_path / "noharm"
    d2.mkdir()
    write_csv(d2 / "interactions.csv", ["item_id", "user_id", "feedback"], [(i, u, r) for u, i, r in HAND])
    assert load_user_csv(str(d2), cfg_of(d2).world)[0].harmful is None
    write_csv(d / "items.csv", ["item_id", "tags", "harmful"], [("i1", "a", "0"), ("i2", "b", "maybe")])
    with pytest.raises(DataFormatError, match=r"line 3, column 'harmful'.*1 or 0"):
        load_user_csv(str(d), cfg_of(d).world)
