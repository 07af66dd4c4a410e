"""Sweep reports from hand-made run records: tables, failed runs, plots, atomic writes."""

from __future__ import annotations

import itertools
import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from purerec.report.tables import write_report  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRICS = ("Len", "R_each", "R_cum", "AD", "AD_exposure", "AD_item", "Gini", "coverage", "long_tail_share",
           "R_cum_true")


def make_record(rng, kind="dsrm_hrl", preset="kuairec", max_len=30, seed=11, K=20, lam=0.1, grid=None,
                status="ok", error=None, n_updates=6, timing=(2.0, 12.0, 6, 1), group="g0"):
    grid = dict(grid or {})
    rid = f"{kind}-{preset}-{max_len}-{K}-{lam}-{seed}-{status}"
    table = "method" if kind == "dsrm_hrl" else "ablation" if kind in ("hrl", "flat") or kind.startswith("hrl_") else "baseline"
    rec = {"run_id": rid, "seed": seed, "point": {"env": f"envs/{preset}.toml", **grid}, "group": group,
           "method": kind, "table": table,
           "config": {"agent": {"kind": kind, "lambda_fair": lam}, "env": {"max_len": max_len},
                      "world": {"preset": preset}, "dsrm": {"steps": K}, "eval": {"ad_form": "ratio"}},
           "status": status,
           "metrics": {m: float(rng.uniform(0.0, 30.0)) for m in METRICS},
           "curves": {c: [float(x) for x in rng.uniform(0, 10, n_updates)] for c in ("Len", "AD", "R_cum")},
           "stage1": {},
           "timing": {"group_compile_s": timing[0], "group_run_s": timing[1], "group_runs": timing[2],
                      "devices": timing[3]}}
    if error is not None:
        rec["error"] = error
    return rec


def write_sweep(d, records, grid, seeds=(11, 15, 19), name="test"):  # grid: a dict or a list of dicts
    os.makedirs(os.path.join(d, "runs"), exist_ok=True)
    with open(os.path.join(d, "sweep.json"), "w") as fh:
        json.dump({"name": name, "envs": [], "seeds": list(seeds), "base": {}, "grid": grid,
                   "budget": "tiny", "budget_factor": 1.0}, fh)
    for rec in records:
        with open(os.path.join(d, "runs", f"{rec['run_id']}.json"), "w") as fh:
            json.dump(rec, fh)


def read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def section(md: str, title: str) -> str:
    """Text of the ``## title`` section (up to the next ``## ``)."""
    start = md.index(f"## {title}")
    nxt = md.find("\n## ", start + 1)
    return md[start:] if nxt < 0 else md[start:nxt]


def parse_table(text: str, world: str) -> dict[str, dict[str, str]]:
    """The first markdown table after ``### World: world`` as {row label: {column: cell}}."""
    lines = text[text.index(f"### World: {world}"):].splitlines()
    i = next(j for j, ln in enumerate(lines) if ln.startswith("| Method"))
    header = [c.strip() for c in lines[i].strip("|").split(" | ")]
    out = {}
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip().strip("|").split(" | ")]
        out[cells[0]] = dict(zip(header, cells))
    return out


def expected(recs, metric):
    v = np.asarray([r["metrics"][metric] for r in recs])
    return f"{np.mean(v):.4g} ± {np.std(v):.4g}"


def assert_png(path):
    assert os.path.exists(path), path
    with open(path, "rb") as fh:
        head = fh.read(8)
    assert head == PNG_SIGNATURE
    assert os.path.getsize(path) > 100


def no_tmp(d):
    left = [f for _, _, fs in os.walk(d) for f in fs if f.endswith(".tmp")]
    assert not left, left


