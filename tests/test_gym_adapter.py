"""The Gymnasium vector adapter: spaces, determinism, agreement with the pure env, auto-reset,
Gymnasium's own vector wrappers around it, and its action checks."""

from __future__ import annotations

import dataclasses
import importlib
import sys

import jax
import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import data_equivalence  # noqa: E402
from gymnasium.vector import AutoresetMode  # noqa: E402

from purerec.gym_adapter import PurerecVectorEnv, SlateSpace, seed_key  # noqa: E402
from purerec.sim import env as penv# noqa: E402

B = 6


@pytest.fixture(scope="module")
def venv(small_params):
    return PurerecVectorEnv(small_params, B, seed=0)


@pytest.fixture(scope="module")
def none_params(small_cfg, small_worlds):
    cfg = dataclasses.replace(small_cfg, env=dataclasses.replace(small_cfg.env, exit_rule="none", max_len=5))
    return penv.make_params(small_worlds[1], cfg.validate())


def _slates(rng: np.random.Generator, num_envs: int, n_items: int, slate_size: int) -> np.ndarray:
    """Uniform random slates of distinct items, (num_envs, slate_size) int64."""
    return np.argsort(rng.random((num_envs, n_items)), axis=1)[:, :slate_size]


def _actions(env: PurerecVectorEnv, n_steps: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [_slates(rng, env.num_envs, env.n_items, env.slate_size) for _ in range(n_steps)]


def _rollout(env: PurerecVectorEnv, seed: int, actions: list[np.ndarray]):
    out = [env.reset(seed=seed)]
    for a in actions:
        obs, r, te, tr, info = env.step(a)
        if "purerec_episode" in info:  # wall-clock seconds are not reproducible
            stats = {k: v for k, v in info["purerec_episode"].items() if k != "t"}
            info = {**info, "purerec_episode": stats}
        out.append((obs, r, te, tr, info))
    return out


def test_spaces_and_metadata(venv, small_params):
    w, k, n = small_params.obs_window, small_params.slate_size, small_params.world.n_items
    assert isinstance(venv, gym.vector.VectorEnv)
    assert venv.num_envs == B
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    so = venv.single_observation_space
    assert isinstance(so, gym.spaces.Dict)
    assert set(so.spaces) == {"items", "feedback", "valid", "t"}
    assert so["items"] == gym.spaces.MultiDiscrete([n] * w)
    assert so["feedback"].shape == (w,) and so["feedback"].low.min() == 0 and so["feedback"].high.max() == 1
    assert so["valid"] == gym.spaces.MultiBinary(w)
    assert so["t"] == gym.spaces.Discrete(small_params.max_len + 1)
    assert venv.single_action_space == SlateSpace(n, k)
    assert venv.single_action_space.shape == (k,) and venv.single_action_space.dtype == np.int64
    assert venv.observation_space == gym.vector.utils.batch_space(so, B)
    assert venv.action_space == gym.vector.utils.batch_space(venv.single_action_space, B) == SlateSpace(n, k, (B,))
    assert venv.observation_space["items"].shape == (B, w)
    assert venv.observation_space["t"].shape == (B,)
    assert venv.action_space.shape == (B, k) and venv.action_space.dtype == np.int64


def test_reset_and_step_types(venv):
    obs, info = venv.reset(seed=1)
    assert isinstance(obs, dict) and isinstance(info, dict)
    assert venv.observation_space.contains(obs)
    assert (obs["t"] == 0).all() and (obs["valid"] == 0).all()
    for a in _actions(venv, 3):
        assert venv.action_space.contains(a)
        obs2, r, te, tr, info = venv.step(a)
        assert venv.observation_space.contains(obs2)
        assert r.shape == (B,) and r.dtype == np.float64 and ((0 <= r) & (r <= 1)).all()
        assert te.shape == tr.shape == (B,) and te.dtype == tr.dtype == np.bool_
        assert info["true_reward"].shape == (B,)
        assert info["feedback"].shape == info["true_feedback"].shape == (B, venv.slate_size)
        np.testing.assert_allclose(info["feedback"].mean(1), r, rtol=1e-6)
        # Returned data is fresh and writable (env_checker's check_returned_data_not_reused).
        for key in obs:
            assert not np.shares_memory(obs[key], obs2[key])
            assert obs2[key].flags.writeable
        obs = obs2


def test_seed_determinism(small_params):
    env_a, env_b = PurerecVectorEnv(small_params, B), PurerecVectorEnv(small_params, B, seed=99)
    actions = _actions(env_a, 15)
    run_a = _rollout(env_a, 7, actions)
    run_b = _rollout(env_b, 7, actions)
    assert data_equivalence(run_a, run_b, exact=True)
    # The same env, reseeded, repeats itself; another seed gives other sessions.
    assert data_equivalence(_rollout(env_a, 7, actions), run_a, exact=True)
    other = _rollout(env_a, 8, actions)
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(other[1:], run_a[1:]))
    # Without a seed, reset continues the key sequence instead of repeating the first sessions.
    env_a.reset(seed=7)
    r1 = env_a.step(actions[0])[1]
    env_a.reset()
    r2 = env_a.step(actions[0])[1]
    assert not np.array_equal(r1, r2)


