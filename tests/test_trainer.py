"""DSRM-HRL training: Stage I, Stage II, determinism, resume, recompilation, NaN handling."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from purerec.config import Config
from purerec.core.errors import RunDirError
from purerec.run import evaluation
from purerec.run.experiment import run, TrainingError
from purerec.run.loop import make_train
from purerec.sim.env import make_params
from purerec.sim.policies import REFERENCE_POLICIES
from purerec.state import diffusion, dsrm


def train_config(**train) -> Config:
    cfg = small_config()
    t = dict(num_envs=64, rollout_len=16, total_updates=40, chunk_updates=20, seeds=(1, 2), stage1_sessions=256,
             run_dir="unused")
    t.update(train)
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, **t),
        encoder=dataclasses.replace(cfg.encoder, train_steps=200),
        dsrm=dataclasses.replace(cfg.dsrm, steps=5, train_steps=300, hidden=64),
        eval=dataclasses.replace(cfg.eval, n_sessions=256),
    ).validate()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_worlds):
    cfg = train_config()
    d = str(tmp_path_factory.mktemp("run") / "a")
    # With TensorBoard events (``--log tensorboard``) when the optional writer is installed.
    tb = importlib.util.find_spec("tensorboardX") is not None
    res = run(cfg, run_dir=d, progress=False, log=lambda *a: None, tensorboard=tb)
    return cfg, d, res


def test_schedules_match_closed_form():
    s = diffusion.make_schedule(10, "linear", 1e-4, 0.02)
    betas = np.linspace(1e-4, 0.02, 10)
    np.testing.assert_allclose(s.alpha_bars, np.cumprod(1 - betas), rtol=1e-5)
    c = diffusion.make_schedule(50, "cosine")
    f = lambda t: np.cos((t / 50 + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(c.alpha_bars[-1], f(50) / f(0), rtol=1e-3, atol=1e-6)
    assert np.all(np.diff(np.asarray(c.alpha_bars)) < 0)


def test_reverse_step_inverts_forward_with_oracle_noise():
    """With the true noise as eps_theta and one step, eq. 3 recovers s_0 exactly."""
    sched = diffusion.make_schedule(1, "linear", 0.1, 0.1)
    s0 = jax.random.normal(jax.random.key(0), (4, 3))
    eps = jax.random.normal(jax.random.key(1), (4, 3))
    s1 = diffusion.q_sample(sched, s0, jnp.ones((4,), jnp.int32), eps)
    out = diffusion.reverse(jax.random.key(2), sched, lambda s, k: eps, s1, 1)
    np.testing.assert_allclose(out, s0, atol=1e-5)


def test_reverse_chain_length_does_not_change_compile_structure():
    """K enters only as a scan length: the lowered program has one loop whatever K is."""
    model = dsrm.Denoiser(4, 8, 8)
    p = model.init(jax.random.key(0), jnp.zeros((1, 4)), jnp.ones((1,), jnp.int32), jnp.zeros((1, 4)))
    texts = []
    for k in (5, 500):
        cfg = dataclasses.replace(Config().dsrm, steps=k)
        sched = diffusion.make_schedule(k)
        f = jax.jit(lambda key, s: dsrm.purify(p, model, sched, cfg, key, s))
        texts.append(f.lower(jax.random.key(0), jnp.zeros((2, 4))).as_text())
    assert texts[0].count("while") == texts[1].count("while") >= 1
    # Same operations line for line; only the schedule constants' literals grow with K.
    assert len(texts[0].splitlines()) == len(texts[1].splitlines())


def test_stage1_losses_decrease(finished_run):
    _, d, _ = finished_run
    with open(os.path.join(d, "stage1.json")) as fh:
        s1 = json.load(fh)
    for seed_log in s1.values():
        assert seed_log["dsrm_loss"]["last"] < 0.6 * seed_log["dsrm_loss"]["first"]
        assert seed_log["encoder_loss"]["last"] < 0.6 * seed_log["encoder_loss"]["first"]


@pytest.mark.slow
def test_unbiased_target_purifies_towards_true_state(small_cfg, small_worlds):
    """Trained on s_0 = s*, DSRM moves s~ measurably closer to s* (the true-feedback state)."""
    from purerec.state.fidelity import fidelity
    from purerec.state.purifier import make_observer

    cfg = train_config()
    cfg = dataclasses.replace(cfg, dsrm=dataclasses.replace(cfg.dsrm, target="unbiased", train_steps=1500,
                                                            reverse_start="observed"))
    train_w, test_w = small_worlds
    p_train, p_test = make_params(train_w, cfg), make_params(test_w, cfg)
    fns = make_train(cfg, p_train)
    frozen, _ = jax.jit(fns.stage1)(jax.random.PRNGKey(0))
    fid = fidelity(make_observer(cfg), frozen, jax.random.PRNGKey(1), p_train, p_test)
    assert fid["state_cos_purified"] > fid["state_cos_observed"] + 0.01, fid


def test_training_beats_reference_policies(finished_run, small_worlds):
    """The agent's figures (test protocol, the configured action rule) against reference policies
    under the very same protocol (same users, repeats and seeds)."""
    cfg, _, res = finished_run
    assert (res["protocol"], res["action"]) == ("test", "greedy") == (cfg.eval.protocol, cfg.eval.action)
    assert res["mean"] == res["test"]["greedy"]["mean"] and res["per_seed"] == res["test"]["greedy"]["per_seed"]
    params = make_params(small_worlds[1], cfg)
    rand = evaluation.test_protocol(REFERENCE_POLICIES["random"], params, cfg.eval)
    pop = evaluation.test_protocol(REFERENCE_POLICIES["most_popular"], params, cfg.eval)
    for rule in ("greedy", "sample"):
        agent = res["test"][rule]["mean"]
        assert agent["R_cum"] > 1.15 * rand["R_cum"], (rule, agent, rand)
        assert agent["Len"] > rand["Len"] + 2.0, (rule, agent, rand)
        assert agent["AD"] < pop["AD"] - 0.2, (rule, agent, pop)
    # The two action rules are two different evaluations of a stochastic policy: their metric values
    # differ (whole rows always would: only the greedy row carries the fidelity keys).
    def metric_values(rule):
        return {s: [r[m] for m in evaluation.REPORT_METRICS] for s, r in res["test"][rule]["per_seed"].items()}

    assert metric_values("greedy") != metric_values("sample")


def test_results_hold_both_protocols(finished_run):
    cfg, d, res = finished_run
    with open(os.path.join(d, "results.json")) as fh:
        saved = json.load(fh)
    assert saved["mean"] == res["mean"] and saved["test"] == res["test"]
    assert saved["n_sessions"] == min(cfg.eval.n_sessions, cfg.world.n_test_users)
    assert saved["repeats"] == cfg.eval.repeats
    for rule in ("greedy", "sample"):
        assert sorted(saved["test"][rule]["per_seed"]) == sorted(str(s) for s in cfg.train.seeds)
        for name in ("Len", "R_cum", "AD"):
            vals = [saved["test"][rule]["per_seed"][str(s)][name] for s in cfg.train.seeds]
            assert saved["test"][rule]["mean"][name] == pytest.approx(np.mean(vals), rel=1e-9)
            assert saved["test"][rule]["std"][name] == pytest.approx(np.std(vals), rel=1e-9, abs=1e-12)
    # train_report: the mean of the last report_updates updates' training curves, per seed.
    with open(os.path.join(d, "metrics.jsonl")) as fh:
        rows = [json.loads(ln) for ln in fh]
    k = cfg.eval.report_updates
    for s in cfg.train.seeds:
        curve = [r for r in sorted(rows, key=lambda r: r["update"]) if r["seed"] == s]
        for name in ("Len", "R_each", "R_cum", "AD"):
            want = np.mean([r[name] for r in curve[-k:]])
            assert saved["train_report"]["per_seed"][str(s)][name] == pytest.approx(want, rel=1e-6), name
    assert os.path.exists(os.path.join(d, "curves.png")) and res["curves_png"]


def test_no_recompilation_between_chunks(finished_run):
    _, _, res = finished_run
    assert res["recompiles_in_loop"] == 0


def test_metrics_file_has_every_update_and_seed(finished_run):
    cfg, d, _ = finished_run
    with open(os.path.join(d, "metrics.jsonl")) as fh:
        rows = [json.loads(ln) for ln in fh]
    assert sorted((r["seed"], r["update"]) for r in rows) == sorted(
        (s, u) for s in cfg.train.seeds for u in range(1, cfg.train.total_updates + 1))
    assert all(np.isfinite(r["worker_actor"]) for r in rows)


def test_resume_after_kill_gives_identical_numbers(finished_run, tmp_path):
    """Leave the run as a kill after the first chunk would (last checkpoint gone, metrics ahead), resume:
    the same numbers, and (with the TensorBoard writer installed) the resumed copy keeps logging its
    events (a resumed run logs where it did), without the steps of the chunk it dropped."""
    cfg, d, res = finished_run
    killed = str(tmp_path / "killed")
    shutil.copytree(d, killed)
    shutil.rmtree(os.path.join(killed, "checkpoints", str(cfg.train.total_updates)))
    os.remove(os.path.join(killed, "results.json"))
    res2 = run(cfg, run_dir=killed, resume=True, progress=False, log=lambda *a: None)
    assert res2["per_seed"] == res["per_seed"]
    with open(os.path.join(d, "metrics.jsonl")) as a, open(os.path.join(killed, "metrics.jsonl")) as b:
        assert a.read() == b.read()
    if importlib.util.find_spec("tensorboardX") is not None:
        _events_match_the_run_files(killed, [(res2["updates"], res2)])


def _events_match_the_run_files(d: str, evals) -> None:
    from test_tensorboard import expected_scalars, read_all

    got, exp = read_all(d), expected_scalars(d, evals)
    assert set(got) == set(exp)
    for name, tags in exp.items():
        assert {t: sorted(v) for t, v in got[name][0].items()} == tags, name
    assert [step for step, _ in got["mean"][1]["figures/curves"]] == [evals[-1][0]]


def test_tensorboard_events_mirror_metrics(finished_run):
    """A real run's event files hold every metrics.jsonl scalar of every seed at its update and the
    final evaluation (read back from the files); the resumed copy's are checked by the resume test."""
    pytest.importorskip("tensorboardX")
    cfg, d, res = finished_run
    _events_match_the_run_files(d, [(res["updates"], res)])


