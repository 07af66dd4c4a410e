"""Sweep reports: the paper's tables (markdown) and figures (PNG) from a sweep's run records.

``write_report(DIR)`` reads ``DIR/sweep.json`` and ``DIR/runs/*.json`` (written by
:mod:`purerec.sweep`) and writes ``DIR/report.md`` plus the plots it has data for::

    python -m purerec.report DIR      # writes the report and prints the markdown

Nothing here imports JAX; matplotlib (``pip install purerec[plots]``) is needed.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

TABLE_METRICS = ("Len", "R_each", "R_cum", "AD")
CURVE_METRICS = ("Len", "AD")
K_METRICS = ("Len", "R_cum", "AD")
# Report tables in order: the record's ``table`` (``purerec.agents.describe``) picks one.
TABLE_ORDER = ("method", "ablation", "baseline")
CANONICAL_WORLDS = ("kuairec", "kuairand")
PLOTS = ("pareto.png", "learning_curves.png", "diffusion_steps.png")
# Grid fields that never go into a row label: the method itself, the columns, the table.
_NOT_IN_LABEL = ("agent.kind", "state.purifier", "env.max_len", "world.preset", "env")
LAMBDA, K_FIELD = "agent.lambda_fair", "dsrm.steps"


@dataclass
class Run:
    run_id: str
    seed: object
    kind: str
    preset: str
    max_len: int | None
    K: int | None
    lam: float | None
    point: dict
    metrics: dict
    curves: dict
    timing: dict
    group: str
    table: str = "method"  # which report table: method | ablation | baseline
    paper_s: float | None = None  # the paper's Table-4 training seconds for this row, if any
    family: str = ""  # the row's family (purerec.agents.FAMILIES): Table 2's row groups
    tradeoff: str | None = None  # the config field that moves the row along the Pareto front
    fields: tuple = field(default=())  # ((name, value), ...): the other varying grid fields
    config: dict = field(default_factory=dict)

    def label(self, drop: tuple[str, ...] = ()) -> str:
        extra = [(k, v) for k, v in self.fields if k not in drop]
        if not extra:
            return self.kind
        return f"{self.kind} ({', '.join(f'{k}={_fmt_val(v)}' for k, v in extra)})"

    def label_key(self, drop: tuple[str, ...] = ()) -> tuple:
        return (self.kind, tuple((k, v) for k, v in self.fields if k not in drop))


# --------------------------------------------------------------------------------------------
# formatting helpers


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def mean_std(values) -> str:
    """``"mean ± std"`` (population std, ``np.std``) with 4 significant digits; ``–`` if empty."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return "–"
    return f"{_fmt(float(np.mean(v)))} ± {_fmt(float(np.std(v)))}"


def _fmt_val(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, str) and v.endswith(".toml"):
        return os.path.basename(v)
    return str(v)


def _sort_val(v):
    if isinstance(v, bool):
        return (1, str(v))
    if isinstance(v, (int, float)):
        return (0, float(v))
    return (1, str(v))


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ").strip()


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return out


def _atomic_write(path: str, data: bytes) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".report-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# --------------------------------------------------------------------------------------------
# loading


def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _load(sweep_dir: str) -> tuple[dict, list[dict], list[str]]:
    spec = {}
    p = os.path.join(sweep_dir, "sweep.json")
    if os.path.exists(p):
        with open(p) as fh:
            spec = json.load(fh)
    records, unreadable = [], []
    d = os.path.join(sweep_dir, "runs")
    if os.path.isdir(d):
        for f in sorted(os.listdir(d)):
            if not f.endswith(".json"):
                continue
            try:
                with open(os.path.join(d, f)) as fh:
                    records.append(json.load(fh))
            except (OSError, ValueError) as e:
                unreadable.append(f"{f}: {type(e).__name__}: {e}")
    return spec, records, unreadable


def _grid_of(spec: dict) -> dict:
    """The sweep's grid fields -> values; a union of grids (``[[grid]]``) merged in order."""
    grid = spec.get("grid") or {}
    out: dict = {}
    for g in (grid if isinstance(grid, list) else [grid]):
        for k, v in g.items():
            out.setdefault(k, [])
            out[k] += [x for x in v if x not in out[k]]
    return out