def test_matches_pure_env_with_same_keys(small_params):
    env = PurerecVectorEnv(small_params, B)
    batch_step = jax.jit(penv.batch_step)  # the pure function, jitted here to keep the test fast
    actions = _actions(env, 14, seed=3)
    obs, _ = env.reset(seed=5)
    key = jax.random.key(5)
    key, k = jax.random.split(key)
    p_obs, state = penv.batch_reset(k, small_params, B)
    np.testing.assert_array_equal(obs["items"], np.asarray(p_obs.items))
    n_done = 0
    for i, a in enumerate(actions):
        obs, r, te, tr, info = env.step(a)
        key, k = jax.random.split(key)
        if i == 0:  # the unbatched pure step, for two sessions (vmap may round the mean differently)
            for j, kj in list(enumerate(jax.random.split(k, B)))[:2]:
                sj = jax.tree.map(lambda x: x[j], state)
                _, _, rj, tej, trj, ij = penv.step(kj, sj, a[j], small_params)
                np.testing.assert_allclose(r[j], np.asarray(ij["feedback"]).mean(), rtol=1e-6)
                np.testing.assert_allclose(r[j], np.asarray(rj), rtol=1e-6)
                assert te[j] == tej and tr[j] == trj
        p_obs, state, p_r, p_te, p_tr, p_info = batch_step(k, state, a, small_params)
        np.testing.assert_array_equal(r, np.asarray(p_r, np.float64))
        np.testing.assert_allclose(r, np.asarray(p_info["feedback"]).mean(1), rtol=1e-6)  # reward = mean feedback
        np.testing.assert_array_equal(te, np.asarray(p_te))
        np.testing.assert_array_equal(tr, np.asarray(p_tr))
        np.testing.assert_array_equal(info["true_reward"], np.asarray(p_info["true_reward"]))
        for f in ("items", "feedback", "valid", "t"):
            np.testing.assert_array_equal(obs[f], np.asarray(getattr(p_obs, f)).astype(obs[f].dtype))
        n_done += int((te | tr).sum())
    assert n_done > 0  # the comparison covered auto-resets too


def test_auto_reset_same_step_convention(small_params):
    env = PurerecVectorEnv(small_params, B, seed=2)
    obs, _ = env.reset()
    ret, true_ret, length = np.zeros(B), np.zeros(B), np.zeros(B, int)
    ended = 0
    for a in _actions(env, 30, seed=1):
        prev_t = obs["t"]
        obs, r, te, tr, info = env.step(a)
        ret += r
        true_ret += info["true_reward"]
        length += 1
        done = te | tr
        assert not (te & tr).any()
        np.testing.assert_array_equal(obs["t"], np.where(done, 0, prev_t + 1))
        assert "episode" not in info and "_episode" not in info  # left to RecordEpisodeStatistics
        if not done.any():
            assert "final_obs" not in info and "purerec_episode" not in info
            continue
        ended += int(done.sum())
        np.testing.assert_array_equal(info["_final_obs"], done)
        np.testing.assert_array_equal(info["_final_info"], done)
        np.testing.assert_array_equal(info["_purerec_episode"], done)
        for j in range(B):
            fo = info["final_obs"][j]
            if not done[j]:
                assert fo is None
                continue
            assert env.single_observation_space.contains(fo)
            assert fo["t"] == prev_t[j] + 1 == length[j]
            assert obs["valid"][j].sum() == 0  # the new session has an empty history
            assert info["final_info"]["true_reward"][j] == info["true_reward"][j]
        ep = info["purerec_episode"]
        np.testing.assert_array_equal(ep["l"], np.where(done, length, 0))
        np.testing.assert_array_equal(ep["r"], np.where(done, ret, 0))  # the same float64 sum
        np.testing.assert_allclose(ep["true_r"], np.where(done, true_ret, 0), rtol=1e-5)
        ret[done], true_ret[done], length[done] = 0, 0, 0
    assert ended > 0


def test_truncation_at_max_len(none_params):
    env = PurerecVectorEnv(none_params, B, seed=4)
    assert env.single_observation_space["t"].n == 6
    env.reset()
    actions = _actions(env, 10, seed=2)
    for i, a in enumerate(actions):
        obs, r, te, tr, info = env.step(a)
        assert env.observation_space.contains(obs)
        assert not te.any()
        if (i + 1) % 5:
            assert not tr.any() and (obs["t"] == (i + 1) % 5).all()
        else:
            assert tr.all() and (obs["t"] == 0).all()
            assert all(fo["t"] == 5 for fo in info["final_obs"])
            assert (info["purerec_episode"]["l"] == 5).all()
            # The final observation holds the last window: the 5 slates just shown, most recent last.
            np.testing.assert_array_equal(info["final_obs"][0]["items"][-env.slate_size:], a[0])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((B, 3), np.int64), "shape"),
    (np.zeros((B + 1, 10), np.int64), "shape"),
    (np.zeros(10, np.int64), "shape"),
    (np.full((B, 10), 0.5), "integer"),
    (np.full((B, 10), 150), r"\[0, 150\)"),
    (np.full((B, 10), -1), r"\[0, 150\)"),
])
def test_invalid_actions_raise(venv, bad, match):
    assert venv.n_items == 150 and venv.slate_size == 10
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        venv.step(bad)


def test_bad_arguments(small_params):
    with pytest.raises(ValueError, match="num_envs"):
        PurerecVectorEnv(small_params, 0)
    with pytest.raises(ValueError, match="seed"):
        PurerecVectorEnv(small_params, B, seed=-1)
    env = PurerecVectorEnv(small_params, B)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((B, 10), np.int64))
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=[1] * B)


def test_reset_mask(venv):
    obs, _ = venv.reset(seed=3)
    for a in _actions(venv, 2, seed=4):
        obs, *_ = venv.step(a)
    mask = np.zeros(B, bool)
    mask[[0, 3]] = True
    obs2, info = venv.reset(options={"reset_mask": mask})
    assert venv.observation_space.contains(obs2)
    np.testing.assert_array_equal(obs2["t"], np.where(mask, 0, obs["t"]))
    for f in ("items", "feedback", "valid"):
        np.testing.assert_array_equal(obs2[f][~mask], obs[f][~mask])
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": np.zeros(B, bool)})
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": [True] * B})


