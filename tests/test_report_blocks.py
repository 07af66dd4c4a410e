"""Table 2 in blocks by slate head, learning gains over frozen twins, computed findings, the
training budget and the small-multiple learning curves, from hand-written run records."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from purerec.report import tables as report  # noqa: E402
from purerec.report.tables import write_report  # noqa: E402

SEEDS = (11, 15, 19)
REF = {"balanced": {"Len": 10.0, "R_each": 0.5, "R_cum": 5.0, "AD": 0.2},
       "random": {"Len": 6.0, "R_each": 0.5, "R_cum": 3.0, "AD": 0.1},
       "most_popular": {"Len": 7.0, "R_each": 0.6, "R_cum": 4.0, "AD": 0.9}}
METHODS = {"dsrm_hrl": ("DSRM-HRL", "method", "ours"), "flat": ("FLAT", "ablation", "ours"),
           "a2c": ("A2C", "baseline", "general RL")}
# (kind, slate.head, resolved head) -> per seed (trained Len, frozen Len | None, trained R_cum, frozen R_cum)
CASES = {
    ("dsrm_hrl", "native", "topk"): ([11, 12, 14], [10, 10, 10], [6, 6, 6], [5.5, 5, 4]),
    ("a2c", "native", "topk"): ([8, 9, 10], [9, 8, 9], [6, 6, 6], [6, 6, 6]),
    ("flat", "native", "topk"): ([5, 5, 5], None, [7, 7, 7], None),
    ("dsrm_hrl", "grouped", "grouped-fixed"): ([20, 21, 22], [15, 15, 15], [8, 8, 8], [1, 1, 1]),
    ("dsrm_hrl", "grouped", "grouped-learned"): ([16, 15, 14], [15, 15, 15], [8, 8, 8], [1, 1, 1]),
    ("a2c", "grouped", "grouped-fixed"): ([12, 12, 12], [11, 10, 9], [2, 2, 2], [2, 2, 2]),
    ("flat", "grouped", "grouped-fixed"): ([13, 13, 13], [13, 13, 13], [7, 7, 7], [7, 7, 7]),
}
EPISODES = {11: [2, 3, 5], 15: [2, 3, 6], 19: [2, 3, 7]}  # per update; sums 10, 11, 12


def record(kind, slate_head, head, seed, i, frozen, len_, rcum):
    method, table, family = METHODS[kind]
    tail = "learned" if head == "grouped-learned" else "fixed"
    point = {"env": "envs/kuairec.toml", "agent.kind": kind, "slate.head": slate_head,
             **({"slate.tail": tail} if slate_head == "grouped" else {}), **({"frozen": True} if frozen else {})}
    curve_len = [len_ - 2.0 + 0.5 * i, len_ - 1.0, float(len_)]
    curves = {"Len": curve_len, "R_cum": [rcum * 0.5, rcum * 0.8, float(rcum)], "episodes": EPISODES[seed]}
    if kind == "dsrm_hrl":
        curves["grad_steps"] = [4, 4, 4 + i]
    return {"run_id": f"{kind}-{slate_head}-{head}-{seed}-{'frozen' if frozen else 'trained'}", "seed": seed,
            "point": point, "group": f"{kind}{slate_head}{head}{frozen}", "method": method, "table": table,
            "kind": kind, "family": family, "frozen": frozen, "slate_head": slate_head, "head": head,
            "split": "test", "action": "greedy",
            "config": {"agent": {"kind": kind, "lambda_fair": 0.1}, "env": {"max_len": 30},
                       "world": {"preset": "kuairec"}, "dsrm": {"steps": 20},
                       "slate": {"head": slate_head, "tail": tail, "tail_share": 0.5},
                       "eval": {"ad_form": "ratio", "action": "greedy", "split": "test"},
                       "train": {"num_envs": 4, "rollout_len": 8, "total_updates": 3}},
            "status": "ok", "metrics": {"Len": float(len_), "R_each": 0.5, "R_cum": float(rcum), "AD": 0.3},
            "curves": curves, "timing": {"group_compile_s": 1.0, "group_run_s": 3.0, "group_runs": 3, "devices": 1}}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("blocks"))
    os.makedirs(os.path.join(d, "runs"))
    recs = []
    for (kind, sh, head), (tl, fl, tr, fr) in CASES.items():
        for i, s in enumerate(SEEDS):
            recs.append(record(kind, sh, head, s, i, False, tl[i], tr[i]))
            if fl is not None:
                recs.append(record(kind, sh, head, s, i, True, fl[i], fr[i]))
    for rec in recs:
        with open(os.path.join(d, "runs", rec["run_id"] + ".json"), "w") as fh:
            json.dump(rec, fh)
    with open(os.path.join(d, "sweep.json"), "w") as fh:
        json.dump({"name": "blocks", "seeds": list(SEEDS), "frozen": True,
                   "grid": [{"agent.kind": ["dsrm_hrl", "flat", "a2c"], "slate.head": ["native"]},
                            {"agent.kind": ["dsrm_hrl", "flat", "a2c"], "slate.head": ["grouped"],
                             "slate.tail": ["fixed", "learned"]}]}, fh)
    with open(os.path.join(d, "reference.json"), "w") as fh:
        json.dump({"kuairec": {"30": REF}}, fh)
    with open(write_report(d)) as fh:
        return d, fh.read(), recs


def block(md: str, title: str) -> str:
    t2 = md[md.index("## Table 2"):md.index("\n## ", md.index("## Table 2") + 1)]
    start = t2.index(f"### {title}\n")
    nxt = t2.find("\n### ", start + 1)
    return t2[start:] if nxt < 0 else t2[start:nxt]


def world_table(text: str) -> list[dict[str, str]]:
    lines = text[text.index("#### World: kuairec"):].splitlines()
    i = next(j for j, ln in enumerate(lines) if ln.startswith("| Method"))
    header = [c.strip() for c in lines[i].strip("|").split(" | ")]
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(header, [c.strip() for c in ln.strip().strip("|").split(" | ")])))
    return rows


FINDING = re.compile(r"^- (below balanced|below random|learning adds nothing measurable here): (.+?), max_len (\d+): (.*)$")


def findings(text: str) -> set[tuple[str, str]]:
    part = text[text.index("Findings (computed from this table):"):]
    return {(m.group(1), m.group(2)) for ln in part.splitlines() if (m := FINDING.match(ln))}


def gain(trained, frozen) -> str:
    d = np.asarray(trained, float) - np.asarray(frozen, float)
    return f"{np.mean(d):.4g} [{np.min(d):.4g}, {np.max(d):.4g}]"


def test_blocks_rows_and_gains(sweep):
    _, md, _ = sweep
    assert md.index("### Native heads") < md.index("### Shared grouped head")
    assert "### Shared top-K head" not in md  # no run has slate.head = topk
    native = world_table(block(md, "Native heads"))
    by = {(r["Method"], r["Head"]): r for r in native}
    # frozen twins are no rows; reference rows under the agents
    assert [r["Method"] for r in native] == ["DSRM-HRL", "FLAT", "A2C", "reference: balanced",
                                             "reference: most_popular", "reference: random"]
    dsrm = by[("DSRM-HRL", "native: topk")]
    assert dsrm["Action"] == "greedy"
    assert dsrm["ΔLen@30"] == gain([11, 12, 14], [10, 10, 10]) == "2.333 [1, 4]"
    assert dsrm["ΔR_cum@30"] == gain([6, 6, 6], [5.5, 5, 4]) == "1.167 [0.5, 2]"
    assert dsrm["Len@30"] == f"{np.mean([11, 12, 14]):.4g} ± {np.std([11, 12, 14]):.4g}"
    assert by[("A2C", "native: topk")]["ΔLen@30"] == gain([8, 9, 10], [9, 8, 9])
    assert by[("FLAT", "native: topk")]["ΔLen@30"] == "–"  # no frozen twin

    grouped = world_table(block(md, "Shared grouped head"))
    by = {(r["Method"], r["Head"]): r for r in grouped}
    fixed, learned = "grouped: grouped-fixed (tail_share=0.5)", "grouped: grouped-learned"
    assert by[("DSRM-HRL", fixed)]["ΔLen@30"] == "6 [5, 7]"
    assert by[("DSRM-HRL", learned)]["ΔLen@30"] == gain([16, 15, 14], [15, 15, 15]) == "0 [-1, 1]"
    assert by[("A2C", fixed)]["ΔLen@30"] == gain([12, 12, 12], [11, 10, 9])
    # the frozen DSRM-HRL under the grouped head: the Stage-I reference rows, one per head, no gain
    for h in (fixed, learned):
        row = by[(report.STAGE1_ROW, h)]
        assert row["Len@30"] == "15 ± 0" and row["R_cum@30"] == "1 ± 0" and row["ΔLen@30"] == "–"
    assert sum(r["Method"] == report.STAGE1_ROW for r in grouped) == 2
    assert sum(r["Method"] == report.STAGE1_ROW for r in native) == 0  # frozen DSRM-HRL under top-K: no row


def test_findings_name_exactly_the_rows(sweep):
    _, md, _ = sweep
    assert findings(block(md, "Native heads")) == {
        ("below balanced", "A2C [native: topk, greedy]"),  # Len 9 < 10
        ("below balanced", "FLAT [native: topk, greedy]"),  # Len 5 < 10
        ("below random", "FLAT [native: topk, greedy]"),  # Len 5 < 6
        ("learning adds nothing measurable here", "A2C [native: topk, greedy]"),  # ΔLen [-1, 1, 1]
    }
    fixed = "grouped: grouped-fixed (tail_share=0.5), greedy"
    # the Stage-I rows (R_cum 1 < 3) are references, not trained rows: never a finding
    assert findings(block(md, "Shared grouped head")) == {
        ("below balanced", f"A2C [{fixed}]"),  # R_cum 2 < 5
        ("below random", f"A2C [{fixed}]"),  # R_cum 2 < 3
        ("learning adds nothing measurable here", "DSRM-HRL [grouped: grouped-learned, greedy]"),  # [-1, 1]
        ("learning adds nothing measurable here", f"FLAT [{fixed}]"),  # [0, 0]
    }
    assert "- below balanced: A2C [native: topk, greedy], max_len 30: Len 9 < 10" in md


def test_budget_table(sweep):
    _, md, _ = sweep
    part = md[md.index("## Training budget"):]
    rows = {}
    for ln in part.splitlines()[4:]:
        if not ln.startswith("|"):
            break
        c = [x.strip() for x in ln.strip("|").split(" | ")]
        rows[c[0]] = c[1:]
    assert len(rows) == len(CASES)  # a row per trained method and head; frozen twins are not rows
    dsrm = next(v for k, v in rows.items() if k.startswith("DSRM-HRL") and "grouped-learned" in k)
    episodes = np.mean([sum(EPISODES[s]) for s in SEEDS])  # 11
    grads = np.mean([12 + i for i in range(3)])  # 13
    assert dsrm == ["kuairec", "30", "3", f"{episodes:g}", str(3 * 4 * 8), f"{grads:g}"]
    a2c = next(v for k, v in rows.items() if k.startswith("A2C"))
    assert a2c[-1] == "n/a"  # no grad_steps curve recorded


def test_learning_curves_small_multiples(sweep):
    d, md, recs = sweep
    assert "](learning_curves.png)" in md
    with open(os.path.join(d, "learning_curves.png"), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    runs, order, presets = report.load_runs(d)
    fig, rows = report.curves_figure(runs, presets, order)
    assert [r[0] for r in rows] == ["DSRM-HRL", "FLAT", "A2C"]  # one row of panels per method
    assert len(fig.axes) == 3 * 2  # columns: Len, R_cum (no AD curve recorded)
    assert all(len(names) <= report.MAX_SERIES for _, _, names, _ in rows)
    assert rows[0][3] == 2  # DSRM-HRL: 3 heads x trained/frozen = 6 series, 4 drawn
    assert rows[2][2] == ["grouped-fixed (tail_share=0.5)", "grouped-fixed (tail_share=0.5), frozen",
                          "topk", "topk, frozen"]
    a2c_len = fig.axes[2 * 2]
    assert [ln.get_linestyle() for ln in a2c_len.lines] == ["-", "--", "-", "--"]
    # the A2C grouped-fixed trained series: the mean over seeds, per update
    want = np.mean([r["curves"]["Len"] for r in recs if r["kind"] == "a2c" and r["head"] == "grouped-fixed"
                    and not r["frozen"]], axis=0)
    np.testing.assert_allclose(a2c_len.lines[0].get_ydata(), want)
    assert a2c_len.lines[1].get_color() == a2c_len.lines[0].get_color()  # frozen twin: same colour, dashed