def _registry_facts(kind: str) -> tuple[str, str | None]:
    """(family, trade-off field) of an agent kind, for records written before records carried them."""
    try:
        from purerec.agents import REGISTRY
        from purerec.config import AGENT_ALIASES
    except ImportError:
        return "", None
    spec = REGISTRY.get(AGENT_ALIASES.get(kind, (kind,))[0])
    return (spec.family, spec.tradeoff) if spec else ("", None)


def _to_run(rec: dict) -> Run:
    cfg = rec.get("config", {}) or {}
    point = dict(rec.get("point", {}) or {})
    max_len, K, lam = _get(cfg, "env", "max_len"), _get(cfg, "dsrm", "steps"), _get(cfg, "agent", "lambda_fair")
    # Records name their row (``method``) and table; older records only their agent.kind.
    kind = rec.get("method") or _get(cfg, "agent", "kind", default=point.get("agent.kind", "?"))
    family, tradeoff = _registry_facts(str(rec.get("kind") or _get(cfg, "agent", "kind", default="")))
    return Run(run_id=str(rec.get("run_id", "?")), seed=rec.get("seed"), kind=str(kind),
               table=str(rec.get("table", "method")), paper_s=rec.get("paper_train_s"),
               family=str(rec.get("family", family)), tradeoff=rec.get("tradeoff", tradeoff),
               preset=str(_get(cfg, "world", "preset", default=point.get("world.preset", "?"))),
               max_len=None if max_len is None else int(max_len), K=None if K is None else int(K),
               lam=None if lam is None else float(lam), point=point, metrics=rec.get("metrics", {}) or {},
               curves=rec.get("curves", {}) or {}, timing=rec.get("timing", {}) or {},
               group=str(rec.get("group", "")), config=cfg)


def _assign_fields(runs: list[Run], spec: dict) -> list[str]:
    """Set each run's label fields: the grid fields (other than method, max_len, world) that vary."""
    grid_order = list(_grid_of(spec).keys())
    names = []
    for r in runs:
        for k in r.point:
            if k not in names:
                names.append(k)
    names.sort(key=lambda k: (grid_order.index(k) if k in grid_order else len(grid_order), k))
    varying = []
    for k in names:
        if k in _NOT_IN_LABEL:
            continue
        vals = {json.dumps(r.point.get(k), sort_keys=True) for r in runs}
        if len(vals) > 1:
            varying.append(k)
    # several env files for one world preset: the env file tells those rows apart
    env_per_preset = defaultdict(set)
    for r in runs:
        env_per_preset[r.preset].add(r.point.get("env"))
    if any(len(v) > 1 for v in env_per_preset.values()):
        varying.append("env")
    for r in runs:
        r.fields = tuple((k, r.point.get(k)) for k in varying if k in r.point or k == "env")
    return varying


def _method_order(spec: dict, runs: list[Run]) -> dict[str, int]:
    """Rows: the method, then ablations, then baselines; within a table, in the order of the
    sweep grid's ``agent.kind`` values, then by label."""
    grid = [str(k) for k in _grid_of(spec).get("agent.kind", []) or []]

    def key(r: Run):
        t = TABLE_ORDER.index(r.table) if r.table in TABLE_ORDER else len(TABLE_ORDER)
        g = str(r.point.get("agent.kind"))
        return (t, grid.index(g) if g in grid else len(grid), r.kind)

    kinds = []
    for r in sorted(runs, key=key):
        if r.kind not in kinds:
            kinds.append(r.kind)
    return {k: i for i, k in enumerate(kinds)}


def _preset_order(runs: list[Run]) -> list[str]:
    presets = {r.preset for r in runs}
    return [p for p in CANONICAL_WORLDS if p in presets] + sorted(presets - set(CANONICAL_WORLDS))


def _row_sort(order: dict[str, int]):
    def key(item):
        kind, fields = item
        return (order.get(kind, len(order)), kind, tuple(_sort_val(v) for _, v in fields))
    return key