def test_gymnasium_wrappers(small_params):
    """Gymnasium's own vector wrappers accept the adapter and agree with its episode stats."""
    actions = _actions(PurerecVectorEnv(small_params, B), 16, seed=6)
    ours = PurerecVectorEnv(small_params, B)
    wrapped = gym.wrappers.vector.RecordEpisodeStatistics(PurerecVectorEnv(small_params, B, episode_stats=False))
    listed = gym.wrappers.vector.DictInfoToList(PurerecVectorEnv(small_params, B))
    ours.reset(seed=9)
    wrapped.reset(seed=9)
    listed.reset(seed=9)
    seen = 0
    for a in actions:
        _, _, _, _, i1 = ours.step(a)
        _, _, _, _, i2 = wrapped.step(a)
        _, _, te, tr, i3 = listed.step(a)
        assert isinstance(i3, list) and len(i3) == B
        assert "purerec_episode" not in i2  # episode_stats=False
        if "purerec_episode" in i1:
            seen += 1
            np.testing.assert_array_equal(i1["_purerec_episode"], i2["_episode"])
            np.testing.assert_array_equal(i1["purerec_episode"]["l"], i2["episode"]["l"])
            np.testing.assert_array_equal(i1["purerec_episode"]["r"], i2["episode"]["r"])
            for j in range(B):  # DictInfoToList splits the masked stats per session
                assert ("purerec_episode" in i3[j]) == bool(te[j] | tr[j])
            for j in np.flatnonzero(te | tr):
                length = i1["purerec_episode"]["l"][j]
                assert i3[j]["final_obs"]["t"] == length == i3[j]["purerec_episode"]["l"]
    assert seen > 0


# -- Gymnasium's vector wrappers around the adapter (the 8-session setting) ---------------

NB = 8
_pure_batch_step = jax.jit(penv.batch_step)


def test_record_episode_statistics_wraps_adapter(small_params):
    """RecordEpisodeStatistics around the default adapter: no key clash, and its episode stats
    equal the adapter's purerec_episode stats and a direct rollout of the pure env (same keys)."""
    seed = 11
    env = gym.wrappers.vector.RecordEpisodeStatistics(PurerecVectorEnv(small_params, NB), buffer_length=1000)
    assert isinstance(env.metadata["autoreset_mode"], AutoresetMode)
    assert env.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    single = env.single_observation_space
    obs, _ = env.reset(seed=seed)
    key = jax.random.key(seed)
    key, k = jax.random.split(key)
    p_obs, p_state = penv.batch_reset(k, small_params, NB)
    np.testing.assert_array_equal(obs["items"], np.asarray(p_obs.items))

    rng = np.random.default_rng(12)
    ret, length = np.zeros(NB), np.zeros(NB, np.int64)
    ended = np.zeros(NB, np.int64)
    returns, lengths = [], []
    n_steps = 0
    while ended.min() < 2:  # every session runs at least two episodes to their end
        assert n_steps < 4 * small_params.max_len, "sessions never ended"
        a = _slates(rng, NB, env.unwrapped.n_items, env.unwrapped.slate_size)
        obs, r, te, tr, info = env.step(a)
        n_steps += 1
        key, k = jax.random.split(key)
        _, p_state, p_r, p_te, p_tr, p_info = _pure_batch_step(k, p_state, a, small_params)
        np.testing.assert_array_equal(r, np.asarray(p_r, np.float64))
        np.testing.assert_array_equal(te, np.asarray(p_te))
        np.testing.assert_array_equal(tr, np.asarray(p_tr))
        ret += r
        length += 1
        # The unbatched observations (gymnasium.vector.utils.iterate) are valid single observations.
        per_env = list(gym.vector.utils.iterate(env.observation_space, obs))
        assert len(per_env) == NB and all(single.contains(o) for o in per_env)
        done = te | tr
        if not done.any():
            assert "episode" not in info and "purerec_episode" not in info
            continue
        ep, ours = info["episode"], info["purerec_episode"]
        np.testing.assert_array_equal(info["_episode"], done)
        np.testing.assert_array_equal(info["_purerec_episode"], done)
        assert set(ep) == {"r", "l", "t"}
        # Length: Gymnasium's count == purerec's Len (the pure env's episode_len) == our count.
        p_len = np.where(done, np.asarray(p_info["episode_len"]), 0)
        np.testing.assert_array_equal(ep["l"], p_len)
        np.testing.assert_array_equal(ours["l"], p_len)
        np.testing.assert_array_equal(ep["l"], np.where(done, length, 0))
        # Return: the sum of the rewards the adapter returned (float64, bit for bit), and the pure
        # env's own float32 running return.
        np.testing.assert_array_equal(ep["r"], np.where(done, ret, 0.0))
        np.testing.assert_array_equal(ep["r"], ours["r"])
        np.testing.assert_allclose(ep["r"], np.where(done, np.asarray(p_info["episode_return"]), 0.0),
                                   rtol=1e-5)
        # The final observations re-batch (gymnasium.vector.utils.concatenate) into a valid batch.
        finals = [info["final_obs"][j] for j in np.flatnonzero(done)]
        n = len(finals)
        batch = gym.vector.utils.concatenate(single, finals, gym.vector.utils.create_empty_array(single, n))
        assert gym.vector.utils.batch_space(single, n).contains(batch)
        np.testing.assert_array_equal(batch["t"], ep["l"][done])
        np.testing.assert_array_equal(obs["t"][done], 0)  # same-step reset: a new session already
        returns += ret[done].tolist()
        lengths += length[done].tolist()
        ended += done
        ret[done], length[done] = 0.0, 0
    assert env.episode_count == len(returns) == ended.sum()
    assert list(env.return_queue) == returns and list(env.length_queue) == lengths
    assert len(set(lengths)) > 1  # the exit rule ended sessions at different lengths


