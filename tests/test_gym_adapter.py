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

from purerec import env as penv  # noqa: E402
from purerec.gym_adapter import PurerecVectorEnv  # noqa: E402

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
    assert venv.single_action_space == gym.spaces.MultiDiscrete([n] * k)
    assert venv.observation_space == gym.vector.utils.batch_space(so, B)
    assert venv.action_space == gym.vector.utils.batch_space(venv.single_action_space, B)
    assert venv.observation_space["items"].shape == (B, w)
    assert venv.observation_space["t"].shape == (B,)
    assert venv.action_space.shape == (B, k)


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
    # NormalizeObservation does not apply: it needs a Box observation and next-step autoreset.
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
    import purerec.datasets

    monkeypatch.setattr(purerec.datasets, "get_worlds", lambda cfg, **kw: small_worlds)
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
