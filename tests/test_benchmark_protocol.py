"""The fair-benchmark protocol: the validation split, tuning only on it, frozen twins, the same
episode cap in sweeps as in single runs, the slate head axis in the config and the registry."""

from __future__ import annotations

import dataclasses
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from purerec.agents import heads, REGISTRY
from purerec.config import AGENTS, Config, load_config
from purerec.core.errors import SweepSpecError
from purerec.data.validation import eval_world, fresh_users, validation_world
from purerec.run import sweep, tuning
from purerec.run.hyper import frozen_config, is_frozen, learning_rate_paths
from test_sweep import write_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- the validation split ---------------------------------------------------------------------

def test_validation_users_are_new_users_on_the_test_items(small_cfg, small_worlds):
    train, test = small_worlds
    val = validation_world(small_cfg, train, test)
    assert val.n_users == test.n_users
    # The same items and visible features as the test world: only the users differ.
    for f in ("true_item", "item_emb", "item_tags", "item_pop", "popular", "item_ids"):
        assert np.array_equal(np.asarray(getattr(val, f)), np.asarray(getattr(test, f))), f
    ids = set(np.asarray(val.user_ids).tolist())
    assert not ids & set(np.asarray(train.user_ids).tolist())
    assert not ids & set(np.asarray(test.user_ids).tolist())
    # No validation user's factors equal any train or test user's.
    u = np.asarray(val.true_user)
    for other in (train, test):
        o = np.asarray(other.true_user)
        assert np.min(np.abs(u[:, None, :-2] - o[None, :, :-2]).max(-1)) > 1e-3
    # Deterministic: the same config gives the same validation users.
    again = validation_world(small_cfg, train, test)
    assert np.array_equal(np.asarray(again.true_user), u)


def test_synthetic_validation_users_follow_the_generators_user_law():
    cfg = small_config()
    w = cfg.world
    u = fresh_users(cfg, None, 20000)
    d = w.true_dim
    assert u.shape == (20000, d + 2)
    assert np.all(u[:, -1] == 1.0)  # the item-bias column
    # preference part ~ N(0, pref_scale^2); user bias column ~ N(score_offset, user_bias_std^2)
    assert abs(u[:, :d].std() - w.pref_scale) < 0.02 * w.pref_scale
    assert abs(u[:, d].mean() - w.score_offset) < 0.02
    assert abs(u[:, d].std() - w.user_bias_std) < 0.02


def test_real_data_validation_users_match_the_train_users_moments(small_worlds):
    cfg = dataclasses.replace(small_config(), world=dataclasses.replace(small_config().world, source="csv",
                                                                       data_dir=""))
    train = small_worlds[0]
    u = fresh_users(cfg, train, 50000)
    t = np.asarray(train.true_user, np.float64)
    np.testing.assert_allclose(u.mean(0), t.mean(0), atol=0.03)
    np.testing.assert_allclose(np.cov(u, rowvar=False), np.cov(t, rowvar=False), atol=0.05)


def test_eval_split_picks_the_world(small_cfg, small_worlds):
    train, test = small_worlds
    assert eval_world(small_cfg, train, test) is test
    cfg = dataclasses.replace(small_cfg, eval=dataclasses.replace(small_cfg.eval, split="validation"))
    val = eval_world(cfg, train, test)
    assert val is not test and val.n_users == test.n_users


def test_reference_rows_on_validation_differ_and_leave_the_test_rows_alone(tmp_path):
    from purerec.run.evaluation import reference_rows

    base = dataclasses.replace(small_config(), eval=dataclasses.replace(small_config().eval, n_sessions=64, repeats=1))
    base = dataclasses.replace(base, world=dataclasses.replace(base.world, cache_dir=str(tmp_path)))
    test_rows = reference_rows(base)
    val = dataclasses.replace(base, eval=dataclasses.replace(base.eval, split="validation"))
    val_rows = reference_rows(val)
    assert val_rows["random"]["R_cum"] != test_rows["random"]["R_cum"]
    assert reference_rows(base) == test_rows  # the cached test rows come back unchanged


# --- tuning never reads the test split --------------------------------------------------------