def test_normalize_reward_outside_record_statistics(small_params):
    """NormalizeReward(RecordEpisodeStatistics(adapter)): the stats see the raw rewards, and the
    normaliser runs its same-step branch (it takes the mode from the adapter's metadata)."""
    gamma, eps, seed = 0.9, 1e-8, 21
    inner = gym.wrappers.vector.RecordEpisodeStatistics(PurerecVectorEnv(small_params, NB))
    env = gym.wrappers.vector.NormalizeReward(inner, gamma=gamma, epsilon=eps)
    twin = PurerecVectorEnv(small_params, NB)
    env.reset(seed=seed)
    twin.reset(seed=seed)
    # The expected normaliser: discounted returns that restart right after a done (same step).
    rms = gym.wrappers.utils.RunningMeanStd(shape=())
    acc = np.zeros(NB, np.float32)
    rng = np.random.default_rng(22)
    n_done = n_after_done = 0
    prev_done = np.zeros(NB, bool)
    for _ in range(2 * small_params.max_len):
        a = _slates(rng, NB, twin.n_items, twin.slate_size)
        _, r_norm, te, tr, info = env.step(a)
        _, r_raw, te2, tr2, info2 = twin.step(a)
        np.testing.assert_array_equal(te, te2)
        np.testing.assert_array_equal(tr, tr2)
        acc = acc * gamma * (1 - te) + r_raw
        rms.update(acc)
        np.testing.assert_allclose(r_norm, r_raw / np.sqrt(rms.var + eps), rtol=1e-6)
        assert not np.allclose(r_norm, r_raw)
        n_after_done += int(prev_done.sum())
        done = te | tr
        acc[done] = 0
        prev_done = done
        if done.any():
            n_done += int(done.sum())
            # The statistics inside the normaliser are of the raw rewards.
            np.testing.assert_array_equal(info["episode"]["r"], info2["purerec_episode"]["r"])
            np.testing.assert_array_equal(info["episode"]["l"], info2["purerec_episode"]["l"])
    assert n_done > 0 and n_after_done > 0  # the comparison covered the steps right after a reset
    # NormalizeObservation refuses the default SAME_STEP mode (see test_normalize_observation_next_step).
    with pytest.raises(ValueError, match="autoreset_mode"):
        gym.wrappers.vector.NormalizeObservation(PurerecVectorEnv(small_params, NB))


@pytest.mark.parametrize("env_i, item", [(3, 17), (0, 0), (NB - 1, 149)])
def test_duplicate_item_slate_rejected(small_params, env_i, item):
    env = PurerecVectorEnv(small_params, NB, seed=5)
    twin = PurerecVectorEnv(small_params, NB, seed=5)
    env.reset()
    twin.reset()
    rng = np.random.default_rng(env_i)
    good = _slates(rng, NB, env.n_items, env.slate_size)
    bad = good.copy()
    others = rng.permutation(np.setdiff1d(np.arange(env.n_items), [item]))[: env.slate_size - 2]
    bad[env_i] = np.concatenate([[item], others[:3], [item], others[3:]])  # positions 0 and 4
    if env_i + 1 < NB:  # a later session repeating an item too: the first one is named
        bad[env_i + 1, 2] = bad[env_i + 1, 5]
    msg = (rf"action for env {env_i} repeats item {item} \(at slate positions \[0, 4\]\): "
           r"a slate holds distinct items")
    with pytest.raises(ValueError, match=msg):
        env.step(bad)
    with pytest.raises(ValueError, match=rf"env {env_i} repeats item {item}\b"):
        gym.wrappers.vector.RecordEpisodeStatistics(env).step(bad)
    # Rejected before the step: the sessions and the key sequence are as if it never came.
    o1, r1, *_ = env.step(good)
    o2, r2, *_ = twin.step(good)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(o1["items"], o2["items"])
    # Out-of-range ids are still reported as such, before any repeat.
    bad[0, 0] = env.n_items
    with pytest.raises(ValueError, match=r"\[0, 150\)"):
        env.step(bad)


def test_from_config(monkeypatch, small_cfg, small_worlds):
    import purerec.data.datasets

    monkeypatch.setattr(purerec.data.datasets, "get_worlds", lambda cfg, **kw: small_worlds)
    test_env = PurerecVectorEnv.from_config(small_cfg, 2, seed=1)
    train_env = PurerecVectorEnv.from_config(small_cfg, 2, world="train")
    assert test_env.n_items == small_worlds[1].n_items
    assert train_env.n_items == small_worlds[0].n_items
    assert train_env.action_space.shape == (2, small_cfg.env.slate_size)
    with pytest.raises(ValueError, match="world"):
        PurerecVectorEnv.from_config(small_cfg, 2, world="valid")


def test_missing_gymnasium_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # makes `import gymnasium` fail
    monkeypatch.delitem(sys.modules, "purerec.gym_adapter")
    with pytest.raises(ImportError, match=r"pip install purerec\[gym\]"):
        importlib.import_module("purerec.gym_adapter")


# -- the slate space ----------------------------------------------------------------------------

