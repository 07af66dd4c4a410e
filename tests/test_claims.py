"""`train.py claims`: the verdict rule and its intervals against values worked by hand (and SciPy's
distributions), each claim's verdict on hand-made run records whose answer is known, and the
command end to end on a tiny world (resumable, the same claims.md from the same records)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from purerec.report import claims as C  # noqa: E402
from purerec.report.tables import _to_run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from test_sweep import TINY_ENV  # noqa: E402  the sweep tests' tiny world
SEEDS = (11, 15, 19)


# --------------------------------------------------------------------------------------------
# the rule


def test_interval_is_the_student_t_interval_worked_by_hand():
    m, lo, hi = C.interval_of([1.0, 2.0, 4.0])
    # mean 7/3, sample sd sqrt(((4/3)^2 + (1/3)^2 + (5/3)^2) / 2) = sqrt(7/3), t(0.975, 2) = 4.303
    half = 4.303 * math.sqrt(7 / 3) / math.sqrt(3)
    assert (m, lo, hi) == pytest.approx((7 / 3, 7 / 3 - half, 7 / 3 + half), rel=1e-9)
    assert C.interval_of([5.0]) is None  # one seed: no interval


def test_paired_and_welch_differences():
    a = {"11": 3.0, "15": 4.0, "19": 8.0}
    b = {"11": 1.0, "15": 1.5, "19": 5.0}
    # paired by seed: differences 2, 2.5, 3
    assert C.diff_interval(a, b) == pytest.approx(C.interval_of([2.0, 2.5, 3.0]))
    # different seeds: Welch's interval, worked with the textbook formula and SciPy's t quantile
    from scipy.stats import t as student_t

    x, y = np.array([3.0, 4.0, 8.0]), np.array([1.0, 1.5, 5.0, 2.0])
    vx, vy = x.var(ddof=1) / 3, y.var(ddof=1) / 4
    df = (vx + vy) ** 2 / (vx ** 2 / 2 + vy ** 2 / 3)
    half = student_t.ppf(0.975, df) * math.sqrt(vx + vy)
    got = C.diff_interval({"1": 3.0, "2": 4.0, "3": 8.0}, {"4": 1.0, "5": 1.5, "6": 5.0, "7": 2.0})
    assert got == pytest.approx((x.mean() - y.mean(), x.mean() - y.mean() - half, x.mean() - y.mean() + half))


@pytest.mark.parametrize("diffs, direction, expected", [
    ([1.0, 1.1, 0.9], 1, C.HOLDS),          # interval [0.75, 1.25]: excludes 0 on the claimed side
    ([1.0, -1.0, 0.5], 1, C.UNSURE),        # contains 0
    ([-1.0, -1.1, -0.9], 1, C.FAILS),       # excludes 0 on the other side
    ([-1.0, -1.1, -0.9], -1, C.HOLDS),      # the claim is "smaller"
    ([0.0, 0.0, 0.0], 1, C.UNSURE),         # no difference at all
    ([2.0], 1, C.UNSURE),                   # one seed
])
def test_the_verdict_rule(diffs, direction, expected):
    assert C.verdict(C.interval_of(diffs), direction) == expected


def test_bounds_and_combining():
    assert C.bound_verdict(C.interval_of([0.0, 0.0, 0.0]), 0.05) == C.HOLDS
    assert C.bound_verdict(C.interval_of([0.5, 0.6, 0.55]), 0.05) == C.FAILS
    assert C.bound_verdict(C.interval_of([0.0, 0.1, 0.05]), 0.05) == C.UNSURE
    assert C.combine([C.HOLDS, C.HOLDS]) == C.HOLDS
    assert C.combine([C.HOLDS, C.UNSURE]) == C.UNSURE
    assert C.combine([C.HOLDS, C.UNSURE, C.FAILS]) == C.FAILS
    assert C.combine([]) == C.UNSURE


def test_variance_ratio_interval_matches_the_f_distribution():
    from scipy.stats import f as fisher

    a = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0]
    b = [0.0, 2.0, 1.0]
    r, lo, hi = C.variance_ratio_interval(a, b)
    ratio = np.var(b, ddof=1) / np.var(a, ddof=1)
    assert r == pytest.approx(ratio)
    assert lo == pytest.approx(ratio / fisher.ppf(0.975, 2, 5))
    assert hi == pytest.approx(ratio / fisher.ppf(0.025, 2, 5))
    assert lo > 1  # b is far noisier


def test_peak_bootstrap_finds_a_clear_peak():
    boot = C.peak_bootstrap({5: [1.0, 1.1, 0.9], 20: [3.0, 3.1, 2.9], 500: [2.0, 2.1, 1.9]})
    assert boot[20] == 1.0 and sum(boot.values()) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# claims on hand-made records


def rec(kind, seed, metrics, *, purifier="auto", frozen=False, slate_head="native", tail="fixed", preset="kuairec",
        max_len=30, K=20, lam=0.1, conformity=0.8, noise=0.05, target="paper", curves=None):
    head = {"native": "topk", "grouped": f"grouped-{tail}"}[slate_head]
    m = {"Len": 10.0, "R_cum": 5.0, "AD": 0.0, **metrics}
    return {"run_id": f"{kind}-{purifier}-{seed}-{frozen}-{slate_head}-{tail}-{K}-{lam}-{conformity}-{noise}-{target}-{max_len}",
            "seed": seed, "status": "ok", "kind": kind, "method": kind, "frozen": frozen, "slate_head": slate_head,
            "head": head, "point": {"agent.kind": kind, **({"frozen": True} if frozen else {})},
            "config": {"agent": {"kind": kind, "lambda_fair": lam}, "state": {"purifier": purifier},
                       "env": {"max_len": max_len}, "world": {"preset": preset}, "dsrm": {"steps": K, "target": target},
                       "slate": {"head": slate_head, "tail": tail, "tail_share": 0.5},
                       "feedback": {"conformity": conformity, "noise_std": noise},
                       "eval": {"action": "greedy", "split": "test", "report_updates": 2}},
            "metrics": m, "curves": curves or {"Len": [m["Len"]] * 3, "R_cum": [m["R_cum"]] * 3}}


def runs(*records):
    return [_to_run(r) for r in records]


def noisy(base, seed, eps=0.05):
    return base + eps * (SEEDS.index(seed) - 1)


def test_table2_claim_holds_fails_or_is_inconclusive_as_the_records_say():
    ahead = runs(*[rec("dsrm_hrl", s, {"Len": noisy(20, s), "R_cum": noisy(15, s)}) for s in SEEDS],
                 *[rec("a2c", s, {"Len": noisy(12, s, 0.2), "R_cum": noisy(8, s, 0.3)}) for s in SEEDS])
    c = C.claim_table2(ahead)
    assert c.verdict == C.HOLDS, c.body
    behind = runs(*[rec("dsrm_hrl", s, {"Len": noisy(10, s), "R_cum": noisy(5, s)}) for s in SEEDS],
                  *[rec("a2c", s, {"Len": noisy(12, s), "R_cum": noisy(8, s)}) for s in SEEDS])
    assert C.claim_table2(behind).verdict == C.FAILS
    tied = runs(*[rec("dsrm_hrl", s, {"Len": 10 + (1, -1, 0.5)[i], "R_cum": 5 + (1, -1, 0.5)[i]})
                  for i, s in enumerate(SEEDS)], *[rec("a2c", s, {"Len": 10.0, "R_cum": 5.0}) for s in SEEDS])
    assert C.claim_table2(tied).verdict == C.UNSURE
    unfair = runs(*[rec("dsrm_hrl", s, {"Len": noisy(20, s), "R_cum": noisy(15, s), "AD": 0.9}) for s in SEEDS],
                  *[rec("a2c", s, {"Len": noisy(12, s), "R_cum": noisy(8, s)}) for s in SEEDS])
    assert C.claim_table2(unfair).verdict == C.FAILS  # first, but AD far from 0


def test_table2_claim_compares_dsrm_hrl_with_its_frozen_twin_under_the_grouped_head():
    trained = [rec("dsrm_hrl", s, {"Len": noisy(20, s), "R_cum": noisy(15, s)}, slate_head="grouped") for s in SEEDS]
    twins = [rec("dsrm_hrl", s, {"Len": noisy(20, s), "R_cum": noisy(15, s)}, slate_head="grouped", frozen=True)
             for s in SEEDS]
    c = C.claim_table2(runs(*trained, *twins))
    twin_rows = [ln for ln in c.body if ln.startswith("|") and "Stage I + grouped head" in ln]
    assert len(twin_rows) == 2 and all(C.UNSURE in ln for ln in twin_rows)  # learning adds nothing: no verdict
    assert c.verdict == C.UNSURE


def test_table3_claim_reads_the_purifier_and_the_denoisers():
    rs = runs(*[rec("hrl", s, {"Len": noisy(20, s), "R_cum": noisy(15, s)}, purifier="auto") for s in SEEDS],
              *[rec("hrl", s, {"Len": noisy(20, s), "R_cum": noisy(15, s)}, purifier="dsrm") for s in SEEDS],
              *[rec("flat", s, {"Len": noisy(18, s), "R_cum": noisy(13, s)}) for s in SEEDS])
    assert {C.ident(r) for r in rs} == {"hrl", "dsrm_hrl", "flat"}
    c = C.claim_table3(rs, runs(*[rec("hrl", s, {"Len": noisy(25, s), "R_cum": noisy(20, s)}, purifier="tce")
                                  for s in SEEDS]))
    rows = {ln.split("|")[1].strip(): ln.split("|")[3].strip() for ln in c.body if ln.startswith("| KuaiRec")}
    assert rows["KuaiRec-like, native heads, max_len 30: HRL − FLAT, Len"] == C.HOLDS
    assert rows["KuaiRec-like, native heads, max_len 30: DSRM-HRL − HRL, Len"] == C.UNSURE  # equal
    assert rows["KuaiRec-like, native heads, max_len 30: DSRM-HRL − HRL + T-CE, R_cum"] == C.FAILS
    assert c.verdict == C.FAILS


def test_diffusion_steps_claim_finds_the_peak_and_draws_it(tmp_path):
    value = {5: 10.0, 10: 11.0, 20: 14.0, 30: 12.0, 50: 11.0, 500: 9.0}
    rs = runs(*[rec("hrl", s, {"R_cum": noisy(v, s), "Len": noisy(v + 5, s)}, purifier="dsrm", K=k)
                for k, v in value.items() for s in SEEDS])
    c = C.claim_diffusion_steps(rs, str(tmp_path))
    assert c.verdict == C.HOLDS and "peak at K = 20" in c.ours
    assert os.path.getsize(tmp_path / c.figure) > 0
    late = runs(*[rec("hrl", s, {"R_cum": noisy(k / 10, s)}, purifier="dsrm", K=k) for k in value for s in SEEDS])
    c = C.claim_diffusion_steps(late, str(tmp_path))
    assert c.verdict == C.FAILS and "peak at K = 500" in c.ours  # monotone: the best K is outside 10..30


def test_stability_claim_uses_the_variance_ratio(tmp_path):
    sixteen = [rec("hrl", s, {"R_cum": 15 + 0.01 * ((i % 4) - 1.5)}, purifier="dsrm", slate_head="grouped",
                   tail="learned") for i, s in enumerate(range(100, 116))]
    noisy_a2c = [rec("a2c", s, {"R_cum": 8.0 + (-3, 0, 3)[i]}) for i, s in enumerate(SEEDS)]
    c = C.claim_stability(runs(*sixteen), runs(*noisy_a2c), str(tmp_path))
    assert c.verdict == C.HOLDS and (tmp_path / c.figure).exists()
    steady_a2c = [rec("a2c", s, {"R_cum": 8.0 + (-1e-4, 0, 1e-4)[i]}) for i, s in enumerate(SEEDS)]
    assert C.claim_stability(runs(*sixteen), runs(*steady_a2c)).verdict == C.FAILS


def test_pareto_claim_needs_a_point_as_fair_and_more_rewarding(tmp_path):
    front = [rec("hrl", s, {"R_cum": noisy(r, s), "AD": ad}, purifier="dsrm", lam=lam, slate_head="grouped",
                 tail="learned") for lam, r, ad in ((0.0, 16.0, 0.5), (1.0, 12.0, 0.0)) for s in SEEDS]
    dominated = [rec("a2c", s, {"R_cum": noisy(10, s), "AD": 0.3}) for s in SEEDS]
    c = C.claim_pareto(runs(*front), runs(*dominated), str(tmp_path))
    assert c.verdict == C.HOLDS and (tmp_path / c.figure).exists()
    better = [rec("a2c", s, {"R_cum": noisy(14, s), "AD": 0.1}) for s in SEEDS]  # fairer than λ=0, richer than λ=1
    assert C.claim_pareto(runs(*front), runs(*better), str(tmp_path)).verdict == C.FAILS


def test_dose_response_claim_reads_the_gap_along_conformity(tmp_path):
    def world(growing: bool):
        out = []
        for conf, gap in ((0.0, 0.0), (0.4, 0.5), (0.95, 1.0)):
            for s in SEEDS:
                out.append(rec("hrl", s, {"R_cum": noisy(10, s)}, conformity=conf))
                g = gap if growing else 1.0 - gap
                out.append(rec("hrl", s, {"R_cum": noisy(10 + g, s, 0.06)}, purifier="dsrm", conformity=conf))
        return runs(*out)

    up = C.claim_dose_response(world(True), str(tmp_path))
    assert up.verdict == C.HOLDS and (tmp_path / up.figure).exists()
    assert C.claim_dose_response(world(False), str(tmp_path)).verdict == C.FAILS


def test_protocol_claim_reads_the_train_report_from_the_curves():
    rs = runs(*[rec("hrl", s, {"Len": noisy(20, s), "R_cum": noisy(15, s)}, purifier="dsrm",
                    curves={"Len": [10.0, 26.0, 26.5], "R_cum": [5.0, noisy(23.0, s), noisy(23.5, s)]}) for s in SEEDS])
    assert C.train_report_of(rs[0], 2)["R_cum"] == pytest.approx((22.95 + 23.45) / 2)
    c = C.claim_protocol(rs)
    assert c.verdict == C.HOLDS  # the training reading is nearer the paper's 23.75 than the test's 15


def test_purified_state_claim_reads_the_predictor_policy_and_the_probe():
    def checks(gain):
        return {"kuairec": {"paper": {str(s): {"probe_cos_purified": 0.5 + gain + 0.001 * i, "probe_cos_observed": 0.5,
                                               "policy": {"purified": {"Len": 20 + gain + 0.01 * i, "R_cum": 15 + gain},
                                                          "observed": {"Len": 20.0, "R_cum": 15.0 + 0.01 * i}}}
                                      for i, s in enumerate(SEEDS)}}}

    assert C.claim_purified_state(checks(0.2)).verdict == C.HOLDS
    assert C.claim_purified_state(checks(-0.2)).verdict == C.FAILS
    assert C.claim_purified_state({}).verdict == C.UNSURE


def test_observation1_claim_and_missing_records():
    cards = {"kuairec": [{"reward_vs_exposure_observed": o, "reward_vs_exposure_true": t,
                          "plays_vs_shows_observed": 0.99, "plays_vs_shows_true": 0.99}
                         for o, t in ((0.6, 0.02), (0.65, 0.03), (0.7, 0.02))]}
    assert C.claim_observation1(cards).verdict == C.HOLDS
    flat = {"kuairec": [{"reward_vs_exposure_observed": o, "reward_vs_exposure_true": 0.03,
                         "plays_vs_shows_observed": 0.99, "plays_vs_shows_true": 0.99} for o in (0.01, 0.06, 0.02)]}
    assert C.claim_observation1(flat).verdict == C.UNSURE
    assert C.claim_table2([]).missing and C.claim_table2([]).verdict == C.UNSURE


def test_claims_md_has_a_summary_row_and_a_section_per_claim(tmp_path):
    claims = [C.claim_observation1({}), C.claim_table2([])]
    path = C.write(str(tmp_path), claims, ["header"], quick=True)
    text = open(path).read()
    assert "| 1 | Observation 1" in text and "## 3. Table 2" in text and "(quick look)" in text
    assert "## The verdict rule" in text


# --------------------------------------------------------------------------------------------
# the command on a tiny world

TINY = ["--train.total-updates", "2", "--train.chunk-updates", "1", "--train.num-envs", "16",
        "--train.rollout-len", "32", "--train.stage1-sessions", "32", "--encoder.train-steps", "20",
        "--dsrm.train-steps", "20", "--dsrm.steps", "3", "--eval.n-sessions", "64", "--eval.report-updates", "1"]


def _claims(tmp_path, *args):
    env = tmp_path / "tiny.toml"
    env.write_text(TINY_ENV)
    cmd = [sys.executable, "train.py", "claims", "--envs", str(env), "--out", str(tmp_path / "claims"), *args, *TINY]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def _verdicts(text: str) -> dict[int, str]:
    return {int(n): v for n, v in re.findall(r"^## (\d)\. .*?\*\*Verdict: ([a-z ]+?)(?: \(quick look\))?\.\*\*",
                                             text, flags=re.M | re.S)}


def test_the_command_on_a_tiny_world_is_resumable_and_its_verdicts_follow_the_rule(tmp_path):
    p = _claims(tmp_path, "--only", "1,9", "--agents", "dsrm_hrl", "--budget", "0.5")
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "claims"
    text = (out / "claims.md").read_text()
    assert "(quick look)" in text and "## 1. Observation 1" in text and "## 9. Where" in text
    assert "## 3." not in text  # --only
    # claim 9's verdict, recomputed here from the records with the rule
    from purerec.report.tables import load_runs

    rs = [r for r in load_runs(str(out / "table2"))[0] if not r.frozen]
    assert len(rs) == 6  # DSRM-HRL under the two quick-look heads x 3 seeds
    parts = []
    for head in ({"native"}, {"grouped"}):
        block = [r for r in rs if r.slate_head in head]
        d = [abs(r.metrics["R_cum"] - 23.75) - abs(np.mean(r.curves["R_cum"][-1:]) - 23.75) for r in block]
        parts.append(C.verdict(C.interval_of(d)))
    assert _verdicts(text)[9] == C.combine(parts)
    # run again: nothing is recomputed and the claims are the same
    again = _claims(tmp_path, "--only", "1,9", "--agents", "dsrm_hrl", "--budget", "0.5")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "group 1/" not in again.stdout
    strip = lambda t: "\n".join(ln for ln in t.splitlines() if not ln.startswith("Written by"))
    assert strip((out / "claims.md").read_text()) == strip(text)


def test_bad_claims_options_name_the_option():
    for args, field in ((["--only", "0,12"], "--only"), (["--budget", "0"], "--budget"),
                        (["--agents", "nope"], "--agents"), (["--envs", "missing.toml"], "--envs")):
        p = subprocess.run([sys.executable, "train.py", "claims", *args, "--dry-run"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 2 and field in p.stderr, (args, p.stderr)


@pytest.mark.slow
def test_all_nine_sections_on_a_tiny_world(tmp_path):
    p = _claims(tmp_path, "--agents", "dsrm_hrl,hrl,a2c", "--budget", "0.5")
    assert p.returncode == 0, p.stderr[-3000:]
    text = (tmp_path / "claims" / "claims.md").read_text()
    v = _verdicts(text)
    assert sorted(v) == list(range(1, 10)) and all(x in C.VERDICTS for x in v.values())
    for fig in ("claims_diffusion_steps.png", "claims_stability.png", "claims_pareto.png", "claims_dose_response.png"):
        assert (tmp_path / "claims" / fig).exists()


def test_the_predictor_policy_is_the_grouped_top_of_predicted_feedback(tmp_path):
    """``purerec.agents.predictor``: the slate is the top (K - n_tail) popular and top n_tail long-tail
    items by f(s, e_i) = sigmoid(q(s) . e_i + b), worked here in NumPy from the same state."""
    import jax
    import jax.numpy as jnp

    from purerec.agents import heads, predictor
    from purerec.config import AGENT_ID_SECTIONS, env_sections, HEAD_SECTIONS, load_config, STATE_SECTIONS, view, world_sections
    from purerec.data.datasets import get_worlds
    from purerec.sim import env as E
    from purerec.state import denoise
    from purerec.state.encoder import FeedbackHead
    from purerec.state.purifier import Frozen, make_observer

    env = tmp_path / "tiny.toml"
    env.write_text(TINY_ENV)
    cfg = load_config(str(env), {"agent.kind": "dsrm_hrl", "slate.head": "grouped", "slate.tail": "fixed",
                                 "slate.tail_share": 0.25, "dsrm.steps": 3})
    train, _ = get_worlds(world_sections(cfg))
    params = E.make_params(train, env_sections(cfg))
    observer = make_observer(view(cfg, STATE_SECTIONS + AGENT_ID_SECTIONS))
    d, e = cfg.encoder.state_dim, train.item_emb.shape[1]
    k1, k2, k3, k4, k5 = jax.random.split(jax.random.PRNGKey(3), 5)
    w = params.obs_window
    frozen = Frozen(encoder=observer.encoder.init(k1, jnp.zeros((1, w, e)), jnp.zeros((1, w)), jnp.ones((1, w), bool)),
                    dsrm=observer.denoiser.init(k2, jnp.zeros((1, d)), jnp.ones((1,), jnp.int32), jnp.zeros((1, d))),
                    feedback_head=FeedbackHead(e).init(k3, jnp.zeros((1, d)), jnp.zeros((1, 2, e))),
                    denoise=denoise.init(k4, d, e, 8))
    obs, state = E.reset(k5, params)
    head = heads.resolve(view(cfg, HEAD_SECTIONS))
    k = cfg.env.slate_size
    n_tail = int(round(k * 0.25))
    popular = np.asarray(params.world.popular)
    fh = frozen.feedback_head["params"]
    for which, s in (("observed", observer.observed(frozen, obs, params.world.item_emb)),
                     ("purified", observer.state(frozen, k5, obs, params))):
        act = predictor.make_policy(observer, head, k, 0.25, which)
        slate, carry = act(k5, obs, state, params, frozen, jnp.float32(7.0))
        q = np.asarray(s) @ np.asarray(fh["Dense_0"]["kernel"]) + np.asarray(fh["Dense_0"]["bias"])
        score = np.asarray(params.world.item_emb) @ q + float(fh["bias"])
        pop = np.where(popular)[0][np.argsort(-score[popular], kind="stable")][:k - n_tail]
        tail = np.where(~popular)[0][np.argsort(-score[~popular], kind="stable")][:n_tail]
        assert list(np.asarray(slate)) == list(pop) + list(tail), which
        assert float(carry) == 7.0


def test_dose_response_axes_hold_the_other_feedback_field_at_its_default(tmp_path):
    """The noise axis reads only runs at the default conformity (0.8), the conformity axis only
    runs at the default noise (0.05): a conformity-0 run at the default noise never enters it."""
    out = []
    for conf, noise, gap in ((0.8, 0.05, 0.0), (0.8, 0.5, 1.0), (0.0, 0.05, 10.0)):
        for i, s in enumerate(SEEDS):
            out.append(rec("hrl", s, {"R_cum": 10.0 + i}, conformity=conf, noise=noise))
            out.append(rec("hrl", s, {"R_cum": 10.0 + i + gap + 0.01 * i}, purifier="dsrm", conformity=conf,
                           noise=noise))
    c = C.claim_dose_response(runs(*out), str(tmp_path))
    rows = {ln.split("|")[1].strip(): ln.split("|")[2].strip() for ln in c.body if ln.startswith("| ")}
    assert rows["noise_std: gap at 0.5 − gap at 0.05 (dsrm.target = paper)"].startswith("1 ")
    assert rows["conformity: gap at 0.8 − gap at 0 (dsrm.target = paper)"].startswith("-10 ")