@pytest.mark.slow
def test_same_seed_same_numbers_and_seeds_differ(finished_run, tmp_path):
    """A second run of the same config in a new directory reproduces every number."""
    cfg, d, res = finished_run
    res2 = run(cfg, run_dir=str(tmp_path / "again"), progress=False, log=lambda *a: None)
    assert res2["per_seed"] == res["per_seed"]
    # Every protocol and action rule, and the training episodes, repeat exactly.
    assert res2["test"] == res["test"] and res2["train_report"] == res["train_report"]
    assert res2["episodes"] == res["episodes"]
    for name in ("metrics.jsonl", "stage1.json"):
        with open(os.path.join(d, name)) as a, open(tmp_path / "again" / name) as b:
            assert a.read() == b.read(), name
    s1, s2 = (res["per_seed"][str(s)] for s in cfg.train.seeds)
    assert s1 != s2


def _chunk_episodes(d: str, cfg: Config):
    """Per seed, the training episodes of the first and of the second chunk of a run's metrics."""
    ch = cfg.train.chunk_updates
    with open(os.path.join(d, "metrics.jsonl")) as fh:
        rows = [json.loads(ln) for ln in fh]
    first = {s: sum(r["episodes"] for r in rows if r["seed"] == s and r["update"] <= ch) for s in cfg.train.seeds}
    second = {s: sum(r["episodes"] for r in rows if r["seed"] == s and ch < r["update"] <= 2 * ch)
              for s in cfg.train.seeds}
    return rows, first, second