def test_slate_space_contains_and_sample():
    sp = SlateSpace(6, 3, seed=0)
    assert sp.shape == (3,) and sp.dtype == np.int64 and sp.is_np_flattenable
    assert sp.contains(np.array([5, 0, 2])) and [1, 2, 3] in sp
    assert np.array([1, 2, 3], np.int32) in sp  # any integer dtype
    for bad in (np.array([1, 1, 2]), np.array([0, 2, 0]), np.array([0, 1, 6]), np.array([-1, 1, 2]),
                np.array([0, 1]), np.array([[0, 1, 2]]), np.array([0.0, 1.0, 2.0]), np.array([True, False, True]),
                "abc", None):
        assert bad not in sp, bad
    batched = SlateSpace(6, 3, (4,))
    ok = np.array([[0, 1, 2], [5, 4, 3], [2, 0, 1], [1, 3, 5]])
    assert ok in batched
    rep = ok.copy()
    rep[2, 2] = 2  # one slate of four repeats an item
    assert rep not in batched and ok[0] not in batched
    for s in [sp.sample() for _ in range(200)] + [batched.sample() for _ in range(50)]:
        assert s.dtype == np.int64 and (s in sp or s in batched)
        assert (np.sort(s, -1)[..., 1:] != np.sort(s, -1)[..., :-1]).all()


def test_slate_space_sample_is_uniform_over_ordered_slates():
    """I = 4, K = 2: 12 ordered slates, each drawn with probability 1/12 (6,000 draws: 500 +- 21.5)."""
    sp = SlateSpace(4, 2, (6000,), seed=1)
    s = sp.sample()
    counts = np.zeros((4, 4), int)
    np.add.at(counts, (s[:, 0], s[:, 1]), 1)
    assert np.trace(counts) == 0  # never an item twice
    off = counts[~np.eye(4, dtype=bool)]
    assert off.sum() == 6000 and off.min() > 500 - 5 * 21.5 and off.max() < 500 + 5 * 21.5, counts


def test_slate_space_seeding_reproducible():
    a, b = SlateSpace(150, 10, (8,)), SlateSpace(150, 10, (8,))
    assert a.seed(42) == b.seed(42)
    draws = [a.sample() for _ in range(5)]
    assert all(np.array_equal(x, b.sample()) for x in draws)
    a.seed(42)
    assert np.array_equal(a.sample(), draws[0])
    a.seed(43)
    assert not np.array_equal(a.sample(), draws[0])
    # Seeded at construction too; the batched copy (batch_space) carries a copy of the generator.
    assert np.array_equal(SlateSpace(150, 10, seed=7).sample(), SlateSpace(150, 10, seed=7).sample())
    single = SlateSpace(150, 10, seed=7)
    bs = gym.vector.utils.batch_space(single, 3)
    assert bs == SlateSpace(150, 10, (3,)) and bs.shape == (3, 10) and bs.dtype == np.int64
    assert np.array_equal(bs.sample()[0], SlateSpace(150, 10, seed=7).sample())


def test_slate_space_mask_and_probability():
    sp = SlateSpace(10, 3, (500,), seed=3)
    mask = np.zeros(10, np.int8)
    mask[[1, 4, 7, 8]] = 1
    s = sp.sample(mask=mask)
    assert s in sp and set(np.unique(s)) == {1, 4, 7, 8}
    prob = np.zeros(10)
    prob[[0, 2, 9]] = [0.7, 0.2, 0.1]
    s = sp.sample(probability=prob)
    assert s in sp and set(np.unique(s)) == {0, 2, 9}
    # Plackett-Luce: item 0 comes first with probability 0.7 (500 draws: 350 +- 10.2).
    assert abs((s[:, 0] == 0).sum() - 350) < 5 * 10.3
    with pytest.raises(ValueError, match="fewer than slate_size"):
        sp.sample(mask=np.eye(10, dtype=np.int8)[0] + np.eye(10, dtype=np.int8)[1])
    with pytest.raises(ValueError, match="shape"):
        sp.sample(mask=np.ones(9, np.int8))
    with pytest.raises(ValueError, match="not both"):
        sp.sample(mask=np.ones(10, np.int8), probability=np.full(10, 0.1))
    with pytest.raises(ValueError, match="sum to 1"):
        sp.sample(probability=np.ones(10))


def test_slate_space_vector_utils_and_flatten():
    single = SlateSpace(5, 2)
    batched = gym.vector.utils.batch_space(single, 3)
    x = np.array([[0, 4], [3, 1], [2, 0]])
    rows = list(gym.vector.utils.iterate(batched, x))
    assert len(rows) == 3 and all(r in single for r in rows)
    out = gym.vector.utils.create_empty_array(single, 3)
    assert out.shape == (3, 2) and out.dtype == np.int64
    np.testing.assert_array_equal(gym.vector.utils.concatenate(single, rows, out), x)
    with pytest.raises(TypeError):
        gym.vector.utils.iterate(single, x[0])
    # Flattening one-hot encodes each position, as MultiDiscrete([5, 5]) does: by hand for [3, 1].
    flat = gym.spaces.flatten(single, np.array([3, 1]))
    np.testing.assert_array_equal(flat, [0, 0, 0, 1, 0, 0, 1, 0, 0, 0])
    assert gym.spaces.flatdim(single) == 10 and gym.spaces.flatten_space(single).shape == (10,)
    np.testing.assert_array_equal(gym.spaces.unflatten(single, flat), [3, 1])
    assert gym.spaces.flatten_space(batched).shape == (30,)
    assert single.to_jsonable(rows) == [[0, 4], [3, 1], [2, 0]]
    assert all(np.array_equal(a, b) for a, b in zip(single.from_jsonable([[0, 4], [3, 1]]), rows[:2]))
    with pytest.raises(ValueError, match="at most n_items"):
        SlateSpace(5, 6)
    with pytest.raises(ValueError, match="n_items"):
        SlateSpace(0, 1)


