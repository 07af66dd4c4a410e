"""Rewrite README.md's "Table 2 under the benchmark protocol" section from the table2 sweep's records:
one table per world (trained rows, Δ vs the frozen twin), computed findings, cost. Usage:
    python3 docs/table2/make_readme_section.py runs/sweeps/table2 README.md
(the tables of record are `python train.py report runs/sweeps/table2`; this only formats them for the README)."""
import json, glob, os, sys, statistics as st
d, readme = sys.argv[1], sys.argv[2]
recs = [json.load(open(f)) for f in glob.glob(os.path.join(d, "runs", "*.json"))]
failed = [r for r in recs if r.get("status", "ok") == "failed"]
recs = [r for r in recs if r.get("status", "ok") != "failed"]
ORDER = ['dsrm_hrl', 'hrl', 'flat', 'a2c', 'td3', 'bcq', 'mofir', 'dorl', 'dnair', 'sac4ir', 'fcpo', 'hsrl']
WN = {"kuairec": "KuaiRec-like", "kuairand": "KuaiRand-like"}
REF = {"kuairec": {"random": (12.56, 5.95, 0.609), "most_popular": (14.01, 12.25, 1.0), "balanced": (22.01, 14.33, 0.0), "balanced_oracle": (27.54, 25.55, 0.0)},
       "kuairand": {"random": (12.21, 4.88, 0.596), "most_popular": (13.33, 9.97, 1.0), "balanced": (21.28, 12.86, 0.0), "balanced_oracle": (27.50, 25.45, 0.0)}}
refp = os.path.join(d, "reference.json")
if os.path.exists(refp):
    ref = json.load(open(refp))
    for w, by in ref.items():
        row = by.get("30") or next(iter(by.values()))
        REF[w] = {p: (m["Len"], m["R_cum"], m["AD"]) for p, m in row.items() if p in ("random", "most_popular", "balanced", "balanced_oracle")}
def hn(r):
    c = r["config"]["slate"]
    return "native" if c["head"] == "native" else f"grouped, {c['tail']}"
cells = {}
for r in recs:
    cells.setdefault((r["config"]["world"]["preset"], r["config"]["agent"]["kind"], hn(r)), {}).setdefault(r["frozen"], {})[r["seed"]] = r
rows = {}
for k, v in cells.items():
    tr, fr = v.get(False, {}), v.get(True, {})
    if not tr: continue
    s = sorted(tr)
    M = lambda x: [tr[i]["metrics"][x] for i in s]
    D = lambda x: [tr[i]["metrics"][x] - fr[i]["metrics_by_action"][tr[i]["action"]][x] for i in s if i in fr]
    rows[k] = dict(method=tr[s[0]]["method"], rule=tr[s[0]]["head"], action=tr[s[0]]["action"], n=len(s),
                   Len=M("Len"), R=M("R_cum"), AD=M("AD"), dL=D("Len"), dR=D("R_cum"),
                   ep=st.mean(tr[i]["episodes"] for i in s), gs=st.mean(tr[i]["grad_steps"] for i in s))