def test_ablation_report(tmp_path):
    rng = np.random.default_rng(0)
    d = str(tmp_path)
    grid = {"agent.kind": ["dsrm_hrl", "flat"], "env.max_len": [30, 50]}
    recs = [make_record(rng, kind=k, preset=p, max_len=L, seed=s, grid={"agent.kind": k, "env.max_len": L},
                        group=f"{k}{p}{L}")
            for p, k, L, s in itertools.product(("kuairec", "kuairand"), ("dsrm_hrl", "flat"), (30, 50),
                                                (11, 15, 19))]
    bad = make_record(rng, kind="flat", preset="kuairec", max_len=50, seed=23, status="failed",
                      error="non-finite loss at update 3", grid={"agent.kind": "flat", "env.max_len": 50})
    bad["metrics"]["Len"] = 1e9  # must not leak into the tables
    write_sweep(d, recs + [bad], grid)
    with open(os.path.join(d, "pareto.png"), "wb") as fh:  # stale plot from an earlier report
        fh.write(PNG_SIGNATURE + b"old")

    path = write_report(d)
    assert path == os.path.join(d, "report.md")
    md = read(path)

    t2 = section(md, "Table 2")
    for world in ("kuairec", "kuairand"):
        table = parse_table(t2, world)
        assert set(table) == {"dsrm_hrl", "flat"}  # no other grid field varies: bare method labels
        assert list(table["dsrm_hrl"])[1:] == [f"{m}@{L}" for L in (30, 50) for m in ("Len", "R_each", "R_cum", "AD")]
        for k, L, m in itertools.product(("dsrm_hrl", "flat"), (30, 50), ("Len", "R_each", "R_cum", "AD")):
            cell = [r for r in recs if r["config"]["agent"]["kind"] == k and r["config"]["env"]["max_len"] == L
                    and r["config"]["world"]["preset"] == world]
            assert len(cell) == 3
            assert table[k][f"{m}@{L}"] == expected(cell, m)

    # Table 3: two ablation methods -> present, same cells
    t3 = section(md, "Table 3")
    table3 = parse_table(t3, "kuairec")
    assert table3["flat"]["AD@50"] == parse_table(t2, "kuairec")["flat"]["AD@50"]

    # Table 4: per-run seconds = group_run_s / group_runs
    t4 = section(md, "Table 4")
    row = next(ln for ln in t4.splitlines() if ln.startswith("| dsrm_hrl | kuairec"))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[2] == f"{12.0 / 6:.4g}" and cells[3] == "2" and cells[4] == "6" and cells[5] == "1"

    # failed run listed with its error, at the end
    failed = section(md, "Failed runs")
    assert bad["run_id"] in failed and "non-finite loss at update 3" in failed
    assert md.rstrip().endswith(failed.rstrip())

    # plots: curves yes; one lambda and one K -> no pareto / diffusion plot (stale one removed)
    assert_png(os.path.join(d, "learning_curves.png"))
    assert "](learning_curves.png)" in md
    assert not os.path.exists(os.path.join(d, "pareto.png"))
    assert not os.path.exists(os.path.join(d, "diffusion_steps.png"))
    assert "`pareto.png` not written" in md and "`diffusion_steps.png` not written" in md
    no_tmp(d)


def test_lambda_grid_pareto_and_no_table3(tmp_path):
    rng = np.random.default_rng(1)
    d = str(tmp_path)
    lams = [0.0, 0.1, 0.5]
    grid = {"agent.kind": ["dsrm_hrl", "tce"], "agent.lambda_fair": lams}
    recs = [make_record(rng, kind=k, lam=lam, seed=s, grid={"agent.kind": k, "agent.lambda_fair": lam})
            for k, lam, s in itertools.product(("dsrm_hrl", "tce"), lams, (11, 15, 19))]
    for r in recs:  # no training curves recorded
        r["curves"] = {}
    write_sweep(d, recs, grid)
    md = read(write_report(d))

    table = parse_table(section(md, "Table 2"), "kuairec")
    assert set(table) == {f"{k} (agent.lambda_fair={lam:g})" for k in ("dsrm_hrl", "tce") for lam in lams}
    cell = [r for r in recs if r["config"]["agent"]["kind"] == "tce" and r["config"]["agent"]["lambda_fair"] == 0.1]
    assert table["tce (agent.lambda_fair=0.1)"]["R_cum@30"] == expected(cell, "R_cum")
    assert "## Table 3" not in md  # only one ablation method (dsrm_hrl)
    assert_png(os.path.join(d, "pareto.png"))
    assert "](pareto.png)" in md
    assert not os.path.exists(os.path.join(d, "learning_curves.png"))
    assert not os.path.exists(os.path.join(d, "diffusion_steps.png"))
    assert "Failed runs" in md and "None." in section(md, "Failed runs")
    no_tmp(d)


def test_k_grid_diffusion_plot(tmp_path):
    rng = np.random.default_rng(2)
    d = str(tmp_path)
    ks = [5, 20, 100]
    grid = {"dsrm.steps": ks}
    recs = [make_record(rng, preset=p, K=K, seed=s, grid={"dsrm.steps": K})
            for p, K, s in itertools.product(("kuairec", "kuairand"), ks, (11, 15, 19))]
    recs.append(make_record(rng, kind="hrl_nodsrm", K=20, seed=11, grid={"dsrm.steps": 20}))
    write_sweep(d, recs, grid)
    md = read(write_report(d))

    table = parse_table(section(md, "Table 2"), "kuairand")
    cell = [r for r in recs if r["config"]["world"]["preset"] == "kuairand" and r["config"]["dsrm"]["steps"] == 100]
    assert table["dsrm_hrl (dsrm.steps=100)"]["AD@30"] == expected(cell, "AD")
    # dsrm_hrl + hrl_nodsrm are two ablation kinds on kuairec only
    t3 = section(md, "Table 3")
    assert "hrl_nodsrm (dsrm.steps=20)" in parse_table(t3, "kuairec")
    assert "World: kuairand" not in t3
    assert_png(os.path.join(d, "diffusion_steps.png"))
    assert_png(os.path.join(d, "learning_curves.png"))
    assert not os.path.exists(os.path.join(d, "pareto.png"))
    no_tmp(d)


def test_only_failed_runs(tmp_path):
    rng = np.random.default_rng(3)
    d = str(tmp_path)
    rec = make_record(rng, status="failed", error="XlaRuntimeError: out of | memory\nmore")
    for k in ("metrics", "curves", "timing"):
        del rec[k]
    write_sweep(d, [rec], {})
    md = read(write_report(d))
    assert "0 ok, 1 failed" in md and "out of \\| memory" in md
    assert not any(os.path.exists(os.path.join(d, f)) for f in ("pareto.png", "learning_curves.png",
                                                                "diffusion_steps.png"))
    no_tmp(d)