def test_a_thousand_sampled_actions_step(small_params):
    """action_space.sample() is always a valid action: 1000 sampled batches step without error."""
    for mode in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
        env = PurerecVectorEnv(small_params, 4, autoreset_mode=mode)
        env.action_space.seed(5)
        env.reset(seed=5)
        n_done = 0
        for _ in range(1000):
            a = env.action_space.sample()
            assert a.shape == (4, env.slate_size) and a.dtype == np.int64
            _, _, te, tr, _ = env.step(a)
            n_done += int((te | tr).sum())
        assert n_done > 20  # the sessions ran through many auto-resets
        # The single space's samples are one env's action.
        one = env.single_action_space.sample()
        assert one in env.single_action_space
        assert np.stack([one] * 4) in env.action_space  # distinct within a slate, not across sessions


class _OneSession(gym.Env):
    """Session 0 of a one-session adapter as a ``gym.Env``, so that Gymnasium's ``check_env`` (single
    envs only) checks the single spaces, ``single_action_space.sample()`` and seeding."""

    metadata = {"render_modes": []}

    def __init__(self, params):
        self.venv = PurerecVectorEnv(params, 1, autoreset_mode=AutoresetMode.NEXT_STEP)
        self.observation_space = self.venv.single_observation_space
        self.action_space = self.venv.single_action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        obs, _ = self.venv.reset(seed=seed)
        return {k: v[0] for k, v in obs.items()}, {}

    def step(self, action):
        obs, r, te, tr, _ = self.venv.step(np.asarray(action)[None])
        return {k: v[0] for k, v in obs.items()}, float(r[0]), bool(te[0]), bool(tr[0]), {}


def test_gymnasium_env_checker(small_params, recwarn):
    """gymnasium.utils.env_checker.check_env on one session (it accepts only gym.Env), and the
    checks of the same module that apply to a VectorEnv, in both autoreset modes."""
    from gymnasium.utils import env_checker as ec
    from gymnasium.utils import passive_env_checker as pc

    ec.check_env(_OneSession(small_params), skip_render_check=True, skip_close_check=True)
    for mode in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
        env = PurerecVectorEnv(small_params, 1, autoreset_mode=mode)
        pc.check_action_space(env.action_space)
        pc.check_observation_space(env.observation_space)
        ec.check_reset_return_type(env)
        ec.check_reset_seed_determinism(env)
        ec.check_reset_options(env)
        ec.check_returned_data_not_reused(env)
        pc.env_reset_passive_checker(env)
    assert [str(w.message) for w in recwarn.list if "gymnasium" in str(w.filename)] == []


# -- autoreset modes ------------------------------------------------------------------------------

FIELDS = ("items", "feedback", "valid", "t")


def _rows(mask, x):
    return mask.reshape((-1,) + (1,) * (np.ndim(x) - 1))


def test_autoreset_mode_argument(small_params):
    assert PurerecVectorEnv(small_params, 2).metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    for given in ("next_step", "NEXT_STEP", "NextStep", AutoresetMode.NEXT_STEP):
        env = PurerecVectorEnv(small_params, 2, autoreset_mode=given)
        assert env.metadata["autoreset_mode"] is env.autoreset_mode is AutoresetMode.NEXT_STEP
    assert PurerecVectorEnv.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP  # the class default stays
    for bad in (AutoresetMode.DISABLED, "later", 1):
        with pytest.raises(ValueError, match="autoreset_mode"):
            PurerecVectorEnv(small_params, 2, autoreset_mode=bad)


def test_next_step_convention_matches_pure_env(small_params):
    """NEXT_STEP against the pure env driven with the same keys: the ending step returns the final
    observation; the next call ignores that session's action (a repeated item is not rejected) and
    returns the auto-reset's first observation with reward 0 and no termination."""
    seed, n_items, k_size = 13, small_params.world.n_items, small_params.slate_size
    env = PurerecVectorEnv(small_params, NB, autoreset_mode=AutoresetMode.NEXT_STEP)
    obs, _ = env.reset(seed=seed)
    key = jax.random.key(seed)
    key, k = jax.random.split(key)
    p_obs, state = penv.batch_reset(k, small_params, NB)
    for f in FIELDS:
        np.testing.assert_array_equal(obs[f], np.asarray(getattr(p_obs, f)).astype(obs[f].dtype))
    first = {f: np.asarray(getattr(p_obs, f)) for f in FIELDS}
    pending = np.zeros(NB, bool)
    rng = np.random.default_rng(14)
    n_end = n_held = 0
    for _ in range(3 * small_params.max_len):
        a = _slates(rng, NB, n_items, k_size)
        sent = a.copy()
        sent[pending] = 0  # ignored: an invalid slate where the session is being reset
        obs, r, te, tr, info = env.step(sent)
        key, k = jax.random.split(key)
        o2, s2, pr, pte, ptr, pinfo = _pure_batch_step(k, state, a, small_params)
        pr, pte, ptr = np.asarray(pr, np.float64), np.asarray(pte), np.asarray(ptr)
        ended = (pte | ptr) & ~pending
        for f in FIELDS:
            last, nxt = np.asarray(getattr(pinfo["last_obs"], f)), np.asarray(getattr(o2, f))
            want = np.where(_rows(pending, last), first[f], np.where(_rows(ended, last), last, nxt))
            np.testing.assert_array_equal(obs[f], want.astype(obs[f].dtype), err_msg=f)
        np.testing.assert_array_equal(r, np.where(pending, 0.0, pr))
        np.testing.assert_array_equal(te, pte & ~pending)
        np.testing.assert_array_equal(tr, ptr & ~pending)
        np.testing.assert_array_equal(info["true_reward"], np.where(pending, 0, np.asarray(pinfo["true_reward"])))
        np.testing.assert_array_equal(info["feedback"][pending], 0)
        assert "final_obs" not in info and "final_info" not in info
        np.testing.assert_array_equal(obs["t"][pending], 0)
        if ended.any():
            np.testing.assert_array_equal(info["_purerec_episode"], ended)
            np.testing.assert_array_equal(info["purerec_episode"]["l"][ended], obs["t"][ended])
        n_end += int(ended.sum())
        n_held += int(pending.sum())
        state = jax.tree.map(lambda old, new: np.where(_rows(pending, old), old, new), state, s2)
        first = {f: np.asarray(getattr(o2, f)) for f in FIELDS}
        pending = ended
    assert n_end > 5 and n_held > 5