@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "sweeps", "tune", "*.toml"))))
def test_every_tuning_sweep_evaluates_on_validation_with_tuning_seeds(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = sweep.load_sweep(path)
    assert spec.tune
    assert not set(spec.seeds) & set(sweep.REPORTING_SEEDS)
    runs = sweep.expand(spec)
    assert runs and all(r.cfg.eval.split == "validation" for r in runs)
    # About 8 configurations per agent, and each agent's grid is one compiled program (FCPO's
    # static cost choice: two).
    per_agent: dict = {}
    for r in runs:
        per_agent.setdefault(r.cfg.agent.kind, set()).add(r.run_id)
    for kind, ids in per_agent.items():
        assert len(ids) == 8 * len(spec.seeds), kind
    by_agent_groups: dict = {}
    for g in sweep.plan(runs):
        by_agent_groups.setdefault(g.runs[0].cfg.agent.kind, []).append(g)
    assert all(len(gs) == (2 if kind == "fcpo" else 1) for kind, gs in by_agent_groups.items())


def _tune_spec(tmp_path, split="validation", seeds=(1, 2)) -> str:
    path = write_spec(tmp_path, '"agent.kind" = ["hrl"]\n"ppo.actor_lr" = [1e-4, 3e-4]\n', seeds=seeds)
    text = open(path).read().replace('[sweep]\n', '[sweep]\ntune = true\nactions = ["greedy", "sample"]\n')
    text = text.replace("[base]\n", f'[base]\n"eval.split" = "{split}"\n')
    open(path, "w").write(text)
    return path


def test_a_tuning_sweep_on_the_test_split_or_reporting_seeds_is_refused(tmp_path):
    with pytest.raises(SweepSpecError, match="validation"):
        sweep.expand(sweep.load_sweep(_tune_spec(tmp_path, split="test")))
    with pytest.raises(SweepSpecError, match="reporting seeds"):
        sweep.load_sweep(_tune_spec(tmp_path, seeds=(1, 11)))
    assert len(sweep.expand(sweep.load_sweep(_tune_spec(tmp_path)))) == 4


def _record(seed, lr, action_metrics, split="validation", frozen=False):
    return {"run_id": f"{seed}-{lr}-{frozen}", "status": "ok", "seed": seed, "frozen": frozen, "split": split,
            "point": {"env": "envs/kuairec.toml", "agent.kind": "a2c", "a2c.actor_lr": lr},
            "config": {"world": {"preset": "kuairec"}, "agent": {"kind": "a2c"}, "eval": {"action": "greedy",
                                                                                       "split": split}},
            "metrics": action_metrics["greedy"], "metrics_by_action": action_metrics}


def _m(r_cum, length=10.0):
    return {"Len": length, "R_cum": r_cum, "AD": 0.5}


def test_choose_picks_the_best_mean_validation_r_cum_and_writes_a_loadable_config(tmp_path):
    recs = [_record(1, 1e-4, {"greedy": _m(5.0), "sample": _m(7.0)}),
            _record(2, 1e-4, {"greedy": _m(6.0), "sample": _m(6.0)}),   # sample mean 6.5
            _record(1, 1e-3, {"greedy": _m(8.0), "sample": _m(1.0)}),
            _record(2, 1e-3, {"greedy": _m(4.0), "sample": _m(1.0)}),   # greedy mean 6.0
            _record(1, 1e-3, {"greedy": _m(99.0), "sample": _m(99.0)}, frozen=True)]  # frozen: never chosen
    rows = tuning.candidates(recs)[("kuairec", "a2c")]
    assert [(r["point"]["a2c.actor_lr"], r["action"], r["R_cum"]) for r in rows[:2]] == [(1e-4, "sample", 6.5),
                                                                                       (1e-3, "greedy", 6.0)]
    (path,) = tuning.choose(recs, str(tmp_path), "python train.py tune X")
    assert path == os.path.join(str(tmp_path), "kuairec", "a2c.toml")
    text = open(path).read()
    assert "python train.py tune X" in text
    chosen = sweep.load_toml(path, what="tuned")["chosen"]
    assert chosen == {"a2c.actor_lr": 1e-4, "eval.action": "sample"}
    cfg = load_config(overrides={"agent.kind": "a2c", **chosen})
    assert cfg.a2c.actor_lr == 1e-4 and cfg.eval.action == "sample"


def test_choose_refuses_records_from_the_test_split(tmp_path):
    recs = [_record(1, 1e-4, {"greedy": _m(5.0)}, split="test")]
    with pytest.raises(SweepSpecError, match="validation split only"):
        tuning.choose(recs, str(tmp_path), "x")


def test_a_sweep_applies_the_tuned_configs_before_its_grid(tmp_path):
    tuned = tmp_path / "tuned" / "kuairec"
    tuned.mkdir(parents=True)
    (tuned / "hrl.toml").write_text('[chosen]\n"ppo.actor_lr" = 0.002\n"eval.action" = "sample"\n')
    path = write_spec(tmp_path, '"agent.kind" = ["hrl", "a2c"]\n"ppo.ent_coef" = [0.01]\n')
    text = open(path).read().replace("[sweep]\n", f'[sweep]\ntuned = "{tmp_path / "tuned"}"\n')
    open(path, "w").write(text)
    runs = sweep.expand(sweep.load_sweep(path))
    hrl = [r for r in runs if r.cfg.agent.kind == "hrl"]
    a2c = [r for r in runs if r.cfg.agent.kind == "a2c"]
    assert all(r.cfg.ppo.actor_lr == 0.002 and r.cfg.eval.action == "sample" and r.cfg.ppo.ent_coef == 0.01
               for r in hrl)
    assert all(r.cfg.a2c.actor_lr == Config().a2c.actor_lr and r.cfg.eval.action == "greedy" for r in a2c)


# --- frozen twins -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", AGENTS)
def test_the_frozen_twin_zeroes_every_rl_learning_rate_and_nothing_else(kind):
    cfg = load_config(overrides={"agent.kind": kind})
    paths = learning_rate_paths(cfg)
    assert paths and not is_frozen(cfg)
    twin = frozen_config(cfg)
    assert is_frozen(twin)
    a, b = dataclasses.asdict(cfg), dataclasses.asdict(twin)
    changed = {f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k]}
    assert changed == set(paths)
    assert not any(p.startswith(("encoder.", "dsrm.", "denoise.")) for p in paths)  # Stage I is kept