ms = lambda xs: f"{st.mean(xs):.2f} ± {st.pstdev(xs):.2f}"
iv = lambda xs: f"{st.mean(xs):+.2f} [{min(xs):+.2f}, {max(xs):+.2f}]" if xs else "–"
m = st.mean
worlds = [w for w in ("kuairec", "kuairand") if any(k[0] == w for k in rows)]
heads = ["native", "grouped, fixed", "grouped, learned"]
out = []
for w in worlds:
    R = REF[w]
    fz = cells.get((w, "dsrm_hrl", "grouped, fixed"), {}).get(True, {})
    s1 = (f"; Stage I + grouped head, no RL (the frozen DSRM-HRL, fixed 0.5): {ms([r['metrics']['Len'] for r in fz.values()])} / "
          f"{ms([r['metrics']['R_cum'] for r in fz.values()])}") if fz else ""
    out += [f"**{WN[w]}** (reference rows, same protocol: random {R['random'][0]:.2f} / {R['random'][1]:.2f}, most_popular "
            f"{R['most_popular'][0]:.2f} / {R['most_popular'][1]:.2f}, **balanced {R['balanced'][0]:.2f} / {R['balanced'][1]:.2f}**, "
            f"balanced_oracle {R['balanced_oracle'][0]:.2f} / {R['balanced_oracle'][1]:.2f}{s1}; Len / R_cum):", "",
            "| agent | head | rule | Len | R_cum | AD | ΔLen [min, max] | ΔR_cum [min, max] | episodes | grad steps |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for h in heads:
        for a in ORDER:
            x = rows.get((w, a, h))
            if not x: continue
            hd = f"native ({x['rule']})" if h == "native" else h
            act = x["action"] + ("" if x["n"] == 3 else f" ({x['n']} seeds)")
            out.append(f"| {x['method']} | {hd} | {act} | {ms(x['Len'])} | {ms(x['R'])} | {ms(x['AD'])} | {iv(x['dL'])} | {iv(x['dR'])} | {x['ep']:,.0f} | {x['gs']:,.0f} |")
    out.append("")
# computed findings
F = []
for w in worlds:
    R, W = REF[w], WN[w]
    nat = [(a, x) for (ww, a, h), x in rows.items() if ww == w and h == "native"]
    below_rand = [x["method"] for a, x in nat if m(x["Len"]) < R["random"][0] or m(x["R"]) < R["random"][1]]
    lo = min(nat, key=lambda t: m(t[1]["Len"]))[1]
    F.append(f"- {W}, native heads: Len {min(m(x['Len']) for _, x in nat):.2f}–{max(m(x['Len']) for _, x in nat):.2f}, AD "
             f"{min(m(x['AD']) for _, x in nat):.2f}–{max(m(x['AD']) for _, x in nat):.2f} (most_popular {R['most_popular'][0]:.2f}); "
             + (f"below `random`: {', '.join(below_rand)}." if below_rand else f"none below `random` (lowest: {lo['method']} {m(lo['Len']):.2f} / {m(lo['R']):.2f})."))
    for h in heads[1:]:
        g = [(a, x) for (ww, a, hh), x in rows.items() if ww == w and hh == h]
        if not g: continue
        bad = [f"{x['method']} {m(x['Len']):.2f} / {m(x['R']):.2f} (AD {m(x['AD']):.2f})" for a, x in sorted(g, key=lambda t: ORDER.index(t[0]))
               if m(x["Len"]) < R["balanced"][0] or m(x["R"]) < R["balanced"][1]]
        best = max(g, key=lambda t: m(t[1]["R"]))[1]
        F.append(f"- {W}, {h}: {len(g) - len(bad)} of {len(g)} agents at or above `balanced` on Len and R_cum; best R_cum "
                 f"{best['method']} {m(best['Len']):.2f} / {m(best['R']):.2f}" + (f"; below `balanced`: {'; '.join(bad)}." if bad else "."))
    for h in heads:
        if not any(ww == w and hh == h for (ww, a, hh) in rows):
            continue
        block = [x for (ww, a, hh), x in sorted(rows.items(), key=lambda t: ORDER.index(t[0][1])) if ww == w and hh == h and x["dL"]]
        none_ = [x["method"] for x in block if min(x["dL"]) <= 0 <= max(x["dL"])]
        hurt = [f"{x['method']} {m(x['dL']):+.2f}" for x in block if max(x["dL"]) < 0]
        helps = [f"{x['method']} {m(x['dL']):+.2f}" for x in block if min(x["dL"]) > 0]
        F.append(f"- {W}, {h}, trained − frozen on Len: every seed positive for {', '.join(helps) or 'none'}; every seed negative (learning hurts) for "
                 f"{', '.join(hurt) or 'none'}; the seeds' range holds 0 (nothing measurable) for {', '.join(none_) or 'none'}.")
    a, b = rows.get((w, "dsrm_hrl", "grouped, fixed")), rows.get((w, "hrl", "grouped, fixed"))
    if a and b:
        F.append(f"- {W}, the purifier under the fixed grouped head: DSRM-HRL {m(a['Len']):.2f} / {m(a['R']):.2f} vs HRL {m(b['Len']):.2f} / {m(b['R']):.2f}.")
cost = []
for w in worlds:
    g = {}
    for r in recs:
        if r["config"]["world"]["preset"] == w:
            g[r["group"]] = r["timing"]["group_run_s"] + r["timing"]["group_compile_s"]
    slow = [v for v in g.values() if v > 1500]
    cost.append(f"{WN[w]}: {len(g)} groups, {sum(g.values())/3600:.1f} h of group wall time"
                + (f" ({len(slow)} groups that ran beside other jobs took {sum(slow)/3600:.1f} h of it; the rest {(sum(g.values())-sum(slow))/max(1,len(g)-len(slow))/6:.0f} s per run)" if slow else f" ({sum(g.values())/len(g)/6:.0f} s per run)"))
n = len(recs)
title = "### Table 2 under the benchmark protocol: both worlds, 3 reporting seeds" if n >= 432 else f"### Table 2 under the benchmark protocol: {n} of 432 runs (3 reporting seeds; the rest still to run)"
sec = f"""{title}

`python train.py sweep sweeps/table2.toml && python train.py report runs/sweeps/table2`: every
agent × {{native, grouped-fixed 0.5, grouped-learned}} × seeds 11 / 15 / 19 × {{trained, frozen twin}}
on both worlds, the hyperparameters of `sweeps/tuned/` (chosen on the validation split), the test
protocol, max_len 30; each row's action rule is the one chosen on validation. {n} runs recorded
({len(failed)} failed). The report and its learning curves (small multiples, min–max over seeds) are
in `docs/table2/`. Cells: mean ± std (population) over the seeds; Δ = trained − frozen twin (same
config, seed and Stage I, every learning rate 0), paired by seed: mean [min, max].

""" + "\n".join(out) + "\nWhat the table says (computed from it by the script that wrote this section):\n" + "\n".join(F) + "\n- Cost on the 2-core CPU: " + "; ".join(cost) + ".\n\n"
s = open(readme).read()
start = s.index("### Table 2 under the benchmark protocol: ")
end = s.index("### Table 2 under the benchmark protocol: one-seed preview")
s = s[:start] + sec + s[end:]
open(readme, "w").write(s)
print(sec)