def test_modes_agree_until_each_session_ends(small_params):
    """Same seed and actions: SAME_STEP and NEXT_STEP agree on each session up to its first end;
    NEXT_STEP's ending observation is SAME_STEP's final_obs, and its reset step returns the first
    observation SAME_STEP returned at the end."""
    same = PurerecVectorEnv(small_params, NB, seed=4)
    nxt = PurerecVectorEnv(small_params, NB, seed=4, autoreset_mode=AutoresetMode.NEXT_STEP)
    o_s, _ = same.reset()
    o_n, _ = nxt.reset()
    assert data_equivalence(o_s, o_n, exact=True)
    live = np.ones(NB, bool)  # sessions that have not ended yet
    first_of_next = {}
    for a in _actions(same, 2 * small_params.max_len, seed=5):
        o_s, r_s, te_s, tr_s, i_s = same.step(a)
        o_n, r_n, te_n, tr_n, i_n = nxt.step(a)
        for j in np.flatnonzero(live):
            assert r_s[j] == r_n[j] and te_s[j] == te_n[j] and tr_s[j] == tr_n[j]
            if te_s[j] or tr_s[j]:
                assert data_equivalence({f: o_n[f][j] for f in FIELDS}, i_s["final_obs"][j], exact=True)
                first_of_next[j] = {f: o_s[f][j] for f in FIELDS}
            else:
                assert all(np.array_equal(o_s[f][j], o_n[f][j]) for f in FIELDS)
        for j in [j for j in first_of_next if not live[j]]:  # the reset step after the end
            want = first_of_next.pop(j)
            assert r_n[j] == 0 and all(np.array_equal(o_n[f][j], want[f]) for f in FIELDS)
        live &= ~(te_s | tr_s)
    assert live.sum() < NB // 2 and not first_of_next


def test_next_step_reset_mask_clears_pending(small_params):
    env = PurerecVectorEnv(small_params, NB, seed=3, autoreset_mode="next_step")
    env.reset()
    rng = np.random.default_rng(0)
    while True:
        _, _, te, tr, _ = env.step(_slates(rng, NB, env.n_items, env.slate_size))
        if (te | tr).any():
            break
    done = te | tr
    env.reset(options={"reset_mask": done})  # a fresh session now: the next step steps it
    obs, r, te, tr, info = env.step(_slates(rng, NB, env.n_items, env.slate_size))
    np.testing.assert_array_equal(obs["t"][done & ~(te | tr)], 1)
    assert (info["true_reward"][done] > 0).all()


def test_flatten_observation_next_step(small_params):
    """Gymnasium's vector FlattenObservation wraps the NEXT_STEP adapter (and refuses SAME_STEP):
    its observations equal gymnasium.spaces.flatten of each session's dict observation, and a
    hand-flattened one (keys sorted: feedback, items one-hot, t one-hot, valid)."""
    with pytest.raises(ValueError, match="autoreset_mode"):
        gym.wrappers.vector.FlattenObservation(PurerecVectorEnv(small_params, NB))
    env = gym.wrappers.vector.FlattenObservation(PurerecVectorEnv(small_params, NB, autoreset_mode="next_step"))
    twin = PurerecVectorEnv(small_params, NB, autoreset_mode="next_step")
    single = twin.single_observation_space
    n_items, w, n_t = small_params.world.n_items, small_params.obs_window, small_params.max_len + 1
    assert env.single_observation_space.shape == (w + w * n_items + n_t + w,)

    def check(flat, obs):
        assert env.observation_space.contains(flat)
        per = list(gym.vector.utils.iterate(twin.observation_space, obs))
        np.testing.assert_array_equal(flat, np.stack([gym.spaces.flatten(single, o) for o in per]))
        for j in (0, NB - 1):
            o = per[j]
            hand = np.concatenate([o["feedback"], np.eye(n_items)[o["items"]].ravel(), np.eye(n_t)[o["t"]],
                                   o["valid"]])
            np.testing.assert_allclose(flat[j], hand, rtol=1e-7)

    flat, _ = env.reset(seed=3)
    obs, _ = twin.reset(seed=3)
    check(flat, obs)
    n_done = 0
    for a in _actions(twin, 2 * small_params.max_len, seed=4):
        flat, r, te, tr, _ = env.step(a)
        obs, r2, te2, tr2, _ = twin.step(a)
        check(flat, obs)
        np.testing.assert_array_equal(r, r2)
        n_done += int((te | tr).sum())
    assert n_done > 0


def test_normalize_observation_next_step(small_params):
    """NormalizeObservation(FlattenObservation(adapter)) in NEXT_STEP mode: each observation is
    (x - mean) / sqrt(var + 1e-8) with the mean and variance of every flattened observation so far
    (reset included), pooled in NumPy with the running statistic's prior (mean 0, var 1, count 1e-4)."""
    env = gym.wrappers.vector.NormalizeObservation(gym.wrappers.vector.FlattenObservation(
        PurerecVectorEnv(small_params, NB, autoreset_mode=AutoresetMode.NEXT_STEP)))
    twin = gym.wrappers.vector.FlattenObservation(PurerecVectorEnv(small_params, NB, autoreset_mode="next_step"))
    seen = []

    def expected(raw):
        seen.append(raw)
        x = np.concatenate(seen)
        n, c0 = len(x), 1e-4
        mean = n * x.mean(0) / (n + c0)
        var = (c0 * 1.0 + n * x.var(0) + x.mean(0) ** 2 * c0 * n / (n + c0)) / (n + c0)
        return (raw - mean) / np.sqrt(var + 1e-8)

    norm, _ = env.reset(seed=8)
    raw, _ = twin.reset(seed=8)
    np.testing.assert_allclose(norm, expected(raw), rtol=1e-5, atol=1e-6)
    for a in _actions(twin.unwrapped, 12, seed=9):
        norm, *_ = env.step(a)
        raw, *_ = twin.step(a)
        np.testing.assert_allclose(norm, expected(raw), rtol=1e-5, atol=1e-6)
    assert np.abs(norm).max() > 1.0 and not np.allclose(norm, raw)