def test_a_frozen_sweep_pairs_every_run_with_its_twin_in_the_same_program(tmp_path):
    path = write_spec(tmp_path, '"agent.kind" = ["hrl", "a2c"]\n')
    open(path, "a").write("")
    text = open(path).read().replace("[sweep]\n", "[sweep]\nfrozen = true\n")
    open(path, "w").write(text)
    runs = sweep.expand(sweep.load_sweep(path))
    assert len(runs) == 2 * 2 * 2  # agents x (trained, frozen) x seeds
    groups = sweep.plan(runs)
    assert len(groups) == 2
    for g in groups:
        assert sorted(bool(r.point.get("frozen")) for r in g.runs) == [False, False, True, True]
        assert all(is_frozen(r.cfg) == bool(r.point.get("frozen")) for r in g.runs)


# --- the same episode cap in a sweep's program as in train.py ------------------------------------

def test_train_stops_at_the_chunk_before_the_episode_cap(small_worlds):
    from purerec.run.loop import make_train
    from purerec.sim.env import make_params

    cfg = small_config()
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, kind="a2c"),
                              train=dataclasses.replace(cfg.train, num_envs=16, rollout_len=8, total_updates=6,
                                                        chunk_updates=2, stage1_sessions=32, target_episodes=0),
                              encoder=dataclasses.replace(cfg.encoder, train_steps=10)).validate()
    params = make_params(small_worlds[0], cfg)
    key = jax.random.PRNGKey(3)
    _, full_state, full_logs, _ = jax.jit(make_train(cfg, params).train)(key)
    eps = np.asarray(full_logs["episodes"]).reshape(3, 2).sum(1)  # per chunk
    assert np.all(np.asarray(full_logs["kept"]) == 1)
    cap = int(eps[0] + eps[1] + eps[2] // 2)  # the third chunk would pass it
    capped = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, target_episodes=cap))
    _, state, logs, _ = jax.jit(make_train(capped, params).train)(key)
    assert np.asarray(logs["kept"]).tolist() == [1, 1, 1, 1, 0, 0]
    np.testing.assert_array_equal(np.asarray(logs["episodes"])[:4], np.asarray(full_logs["episodes"])[:4])
    # The state is the one after the second chunk: equal to an uncapped run of 4 updates.
    four = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, total_updates=4))
    _, state4, _, _ = jax.jit(make_train(four, params).train)(key)
    for a, b in zip(jax.tree.leaves(state.actor.params), jax.tree.leaves(state4.actor.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


# --- the slate head axis ------------------------------------------------------------------------

def test_every_agent_names_its_native_head_and_defaults_to_it_unless_documented():
    for kind, spec in REGISTRY.items():
        assert spec.native_rule in heads.RULES and spec.native
        assert spec.default_head in (("native", "fixed"), ("grouped", "learned")), kind
    grouped_defaults = {k for k, s in REGISTRY.items() if s.default_head[0] == "grouped"}
    assert grouped_defaults == {"hrl", "flat", "mofir"}  # the README shows why, with numbers


@pytest.mark.parametrize("head, tail, want", [("auto", "auto", ("grouped", True)), ("native", "auto", ("topk", False)),
                                              ("topk", "auto", ("topk", False)),
                                              ("grouped", "fixed", ("grouped", False)),
                                              ("grouped", "learned", ("grouped", True))])
def test_resolve_for_dsrm_hrl(head, tail, want):
    h = heads.resolve(load_config(overrides={"slate.head": head, "slate.tail": tail}))
    assert (h.rule, h.learned) == want


def test_compose_grouped_fixed_share_against_numpy():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 40)).astype(np.float32)
    popular = np.zeros(40, bool)
    popular[rng.choice(40, 12, replace=False)] = True
    out = np.asarray(heads.compose(heads.Head("grouped", False), jnp.asarray(scores), jnp.asarray(popular), 10, 0.3))
    for b in range(3):
        pop_order = [i for i in np.argsort(-scores[b]) if popular[i]][:7]
        tail_order = [i for i in np.argsort(-scores[b]) if not popular[i]][:3]
        assert out[b].tolist() == pop_order + tail_order
    topk = np.asarray(heads.compose(heads.Head("topk", False), jnp.asarray(scores), jnp.asarray(popular), 10, 0.3))
    assert all(sorted(topk[b].tolist()) == sorted(np.argsort(-scores[b])[:10].tolist()) for b in range(3))
    learned = np.asarray(heads.compose(heads.Head("grouped", True), jnp.asarray(scores), jnp.asarray(popular), 10,
                                       0.3, jnp.asarray([0.0, 0.55, 1.0])))
    assert [int((~popular[learned[b]]).sum()) for b in range(3)] == [0, 6, 10]


