"""One writer per run or sweep directory (``purerec.core.runlock``) and an idempotent ``metrics.jsonl``:
a second lock is refused naming the holder's PID, a dead holder's lock is taken over, a directory
the lock made is removed again when nothing was written, duplicate (seed, update) lines are
repaired, and run / sweep / logs directories are not written into each other. The end-to-end
races (``train.py --out D`` twice, ``--resume D`` twice) are in ``test_signals.py``, on its
reference run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from purerec.core.errors import RunDirError
from purerec.core.runlock import DirLock, LOCK_NAME
from purerec.run.experiment import _append_metrics, _truncate_metrics, check_new_run_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOLD = """
import sys
from purerec.core.runlock import DirLock
lock = DirLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()  # hold until the test closes stdin (or kills us)
"""


def _holder(d):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(d)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    d = tmp_path / "run"
    p = _holder(d)
    try:
        assert (d / LOCK_NAME).read_text().strip() == str(p.pid)
        with pytest.raises(RunDirError, match=rf"--out {d}: in use by process {p.pid} \(PID {p.pid}"):
            DirLock(str(d)).acquire()
        with pytest.raises(RunDirError, match=rf"--resume {d}: in use by process {p.pid}"):
            DirLock(str(d), "--resume", create=False).acquire()
    finally:
        p.kill()  # kill -9: the lock file stays behind with the dead PID, but the OS released the lock
        p.wait()
    assert (d / LOCK_NAME).read_text().strip() == str(p.pid)
    logs = []
    with DirLock(str(d), log=logs.append):
        assert (d / LOCK_NAME).read_text().strip() == str(os.getpid())
        assert logs == [f"{d}: taking over the stale lock of PID {p.pid} (no longer running)"]
    assert not (d / LOCK_NAME).exists() and d.is_dir()  # the holder had made it: not ours to remove


def test_a_released_lock_is_taken_at_once_and_a_holder_that_exits_releases_it(tmp_path):
    d = tmp_path / "run"
    p = _holder(d)
    p.stdin.close()  # the holder exits without releasing: the OS does
    p.wait()
    t0 = time.perf_counter()
    with DirLock(str(d), log=lambda *a: None):
        pass
    assert time.perf_counter() - t0 < 1.0  # never waits


def test_the_lock_makes_the_directory_and_removes_what_it_made_when_nothing_was_written(tmp_path):
    d = tmp_path / "a" / "b" / "run"
    with DirLock(str(d)):
        assert sorted(os.listdir(d)) == [LOCK_NAME]
    assert not (tmp_path / "a").exists()  # refused or failed start: nothing left behind
    with DirLock(str(d)):
        (d / "config.json").write_text("{}")
    assert sorted(os.listdir(d)) == ["config.json"]  # a run's files stay; the lock file goes
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        DirLock(str(tmp_path / "afile")).acquire()
    with pytest.raises(RunDirError, match="no such run directory"):
        DirLock(str(tmp_path / "nope"), "--resume", create=False).acquire()
    assert not (tmp_path / "nope").exists()


def test_a_new_run_dir_holding_only_a_stale_lock_is_empty_and_a_sweep_dir_is_refused(tmp_path):
    d = tmp_path / "killed_before_config"
    d.mkdir()
    (d / LOCK_NAME).write_text("999999\n")
    check_new_run_dir(str(d))  # only a dead run's lock file: still a new, empty run directory
    s = tmp_path / "sweep"
    (s / "runs").mkdir(parents=True)
    with pytest.raises(RunDirError, match="is a sweep directory"):
        check_new_run_dir(str(s))


def _rows(path):
    with open(path) as fh:
        return [(r["seed"], r["update"], r.get("x")) for r in map(json.loads, fh)]


def test_duplicate_and_cut_lines_of_metrics_are_repaired_keeping_the_first(tmp_path):
    """Two resumes at once (before locks) left updates 1..8, 7, 8, 9..10 for two seeds; a kill
    left a half line; chunk 11's checkpoint never landed."""
    path = tmp_path / "metrics.jsonl"
    lines = []
    for u in [*range(1, 9), 7, 8, 9, 10, 11]:
        for seed in (1, 2):
            lines.append(json.dumps({"seed": seed, "update": u, "x": u * 10 + seed + (0.5 if u in (7, 8) and
                                                                                      len(lines) >= 16 else 0)}))
    lines.insert(30, '{"seed": 1, "upd')
    path.write_text("\n".join(lines) + "\n")
    assert _truncate_metrics(str(path), 10) == 10
    want = [(seed, u, u * 10 + seed) for u in range(1, 11) for seed in (1, 2)]  # the first of each, in order
    assert _rows(path) == want
    before = path.stat().st_mtime_ns
    assert _truncate_metrics(str(path), 10) == 10 and path.stat().st_mtime_ns == before  # nothing to drop
    # Appending a chunk that overlaps what is written: only the new updates are appended.
    logs = {"x": np.array([[91.0, 101.0, 111.0], [92.0, 102.0, 112.0]])}  # (seed, update) of updates 9..11
    rows = _append_metrics(str(path), logs, 8, [1, 2], after=10)
    assert [(r["seed"], r["update"]) for r in rows] == [(1, 11), (2, 11)]
    assert _rows(path) == want + [(1, 11, 111.0), (2, 11, 112.0)]


def test_evals_jsonl_duplicates_are_repaired_too(tmp_path):
    path = tmp_path / "evals.jsonl"
    path.write_text("".join(json.dumps({"update": u, "Len": u}) + "\n" for u in (2, 4, 4, 6, 8)))
    assert _truncate_metrics(str(path), 6) == 6
    assert [json.loads(ln)["update"] for ln in path.read_text().splitlines()] == [2, 4, 6]


def test_sweep_refuses_a_run_directory_and_foreign_files(tmp_path):
    from purerec.run.sweep import check_sweep_dir

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="is a run directory"):
        check_sweep_dir(str(run))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(RunDirError, match="not a sweep's"):
        check_sweep_dir(str(other))
    ok = tmp_path / "ok"
    (ok / "runs").mkdir(parents=True)
    check_sweep_dir(str(ok))


def test_resume_of_a_finished_run_reruns_nothing_and_keeps_its_results(tmp_path):
    """Issue 29, item 8: ``--resume`` of a finished run returned new timings over the original
    ones; now it re-runs nothing and leaves results.json as it was."""
    import dataclasses

    from conftest import small_config
    from test_bad_inputs import snapshot
    from purerec.run.experiment import run

    d = tmp_path / "done"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(dataclasses.asdict(small_config())))
    results = {"run_dir": str(d), "updates": 4, "timings": {"compile_s": 12.5, "run_s": 3.25, "total_s": 20.0}}
    (d / "results.json").write_text(json.dumps(results))
    before = snapshot(d)
    logs = []
    assert run(None, run_dir=str(d), resume=True, progress=False, log=logs.append) == results
    assert snapshot(d) == before and not (d / LOCK_NAME).exists()
    assert logs == [f"{d} is finished (4 updates, results.json): nothing to resume; its results are left as they were"]
