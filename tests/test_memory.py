"""Memory estimates (``purerec.core.memory``): against hand computations and the built worlds' bytes,
and the refusal of sizes that cannot fit, at once and before anything is allocated or written.
The available memory is monkeypatched so the tests do not depend on the machine."""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np
import pytest

from purerec.agents import spec_of
from purerec.cli import main
from purerec.config import load_config
from purerec.core import memory
from purerec.core.memory import FIXED_BYTES, MemoryLimitError
import purerec.run.evaluation  # noqa: F401  (imported here: the timing below is the CLI's work alone)
import purerec.run.experiment  # noqa: F401


def test_world_arrays_are_the_built_worlds_bytes(small_cfg, small_worlds):
    w = small_cfg.world
    for world in small_worlds:
        nbytes = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(world))
        assert memory.world_arrays(world.n_users, world.n_items, w.true_dim, w.emb_dim, world.n_tags) == nbytes


def test_synthetic_estimate_by_hand(small_cfg):
    # small_config: 300 x 400 train, 120 x 150 test, 12 tags, true_dim 8 (+2 bias columns), emb_dim 8.
    est = memory.synthetic_world(small_cfg.world)
    logs = 300 * 400 * 64
    numpy_parts = 3 * 8 * 10 * (300 + 400) + 400 * 12 * 17
    world = lambda u, i: u * (4 * 10 + 4) + i * (4 * 10 + 4 * 8 + 12 + 12 + 1 + 4)
    worlds = world(300, 400) + world(300, 400) + world(120, 150)  # universe = train sizes here
    assert est.parts == {"logs (train users x items)": logs, "factors and tags (NumPy)": numpy_parts,
                         "worlds (universe, train, test)": worlds}
    assert est.total == FIXED_BYTES + 7_680_000 + 249_600 + 127_630 == FIXED_BYTES + logs + numpy_parts + worlds
    # The universe holds max(train, test) items: the logs are train users x that.
    big_test = dataclasses.replace(small_cfg.world, n_test_items=1000)
    est = memory.synthetic_world(big_test)
    assert est.parts["logs (train users x items)"] == 300 * 1000 * 64
    assert est.fields == ("world.n_users", "world.n_test_items")


def test_training_estimate_by_hand():
    cfg = load_config(None, {"agent.kind": "hrl", "train.num_envs": 16, "train.rollout_len": 8, "train.seeds": [1, 2],
                             "env.slate_size": 5, "env.obs_window": 20, "env.max_len": 30, "eval.n_sessions": 64})
    est = memory.training(cfg, 400, 150)
    step = 2 * 20 * 8 + 3 * 5 * 4 + 64  # obs + next obs (item i32 + feedback f32), 3 slates, scalars = 444
    assert est.parts == {
        "rollouts (seeds x num_envs x rollout_len)": 2 * 16 * 8 * step,
        "item tables (seeds x num_envs x items)": 2 * 16 * 400 * 4 * 8,
        "evaluation (eval.n_sessions x test items)": 64 * 150 * 4 * 8 + 64 * 30 * (5 * 4 + 32),
    }
    assert "replay.capacity" not in est.fields
    td3 = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, kind="td3"))
    est = memory.training(td3, 400, 150, spec_of(td3).sections)
    assert est.parts["replay buffers (seeds x replay.capacity)"] == 2 * 100_000 * step
    assert "replay.capacity" in est.fields


def test_available_memory_is_read_on_linux():
    avail = memory.available_bytes()
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("not Linux")
    total = next(int(ln.split()[1]) * 1024 for ln in open("/proc/meminfo") if ln.startswith("MemTotal:"))
    assert 0 < avail <= total


@pytest.mark.parametrize("users,items", [(2_000_000, 100), (5_000_000, 5_000_000)])
def test_a_world_too_big_is_refused_at_once(users, items, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 << 30)
    t0 = time.perf_counter()
    code = main(["--reference", "--world.n-users", str(users), "--world.n-items", str(items),
                 "--world.cache-dir", str(tmp_path / "cache")])
    assert time.perf_counter() - t0 < 2.0  # building it would take minutes (and the memory)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    # The universe holds max(n_items, n_test_items = 3327) items: that field is the one to lower.
    est = memory.synthetic_world(load_config("envs/kuairec.toml", {"world.n_users": users, "world.n_items": items}).world)
    assert est.parts["logs (train users x items)"] == users * max(items, 3327) * 64
    assert err[0].startswith("error: building the synthetic worlds") and "16.0 GiB is available" in err[0]
    assert f"about {est.total / 2**30:.1f} GiB" in err[0]
    assert "world.n_users" in err[0] and ("world.n_items" if items > 3327 else "world.n_test_items") in err[0]
    cache = tmp_path / "cache"
    assert not cache.exists() or not list(cache.glob("*.npz"))


def test_a_run_too_big_is_refused_before_its_directory(small_cfg, small_worlds, monkeypatch, tmp_path):
    from purerec.run import experiment

    cfg = dataclasses.replace(small_cfg, train=dataclasses.replace(small_cfg.train, num_envs=4096, seeds=(1,)))
    need = memory.training(cfg, small_worlds[0].n_items, small_worlds[1].n_items, spec_of(cfg).sections).total
    monkeypatch.setattr(experiment, "get_worlds", lambda c, verbose=False: small_worlds)
    monkeypatch.setattr(memory, "available_bytes", lambda: need - 1)
    with pytest.raises(MemoryLimitError, match=r"the training run would need about .*train\.num_envs"):
        experiment.run(cfg, run_dir=str(tmp_path / "run"), progress=False, log=lambda *a: None)
    assert not os.path.exists(tmp_path / "run")
    monkeypatch.setattr(memory, "available_bytes", lambda: need)
    memory.check_run(cfg, *small_worlds)  # exactly enough: allowed
    monkeypatch.setattr(memory, "available_bytes", lambda: None)
    memory.check(memory.synthetic_world(dataclasses.replace(cfg.world, n_users=5_000_000)))  # unknown: allowed


def test_real_data_worlds_are_checked_once_the_logs_are_read(monkeypatch, tmp_path):
    from purerec.data.loaders import load_user_csv

    with open(tmp_path / "interactions.csv", "w") as fh:
        fh.write("user_id,item_id,feedback\n")
        fh.writelines(f"u{u},i{(u + k) % 6},0.5\n" for u in range(12) for k in range(3))
    cfg = load_config(None, {"world.source": "csv", "world.data_dir": str(tmp_path), "world.true_dim": 4,
                             "world.emb_dim": 3})
    monkeypatch.setattr(memory, "available_bytes", lambda: FIXED_BYTES)
    with pytest.raises(MemoryLimitError, match=r"from the logs \(\d+ train users x 6 items\).*fewer users or items"):
        load_user_csv(str(tmp_path), cfg.world)