def _metric(r: Run, name: str) -> float | None:
    v = r.metrics.get(name)
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _values(runs: list[Run], name: str) -> np.ndarray:
    """The metric over runs, NaN where missing."""
    return np.asarray([np.nan if (v := _metric(r, name)) is None else v for r in runs], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# tables


def _results_table(runs: list[Run], order: dict[str, int], reference: dict | None = None) -> list[str]:
    """Rows = method labels, columns = TABLE_METRICS at each max_len, cells mean ± std over seeds;
    then the reference policies' rows (``reference``: {max_len: {policy: row}}), one number a cell."""
    lens = sorted({r.max_len for r in runs}, key=lambda x: (x is None, x or 0))
    cells = defaultdict(list)
    labels = {}
    for r in runs:
        key = r.label_key()
        labels[key] = r.label()
        cells[(key, r.max_len)].append(r)
    header = ["Method"] + [f"{m}@{L}" for L in lens for m in TABLE_METRICS]
    rows, counts = [], set()
    for key in sorted(labels, key=_row_sort(order)):
        row = [labels[key]]
        for L in lens:
            rs = cells.get((key, L), [])
            if rs:
                counts.add(len(rs))
            row += [mean_std(_metric(r, m) for r in rs) for m in TABLE_METRICS]
        rows.append(row)
    names = sorted({n for L in lens for n in (reference or {}).get(str(L), {})})
    for name in names:
        row = [f"reference: {name}"]
        for L in lens:
            ref = (reference or {}).get(str(L), {}).get(name)
            row += [_fmt(ref[m]) if ref and m in ref else "–" for m in TABLE_METRICS]
        rows.append(row)
    out = _md_table(header, rows)
    n = ", ".join(str(c) for c in sorted(counts)) or "0"
    out.append("")
    out.append(f"Cells: mean ± std (population) over seeds; runs per cell: {n}."
               + (" Reference rows: the same test protocol, one evaluation." if names else ""))
    return out


def _family_rank(r: Run) -> int:
    try:
        from purerec.agents import FAMILIES
    except ImportError:
        return 0
    return FAMILIES.index(r.family) if r.family in FAMILIES else len(FAMILIES)


def _paper_table(runs: list[Run], order: dict[str, int], presets: list[str], L, reference: dict) -> list[str]:
    """The paper's layout for one max_len: a row per method (grouped by family: general RL,
    fairness-aware RL, ours), a column block per world (Len | R_each | R_cum | AD), cells mean ± std
    over seeds; the reference policies' rows under them."""
    cells = defaultdict(list)
    labels, fam = {}, {}
    for r in runs:
        if r.max_len != L:
            continue
        key = r.label_key()
        labels[key] = r.label()
        fam[key] = (_family_rank(r), r.family)
        cells[(key, r.preset)].append(r)
    header = ["Method", "Family"] + [f"{p} {m}" for p in presets for m in TABLE_METRICS]
    rows = []
    row_key = _row_sort(order)
    for key in sorted(labels, key=lambda k: (fam[k][0], row_key(k))):
        row = [labels[key], fam[key][1] or "–"]
        for p in presets:
            rs = cells.get((key, p), [])
            row += [mean_std(_metric(r, m) for r in rs) for m in TABLE_METRICS]
        rows.append(row)
    names = sorted({n for p in presets for n in (reference.get(p) or {}).get(str(L), {})})
    for name in names:
        row = [f"reference: {name}", "rule"]
        for p in presets:
            ref = (reference.get(p) or {}).get(str(L), {}).get(name)
            row += [_fmt(ref[m]) if ref and m in ref else "–" for m in TABLE_METRICS]
        rows.append(row)
    return _md_table(header, rows)


def _timing_table(runs: list[Run], order: dict[str, int], presets: list[str]) -> list[str]:
    by = defaultdict(list)
    labels = {}
    for r in runs:
        if not r.timing:
            continue
        key = r.label_key()
        labels[key] = r.label()
        by[(key, r.preset)].append(r)
    if not by:
        return ["No timing recorded."]
    rows = []
    for key in sorted(labels, key=_row_sort(order)):
        for p in presets:
            rs = by.get((key, p))
            if not rs:
                continue
            per_run = [float(r.timing["group_run_s"]) / max(1, int(r.timing.get("group_runs", 1)))
                       for r in rs if "group_run_s" in r.timing]
            groups = {}
            for r in rs:
                if "group_compile_s" in r.timing:
                    groups[(r.group, r.timing.get("group_compile_s"), r.timing.get("group_run_s"))] = \
                        float(r.timing["group_compile_s"])
            devices = sorted({int(r.timing["devices"]) for r in rs if "devices" in r.timing})
            paper = [r.paper_s for r in rs if r.paper_s is not None]
            rows.append([labels[key], p, _fmt(float(np.mean(per_run))) if per_run else "–",
                         _fmt(float(np.mean(list(groups.values())))) if groups else "–",
                         str(len(rs)), ",".join(str(d) for d in devices) or "–",
                         _fmt(float(paper[0])) if paper else "–"])
    out = _md_table(["Method", "World", "train+eval s / run", "compile s / group", "runs", "devices",
                     "paper s"], rows)
    out += ["", "s / run: the group's run time divided by its runs (all runs of a group share one "
            "program; this sweep's budget, max_len and evaluation included), averaged over runs; compile s: "
            "mean over the method's compiled groups. paper s: the paper's Table 4 (20,000 episodes, KuaiRec, "
            "max_len 30, its hardware); `benchmarks/train_speed.py` times exactly that workload here."]
    return out


def _is_ablation(r: Run) -> bool:
    """Table 3 holds the method and its ablations."""
    return r.table in ("method", "ablation")


# --------------------------------------------------------------------------------------------
# plots


def _new_figure(nrows: int, ncols: int, w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncols, h * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    _atomic_write(path, buf.getvalue())


def _series_label(r: Run, drop: tuple[str, ...], several_lens: bool) -> str:
    s = r.label(drop)
    return f"{s} @L{r.max_len}" if several_lens else s


def _tradeoff_value(r: Run):
    """The run's value of its method's trade-off knob (lambda for the HRL family, MOFIR's
    preference weight, FCPO's cost limit; ``purerec.agents.AgentSpec.tradeoff``), or None."""
    if not r.tradeoff:
        return None
    if r.tradeoff == LAMBDA:
        return r.lam
    v = r.point.get(r.tradeoff)
    if v is None:
        section, name = r.tradeoff.split(".", 1)
        v = _get(r.config, section, name)
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _plot_pareto(runs: list[Run], presets: list[str], order, path: str) -> str | None:
    """R_cum vs AD: a panel per (world, max_len); every run a point (a cloud per method), and a
    line through the per-value means where a method's trade-off knob takes >= 2 values."""
    panels, any_line = [], False
    for p in presets:
        for L in sorted({r.max_len for r in runs if r.preset == p}, key=lambda x: (x is None, x or 0)):
            rs = [r for r in runs if r.preset == p and r.max_len == L]
            series = defaultdict(lambda: defaultdict(list))
            labels = {}
            for r in rs:
                drop = (r.tradeoff,) if r.tradeoff else ()
                key = r.label_key(drop)
                labels[key] = r.label(drop)
                series[key][_tradeoff_value(r)].append(r)
            any_line |= any(len([v for v in s if v is not None]) >= 2 for s in series.values())
            panels.append((p, L, series, labels))
    if not any_line:
        return "needs >= 2 values of a method's trade-off knob (agent.lambda_fair, mofir.eval_weight, fcpo.cost_limit)"
    ncols = min(3, len(panels))
    nrows = int(math.ceil(len(panels) / ncols))
    fig, axes = _new_figure(nrows, ncols, 5.5, 4.5)
    for i, (p, L, series, labels) in enumerate(panels):
        ax = axes[i // ncols][i % ncols]
        for key in sorted(series, key=_row_sort(order)):
            by_val = series[key]
            everyone = [r for rs in by_val.values() for r in rs]
            pts = ax.scatter(_values(everyone, "AD"), _values(everyone, "R_cum"), s=12, alpha=0.35,
                             label=labels[key])
            vals = sorted(v for v in by_val if v is not None)
            if len(vals) >= 2:
                ad = [np.nanmean(_values(by_val[x], "AD")) for x in vals]
                rc = [np.nanmean(_values(by_val[x], "R_cum")) for x in vals]
                ax.plot(ad, rc, marker="o", color=pts.get_facecolor()[0][:3])
                name = everyone[0].tradeoff.split(".")[-1]
                for x, a, c in zip(vals, ad, rc):
                    ax.annotate(f"{name}={x:g}", (a, c), textcoords="offset points", xytext=(3, 3), fontsize=6)
        ax.set_xlabel("AD (lower is fairer)")
        ax.set_ylabel("R_cum")
        ax.set_title(f"{p}, max_len {L}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for j in range(len(panels), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    _save(fig, path)
    return None


def _plot_curves(runs: list[Run], presets: list[str], order, path: str) -> str | None:
    """Len and AD vs training update, a row per world, a line per method (mean ± std band)."""
    rows = []
    for p in presets:
        rs = [r for r in runs if r.preset == p and all(len(r.curves.get(m) or []) > 0 for m in CURVE_METRICS)]
        if rs:
            rows.append((p, rs))
    if not rows:
        return "no training curves in the records"
    fig, axes = _new_figure(len(rows), 2, 6.0, 3.8)
    for i, (p, rs) in enumerate(rows):
        several_lens = len({r.max_len for r in rs}) > 1
        series, labels = defaultdict(list), {}
        for r in rs:
            key = (r.label_key(), r.max_len if several_lens else None)
            labels[key] = _series_label(r, (), several_lens)
            series[key].append(r)
        for j, m in enumerate(CURVE_METRICS):
            ax = axes[i][j]
            for key in sorted(series, key=lambda k: (_row_sort(order)(k[0]), k[1] or 0)):
                cs = [np.asarray(r.curves[m], dtype=np.float64) for r in series[key]]
                n = min(len(c) for c in cs)
                arr = np.stack([c[:n] for c in cs])
                mu, sd = np.nanmean(arr, axis=0), np.nanstd(arr, axis=0)
                x = np.arange(1, n + 1)
                line, = ax.plot(x, mu, label=labels[key])
                ax.fill_between(x, mu - sd, mu + sd, alpha=0.2, color=line.get_color())
            ax.set_xlabel("training update")
            ax.set_ylabel(m)
            ax.set_title(f"{p}: {m}")
            ax.grid(alpha=0.3)
        axes[i][1].legend(fontsize=7, loc="best")
    _save(fig, path)
    return None


def _plot_diffusion(runs: list[Run], presets: list[str], order, path: str) -> str | None:
    """Len, R_cum, AD vs K (log x), a row per world, error bars = std over seeds."""
    rows = []
    for p in presets:
        rs = [r for r in runs if r.preset == p and r.K is not None]
        several_lens = len({r.max_len for r in rs}) > 1
        series, labels = defaultdict(lambda: defaultdict(list)), {}
        for r in rs:
            key = (r.label_key((K_FIELD,)), r.max_len if several_lens else None)
            labels[key] = _series_label(r, (K_FIELD,), several_lens)
            series[key][r.K].append(r)
        series = {k: v for k, v in series.items() if len(v) >= 2}
        if series:
            rows.append((p, series, labels))
    if not rows:
        n = len({r.K for r in runs if r.K is not None})
        return f"needs ≥ 2 K (dsrm.steps) values per method; found {n}"
    fig, axes = _new_figure(len(rows), 3, 4.5, 3.5)
    for i, (p, series, labels) in enumerate(rows):
        for j, m in enumerate(K_METRICS):
            ax = axes[i][j]
            for key in sorted(series, key=lambda k: (_row_sort(order)(k[0]), k[1] or 0)):
                ks = sorted(series[key])
                vals = [_values(series[key][k], m) for k in ks]
                ax.errorbar(ks, [np.nanmean(v) for v in vals], yerr=[np.nanstd(v) for v in vals],
                            marker="o", capsize=3, label=labels[key])
            ax.set_xscale("log")
            ax.set_xlabel("diffusion steps K")
            ax.set_ylabel(m)
            ax.set_title(f"{p}: {m} vs K")
            ax.grid(alpha=0.3, which="both")
        axes[i][2].legend(fontsize=7)
    _save(fig, path)
    return None


# --------------------------------------------------------------------------------------------
# the report


def write_report(sweep_dir: str) -> str:
    """Write ``sweep_dir/report.md`` (atomically) and the PNG plots the data allows; return its path.

    Only records with status ``ok`` enter tables and plots; failed runs are listed at the end with
    their error.

    Rows: a row is a method (the record's ``method`` label, e.g. DSRM-HRL, TD3) *plus the values of any other grid field that
    varies in the sweep* (e.g. ``dsrm_hrl (dsrm.steps=20)``, ``flat (agent.lambda_fair=0.1)``);
    ``env.max_len`` is a column block and the world preset (``config.world.preset``) a separate
    table, so they never enter the label (the env file does only when several env files share a
    preset). Every cell is thus a plain mean over seeds of otherwise identical configs; no run is
    dropped or mixed with a different configuration.

    Tables: Table 2 (all methods) and Table 3 (the method and its ablations, by each record's
    ``table``; only when a world has at least two of them), one per world preset, columns
    ``Len@L | R_each@L | R_cum@L | AD@L`` for every max_len L, cells ``mean ± std`` with the
    population std (``np.std``) over seeds, 4 significant digits. Table 4: training wall time per
    row label and world. Under the agents, Tables 2 and 3 show the reference policies' rows from
    ``DIR/reference.json`` (same protocol), when the sweep wrote one.

    Plots (written only when the data exists; otherwise the report says why, and a stale file of
    that name from an earlier report is removed):
    ``pareto.png`` (R_cum vs AD across ≥ 2 lambda_fair values, a line per method, a panel per
    world and max_len), ``learning_curves.png`` (Len and AD vs training update, mean ± std band),
    ``diffusion_steps.png`` (Len, R_cum, AD vs K on a log axis, a row per world, needs ≥ 2 K).
    Plots use matplotlib's Agg canvas (no pyplot state); ImportError if matplotlib is missing.
    """
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as e:
        raise ImportError("purerec.report needs matplotlib for its plots: pip install purerec[plots]") from e

    spec, records, unreadable = _load(sweep_dir)
    reference = {}  # written by the sweep: the reference policies' rows per world and max_len
    try:
        with open(os.path.join(sweep_dir, "reference.json")) as fh:
            reference = json.load(fh)
    except (OSError, ValueError):
        pass
    ok = [_to_run(r) for r in records if r.get("status") == "ok"]
    failed = [r for r in records if r.get("status") != "ok"]
    varying = _assign_fields(ok, spec)
    order = _method_order(spec, ok)
    presets = _preset_order(ok)

    name = spec.get("name") or os.path.basename(os.path.normpath(sweep_dir))
    lines = [f"# Sweep report: {name}", ""]
    if spec.get("budget"):
        lines.append(f"- budget: {spec['budget']} (budget factor {spec.get('budget_factor', 1.0)})")
    grid = spec.get("grid")
    for g in (grid if isinstance(grid, list) else [grid] if grid else []):
        lines.append("- grid: " + ", ".join(f"`{k}` = {v}" for k, v in g.items()))
    if spec.get("seeds"):
        lines.append(f"- seeds: {list(spec['seeds'])}")
    lines.append(f"- runs: {len(ok)} ok, {len(failed)} failed"
                 + (f", {len(unreadable)} unreadable record file(s)" if unreadable else ""))
    ad_forms = sorted({str(_get(r, "config", "eval", "ad_form")) for r in records if r.get("status") == "ok"})
    if ad_forms:
        lines.append(f"- AD form: {', '.join(ad_forms)}")
    if varying:
        lines.append("- row labels carry the other varying grid fields: " + ", ".join(f"`{v}`" for v in varying))
    lines.append("")

    if not ok:
        lines += ["No successful runs: no tables or plots.", ""]
    else:
        lens = sorted({r.max_len for r in ok}, key=lambda x: (x is None, x or 0))
        lines += ["## Table 2: main results", ""]
        main = [r for r in ok if r.table in ("method", "baseline")]
        if main:
            for L in lens:
                lines += [f"### The paper's layout, max_len {L}", "",
                          "The method and the baselines, grouped by family; a column block per world."] + [""]
                lines += _paper_table(main, order, presets, L, reference) + [""]
            lines += ["Every row of the sweep, one table per world:", ""]
        for p in presets:
            lines += [f"### World: {p}", ""] + _results_table([r for r in ok if r.preset == p], order,
                                                               reference.get(p)) + [""]

        abl_tables = []
        abl = [r for r in ok if _is_ablation(r)]
        if len({r.kind for r in abl}) >= 2:
            for L in lens:
                abl_tables += [f"### The paper's layout, max_len {L}", ""]
                abl_tables += _paper_table(abl, order, presets, L, reference) + [""]
        for p in presets:
            rs = [r for r in ok if r.preset == p and _is_ablation(r)]
            if len({r.kind for r in rs}) >= 2:
                abl_tables += [f"### World: {p}", ""] + _results_table(rs, order, reference.get(p)) + [""]
        if abl_tables:
            lines += ["## Table 3: ablations", "",
                      "The method and its ablations (rows whose record's table is `method` or `ablation`).",
                      ""] + abl_tables

        lines += ["## Table 4: training wall time", ""] + _timing_table(ok, order, presets) + [""]

    lines += ["## Figures", ""]
    plotters = {"pareto.png": ("Accuracy-fairness Pareto front (R_cum vs AD; a point per run, lines along each "
                               "method's trade-off knob)", _plot_pareto),
                "learning_curves.png": ("Learning curves (Len and AD vs training update)", _plot_curves),
                "diffusion_steps.png": ("Diffusion-step sensitivity (Len, R_cum, AD vs K)", _plot_diffusion)}
    for fname in PLOTS:
        title, fn = plotters[fname]
        path = os.path.join(sweep_dir, fname)
        why = fn(ok, presets, order, path) if ok else "no successful runs"
        if why is None:
            lines += [f"### {title}", "", f"![{title}]({fname})", ""]
        else:
            if os.path.exists(path):
                os.remove(path)  # a stale plot from an earlier report would contradict this one
            lines += [f"- `{fname}` not written: {why}.", ""]

    lines += ["## Failed runs", ""]
    if failed or unreadable:
        rows = []
        for rec in sorted(failed, key=lambda r: str(r.get("run_id"))):
            r = _to_run(rec)
            pt = ", ".join(f"{k}={_fmt_val(v)}" for k, v in r.point.items())
            err = str(rec.get("error", "(no error recorded)")).strip().splitlines()
            rows.append([r.run_id, r.kind, r.preset, str(r.seed), pt, err[0] if err else ""])
        rows += [[f.split(":", 1)[0], "?", "?", "?", "", "unreadable record: " + f.split(":", 1)[1]]
                 for f in unreadable]
        lines += _md_table(["run_id", "method", "world", "seed", "point", "error"], rows)
    else:
        lines.append("None.")
    lines.append("")

    out = os.path.join(sweep_dir, "report.md")
    _atomic_write(out, "\n".join(lines).encode("utf-8"))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m purerec.report SWEEP_DIR", file=sys.stderr)
        return 2
    path = write_report(argv[0])
    with open(path) as fh:
        print(fh.read())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# --------------------------------------------------------------------------------------------
# one run's learning curves

RUN_CURVES = (("Len", "Len"), ("AD", "AD"), ("R_cum", "R_cum"), ("w_fair", "manager w_fair"),
              ("tail_share", "long-tail share of slates"), ("worker_entropy", "worker policy entropy"),
              ("manager_entropy", "manager policy entropy"))


def plot_run_curves(run_dir: str) -> str | None:
    """``run_dir/curves.png``: each training curve of ``metrics.jsonl`` per update, mean and
    min-max band over seeds. Returns the path, or None without matplotlib or metrics."""
    path = os.path.join(run_dir, "metrics.jsonl")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    if not os.path.exists(path):
        return None
    per_seed: dict = defaultdict(lambda: defaultdict(dict))
    with open(path) as fh:
        for ln in fh:
            try:
                row = json.loads(ln)
            except ValueError:
                continue
            for k, v in row.items():
                per_seed[k][row["seed"]][row["update"]] = v
    names = [(k, t) for k, t in RUN_CURVES if k in per_seed and not (k == "manager_entropy" and
                                                                         not any(per_seed["w_fair"].values()))]
    if not names:
        return None
    ncols = 4
    fig, axes = _new_figure(math.ceil(len(names) / ncols), ncols, 3.6, 2.8)
    for ax, (k, title) in zip(axes.flat, names):
        updates = sorted(set().union(*(d.keys() for d in per_seed[k].values())))
        vals = np.array([[per_seed[k][s].get(u, np.nan) for u in updates] for s in per_seed[k]])
        mean = np.nanmean(vals, 0)
        ax.plot(updates, mean, lw=1.6)
        if vals.shape[0] > 1:
            ax.fill_between(updates, np.nanmin(vals, 0), np.nanmax(vals, 0), alpha=0.25)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(f"{os.path.basename(os.path.normpath(run_dir))}: training curves, mean and range over "
                 f"{len(next(iter(per_seed.values())))} seed(s)", fontsize=9)
    out = os.path.join(run_dir, "curves.png")
    _save(fig, out)
    return out
