"""Run directories, checkpoints and caches under faults: a finished run is never overwritten,
resume falls back past damaged checkpoints to the same final numbers, a checkpoint of another run
is refused, a bad cache is set aside or skipped, and kill -9 at random moments (training and
sweeps) then resume gives the uninterrupted results."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import small_config
from test_bad_inputs import snapshot
from purerec.config import ConfigError, load_config
from purerec.core.errors import CheckpointError, RunDirError
from purerec.run.experiment import checkpoint_steps, run

QUIET = dict(progress=False, log=lambda *a: None)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**train):
    cfg = small_config()
    t = dict(num_envs=16, rollout_len=8, total_updates=4, chunk_updates=1, seeds=(1, 2), stage1_sessions=32,
             run_dir="unused")
    t.update(train)
    return dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, kind="hrl"),
                               train=dataclasses.replace(cfg.train, **t),
                               encoder=dataclasses.replace(cfg.encoder, train_steps=20),
                               eval=dataclasses.replace(cfg.eval, n_sessions=32, repeats=1)).validate()


@pytest.fixture(scope="module")
def done_run(tmp_path_factory, small_worlds):
    cfg = tiny_config()
    d = str(tmp_path_factory.mktemp("rel") / "run")
    res = run(cfg, run_dir=d, **QUIET)
    return cfg, d, res


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def _resume(d):
    logs = []
    res = run(None, run_dir=d, resume=True, progress=False, log=logs.append)
    return res, logs


def _same(res, ref):
    assert res["per_seed"] == ref["per_seed"] and res["test"] == ref["test"]


def test_out_on_a_finished_run_is_refused_before_anything_is_written(done_run, tmp_path):
    cfg, d, _ = done_run
    before = snapshot(d)
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seeds=(7,)))
    with pytest.raises(RunDirError, match="already holds a run"):
        run(other, run_dir=d, **QUIET)
    assert snapshot(d) == before


def test_resume_falls_back_past_damaged_and_uncommitted_checkpoints(done_run, tmp_path):
    cfg, d, ref = done_run
    d2 = _copy(d, tmp_path / "r")
    os.remove(os.path.join(d2, "results.json"))
    ck = os.path.join(d2, "checkpoints")
    for name in os.listdir(os.path.join(ck, "4")):  # the newest: every metadata / data file truncated
        p = os.path.join(ck, "4", name)
        if os.path.isfile(p) and name != "commit_success.txt":
            with open(p, "r+b") as fh:
                fh.truncate(3)
    os.remove(os.path.join(ck, "3", "commit_success.txt"))  # killed before its commit marker
    res, logs = _resume(d2)
    text = "\n".join(logs)
    assert "checkpoint 3 set aside (uncommitted)" in text and "checkpoint 4 set aside (damaged)" in text
    assert "resumed" in text and "after update 2" in text
    _same(res, ref)
    assert sorted(os.listdir(os.path.join(ck, "set_aside"))) == ["3-uncommitted", "4-damaged"]
    assert checkpoint_steps(ck)[0] == 4  # re-written by the resumed run
    with open(os.path.join(d2, "metrics.jsonl")) as a, open(os.path.join(d, "metrics.jsonl")) as b:
        assert a.read() == b.read()


@pytest.mark.slow  # a whole rerun (~35 s, CI time); the fast tier's fallback test sets damaged checkpoints aside
def test_resume_with_every_checkpoint_damaged_starts_over_to_the_same_numbers(done_run, tmp_path):
    cfg, d, ref = done_run
    d2 = _copy(d, tmp_path / "r")
    os.remove(os.path.join(d2, "results.json"))
    ck = os.path.join(d2, "checkpoints")
    for step in os.listdir(ck):
        shutil.rmtree(os.path.join(ck, step, "d"), ignore_errors=True)
        for name in os.listdir(os.path.join(ck, step)):
            if name.startswith("_") and os.path.isfile(os.path.join(ck, step, name)):
                open(os.path.join(ck, step, name), "w").close()
    res, logs = _resume(d2)
    assert any("starting" in ln and "over" in ln for ln in logs)
    _same(res, ref)


def test_a_checkpoint_of_another_run_is_refused(done_run, tmp_path):
    cfg, d, _ = done_run
    d2 = _copy(d, tmp_path / "beyond")
    os.remove(os.path.join(d2, "results.json"))  # not finished: a finished run is not resumed at all
    os.rename(os.path.join(d2, "checkpoints", "4"), os.path.join(d2, "checkpoints", "8"))
    before = snapshot(d2)
    with pytest.raises(CheckpointError, match="update 8"):
        _resume(d2)
    assert snapshot(d2) == before
    d3 = _copy(d, tmp_path / "shapes")  # its config now says one seed: the arrays have another shape
    os.remove(os.path.join(d3, "results.json"))
    path = os.path.join(d3, "config.json")
    data = json.load(open(path))
    data["train"]["seeds"] = [1]
    json.dump(data, open(path, "w"))
    with pytest.raises(CheckpointError, match="other shapes"):
        _resume(d3)


def test_slate_larger_than_the_loaded_test_world_is_a_config_error(tmp_path):
    from test_loaders import SMALL_ITEMS, write_kuairec

    data = write_kuairec(tmp_path / "data")
    cfg = load_config(None, {"world.source": "kuairec", "world.data_dir": str(data), "world.cache_dir": "",
                             "world.true_dim": 4, "world.emb_dim": 3, "env.slate_size": len(SMALL_ITEMS) + 1})
    with pytest.raises(ConfigError, match=rf"env.slate_size.*at most {len(SMALL_ITEMS)}"):
        run(cfg, run_dir=str(tmp_path / "r"), **QUIET)
    assert not os.path.exists(tmp_path / "r")


def test_unwritable_cache_warns_and_a_corrupt_one_is_set_aside(tmp_path, monkeypatch, capsys):
    from purerec.data import datasets

    cfg = dataclasses.replace(small_config(), world=dataclasses.replace(small_config().world,
                                                                       cache_dir=str(tmp_path / "c")))
    real_access = os.access
    monkeypatch.setattr(datasets.os, "access", lambda p, m: False if str(p).startswith(str(tmp_path)) else
                        real_access(p, m))
    tr, te = datasets.get_worlds(cfg)
    assert "not writable" in capsys.readouterr().err and not any(f.endswith(".npz") for f in os.listdir(tmp_path / "c"))
    monkeypatch.setattr(datasets.os, "access", real_access)
    datasets.get_worlds(cfg)  # now cached
    cached = sorted(f for f in os.listdir(tmp_path / "c") if f.endswith(".npz"))
    assert len(cached) == 2
    with open(tmp_path / "c" / cached[0], "wb") as fh:
        fh.write(b"garbage")
    tr2, _ = datasets.get_worlds(cfg)
    assert "set aside" in capsys.readouterr().err
    np.testing.assert_array_equal(np.asarray(tr2.item_pop), np.asarray(tr.item_pop))
    assert os.path.exists(tmp_path / "c" / (cached[0] + ".corrupt"))


def test_a_foreign_json_in_a_sweeps_runs_is_skipped(tmp_path):
    from purerec.run.sweep import _read_records

    os.makedirs(tmp_path / "runs")
    (tmp_path / "runs" / "notes.json").write_text('{"hello": 1}')
    (tmp_path / "runs" / "cut.json").write_text('{"run_id": "ab')
    (tmp_path / "runs" / "ok.json").write_text('{"run_id": "ok", "status": "ok"}')
    logs = []
    assert list(_read_records(str(tmp_path), logs.append)) == ["ok"]
    assert sum("skipping" in ln for ln in logs) == 2


# ------------------------------------------------------------------------------------------
# kill -9 at random moments

TINY = ["--world.n-users", "200", "--world.n-items", "400", "--world.n-test-users", "100",
        "--world.n-test-items", "200", "--world.true-dim", "8", "--world.emb-dim", "8", "--train.num-envs", "16",
        "--train.rollout-len", "8", "--total-updates", "6", "--chunk-updates", "1", "--train.stage1-sessions", "32",
        "--encoder.train-steps", "20", "--eval.n-sessions", "32", "--eval.repeats", "1", "--agent", "hrl",
        "--seeds", "1", "--no-progress"]


def _env(tmp_path):
    env = dict(os.environ)
    env["PUREREC_CACHE"] = str(tmp_path / "cache")
    env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(ROOT, ".cache", "jax")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    # XLA's cheaper CPU optimisation: the killed runs and the reference share these flags.
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    return env


def _train(args, env, kill_after=None):
    """Run train.py; with ``kill_after`` seconds, SIGKILL it then (if it is still running)."""
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after is None:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        return True
    try:
        proc.communicate(timeout=kill_after)
        return proc.returncode == 0  # finished before the kill
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return False


@pytest.mark.slow
def test_kill_9_at_five_random_moments_then_resume_gives_the_same_results(tmp_path):
    env = _env(tmp_path)
    ref = str(tmp_path / "ref")
    t0 = time.perf_counter()
    _train([*TINY, "--out", ref], env)
    span = time.perf_counter() - t0
    d = str(tmp_path / "killed")
    rng = np.random.default_rng(0)
    moments = np.sort(rng.uniform(0.1, 0.9, 5)) * span
    finished = _train([*TINY, "--out", d], env, kill_after=moments[0])
    for m in moments[1:]:
        if finished:
            break
        if not os.path.exists(os.path.join(d, "config.json")):  # killed before the run directory existed
            shutil.rmtree(d, ignore_errors=True)
            finished = _train([*TINY, "--out", d], env, kill_after=m)
        else:
            finished = _train(["--resume", d], env, kill_after=m)
    if not os.path.exists(os.path.join(d, "results.json")):
        _train(["--resume", d] if os.path.exists(os.path.join(d, "config.json")) else [*TINY, "--out", d], env)
    a, b = (json.load(open(os.path.join(x, "results.json"))) for x in (ref, d))
    assert a["per_seed"] == b["per_seed"] and a["test"] == b["test"]
    with open(os.path.join(ref, "metrics.jsonl")) as fa, open(os.path.join(d, "metrics.jsonl")) as fb:
        assert fa.read() == fb.read()


@pytest.mark.slow
def test_kill_9_during_a_sweep_at_three_moments_then_rerun_gives_the_same_records(tmp_path):
    env = _env(tmp_path)
    (tmp_path / "tiny.toml").write_text(textwrap.dedent("""
        [world]
        n_users = 200
        n_items = 400
        n_test_users = 100
        n_test_items = 200
        true_dim = 8
        emb_dim = 8
    """))
    (tmp_path / "spec.toml").write_text(textwrap.dedent(f"""
        [sweep]
        name = "k"
        envs = ["{tmp_path / 'tiny.toml'}"]
        seeds = [1, 2]
        [base]
        "agent.kind" = "hrl"
        "train.num_envs" = 16
        "train.rollout_len" = 8
        "train.total_updates" = 2
        "train.chunk_updates" = 1
        "train.stage1_sessions" = 32
        "encoder.train_steps" = 20
        "eval.n_sessions" = 32
        "eval.repeats" = 1
        [grid]
        "agent.lambda_fair" = [0.0, 0.5]
        "env.max_len" = [10, 12]
    """))
    spec = str(tmp_path / "spec.toml")
    ref = str(tmp_path / "ref")
    t0 = time.perf_counter()
    _train(["sweep", spec, "--out", ref], env)
    span = time.perf_counter() - t0
    d = str(tmp_path / "killed")
    for m in np.sort(np.random.default_rng(1).uniform(0.2, 0.9, 3)) * span:
        if _train(["sweep", spec, "--out", d], env, kill_after=m):
            break
    _train(["sweep", spec, "--out", d], env)
    load = lambda x: {f: json.load(open(os.path.join(x, "runs", f))) for f in os.listdir(os.path.join(x, "runs"))}
    ra, rb = load(ref), load(d)
    assert set(ra) == set(rb) and len(ra) == 8
    for f in ra:
        assert rb[f]["status"] == "ok"
        # a group re-run with fewer runs batches them differently: equal up to float rounding
        for k, v in ra[f]["metrics"].items():
            np.testing.assert_allclose(rb[f]["metrics"][k], v, rtol=1e-5, atol=1e-6, err_msg=k)
