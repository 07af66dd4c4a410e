"""The report's "Worlds with memory" block from hand-written records: the per-user figures, FCPO's
constraint on the loop (the last fifth of the cost curve against alpha' K + 0.5) and the paired
difference along a two-valued grid field, checked against NumPy."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from purerec.report import tables as report  # noqa: E402

SEEDS = (11, 15, 19)
USER_R = {0.99: [20.0, 22.0, 21.0], 0.0: [18.0, 21.0, 19.5]}  # user_R_true per seed by ppo.gamma
# FCPO cost curves (10 updates: the last fifth = the last 2) per alpha' and seed
COST = {1.0: [[9.0] * 8 + [10.0, 10.0]] * 3, 0.4: [[9.0] * 8 + [4.0, 4.6], [9.0] * 8 + [5.0, 5.0], [4.0] * 10]}


def record(kind, point, seed, metrics, curves, cfg_extra, frozen=False):
    cfg = {"agent": {"kind": kind}, "env": {"max_len": 30, "slate_size": 10}, "world": {"preset": "kuairec"},
           "platform": {"loop": True, "cost_labels": "current", "persist": "user"}, "slate": {"head": "auto"},
           "eval": {"action": "greedy", "split": "test"}, **cfg_extra}
    return {"run_id": f"{kind}-{json.dumps(point)}-{seed}-{frozen}", "seed": seed,
            "point": {**point, **({"frozen": True} if frozen else {})}, "method": kind.upper(), "kind": kind,
            "table": "baseline", "family": "general RL", "frozen": frozen, "slate_head": "auto", "head": "topk",
            "split": "test", "action": "greedy", "config": cfg, "status": "ok",
            "metrics": {"Len": 10.0, "R_each": 0.5, "R_cum": 5.0, "AD": 0.5, "R_cum_true": 6.0, "gini_pop": 0.7,
                        "label_flips": 3.0, "turnover": 0.1, **metrics},
            "curves": curves, "timing": {"group_compile_s": 1.0, "group_run_s": 2.0, "group_runs": 1, "devices": 1}}


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    d = tmp_path_factory.mktemp("loop")
    os.makedirs(d / "runs")
    recs = []
    for g, vals in USER_R.items():
        for i, seed in enumerate(SEEDS):
            m = {"user_R_true": vals[i], "return_rate": 0.5, "user_sessions": 2.0}
            recs.append(record("hrl", {"agent.kind": "hrl", "ppo.gamma": g}, seed, m, {}, {"ppo": {"gamma": g}}))
            recs.append(record("hrl", {"agent.kind": "hrl", "ppo.gamma": g}, seed, {**m, "user_R_true": vals[i] - 1},
                               {}, {"ppo": {"gamma": g}}, frozen=True))
    for a, curves in COST.items():
        for i, seed in enumerate(SEEDS):
            recs.append(record("fcpo", {"agent.kind": "fcpo", "fcpo.cost_limit": a}, seed, {},
                               {"cost": curves[i]}, {"fcpo": {"cost_limit": a}}))
    for n, r in enumerate(recs):
        with open(d / "runs" / f"{n:03d}.json", "w") as fh:
            json.dump(r, fh)
    with open(d / "sweep.json", "w") as fh:
        json.dump({"name": "loop", "grid": {"agent.kind": ["hrl", "fcpo"], "ppo.gamma": [0.99, 0.0],
                                            "fcpo.cost_limit": [1.0, 0.4]}}, fh)
    with open(report.write_report(str(d))) as fh:
        return fh.read()


def rows(text, start):
    sec = text[text.index("## Worlds with memory"):]
    sec = sec[sec.index(start):]
    out = []
    for line in sec.splitlines()[2:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            out.append([c.strip() for c in line.strip("|").split("|")])
    return out


def t_interval(d):
    d = np.asarray(d, float)
    half = 4.303 * d.std(ddof=1) / np.sqrt(d.size)  # t_{0.975, 2}
    return d.mean(), d.mean() - half, d.mean() + half


def test_paired_difference_along_gamma(text):
    (row,) = [r for r in rows(text, "Paired by seed") if r[0] == "HRL" or r[0] == "hrl"]
    assert row[1] == "ppo.gamma 0.99 − 0"
    mean, lo, hi = t_interval(np.subtract(USER_R[0.99], USER_R[0.0]))
    assert row[2] == report.fmt_interval(np.subtract(USER_R[0.99], USER_R[0.0]))
    assert row[2].startswith(f"{mean:.4g} [") and (lo > 0) == row[2].endswith("*")


def test_learning_gain_on_user_reward(text):
    hrl = [r for r in rows(text, "| method |") if r[0].lower().startswith("hrl")]
    assert len(hrl) == 2 and all(r[-1].startswith("1 [1, 1]") for r in hrl)  # trained - frozen = 1 every seed


def test_constraint_last_fifth_against_the_limit(text):
    got = {r[1]: r for r in rows(text, "Constrained cost on the loop")}
    tight = got["0.4"]
    want = [np.mean(c[-2:]) for c in COST[0.4]]  # 4.3, 5.0, 4.0 against 0.4 * 10 + 0.5 = 4.5
    assert tight[3] == report.mean_std(np.asarray(want)) and tight[4] == "4.5" and tight[5] == "2 / 3"
    assert got["1"][5] == "3 / 3" and got["1"][4] == "10.5"