def test_record_episode_statistics_next_step(small_params):
    """RecordEpisodeStatistics over the NEXT_STEP adapter: its r/l equal purerec_episode's and a
    count by hand that skips the reset steps (reward 0, not part of any session)."""
    env = gym.wrappers.vector.RecordEpisodeStatistics(
        PurerecVectorEnv(small_params, NB, autoreset_mode=AutoresetMode.NEXT_STEP), buffer_length=1000)
    env.reset(seed=17)
    rng = np.random.default_rng(18)
    ret, length = np.zeros(NB), np.zeros(NB, np.int64)
    pending = np.zeros(NB, bool)
    ended = 0
    for _ in range(3 * small_params.max_len):
        obs, r, te, tr, info = env.step(_slates(rng, NB, env.unwrapped.n_items, env.unwrapped.slate_size))
        assert (r[pending] == 0).all()
        ret[pending], length[pending] = 0.0, 0
        ret[~pending] += r[~pending]
        length[~pending] += 1
        done = te | tr
        if done.any():
            ep, ours = info["episode"], info["purerec_episode"]
            np.testing.assert_array_equal(info["_episode"], done)
            np.testing.assert_array_equal(ep["l"], np.where(done, length, 0))
            np.testing.assert_array_equal(ep["l"], ours["l"])
            np.testing.assert_array_equal(ep["l"][done], obs["t"][done])  # the final observation's t
            np.testing.assert_array_equal(ep["r"], np.where(done, ret, 0.0))
            np.testing.assert_array_equal(ep["r"], ours["r"])
            ended += int(done.sum())
        pending = done
    assert ended > 5 and env.episode_count == ended


# -- seeds and config checks ---------------------------------------------------------------------

def test_any_nonnegative_int_seed(small_params):
    """Seeds below 2**32 keep jax.random.key's numbers; larger ones (Gymnasium allows any int) fold
    their higher 32-bit words in, where jax.random.key would wrap (2**32 -> 0) or overflow (2**64)."""
    kd = jax.random.key_data
    np.testing.assert_array_equal(kd(seed_key(5)), kd(jax.random.key(5)))
    np.testing.assert_array_equal(kd(seed_key(2**32 - 1)), kd(jax.random.key(2**32 - 1)))
    np.testing.assert_array_equal(kd(seed_key(2**32 + 7)), kd(jax.random.fold_in(jax.random.key(7), 1)))
    np.testing.assert_array_equal(kd(seed_key(2**64)),
                                  kd(jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 0), 1)))
    keys = {tuple(np.asarray(kd(seed_key(s))).tolist()) for s in (0, 2**32, 2**64, 2**64 + 1, 2**96, 2**200 + 3)}
    assert len(keys) == 6
    env = PurerecVectorEnv(small_params, 2, seed=2**70)
    a = [np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]] * 2)]
    run1 = _rollout(env, 2**64, a)
    run2 = _rollout(PurerecVectorEnv(small_params, 2), 2**64, a)
    assert data_equivalence(run1, run2, exact=True)
    assert not data_equivalence(_rollout(env, 2**64 + 1, a), run1, exact=True)
    assert not data_equivalence(_rollout(env, 0, a), run1, exact=True)
    for bad in (-1, 2.5, "7", True):
        with pytest.raises(ValueError, match="non-negative int"):
            env.reset(seed=bad)


def test_from_config_validates(monkeypatch, small_cfg, small_worlds):
    """A slate larger than the world is refused with purerec's ConfigError naming env.slate_size:
    by the config's own bounds, by the loaded worlds (a data set sets its size) and by the
    constructor."""
    from purerec.config import ConfigError, WorldConfig
    import purerec.data.datasets

    monkeypatch.setattr(purerec.data.datasets, "get_worlds", lambda cfg, **kw: small_worlds)
    too_big = dataclasses.replace(small_cfg, env=dataclasses.replace(small_cfg.env, slate_size=200))
    with pytest.raises(ConfigError, match=r"env\.slate_size' = 200.*150"):
        PurerecVectorEnv.from_config(too_big, 2)
    # The config allows 200 (it says 400 test items) but the loaded test world has 150.
    big_world = dataclasses.replace(too_big, world=dataclasses.replace(small_cfg.world, n_test_items=400))
    assert isinstance(big_world.world, WorldConfig)
    with pytest.raises(ConfigError, match=r"env\.slate_size' = 200.*only 150 items"):
        PurerecVectorEnv.from_config(big_world, 2, world="train")
    bad_field = dataclasses.replace(small_cfg, env=dataclasses.replace(small_cfg.env, max_len=0))
    with pytest.raises(ConfigError, match=r"env\.max_len"):
        PurerecVectorEnv.from_config(bad_field, 2)
    params = penv.make_params(small_worlds[1], big_world)
    with pytest.raises(ConfigError, match=r"env\.slate_size' = 200.*150 items"):
        PurerecVectorEnv(params, 2)