def test_full_run_is_not_stopped_by_the_default_target(finished_run):
    cfg, _, res = finished_run
    assert cfg.train.target_episodes == 20000
    assert res["updates"] == cfg.train.total_updates
    assert all(0 < e <= cfg.train.target_episodes for e in res["episodes"].values())


@pytest.mark.slow
def test_episode_target_drops_the_chunk_that_would_pass_it(finished_run, tmp_path):
    """target_episodes caps every seed's episodes: the first chunk that would take a seed past it is
    dropped and the run ends on the chunk before. With target = the most episodes a seed completed
    in the first chunk, that seed's second chunk passes it: the run keeps exactly the first chunk."""
    cfg, d, res = finished_run
    ch = cfg.train.chunk_updates
    rows, first, _ = _chunk_episodes(d, cfg)
    kept = [r for r in rows if r["update"] <= ch]
    target = int(max(first.values()))
    cfg2 = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, target_episodes=target))
    d2 = str(tmp_path / "target")
    res2 = run(cfg2, run_dir=d2, progress=False, log=lambda *a: None, evaluate_at_end=False)
    assert res2["updates"] == ch < cfg.train.total_updates
    assert sorted(os.listdir(os.path.join(d2, "checkpoints"))) == ["0", str(ch)]
    with open(os.path.join(d2, "metrics.jsonl")) as fh:
        assert [json.loads(ln) for ln in fh] == kept
    assert res2["episodes"] == {s: float(first[s]) for s in cfg.train.seeds}
    assert all(e <= target for e in res2["episodes"].values())


def _resume_with_target(d: str, dst: str, target: int, cfg: Config):
    """The full run cut back to its first chunk, resumed with another target_episodes."""
    shutil.copytree(d, dst)
    shutil.rmtree(os.path.join(dst, "checkpoints", str(cfg.train.total_updates)))
    os.remove(os.path.join(dst, "results.json"))
    with open(os.path.join(dst, "config.json")) as fh:
        saved = json.load(fh)
    saved["train"]["target_episodes"] = target
    with open(os.path.join(dst, "config.json"), "w") as fh:
        json.dump(saved, fh)
    return run(cfg, run_dir=dst, resume=True, progress=False, log=lambda *a: None, evaluate_at_end=False)


