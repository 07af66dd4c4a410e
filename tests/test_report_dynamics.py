"""The report's "Preferences that move" block from hand-written records: each world's dynamics
metrics, the gain over the myopic reference, and the planning-pays difference with its 95% t
interval, checked against NumPy."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from purerec.report import tables as report  # noqa: E402

SEEDS = (11, 15, 19)
DRIFT, STATIC = (0.5, 0.25), (0.0, 0.0)
# J per seed: (method, world) -> trained, frozen
J = {("A2C", DRIFT): ([-10.0, -9.0, -8.0], [-12.0, -12.5, -11.0]),
     ("A2C", STATIC): ([-5.0, -5.5, -4.0], [-5.0, -5.0, -5.0]),
     ("TD3", DRIFT): ([-20.0, -20.0, -21.0], [-20.0, -20.0, -21.0]),
     ("TD3", STATIC): ([-6.0, -6.0, -6.0], [-6.0, -6.0, -6.0])}
MYOPIC = {DRIFT: {"J": -11.0, "R_cum_true": 5.0}, STATIC: {"J": -4.5, "R_cum_true": 6.0}}


def key(world):
    return f"30 alpha_h={world[0]:g} alpha_nh={world[1]:g} beta=0.2"


def record(method, world, seed, i, frozen):
    j = J[(method, world)][1 if frozen else 0][i]
    rct = 4.0 + 0.5 * i + (0.0 if frozen else 1.0) + (1.0 if world == DRIFT else 0.0)
    cfg = {"agent": {"kind": method.lower()}, "env": {"max_len": 30, "dynamics": "attraction"},
           "attraction": {"alpha_h": world[0], "alpha_nh": world[1], "beta": 0.2}, "world": {"preset": "kuairec"},
           "slate": {"head": "auto"}, "eval": {"action": "greedy", "split": "test"}}
    point = {"agent.kind": method.lower(), "attraction.alpha_h": world[0], "attraction.alpha_nh": world[1],
             **({"frozen": True} if frozen else {})}
    return {"run_id": f"{method}-{world}-{seed}-{frozen}", "seed": seed, "point": point, "method": method,
            "kind": method.lower(), "table": "baseline", "family": "general RL", "frozen": frozen,
            "slate_head": "auto", "head": "topk", "split": "test", "action": "greedy", "config": cfg,
            "status": "ok", "metrics": {"Len": 10.0, "R_each": 0.5, "R_cum": 5.0, "AD": 0.5, "J": j,
                                        "R_cum_true": rct, "CTR": 0.2, "harm": 0.1, "drift": 0.3},
            "curves": {}, "timing": {"group_compile_s": 1.0, "group_run_s": 2.0, "group_runs": 1, "devices": 1}}


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    d = tmp_path_factory.mktemp("planning")
    os.makedirs(d / "runs")
    n = 0
    for (method, world) in J:
        for i, seed in enumerate(SEEDS):
            for frozen in (False, True):
                with open(d / "runs" / f"{n:03d}.json", "w") as fh:
                    json.dump(record(method, world, seed, i, frozen), fh)
                n += 1
    ref = {"kuairec": {key(w): {"myopic_topk": {**MYOPIC[w], "CTR": 0.3, "harm": 0.05, "drift": 0.1, "Len": 9.0,
                                                "R_each": 0.5, "R_cum": 4.0, "AD": 0.4}} for w in (DRIFT, STATIC)}}
    with open(d / "reference.json", "w") as fh:
        json.dump(ref, fh)
    with open(d / "sweep.json", "w") as fh:
        json.dump({"name": "planning", "grid": {"agent.kind": ["a2c", "td3"], "attraction.alpha_h": [0.5, 0.0]}}, fh)
    with open(report.write_report(str(d))) as fh:
        return fh.read()


def t_interval(d):
    d = np.asarray(d, float)
    half = 4.303 * d.std(ddof=1) / np.sqrt(d.size)  # t_{0.975, 2}
    return d.mean(), d.mean() - half, d.mean() + half


def planning_row(text, method):
    sec = text[text.index("#### Does planning pay?"):]
    for line in sec.splitlines():
        if line.startswith(f"| {method} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(method)


def test_world_keys_keep_drift_and_control_apart():
    cfg = record("A2C", DRIFT, 11, 0, False)["config"]
    assert report.world_key(cfg) == key(DRIFT)
    assert report.world_key({"env": {"max_len": 30}}) == "30"  # a static world: as before
    assert report._static_world(key(STATIC)) and not report._static_world(key(DRIFT))


def test_interval_matches_numpy():
    d = np.array([1.0, 2.5, 4.0])
    assert np.allclose(report.interval(d), t_interval(d))
    assert report.interval(np.array([1.0])) is None


def test_planning_difference_by_hand(text):
    a2c = planning_row(text, "A2C")
    gain_d = np.array(J[("A2C", DRIFT)][0]) - MYOPIC[DRIFT]["J"]  # 1, 2, 3
    gain_s = np.array(J[("A2C", STATIC)][0]) - MYOPIC[STATIC]["J"]  # -0.5, -1, 0.5
    did = gain_d - gain_s  # 1.5, 3, 2.5
    m, lo, hi = t_interval(did)
    assert a2c[4] == f"{report._fmt(m)} [{report._fmt(lo)}, {report._fmt(hi)}]" + (" *" if lo > 0 else "")
    rct_d = 4.0 + 0.5 * np.arange(3) + 2.0 - MYOPIC[DRIFT]["R_cum_true"]
    rct_s = 4.0 + 0.5 * np.arange(3) + 1.0 - MYOPIC[STATIC]["R_cum_true"]
    assert a2c[5].startswith(report._fmt(float(np.mean(rct_d - rct_s))))  # 1 - (-1) = 2 per seed
    learn = np.array(J[("A2C", DRIFT)][0]) - np.array(J[("A2C", DRIFT)][1])  # 2, 3.5, 3
    assert a2c[6].startswith(report._fmt(float(learn.mean())))


def test_the_verdict_names_only_methods_whose_three_intervals_exclude_zero(text):
    did = (np.array(J[("A2C", DRIFT)][0]) + 11.0) - (np.array(J[("A2C", STATIC)][0]) + 4.5)
    learn = np.array(J[("A2C", DRIFT)][0]) - np.array(J[("A2C", DRIFT)][1])
    a2c_pays = t_interval(did)[1] > 0 and t_interval(learn)[1] > 0  # R_cum_true difference is exactly 2: > 0
    verdict = [ln for ln in text.splitlines() if ln.startswith("Planning pays") or ln.startswith("No method")][0]
    assert ("A2C" in verdict) == a2c_pays
    assert "TD3" not in verdict  # learning adds exactly 0 for TD3


def test_each_world_table_has_the_gap_to_myopic(text):
    sec = text[text.index("## Preferences that move"):text.index("#### Does planning pay?")]
    assert sec.count("#### max_len 30") == 2 and "_myopic_topk_ (reference)" in sec
    td3 = [ln for ln in sec.splitlines() if ln.startswith("| TD3 |")]
    gap = np.array(J[("TD3", DRIFT)][0]) - MYOPIC[DRIFT]["J"]
    assert any(report._fmt(float(gap.mean())) in ln for ln in td3)
