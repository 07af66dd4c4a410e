"""The worlds cache: keys from the data files' content (not their names, sizes and mtimes), the
file-hash side cache, and best-effort writes (an unwritable cache warns, the run carries on).

Expected values are computed here independently (hashlib on the bytes, NumPy on the rows).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from purerec.cli import main
from purerec.config import load_config
from purerec.data import datasets

# 12 users x 6 items; feedback written with two decimals, so 1 - r has the same width.
ROWS = [(f"u{u}", f"i{(u + k) % 6}", round(0.05 + 0.9 * (((u * 7 + k * 3) % 10) / 10), 2))
        for u in range(12) for k in range(3)]


def write_rows(path, rows):
    with open(path, "w") as fh:  # in place: the inode stays the same
        fh.write("user_id,item_id,feedback\n")
        fh.writelines(f"{u},{i},{r:.2f}\n" for u, i, r in rows)


def csv_cfg(data, cache):
    return load_config(None, {"world.source": "csv", "world.data_dir": str(data), "world.cache_dir": str(cache),
                              "world.true_dim": 4, "world.emb_dim": 3, "world.seed": 1})


def test_a_rewritten_csv_with_restored_size_and_mtime_gets_a_new_key_and_world(tmp_path, monkeypatch):
    """What ``cp -p`` / ``rsync -t`` / ``tar x`` do: the same size and mtime, other content."""
    monkeypatch.setattr(datasets, "RACY_NS", 0)  # store the first hash: the rewrite must beat the hash cache
    data = tmp_path / "data"
    data.mkdir()
    path = data / "interactions.csv"
    write_rows(path, ROWS)
    cfg = csv_cfg(data, tmp_path / "cache")
    key = datasets._fingerprint(cfg)
    train, _ = datasets.get_worlds(cfg)
    assert datasets._fingerprint(cfg) == key  # unchanged file: the same key
    hashes = json.load(open(tmp_path / "cache" / datasets.HASH_CACHE))
    assert hashes[os.path.realpath(path)]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    st = os.stat(path)
    write_rows(path, [(u, i, round(1.0 - r, 2)) for u, i, r in ROWS])  # every feedback flipped
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(path)
    assert (st2.st_size, st2.st_mtime_ns, st2.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    assert datasets._fingerprint(cfg) != key
    flipped, _ = datasets.get_worlds(cfg)
    # item_log_reward = the mean logged feedback of the item's train pairs: flipped -> 1 - mean.
    np.testing.assert_array_equal(np.asarray(flipped.item_ids), np.asarray(train.item_ids))
    np.testing.assert_allclose(np.asarray(flipped.item_log_reward), 1.0 - np.asarray(train.item_log_reward),
                               atol=1e-6)
    assert len(list((tmp_path / "cache").glob("world-*-train.npz"))) == 2


def test_only_the_loaders_files_are_looked_at(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_rows(data / "interactions.csv", ROWS)
    cfg = csv_cfg(data, tmp_path / "cache")
    key = datasets._fingerprint(cfg)
    os.symlink(tmp_path / "gone.csv", data / "old_export.csv")  # dangling
    (data / "notes.txt").write_text("not data")
    assert datasets._fingerprint(cfg) == key
    assert datasets.input_files(cfg) == [str(data / "interactions.csv")]
    train, test = datasets.get_worlds(cfg)
    assert train.n_users + test.n_users == 12
    # items.csv is read by the loader, so it is part of the key.
    (data / "items.csv").write_text("item_id,tags\ni1,a\n")
    assert datasets.input_files(cfg) == [str(data / "interactions.csv"), str(data / "items.csv")]
    assert datasets._fingerprint(cfg) != key


def test_synthetic_keys_have_no_file_part(small_cfg):
    """The synthetic key is the hash of the config fields alone (the pre-content-hash formula)."""
    import dataclasses

    w = dataclasses.asdict(small_cfg.world)
    w.pop("cache_dir")
    payload = {"v": datasets.CACHE_VERSION, "world": w, "feedback": dataclasses.asdict(small_cfg.feedback)}
    assert datasets._fingerprint(small_cfg) == hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def test_the_hash_cache_avoids_rehashing_until_the_stat_changes(tmp_path, monkeypatch):
    calls = []
    real = datasets.file_sha256
    monkeypatch.setattr(datasets, "file_sha256", lambda p: calls.append(p) or real(p))
    f = tmp_path / "a.csv"
    f.write_bytes(b"user_id,item_id,feedback\nu,i,0.5\n")
    cache = str(tmp_path / "c" / datasets.HASH_CACHE)
    want = lambda: [hashlib.sha256(f.read_bytes()).hexdigest()]

    # Changed just now: not trusted (a change in the same timestamp tick would not show), hashed each time.
    assert datasets.content_hashes([str(f)], cache) == want()
    assert datasets.content_hashes([str(f)], cache) == want() and len(calls) == 2
    assert not os.path.exists(cache)
    monkeypatch.setattr(datasets, "RACY_NS", 0)
    assert datasets.content_hashes([str(f)], cache) == want() and len(calls) == 3
    for _ in range(3):
        assert datasets.content_hashes([str(f)], cache) == want()
    assert len(calls) == 3  # read from the side cache

    # Each part of the stat invalidates the entry: size, mtime_ns, ctime_ns, inode, device.
    for k in range(5):
        entries = json.load(open(cache))
        entries[os.path.realpath(f)]["stat"][k] += 1
        json.dump(entries, open(cache, "w"))
        assert datasets.content_hashes([str(f)], cache) == want() and len(calls) == 4 + k
        assert datasets.content_hashes([str(f)], cache) == want() and len(calls) == 4 + k  # stored again

    n = len(calls)
    st = os.stat(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # touched: mtime_ns changes
    assert datasets.content_hashes([str(f)], cache) == want() and len(calls) == n + 1
    f.write_bytes(b"user_id,item_id,feedback\nu,i,0.7\n")  # same size, mtime restored: ctime changes
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert datasets.content_hashes([str(f)], cache) == want() and len(calls) == n + 2
    g = tmp_path / "b.csv"
    shutil.copy2(f, g)
    os.replace(g, f)  # a new inode, same size and mtime
    assert datasets.content_hashes([str(f)], cache) == want() and len(calls) == n + 3
    # A damaged side cache is ignored (and rewritten).
    open(cache, "w").write("{not json")
    assert datasets.content_hashes([str(f)], cache) == want() and len(calls) == n + 4
    assert json.load(open(cache))[os.path.realpath(f)]["sha256"] == want()[0]


# ------------------------------------------------------------------------------------------
# An unwritable cache: a cache directory under a regular file fails for root too (NotADirectoryError).

SMALL = ["--world.n-users", "200", "--world.n-items", "300", "--world.n-test-users", "100",
         "--world.n-test-items", "150", "--world.n-tags", "12", "--world.true-dim", "8", "--world.emb-dim", "8",
         "--eval.n-sessions", "32", "--eval.repeats", "1"]


def test_reference_rows_with_an_unwritable_cache_warn_and_complete(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["--reference", *SMALL, "--world.cache-dir", str(blocker / "cache")]) == 0
    out = capsys.readouterr()
    assert "Reference policies" in out.out and "oracle" in out.out
    warnings = [ln for ln in out.err.splitlines() if ln.startswith("warning: ")]
    assert any("not writable" in ln for ln in warnings), out.err
    assert any("could not cache the reference rows" in ln for ln in warnings), out.err
    assert "Traceback" not in out.err and blocker.read_text() == "x"


def test_a_csv_world_and_its_hashes_with_an_unwritable_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(datasets, "RACY_NS", 0)
    data = tmp_path / "data"
    data.mkdir()
    write_rows(data / "interactions.csv", ROWS)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cfg = csv_cfg(data, blocker / "sub")
    train, _ = datasets.get_worlds(cfg, verbose=True)
    err = capsys.readouterr().err
    assert "could not store the file-hash cache" in err and "not writable" in err
    good, _ = datasets.get_worlds(csv_cfg(data, tmp_path / "cache"))
    np.testing.assert_array_equal(np.asarray(train.item_log_reward), np.asarray(good.item_log_reward))


@pytest.mark.slow
def test_a_run_with_an_unwritable_cache_completes(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    argv = [*SMALL, "--world.cache-dir", str(blocker / "cache"), "--train.num-envs", "16", "--train.rollout-len", "8",
            "--total-updates", "2", "--chunk-updates", "1", "--train.stage1-sessions", "32",
            "--encoder.train-steps", "20", "--agent", "hrl", "--seeds", "1", "--no-progress",
            "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "could not cache the reference rows" in err and "Traceback" not in err
    assert os.path.exists(tmp_path / "run" / "results.json")