@pytest.mark.slow
def test_resumed_run_keeps_a_chunk_that_stays_within_the_target_and_drops_one_that_does_not(finished_run, tmp_path):
    cfg, d, full = finished_run
    assert cfg.train.total_updates == 2 * cfg.train.chunk_updates
    _, first, second = _chunk_episodes(d, cfg)
    total = {s: first[s] + second[s] for s in cfg.train.seeds}
    # Target = the most episodes any seed completes in the whole run: the second chunk fits.
    res = _resume_with_target(d, str(tmp_path / "fits"), int(max(total.values())), cfg)
    assert res["updates"] == cfg.train.total_updates
    with open(os.path.join(d, "metrics.jsonl")) as a, open(os.path.join(tmp_path / "fits", "metrics.jsonl")) as b:
        assert a.read() == b.read()
    assert res["episodes"] == full["episodes"]
    # One episode less: that seed's second chunk would pass it, so the chunk is dropped.
    target = int(max(total.values())) - 1
    res3 = _resume_with_target(d, str(tmp_path / "stop"), target, cfg)
    assert res3["updates"] == cfg.train.chunk_updates
    assert res3["episodes"] == {s: float(first[s]) for s in cfg.train.seeds}
    assert all(e <= target for e in res3["episodes"].values())
    with open(os.path.join(tmp_path / "stop", "metrics.jsonl")) as fh:
        assert max(json.loads(ln)["update"] for ln in fh) == cfg.train.chunk_updates


def test_nan_loss_stops_with_named_error_and_keeps_checkpoint(tmp_path, monkeypatch, small_worlds):
    from purerec.agents import losses

    real = losses.ppo_clip

    def poisoned(*a, **k):
        total, parts = real(*a, **k)
        parts = dict(parts, actor=parts["actor"] * jnp.nan)
        return total * jnp.nan, parts

    monkeypatch.setattr(losses, "ppo_clip", poisoned)
    cfg = train_config(total_updates=4, chunk_updates=2, seeds=(3,))
    d = str(tmp_path / "nan")
    with pytest.raises(TrainingError, match=r"non-finite \w+ = nan at update 1 \(seed 3\)"):
        run(cfg, run_dir=d, progress=False, log=lambda *a: None)
    ckpts = os.listdir(os.path.join(d, "checkpoints"))
    assert "0" in ckpts and "2" not in ckpts
    assert os.path.exists(os.path.join(d, "checkpoints", "0", "commit_success.txt"))


def test_resume_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(RunDirError, match="no such run directory"):
        run(train_config(), run_dir=str(tmp_path / "nope"), resume=True, progress=False)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(RunDirError, match="config.json"):
        run(train_config(), run_dir=str(tmp_path / "empty"), resume=True, progress=False)


def test_seed_batching_modes_agree():
    """``map`` and ``vmap`` over seeds give the same leading-axis results; bad modes are rejected."""
    from purerec.config import ConfigError
    from purerec.run.experiment import seed_batcher

    def fn(key, x):
        return {"a": jax.random.normal(key, (3,)) * x, "b": jnp.sum(x)}

    keys = jnp.stack([jax.random.PRNGKey(s) for s in (1, 2, 3)])
    xs = jnp.arange(3.0)
    out_map = jax.jit(seed_batcher("map")(fn))(keys, xs)
    out_vmap = jax.jit(seed_batcher("vmap")(fn))(keys, xs)
    for k in ("a", "b"):
        np.testing.assert_allclose(out_map[k], out_vmap[k], rtol=1e-6)
    assert out_map["a"].shape == (3, 3)
    with pytest.raises(ConfigError, match="train.seed_batching"):
        dataclasses.replace(Config().train, seed_batching="pmap").validate()


@pytest.mark.slow
def test_periodic_evaluation_writes_test_world_curves(tmp_path):
    """eval_every_chunks = 1: one evals.jsonl line per chunk; the last is the final evaluation,
    and evaluating in the loop compiles no chunk again."""
    cfg = train_config(total_updates=4, chunk_updates=2, seeds=(5,), eval_every_chunks=1)
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, n_sessions=64))
    d = tmp_path / "evals"
    res = run(cfg, run_dir=str(d), progress=False, log=lambda *a: None)
    with open(d / "evals.jsonl") as fh:
        rows = [json.loads(ln) for ln in fh]
    assert [r["update"] for r in rows] == [2, 4]
    assert rows[-1]["per_seed"] == res["per_seed"]
    assert rows[0]["per_seed"] != rows[1]["per_seed"]  # the policy changed between the two
    for key in ("R_cum", "AD", "probe_cos_purified"):
        assert np.isfinite(rows[0]["mean"][key]), key
    assert res["recompiles_in_loop"] == 0 and res["timings"]["eval_s"] > 0