def test_grouped_sampling_keeps_the_group_counts():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=60).astype(np.float32))
    popular = np.zeros(60, bool)
    popular[:20] = True
    for i, share in enumerate([0.0, 0.3, 0.5, 1.0]):
        s = np.asarray(heads.sample(heads.Head("grouped", False), jax.random.PRNGKey(i), logits, jnp.asarray(popular),
                                    10, share))
        assert len(set(s.tolist())) == 10
        assert int((~popular[s]).sum()) == round(10 * share)


# --- a frozen twin's policy is its initial one (what lets a sweep skip its updates) --------------

def _tiny(kind: str, **extra) -> Config:
    from purerec.config import apply_overrides

    return apply_overrides(small_config(), {
        "agent.kind": kind, "env.max_len": 6, "train.num_envs": 16, "train.rollout_len": 8,
        "train.stage1_sessions": 32, "encoder.train_steps": 10, "dsrm.train_steps": 10, "dsrm.steps": 3,
        "replay.capacity": 512, "replay.min_size": 64, "replay.batch_size": 32, "replay.grad_steps": 2,
        "offline.sessions": 32, "dorl.model_steps": 20, "dorl.model_batch": 32, "dorl.models": 2,
        "denoise.steps": 10, "denoise.tce_num_gradual": 5, **extra}).validate()


# fast for HRL; the slow tier checks every agent
@pytest.mark.parametrize("kind", [pytest.param(k, marks=() if k == "hrl" else pytest.mark.slow)
                                  for k in AGENTS])
def test_learning_rates_0_leave_the_policy_as_initialised(kind, small_worlds):
    from purerec.run.loop import init_key, make_train, stage1_key
    from purerec.sim.env import make_params

    cfg = frozen_config(_tiny(kind))
    fns = make_train(cfg, make_params(small_worlds[0], cfg))
    key = jax.random.PRNGKey(5)

    def run(key):
        frozen, _ = fns.stage1(stage1_key(key))
        s0 = fns.init(init_key(key), frozen)
        s2, _ = jax.lax.scan(lambda s, _: fns.update(frozen, s), s0, None, length=2)
        return fns.agent.policy_params(frozen, s0), fns.agent.policy_params(frozen, s2)

    before, after = jax.jit(run)(key)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
