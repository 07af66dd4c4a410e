"""Evaluation metrics against hand-computed values and independent loop-based NumPy references."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerec.sim import metrics as _metrics

# Jitted wrappers: one compilation per function and shape instead of one per primitive op.
M = types.SimpleNamespace(
    first_session_mask=jax.jit(_metrics.first_session_mask),
    session_metrics=jax.jit(_metrics.session_metrics),
    ad_exposure=jax.jit(_metrics.ad_exposure, static_argnums=2),
    ad_item=jax.jit(_metrics.ad_item),
    exposure_counts=jax.jit(_metrics.exposure_counts, static_argnums=2),
    gini=jax.jit(_metrics.gini),
    gini_of_counts=jax.jit(_metrics.gini_of_counts, static_argnums=1),
    coverage=jax.jit(_metrics.coverage),
    long_tail_share=jax.jit(_metrics.long_tail_share),
    all_metrics=jax.jit(_metrics.all_metrics, static_argnames="ad_form"),
)

# --------------------------------------------------------------------------------------------
# Independent NumPy references (plain loops, no shared code with purerec.sim.metrics).
# --------------------------------------------------------------------------------------------


def ref_first_session_mask(done):
    T, B = done.shape
    out = np.zeros((T, B), bool)
    for b in range(B):
        for t in range(T):
            out[t, b] = True
            if done[t, b]:
                break
    return out


def ref_session_metrics(reward, done):
    T, B = done.shape
    lengths, returns = [], []
    for b in range(B):
        total, n = 0.0, 0
        for t in range(T):
            total += float(reward[t, b])
            n += 1
            if done[t, b]:
                lengths.append(n)
                returns.append(total)
                break
    if not lengths:
        return 0.0, 0.0, 0.0
    length = sum(lengths) / len(lengths)
    r_cum = sum(returns) / len(returns)
    return length, r_cum, r_cum / length


def ref_ad_exposure(n_popular, active, k):
    ads = []
    for t in range(n_popular.shape[0]):
        shown = pop = 0
        for b in range(n_popular.shape[1]):
            if active[t, b]:
                shown += k
                pop += int(n_popular[t, b])
        if shown:
            ads.append(abs(2.0 * pop / shown - 1.0))
    return float(np.mean(ads)) if ads else 0.0


def ref_ad_item(slates, active, popular):
    popular = list(map(bool, popular))
    n_pop = sum(popular)
    n_tail = len(popular) - n_pop
    ads = []
    for t in range(slates.shape[0]):
        hit = set()
        for b in range(slates.shape[1]):
            if active[t, b]:
                hit.update(int(i) for i in slates[t, b])
        if not any(active[t]):
            continue
        f_pop = sum(1 for i in hit if popular[i]) / n_pop
        f_tail = sum(1 for i in hit if not popular[i]) / n_tail
        ads.append(abs(f_pop - f_tail))
    return float(np.mean(ads)) if ads else 0.0


def ref_exposure_counts(slates, active, n_items):
    counts = np.zeros(n_items)
    for t in range(slates.shape[0]):
        for b in range(slates.shape[1]):
            if active[t, b]:
                for i in slates[t, b]:
                    counts[int(i)] += 1
    return counts


def ref_gini(x):
    """Mean-absolute-difference form: sum_ij |x_i - x_j| / (2 n^2 mean)."""
    x = [float(v) for v in x]
    n, s = len(x), sum(x)
    if s == 0:
        return 0.0
    mad = sum(abs(a - b) for a in x for b in x)
    return mad / (2.0 * n * s)


# --------------------------------------------------------------------------------------------
# Hand-made trajectories
# --------------------------------------------------------------------------------------------

# T=4 steps, B=3 slots. Slot 0 ends at t=1 (length 2), slot 1 at t=3 (length 4), slot 2 never.
DONE = np.array([[0, 0, 0],
                 [1, 0, 0],
                 [0, 0, 0],
                 [1, 1, 0]], bool)
REWARD = np.array([[0.5, 0.1, 1.0],
                   [0.25, 0.2, 0.0],
                   [1.0, 0.3, 0.5],
                   [1.0, 0.4, 0.5]], np.float32)


def test_first_session_mask_hand():
    done = np.array([[0, 0, 1],
                     [1, 0, 0],
                     [0, 0, 1],
                     [1, 0, 0]], bool)
    expected = np.array([[1, 1, 1],
                         [1, 1, 0],
                         [0, 1, 0],
                         [0, 1, 0]], bool)
    got = np.asarray(M.first_session_mask(jnp.asarray(done)))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, ref_first_session_mask(done))


def test_first_session_mask_random_matches_reference():
    rng = np.random.default_rng(0)
    done = rng.random((15, 11)) < 0.2
    np.testing.assert_array_equal(np.asarray(M.first_session_mask(jnp.asarray(done))),
                                  ref_first_session_mask(done))


def test_session_metrics_hand():
    out = M.session_metrics(jnp.asarray(REWARD), jnp.asarray(DONE))
    # Slot 2 never ends: dropped. Len = (2 + 4) / 2; R_cum = ((0.5 + 0.25) + (0.1+0.2+0.3+0.4)) / 2.
    assert float(out["Len"]) == pytest.approx(3.0)
    assert float(out["R_cum"]) == pytest.approx(0.875, abs=1e-6)
    assert float(out["R_each"]) == pytest.approx(0.875 / 3.0, abs=1e-6)
    # R_each is total reward over total steps, NOT the mean of per-session mean rewards (0.3125).
    assert abs(float(out["R_each"]) - 0.3125) > 1e-2
    ref = ref_session_metrics(REWARD, DONE)
    np.testing.assert_allclose([float(out["Len"]), float(out["R_cum"]), float(out["R_each"])], ref, rtol=1e-6)


def test_session_metrics_ignores_rewards_after_first_session():
    reward = REWARD.copy()
    reward[2:, 0] = 100.0  # after slot 0's first session ended: must not count
    out = M.session_metrics(jnp.asarray(reward), jnp.asarray(DONE))
    assert float(out["R_cum"]) == pytest.approx(0.875, abs=1e-6)


def test_session_metrics_no_finished_slot_is_zero_not_nan():
    out = M.session_metrics(jnp.ones((3, 2)), jnp.zeros((3, 2), bool))
    assert float(out["Len"]) == 0.0 and float(out["R_cum"]) == 0.0
    assert np.isfinite(float(out["R_each"]))


def test_session_metrics_random_matches_reference():
    rng = np.random.default_rng(1)
    reward = rng.random((20, 13)).astype(np.float32)
    done = rng.random((20, 13)) < 0.15
    done[:, 0] = False  # at least one unfinished slot
    done[-1, 1] = True
    out = M.session_metrics(jnp.asarray(reward), jnp.asarray(done))
    np.testing.assert_allclose([float(out["Len"]), float(out["R_cum"]), float(out["R_each"])],
                               ref_session_metrics(reward, done), rtol=1e-5)


def test_ad_exposure_hand():
    k = 2
    n_pop = np.array([[2, 2], [1, 0]])
    # Step 0: p = 4/4 -> AD 1. Step 1: p = 1/4 -> |0.5 - 1| = 0.5. Mean 0.75.
    all_active = np.ones((2, 2), bool)
    assert float(M.ad_exposure(jnp.asarray(n_pop), jnp.asarray(all_active), k)) == pytest.approx(0.75)
    # Slot 1 inactive at step 1: p = 1/2 -> 0. Mean 0.5.
    act = np.array([[1, 1], [1, 0]], bool)
    assert float(M.ad_exposure(jnp.asarray(n_pop), jnp.asarray(act), k)) == pytest.approx(0.5)
    # A step with no active slot is excluded from the mean (not counted as AD 0 or 1).
    act = np.array([[1, 1], [0, 0]], bool)
    assert float(M.ad_exposure(jnp.asarray(n_pop), jnp.asarray(act), k)) == pytest.approx(1.0)
    # Balanced exposure everywhere -> 0.
    assert float(M.ad_exposure(jnp.ones((3, 4), jnp.int32), jnp.ones((3, 4), bool), 2)) == 0.0


def test_ad_exposure_random_matches_reference():
    rng = np.random.default_rng(2)
    k = 5
    n_pop = rng.integers(0, k + 1, (17, 9))
    act = rng.random((17, 9)) < 0.7
    act[3] = False
    got = float(M.ad_exposure(jnp.asarray(n_pop), jnp.asarray(act), k))
    assert got == pytest.approx(ref_ad_exposure(n_pop, act, k), abs=1e-6)
    assert 0.0 <= got <= 1.0


POPULAR6 = np.array([1, 1, 0, 0, 0, 0], bool)  # 2 popular items, 4 tail items
SLATES = np.array([[[0, 2], [0, 3]],
                   [[0, 1], [2, 0]]])  # T=2, B=2, K=2


def test_ad_item_hand():
    # Step 0: hit {0, 2, 3}: f_pop = 1/2, f_tail = 2/4 -> 0. Step 1: hit {0, 1, 2}: 1 vs 1/4 -> 0.75.
    all_active = np.ones((2, 2), bool)
    got = float(M.ad_item(jnp.asarray(SLATES), jnp.asarray(all_active), jnp.asarray(POPULAR6)))
    assert got == pytest.approx(0.375)
    # Slot 1 inactive at step 1: hit {0, 1}: f_pop = 1, f_tail = 0 -> 1. Mean 0.5.
    act = np.array([[1, 1], [1, 0]], bool)
    got = float(M.ad_item(jnp.asarray(SLATES), jnp.asarray(act), jnp.asarray(POPULAR6)))
    assert got == pytest.approx(0.5)
    # A step with no active slot is excluded.
    act = np.array([[1, 1], [0, 0]], bool)
    got = float(M.ad_item(jnp.asarray(SLATES), jnp.asarray(act), jnp.asarray(POPULAR6)))
    assert got == pytest.approx(0.0)


def test_ad_item_random_matches_reference():
    rng = np.random.default_rng(3)
    n_items = 23
    popular = np.zeros(n_items, bool)
    popular[rng.choice(n_items, 5, replace=False)] = True
    slates = rng.integers(0, n_items, (9, 4, 3))
    act = rng.random((9, 4)) < 0.6
    act[0] = False
    got = float(M.ad_item(jnp.asarray(slates), jnp.asarray(act), jnp.asarray(popular)))
    assert got == pytest.approx(ref_ad_item(slates, act, popular), abs=1e-6)


def test_exposure_counts_hand():
    all_active = np.ones((2, 2), bool)
    got = np.asarray(M.exposure_counts(jnp.asarray(SLATES), jnp.asarray(all_active), 6))
    # Item 0 appears twice at each step.
    np.testing.assert_array_equal(got, [4, 1, 2, 1, 0, 0])
    assert got.sum() == SLATES.size  # T * B * K exposures
    act = np.array([[1, 1], [1, 0]], bool)
    got = np.asarray(M.exposure_counts(jnp.asarray(SLATES), jnp.asarray(act), 6))
    np.testing.assert_array_equal(got, [3, 1, 1, 1, 0, 0])  # step 1 keeps only [0, 1]


def test_exposure_counts_random_matches_reference():
    rng = np.random.default_rng(4)
    slates = rng.integers(0, 30, (7, 5, 4))
    act = rng.random((7, 5)) < 0.5
    np.testing.assert_array_equal(np.asarray(M.exposure_counts(jnp.asarray(slates), jnp.asarray(act), 30)),
                                  ref_exposure_counts(slates, act, 30))


@pytest.mark.parametrize("n", [1, 2, 5, 100])
def test_gini_all_equal_is_zero(n):
    assert float(M.gini(jnp.full((n,), 7.0))) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("n", [2, 3, 10, 1000])
def test_gini_one_item_gets_everything(n):
    x = np.zeros(n)
    x[n // 2] = 42.0
    assert float(M.gini(jnp.asarray(x))) == pytest.approx((n - 1) / n, abs=1e-5)


def test_gini_includes_zero_exposure_items():
    # [1, 1] alone is perfectly equal; with two never-shown items the Gini is 0.5.
    assert float(M.gini(jnp.asarray([1.0, 1.0]))) == pytest.approx(0.0, abs=1e-7)
    assert float(M.gini(jnp.asarray([0.0, 1.0, 0.0, 1.0]))) == pytest.approx(0.5, abs=1e-6)
    assert ref_gini([0, 1, 0, 1]) == pytest.approx(0.5)


def test_gini_all_zero_is_finite_zero():
    assert float(M.gini(jnp.zeros(5))) == 0.0


def test_gini_random_matches_reference():
    rng = np.random.default_rng(5)
    for _ in range(5):
        x = rng.integers(0, 20, 40).astype(np.float32)
        x[rng.random(40) < 0.3] = 0.0
        assert float(M.gini(jnp.asarray(x))) == pytest.approx(ref_gini(x), abs=1e-5)
    # Invariant to the order of items.
    x = rng.random(25).astype(np.float32)
    assert float(M.gini(jnp.asarray(x))) == pytest.approx(float(M.gini(jnp.asarray(x[::-1]))), abs=1e-6)


def test_coverage():
    assert float(M.coverage(jnp.asarray([0.0, 3.0, 0.0, 1.0]))) == pytest.approx(0.5)
    assert float(M.coverage(jnp.zeros(4))) == 0.0
    assert float(M.coverage(jnp.ones(4))) == 1.0


def test_long_tail_share():
    exp = jnp.asarray([3.0, 1.0, 2.0, 1.0, 0.0, 0.0])
    # Popular items 0 and 1 got 4 of 7 exposures; the tail got 3.
    assert float(M.long_tail_share(exp, jnp.asarray(POPULAR6))) == pytest.approx(3 / 7, abs=1e-6)
    assert float(M.long_tail_share(exp, jnp.ones(6, bool))) == 0.0
    assert float(M.long_tail_share(exp, jnp.zeros(6, bool))) == pytest.approx(1.0)
    assert float(M.long_tail_share(jnp.zeros(6), jnp.asarray(POPULAR6))) == 0.0


def test_all_metrics_consistent_with_parts():
    rng = np.random.default_rng(6)
    T, B, K, n = 12, 6, 3, 20
    popular = np.zeros(n, bool)
    popular[:4] = True
    slates = rng.integers(0, n, (T, B, K))
    n_pop = popular[slates].sum(-1)
    reward = rng.random((T, B)).astype(np.float32)
    true_reward = rng.random((T, B)).astype(np.float32)
    done = rng.random((T, B)) < 0.2
    args = [jnp.asarray(a) for a in (reward, true_reward, done, slates, n_pop, popular)]
    out = M.all_metrics(*args, ad_form="exposure")
    out_i = M.all_metrics(*args, ad_form="item")
    act = ref_first_session_mask(done)
    length, r_cum, r_each = ref_session_metrics(reward, done)
    assert float(out["Len"]) == pytest.approx(length, rel=1e-6)
    assert float(out["R_cum"]) == pytest.approx(r_cum, rel=1e-5)
    assert float(out["R_each"]) == pytest.approx(r_each, rel=1e-5)
    assert float(out["R_cum_true"]) == pytest.approx(ref_session_metrics(true_reward, done)[1], rel=1e-5)
    assert float(out["AD_exposure"]) == pytest.approx(ref_ad_exposure(n_pop, act, K), abs=1e-6)
    assert float(out["AD_item"]) == pytest.approx(ref_ad_item(slates, act, popular), abs=1e-6)
    assert float(out["AD"]) == float(out["AD_exposure"])
    assert float(out_i["AD"]) == float(out_i["AD_item"])
    assert float(out["AD_exposure"]) != pytest.approx(float(out["AD_item"]))  # the choice matters here
    exp = ref_exposure_counts(slates, act, n)
    assert float(out["Gini"]) == pytest.approx(ref_gini(exp), abs=1e-5)
    assert float(out["coverage"]) == pytest.approx(np.mean(exp > 0))
    assert float(out["long_tail_share"]) == pytest.approx(exp[~popular].sum() / exp.sum(), abs=1e-6)


def test_gini_of_counts_matches_reference_without_sorting():
    rng = np.random.default_rng(8)
    for max_count in (1, 3, 20):
        x = rng.integers(0, max_count + 1, 300)
        x[rng.random(300) < 0.5] = 0
        got = float(M.gini_of_counts(jnp.asarray(x, jnp.float32), max_count))
        assert got == pytest.approx(ref_gini(x), abs=1e-5)
    assert float(M.gini_of_counts(jnp.zeros(7), 4)) == 0.0
    x = np.zeros(50)
    x[3] = 9.0
    assert float(M.gini_of_counts(jnp.asarray(x), 9)) == pytest.approx(49 / 50, abs=1e-6)