def test_missing_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"purerec\[plots\]"):
        write_report(str(tmp_path))


def test_reference_rows_appear_under_the_agents(tmp_path):
    """A sweep's reference.json puts one row per reference policy under the agents of each world's
    table, with the values of that world and max_len."""
    rng = np.random.default_rng(3)
    recs = [make_record(rng, kind=k, preset=p, max_len=L, seed=s)
            for k in ("dsrm_hrl", "flat") for p in ("kuairec", "kuairand") for L in (30, 50) for s in (11, 15)]
    d = str(tmp_path / "sw")
    write_sweep(d, recs, {"agent.kind": ["dsrm_hrl", "flat"], "env.max_len": [30, 50]}, seeds=(11, 15))
    ref = {p: {str(L): {name: {"Len": 10.0 + L + i + (100 if p == "kuairand" else 0), "R_each": 0.5,
                               "R_cum": 7.0, "AD": 0.25 * i}
                        for i, name in enumerate(("balanced", "random"))} for L in (30, 50)}
           for p in ("kuairec", "kuairand")}
    with open(os.path.join(d, "reference.json"), "w") as fh:
        json.dump(ref, fh)
    md = read(write_report(d))
    for p in ("kuairec", "kuairand"):
        table = parse_table(section(md, "Table 2"), p)
        labels = list(table)
        assert labels[-2:] == ["reference: balanced", "reference: random"], labels
        for name in ("balanced", "random"):
            for L in (30, 50):
                assert table[f"reference: {name}"][f"Len@{L}"] == f"{ref[p][str(L)][name]['Len']:.4g}"
                assert table[f"reference: {name}"][f"AD@{L}"] == f"{ref[p][str(L)][name]['AD']:.4g}"
    # Without reference.json there are no reference rows.
    os.remove(os.path.join(d, "reference.json"))
    md = read(write_report(d))
    assert "reference:" not in md


def test_paper_layout_groups_families_and_the_pareto_plot_draws_each_trade_off_knob(tmp_path):
    """Table 2 in the paper's layout: a row per method grouped by family (general RL, then
    fairness-aware RL, then ours), a column block per world, cells mean ± std over seeds. The Pareto
    plot draws a line along MOFIR's preference weight (its trade-off knob) even with one lambda."""
    rng = np.random.default_rng(5)
    rows = [("DSRM-HRL", "dsrm_hrl", "method", "ours", None), ("A2C", "a2c", "baseline", "general RL", None)]
    recs = []
    for (label, kind, table, family, _), p, s in itertools.product(rows, ("kuairec", "kuairand"), (11, 15)):
        r = make_record(rng, kind=kind, preset=p, seed=s, grid={"agent.kind": kind})
        r.update(method=label, table=table, family=family, kind=kind, run_id=f"{kind}-{p}-{s}")
        recs.append(r)
    for w, p, s in itertools.product((0.0, 0.5, 1.0), ("kuairec", "kuairand"), (11, 15)):
        r = make_record(rng, kind="mofir", preset=p, seed=s, grid={"agent.kind": "mofir", "mofir.eval_weight": w})
        r.update(method="MOFIR (reading)", table="baseline", family="fairness-aware RL", kind="mofir",
                 tradeoff="mofir.eval_weight", run_id=f"mofir-{p}-{s}-{w}")
        recs.append(r)
    d = str(tmp_path)
    write_sweep(d, recs, [{"agent.kind": ["dsrm_hrl", "a2c"]}, {"agent.kind": ["mofir"],
                                                                 "mofir.eval_weight": [0.0, 0.5, 1.0]}],
                seeds=(11, 15))
    md = read(write_report(d))
    t2 = section(md, "Table 2")
    lines = t2[t2.index("### The paper's layout, max_len 30"):].splitlines()
    i = next(j for j, ln in enumerate(lines) if ln.startswith("| Method"))
    header = [c.strip() for c in lines[i].strip("|").split(" | ")]
    assert header[:2] == ["Method", "Family"]
    assert header[2:] == [f"{p} {m}" for p in ("kuairec", "kuairand") for m in ("Len", "R_each", "R_cum", "AD")]
    body = [[c.strip() for c in ln.strip().strip("|").split(" | ")]
            for ln in itertools.takewhile(lambda ln: ln.startswith("|"), lines[i + 2:])]
    assert [b[1] for b in body] == ["general RL"] + ["fairness-aware RL"] * 3 + ["ours"]
    assert body[0][0] == "A2C" and body[-1][0] == "DSRM-HRL"
    a2c = [r for r in recs if r["kind"] == "a2c" and r["config"]["world"]["preset"] == "kuairand"]
    assert body[0][header.index("kuairand R_cum")] == expected(a2c, "R_cum")
    assert_png(os.path.join(d, "pareto.png"))
    assert "](pareto.png)" in md
