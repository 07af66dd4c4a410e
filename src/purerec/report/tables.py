"""Sweep reports: the paper's tables (markdown) and figures (PNG) from a sweep's run records.

``write_report(DIR)`` reads ``DIR/sweep.json`` and ``DIR/runs/*.json`` (written by
:mod:`purerec.run.sweep`) and writes ``DIR/report.md`` plus the plots it has data for::

    python -m purerec.report.tables DIR      # writes the report and prints the markdown

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
K_METRICS = ("Len", "R_cum", "AD")
# Report tables in order: the record's ``table`` (``purerec.agents.describe``) picks one.
TABLE_ORDER = ("method", "ablation", "baseline")
CANONICAL_WORLDS = ("kuairec", "kuairand")
PLOTS = ("pareto.png", "learning_curves.png", "diffusion_steps.png")
# Grid fields that never go into a row label: the method itself, the columns, the table.
_NOT_IN_LABEL = ("agent.kind", "state.purifier", "env.max_len", "world.preset", "env", "frozen", "slate.head",
                 "slate.tail", "slate.tail_share", "eval.action", "eval.split")
# Table 2's blocks by the configured ``slate.head``: (title, configured heads), in report order.
BLOCKS = (("Native heads", ("native", "auto", None)), ("Shared grouped head", ("grouped",)),
          ("Shared top-K head", ("topk",)))
STAGE1_ROW = "Stage I + grouped head, no RL"  # the frozen DSRM-HRL under a grouped head
FINDINGS = ("below balanced", "below random", "learning adds nothing measurable here")
CURVE_COLUMNS = ("Len", "R_cum", "AD")
MAX_SERIES = 4  # series per learning-curve panel
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
    agent_kind: str = ""  # the registry kind (``dsrm_hrl``, ``a2c``...), not the row label
    frozen: bool = False  # the frozen twin of a trained run (every RL learning rate 0)
    slate_head: str | None = None  # the configured slate.head: auto | native | topk | grouped
    head: str | None = None  # the resolved head: topk | grouped-fixed | grouped-learned
    tail_share: float | None = None  # slate.tail_share (matters under grouped-fixed only)
    action: str | None = None  # the action rule the metrics use: greedy | sample
    split: str | None = None  # the evaluation split: test | validation
    budget: dict = field(default_factory=dict)  # the record's own counts: updates, episodes, env_steps, grad_steps
    shown: tuple = ()  # the variant parts that vary in the sweep, so enter labels: head, action, split

    def variant(self) -> tuple:
        """What tells two runs of one method and grid point apart besides the seed: never pooled."""
        share = self.tail_share if self.head == "grouped-fixed" else None
        return (self.slate_head, self.head, share, self.action, self.split)

    def head_text(self, configured: bool = False) -> str:
        """``grouped-fixed (tail_share=0.5)``, ``grouped-learned``, ``topk``; with the configured
        head first (``auto: grouped-learned``) when ``configured``."""
        h = self.head or "–"
        if self.head == "grouped-fixed" and self.tail_share is not None:
            h += f" (tail_share={self.tail_share:g})"
        return f"{self.slate_head or 'auto'}: {h}" if configured else h

    def variant_text(self) -> str:
        parts = []
        if "head" in self.shown:
            parts.append(self.head_text(configured="slate_head" in self.shown))
        parts += [str(getattr(self, k)) for k in ("action", "split") if k in self.shown]
        return ", ".join(parts)

    def label(self, drop: tuple[str, ...] = (), variant: bool = True) -> str:
        extra = [(k, v) for k, v in self.fields if k not in drop]
        out = self.kind
        if extra:
            out += f" ({', '.join(f'{k}={_fmt_val(v)}' for k, v in extra)})"
        v = self.variant_text() if variant else ""
        return f"{out} [{v}]" if v else out

    def label_key(self, drop: tuple[str, ...] = ()) -> tuple:
        return (self.kind, tuple((k, v) for k, v in self.fields if k not in drop) + (("~variant", self.variant()),))

    def twin_key(self) -> tuple:
        """Pairs a trained run with its frozen twin: same method, grid point, variant and seed."""
        point = {k: v for k, v in self.point.items() if k != "frozen"}
        return (self.agent_kind, self.preset, self.max_len, json.dumps(self.seed), self.variant(),
                json.dumps(point, sort_keys=True, default=str))


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
    if v is None or isinstance(v, tuple):
        return (1, str(v))
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
        from purerec.state.sections import AGENT_ALIASES
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
    share = _get(cfg, "slate", "tail_share")
    family, tradeoff = _registry_facts(str(rec.get("kind") or _get(cfg, "agent", "kind", default="")))
    return Run(run_id=str(rec.get("run_id", "?")), seed=rec.get("seed"), kind=str(kind),
               table=str(rec.get("table", "method")), paper_s=rec.get("paper_train_s"),
               family=str(rec.get("family", family)), tradeoff=rec.get("tradeoff", tradeoff),
               preset=str(_get(cfg, "world", "preset", default=point.get("world.preset", "?"))),
               max_len=None if max_len is None else int(max_len), K=None if K is None else int(K),
               lam=None if lam is None else float(lam), point=point, metrics=rec.get("metrics", {}) or {},
               curves=rec.get("curves", {}) or {}, timing=rec.get("timing", {}) or {},
               group=str(rec.get("group", "")), config=cfg,
               agent_kind=str(rec.get("kind") or _get(cfg, "agent", "kind", default=point.get("agent.kind", ""))),
               frozen=bool(rec.get("frozen", point.get("frozen", False))),
               slate_head=rec.get("slate_head", _get(cfg, "slate", "head")), head=rec.get("head"),
               budget={k: rec[k] for k in ("updates", "episodes", "env_steps", "grad_steps") if rec.get(k) is not None},
               tail_share=None if share is None else float(share),
               action=rec.get("action", _get(cfg, "eval", "action")),
               split=rec.get("split", _get(cfg, "eval", "split")))


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
    # the variant parts (head, action rule, split) enter labels only where they vary
    shown = tuple(name for name, get in (("head", lambda r: (r.head, r.variant()[2])),
                                         ("slate_head", lambda r: r.slate_head),
                                         ("action", lambda r: r.action), ("split", lambda r: r.split))
                  if len({json.dumps(get(r), default=str) for r in runs}) > 1)
    if "slate_head" in shown and "head" not in shown:
        shown += ("head",)
    for r in runs:
        r.shown = shown
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


def _runs_of(spec: dict, records: list[dict]) -> tuple[list[Run], list[str], dict[str, int], list[str]]:
    ok = [_to_run(r) for r in records if r.get("status") == "ok"]
    varying = _assign_fields(ok, spec)
    return ok, varying, _method_order(spec, ok), _preset_order(ok)


def load_runs(sweep_dir: str) -> tuple[list[Run], dict[str, int], list[str]]:
    """The sweep's successful runs (labels assigned as in the report), the row order and the worlds."""
    spec, records, _ = _load(sweep_dir)
    ok, _, order, presets = _runs_of(spec, records)
    return ok, order, presets


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


def _is_stage1(r: Run) -> bool:
    """The frozen DSRM-HRL under a grouped head: its Stage-I state with the grouped slate, no RL."""
    dsrm_hrl = r.kind == "DSRM-HRL" or r.agent_kind.replace("-", "_").lower() == "dsrm_hrl"
    return r.frozen and dsrm_hrl and str(r.head).startswith("grouped")


def _block_of(r: Run) -> str:
    """Table 2's block of a run, by its configured ``slate.head`` (``BLOCKS``; native for the rest)."""
    for title, heads in BLOCKS:
        if r.slate_head in heads:
            return title
    return BLOCKS[0][0]


@dataclass
class BlockRow:
    """One row of a Table-2 block: its runs per max_len and, per max_len, the per-seed learning
    gains (trained − frozen twin) of Len and R_cum."""
    name: str
    head: str
    action: str
    runs: dict  # max_len -> [Run]
    gains: dict  # (max_len, metric) -> f64[n_pairs]
    stage1: bool = False


def _gains(trained: list[Run], twins: dict, metric: str) -> np.ndarray:
    """trained − frozen twin of ``metric``, one value per trained run whose twin exists."""
    out = []
    for r in trained:
        f = twins.get(r.twin_key())
        a, b = _metric(r, metric), (None if f is None else _metric(f, metric))
        if a is not None and b is not None:
            out.append(a - b)
    return np.asarray(out, dtype=np.float64)


def fmt_gain(d: np.ndarray, n_runs: int | None = None) -> str:
    """``"mean [min, max]"`` of per-seed gains (4 significant digits), ``(n=k)`` when fewer pairs
    than runs, ``–`` without pairs."""
    if d.size == 0:
        return "–"
    s = f"{_fmt(float(np.mean(d)))} [{_fmt(float(np.min(d)))}, {_fmt(float(np.max(d)))}]"
    return s + (f" (n={d.size})" if n_runs is not None and d.size < n_runs else "")


def block_rows(trained: list[Run], frozen: list[Run], order: dict[str, int]) -> list[BlockRow]:
    """The rows of one block in one world: a row per trained label and variant (head, action),
    with its gains over the frozen twins; then the Stage-I reference row(s) from the frozen
    DSRM-HRL under a grouped head. Other frozen runs are never rows."""
    twins = {f.twin_key(): f for f in frozen}
    rows = []
    for stage1, rs in ((False, trained), (True, [f for f in frozen if _is_stage1(f)])):
        by, first = defaultdict(lambda: defaultdict(list)), {}
        for r in rs:
            by[r.label_key()][r.max_len].append(r)
            first.setdefault(r.label_key(), r)
        for key in sorted(by, key=_row_sort(order)):
            r = first[key]
            name = r.label(variant=False) + (f" [{r.split}]" if "split" in r.shown else "")
            if stage1:
                name = STAGE1_ROW + name[len(r.kind):]
            gains = {} if stage1 else {(L, m): _gains(v, twins, m) for L, v in by[key].items() for m in ("Len", "R_cum")}
            rows.append(BlockRow(name=name, head=r.head_text(configured="slate_head" in r.shown) if r.head else "–",
                                 action=r.action or "–", runs=dict(by[key]), gains=gains, stage1=stage1))
    return rows


def _row_name(row: BlockRow) -> str:
    tags = [t for t in (row.head, row.action) if t != "–"]
    return f"{row.name} [{', '.join(tags)}]" if tags else row.name


def _mean(runs: list[Run], m: str) -> float | None:
    v = _values(runs, m)
    return float(np.nanmean(v)) if np.isfinite(v).any() else None


def block_findings(rows: list[BlockRow], reference: dict | None, lens: list) -> list[tuple[str, str, str]]:
    """(finding, row name, numbers) for every trained row whose mean Len or R_cum is below the
    ``balanced`` or ``random`` reference at some max_len, and every row whose ΔLen interval
    [min, max] over seeds contains 0. ``reference``: {max_len: {policy: row}} of the world."""
    out = []
    for row in rows:
        if row.stage1:
            continue
        for L in lens:
            rs = row.runs.get(L, [])
            for policy, finding in (("balanced", FINDINGS[0]), ("random", FINDINGS[1])):
                ref = ((reference or {}).get(str(L)) or {}).get(policy)
                if not rs or not ref:
                    continue
                below = [f"{m} {_fmt(v)} < {_fmt(float(ref[m]))}" for m in ("Len", "R_cum")
                         if m in ref and (v := _mean(rs, m)) is not None and v < float(ref[m])]
                if below:
                    out.append((finding, _row_name(row), f"max_len {L}: " + ", ".join(below)))
            d = row.gains.get((L, "Len"), np.zeros(0))
            if d.size and np.min(d) <= 0.0 <= np.max(d):
                out.append((FINDINGS[2], _row_name(row), f"max_len {L}: ΔLen {fmt_gain(d)}"))
    return out


def _block_table(trained: list[Run], frozen: list[Run], order: dict[str, int], lens: list,
                 reference: dict | None) -> list[str]:
    """One block's table for one world: rows = ``block_rows``, columns Len/R_each/R_cum/AD per max_len
    (mean ± std over seeds), the head and action rule where the records say, the learning gains
    ΔLen/ΔR_cum per max_len where frozen twins exist; the reference policies' rows; then the findings."""
    rows = block_rows(trained, frozen, order)
    show_head = any(r.head != "–" for r in rows)
    show_action = any(r.action != "–" for r in rows)
    show_gain = any(d.size for r in rows for d in r.gains.values())
    header = (["Method"] + (["Head"] if show_head else []) + (["Action"] if show_action else [])
              + [f"{m}@{L}" for L in lens for m in TABLE_METRICS]
              + ([f"Δ{m}@{L}" for L in lens for m in ("Len", "R_cum")] if show_gain else []))
    body, counts = [], set()
    for row in rows:
        cells = [row.name] + ([row.head] if show_head else []) + ([row.action] if show_action else [])
        for L in lens:
            rs = row.runs.get(L, [])
            if rs and not row.stage1:
                counts.add(len(rs))
            cells += [mean_std(_metric(r, m) for r in rs) for m in TABLE_METRICS]
        if show_gain:
            cells += [fmt_gain(row.gains.get((L, m), np.zeros(0)), len(row.runs.get(L, [])))
                      for L in lens for m in ("Len", "R_cum")]
        body.append(cells)
    names = sorted({n for L in lens for n in (reference or {}).get(str(L), {})})
    for name in names:
        cells = [f"reference: {name}"] + (["rule"] if show_head else []) + (["–"] if show_action else [])
        for L in lens:
            ref = (reference or {}).get(str(L), {}).get(name)
            cells += [_fmt(ref[m]) if ref and m in ref else "–" for m in TABLE_METRICS]
        body.append(cells + (["–"] * (2 * len(lens)) if show_gain else []))
    out = _md_table(header, body)
    n = ", ".join(str(c) for c in sorted(counts)) or "0"
    out += ["", f"Cells: mean ± std (population) over seeds; runs per cell: {n}."
            + (" Reference rows: the same test protocol, one evaluation." if names else "")
            + (" Δ: the learning gain, trained − its frozen twin (same config and seed, every RL learning "
               "rate 0), paired by seed: mean [min, max] over seeds." if show_gain else "")
            + (f" `{STAGE1_ROW}`: the frozen DSRM-HRL (its Stage-I state) under that head."
               if any(r.stage1 for r in rows) else "")]
    found = block_findings(rows, reference, lens)
    out += ["", "Findings (computed from this table):", ""]
    if found:
        out += [f"- {what}: {name}, {nums}" for what, name, nums in found]
    else:
        checks = []
        if names:
            checks.append("no trained row is below `balanced` or `random` on Len or R_cum")
        if show_gain:
            checks.append("every ΔLen interval excludes 0")
        out.append("- none: " + ("; ".join(checks) if checks else
                                 "no reference rows and no frozen twins, so nothing to check") + ".")
    return out


def _updates(r: Run) -> int | None:
    if "updates" in r.budget:
        return int(r.budget["updates"])
    for k in ("episodes", "Len"):
        if r.curves.get(k):
            return len(r.curves[k])
    u = _get(r.config, "train", "total_updates")
    return None if u is None else int(u)


def budget_of(r: Run) -> dict:
    """One run's training budget: the record's own counts where it carries them (sweeps write
    updates, episodes, env_steps and grad_steps); else episodes from curves["episodes"], env
    steps from updates x train.num_envs x train.rollout_len, gradient steps from
    curves["grad_steps"]; None if unknown."""
    known = {k: float(r.budget[k]) for k in ("episodes", "env_steps", "grad_steps") if k in r.budget}
    if len(known) == 3:
        return known
    eps = r.curves.get("episodes")
    grads = r.curves.get("grad_steps")
    u, n, t = _updates(r), _get(r.config, "train", "num_envs"), _get(r.config, "train", "rollout_len")
    return {"episodes": float(np.sum(eps)) if eps else None,
            "env_steps": None if None in (u, n, t) else float(u * int(n) * int(t)),
            "grad_steps": float(np.sum(grads)) if grads else None} | known


def _fmt_count(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _budget_table(runs: list[Run], order: dict[str, int], presets: list[str]) -> list[str]:
    """Per row label, world and max_len: what a run trained on (mean over its runs)."""
    by, labels = defaultdict(list), {}
    for r in runs:
        labels[r.label_key()] = r.label()
        by[(r.label_key(), r.preset, r.max_len)].append(r)
    rows = []
    for key in sorted(labels, key=_row_sort(order)):
        for p in presets:
            for L in sorted({k[2] for k in by if k[0] == key and k[1] == p}, key=lambda x: (x is None, x or 0)):
                rs = by[(key, p, L)]
                b = [budget_of(r) for r in rs]
                cells = []
                for k in ("episodes", "env_steps", "grad_steps"):
                    v = [x[k] for x in b if x[k] is not None]
                    cells.append(_fmt_count(float(np.mean(v))) if len(v) == len(b) else "n/a")
                rows.append([labels[key], p, str(L), str(len(rs))] + cells)
    out = _md_table(["Method", "World", "max_len", "runs", "training episodes", "env steps", "gradient steps"],
                    rows)
    return out + ["", "Per run, mean over the row's runs (frozen twins excluded). Episodes: the sum of the "
                  "run's per-update episode counts; env steps: updates x train.num_envs x train.rollout_len; "
                  "gradient steps: updates x the agent's gradient steps per update (the registry's grad_steps), "
                  "n/a where the records do not carry it."]


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


def _series_name(r: Run, several_lens: bool) -> str:
    """A learning-curve series inside its method's panel: the label's fields, head, action rule,
    max_len where several, and ``frozen`` for a frozen twin."""
    extra = r.label(variant=False)[len(r.kind):].strip()
    parts = [extra] if extra else []
    parts += [r.head_text()] if r.head else []
    parts += [str(r.action)] if "action" in r.shown and r.action else []
    parts += [f"L{r.max_len}"] if several_lens else []
    return ", ".join(parts + (["frozen"] if r.frozen else [])) or ("frozen" if r.frozen else "trained")


def curves_figure(runs: list[Run], presets: list[str], order):
    """Small multiples of the learning curves: a row of panels per method (and world, where
    several), a column per curve (Len, R_cum, AD, those recorded); in each panel at most
    ``MAX_SERIES`` series (trained, each followed by its frozen twin, dashed, same colour), each
    the mean over seeds with the min-max range shaded. Returns (figure, rows) with rows =
    [(method, world, [series names], series left out)], or (None, why)."""
    from matplotlib.ticker import MaxNLocator

    rs = [r for r in runs if any(r.curves.get(m) for m in CURVE_COLUMNS)]
    cols = [m for m in CURVE_COLUMNS if any(r.curves.get(m) for r in rs)]
    if not cols:
        return None, "no training curves in the records"
    by = defaultdict(list)
    for r in rs:
        by[(r.kind, r.preset)].append(r)
    several_worlds = len({p for _, p in by}) > 1
    keys = sorted(by, key=lambda k: (order.get(k[0], len(order)), k[0],
                                     presets.index(k[1]) if k[1] in presets else len(presets)))
    fig, axes = _new_figure(len(keys), len(cols), 3.6, 2.6)
    out = []
    for i, (kind, p) in enumerate(keys):
        several_lens = len({r.max_len for r in by[(kind, p)]}) > 1
        series, names = defaultdict(list), {}
        for r in by[(kind, p)]:
            key = (r.label_key(), r.max_len, r.frozen)
            series[key].append(r)
            names[key] = _series_name(r, several_lens)
        ordered = sorted(series, key=lambda k: (_row_sort(order)(k[0]), k[1] or 0, k[2]))
        kept, left = ordered[:MAX_SERIES], len(ordered) - min(len(ordered), MAX_SERIES)
        colours = {}
        for j, m in enumerate(cols):
            ax = axes[i][j]
            for key in kept:
                cs = [np.asarray(r.curves[m], dtype=np.float64) for r in series[key] if r.curves.get(m)]
                if not cs:
                    continue
                n = min(len(c) for c in cs)
                arr = np.stack([c[:n] for c in cs])
                x = np.arange(1, n + 1)
                line, = ax.plot(x, np.nanmean(arr, 0), ls="--" if key[2] else "-", lw=1.4,
                                color=colours.get(key[:2]), label=names[key])
                colours.setdefault(key[:2], line.get_color())
                ax.fill_between(x, np.nanmin(arr, 0), np.nanmax(arr, 0), alpha=0.2, color=line.get_color())
            where = f", {p}" if several_worlds else ""
            ax.set_title(f"{kind}{where}: {m}" + (f" (first {MAX_SERIES} of {len(ordered)} series)" if left else ""),
                         fontsize=8)
            ax.set_xlabel("training update", fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        if axes[i][0].get_legend_handles_labels()[0]:
            axes[i][0].legend(fontsize=6, loc="best")
        out.append((kind, p, [names[k] for k in kept], left))
    return fig, out


def _plot_curves(runs: list[Run], presets: list[str], order, path: str) -> str | None:
    """``curves_figure`` saved to ``path``; the reason when there is nothing to draw."""
    fig, rows = curves_figure(runs, presets, order)
    if fig is None:
        return rows
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


# --------------------------------------------------------------------------------------------
# preferences that move ("Preferences that move": env.dynamics = attraction)

DYNAMICS_METRICS = ("J", "R_cum_true", "CTR", "harm", "drift")
MYOPIC = "myopic_topk"  # the reference row the harm paper's planning question is asked against
# Two-sided 95% Student t quantiles by degrees of freedom (the seed intervals; 3 seeds: df 2).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def world_key(config: dict) -> str:
    """The key of a record's world in ``reference.json`` under its preset: the max_len and, with
    preference dynamics, the attraction strengths, so that a sweep over them keeps each world's
    reference rows apart (a static world's key is its max_len, as before)."""
    L = _get(config, "env", "max_len")
    if _get(config, "env", "dynamics", default="none") != "attraction":
        return str(L)
    a = config.get("attraction", {}) or {}
    return " ".join([str(L)] + [f"{k}={float(a.get(k, 0.0)):g}" for k in ("alpha_h", "alpha_nh", "beta")])


def _has_dynamics(r: Run) -> bool:
    return _get(r.config, "env", "dynamics", default="none") == "attraction"


def _static_world(key: str) -> bool:
    """A dynamics world whose attractions are both 0: profiles never move (the static control)."""
    return "alpha_h=0 " in key + " " and "alpha_nh=0 " in key + " "


def interval(d: np.ndarray) -> tuple[float, float, float] | None:
    """(mean, low, high): the two-sided 95% Student t interval of the mean of ``d`` (one value per
    seed); None with fewer than 2 values."""
    d = np.asarray(d, dtype=np.float64)
    if d.size < 2:
        return None
    half = T975.get(d.size - 1, 1.96) * float(np.std(d, ddof=1)) / np.sqrt(d.size)
    return float(np.mean(d)), float(np.mean(d)) - half, float(np.mean(d)) + half


def fmt_interval(d: np.ndarray) -> str:
    iv = interval(d)
    if iv is None:
        return fmt_gain(np.asarray(d, dtype=np.float64))
    m, lo, hi = iv
    return f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]" + (" *" if lo > 0 or hi < 0 else "")


def _by_seed(runs: list[Run], metric: str) -> dict[str, float]:
    return {json.dumps(r.seed): v for r in runs if (v := _metric(r, metric)) is not None}


def planning_rows(trained: list[Run], frozen: list[Run], refs: dict[str, dict]) -> list[dict]:
    """Per method and drifting world: the gain over the myopic reference with drift minus the same
    gain in the static control (per seed, paired by seed), on J and on R_cum_true, and trained
    minus frozen on J in the drifting world. ``refs``: {world_key: reference rows}."""
    twins = {f.twin_key(): f for f in frozen}
    keys = sorted({world_key(r.config) for r in trained})
    static = [k for k in keys if _static_world(k)]
    out = []
    for kind in sorted({r.kind for r in trained}):
        for k in keys:
            if _static_world(k) or len(static) != 1 or MYOPIC not in refs.get(k, {}) or MYOPIC not in refs.get(static[0], {}):
                continue
            drift = [r for r in trained if r.kind == kind and world_key(r.config) == k]
            ctrl = [r for r in trained if r.kind == kind and world_key(r.config) == static[0]]
            row = {"method": kind, "world": k, "control": static[0]}
            for m in ("J", "R_cum_true"):
                d, c = _by_seed(drift, m), _by_seed(ctrl, m)
                seeds = sorted(set(d) & set(c))
                g_d = np.asarray([d[s] - refs[k][MYOPIC][m] for s in seeds])
                g_c = np.asarray([c[s] - refs[static[0]][MYOPIC][m] for s in seeds])
                row[f"gain_{m}"], row[f"control_gain_{m}"], row[f"did_{m}"] = g_d, g_c, g_d - g_c
            row["learning_J"] = _gains(drift, twins, "J")
            out.append(row)
    return out


# a platform with memory ("Worlds with memory": platform.loop = true)
LOOP_METRICS = ("R_cum", "R_cum_true", "gini_pop", "label_flips", "turnover", "user_R_true", "return_rate",
                "user_sessions")


def _has_loop(r: Run) -> bool:
    return bool(_get(r.config, "platform", "loop", default=False))


def constraint_row(runs: list[Run]) -> dict | None:
    """FCPO-style runs (a ``cost`` curve: popular items per slate on the labels the sessions saw):
    the mean cost over the last fifth of the kept updates per seed against the limit alpha' K + 0.5."""
    costs = []
    for r in runs:
        c = np.asarray(r.curves.get("cost") or [], dtype=np.float64)
        kept = np.asarray(r.curves.get("kept") or [1.0] * len(c), dtype=bool)[:len(c)]
        c = c[kept] if kept.any() else c
        if len(c):
            costs.append(float(np.mean(c[-max(1, len(c) // 5):])))
    if not costs:
        return None
    alpha = _get(runs[0].config, "fcpo", "cost_limit")
    k = _get(runs[0].config, "env", "slate_size")
    limit = alpha * k + 0.5
    return {"alpha": alpha, "labels": _get(runs[0].config, "platform", "cost_labels", default="current"),
            "cost": np.asarray(costs), "limit": limit, "within": sum(c <= limit for c in costs), "n": len(costs)}


def _paired(a: list[Run], b: list[Run], metric: str) -> np.ndarray:
    """metric(a) - metric(b) per seed, over the seeds both have."""
    da, db = _by_seed(a, metric), _by_seed(b, metric)
    return np.asarray([da[s] - db[s] for s in sorted(set(da) & set(db))])


def _loop_section(trained: list[Run], frozen: list[Run], order: dict[str, int], presets: list[str]) -> list[str]:
    """The "Worlds with memory" tables: each row's long-term fairness and per-user figures, FCPO's
    constraint on the loop, and the paired difference along a method's one two-valued grid field
    (e.g. ``ppo.gamma`` 0.99 vs 0: does planning pay?)."""
    lines = ["## Worlds with memory", "",
             "Runs with `platform.loop = true` (`purerec.sim.platform`): at the end of the test protocol's "
             "rollout, the Gini of the exposure mass (`gini_pop`; the logs' at the start), label flips and "
             "popular-group turnover; with users who come back (`platform.persist = user`) the per-user total "
             "true reward over `platform.horizon` sessions (`user_R_true`), the return rate and sessions per "
             "user. Δ: trained − frozen twin per seed; intervals are 95% Student t over seeds, `*` where one "
             "excludes 0.", ""]
    twins = {f.twin_key(): f for f in frozen}
    for p in presets:
        tp = [r for r in trained if r.preset == p and _has_loop(r)]
        if not tp:
            continue
        cols = [m for m in LOOP_METRICS if any(_metric(r, m) is not None for r in tp)]
        gain_m = "user_R_true" if "user_R_true" in cols else "R_cum_true"
        by = defaultdict(list)
        for r in tp:
            by[r.label_key()].append(r)
        keys = sorted(by, key=_row_sort(order))
        rows = [[_md_escape(by[k][0].label()), *[mean_std(_values(by[k], m)) for m in cols],
                 fmt_interval(_gains(by[k], twins, gain_m))] for k in keys]
        lines += [f"### World: {p}", ""] + _md_table(["method", *cols, f"Δ{gain_m}"], rows) + [""]
        cons = [(by[k][0].label(), c) for k in keys if (c := constraint_row(by[k])) is not None]
        if cons:
            lines += ["Constrained cost on the loop: mean popular items per slate over the last fifth of training "
                      "(on the labels the sessions saw: the platform's current ones), per seed, against "
                      "alpha' K + 0.5.", ""]
            lines += _md_table(["method", "alpha'", "cost labels", "cost (last fifth)", "limit", "seeds within"],
                               [[_md_escape(n), _fmt(c["alpha"]), c["labels"], mean_std(c["cost"]), _fmt(c["limit"]),
                                 f"{c['within']} / {c['n']}"] for n, c in cons]) + [""]
        pairs = []
        for kind in sorted({r.kind for r in tp}, key=lambda x: order.get(x, 99)):
            mine = [r for r in tp if r.kind == kind]
            varying = {k for r in mine for k, _ in r.fields}
            for fld in sorted(varying):
                vals = sorted({v for r in mine for k, v in r.fields if k == fld}, key=_sort_val)
                if len(vals) != 2 or not all(isinstance(v, (int, float)) for v in vals):
                    continue
                lo = [r for r in mine if dict(r.fields).get(fld) == vals[0]]
                hi = [r for r in mine if dict(r.fields).get(fld) == vals[1]]
                pairs.append([_md_escape(kind), f"{fld} {_fmt_val(vals[1])} − {_fmt_val(vals[0])}",
                              *[fmt_interval(_paired(hi, lo, m)) for m in (gain_m, "R_cum_true", "R_cum")]])
        if pairs:
            lines += ["Paired by seed along a method's two-valued grid field (e.g. a long horizon vs gamma 0):", ""]
            lines += _md_table(["method", "difference", gain_m, "R_cum_true", "R_cum"], pairs) + [""]
    return lines


def _dynamics_section(trained: list[Run], frozen: list[Run], order: dict[str, int], presets: list[str],
                      reference: dict) -> list[str]:
    """The "Preferences that move" tables: each world's dynamics metrics per method, and whether
    planning pays (the harm paper's question, asked of the learners)."""
    lines = ["## Preferences that move", "",
             "Runs with `env.dynamics = attraction`: J = sum_t (p_CLK - lambda p_H) per session, the true "
             "cumulative response R_cum_true, click-through CTR, harm (mean p_H) and the profile's drift; "
             f"reference rows of the same world below each table. `J - {MYOPIC}`: the trained agent minus "
             "the myopic top-k on the current profile (a truth-knowing rule), per seed; intervals are 95% "
             "Student t over seeds, `*` where one excludes 0.", ""]
    for p in presets:
        tp = [r for r in trained if r.preset == p and _has_dynamics(r)]
        fp = [r for r in frozen if r.preset == p and _has_dynamics(r)]
        if not tp:
            continue
        refs = reference.get(p, {}) or {}
        lines += [f"### World: {p}", ""]
        for k in sorted({world_key(r.config) for r in tp}):
            rs = [r for r in tp if world_key(r.config) == k]
            twins = {f.twin_key(): f for f in fp}
            header = ["method", *DYNAMICS_METRICS, f"J - {MYOPIC}", "ΔJ (trained − frozen)"]
            rows = []
            for kind in sorted({r.kind for r in rs}, key=lambda x: order.get(x, 99)):
                mine = [r for r in rs if r.kind == kind]
                gap = "–"
                if MYOPIC in refs.get(k, {}):
                    gap = fmt_interval(_values(mine, "J") - refs[k][MYOPIC]["J"])
                rows.append([_md_escape(kind), *[mean_std(_values(mine, m)) for m in DYNAMICS_METRICS], gap,
                             fmt_interval(_gains(mine, twins, "J"))])
            for name, row in (refs.get(k) or {}).items():
                if "J" in row:
                    rows.append([f"_{_md_escape(name)}_ (reference)",
                                 *[_fmt(row[m]) if m in row else "–" for m in DYNAMICS_METRICS], "–", "–"])
            world = k.split(" ", 1)
            lines += [f"#### max_len {world[0]}" + (f", {world[1]}" if len(world) > 1 else ""), ""]
            lines += _md_table(header, rows) + [""]
        plan = planning_rows(tp, fp, refs)
        if plan:
            lines += ["#### Does planning pay?", "",
                      f"Per seed: (trained − {MYOPIC}) in the drifting world minus the same gain in the static "
                      "control (both attractions 0), on J and on R_cum_true; and trained − frozen on J in the "
                      "drifting world. Planning pays for a method when both differences and the learning gain "
                      "exclude 0 (`*`).", ""]
            rows = []
            for r in plan:
                rows.append([_md_escape(r["method"]), r["world"], fmt_interval(r["gain_J"]),
                             fmt_interval(r["control_gain_J"]), fmt_interval(r["did_J"]), fmt_interval(r["did_R_cum_true"]),
                             fmt_interval(r["learning_J"])])
            lines += _md_table(["method", "drifting world", f"J - {MYOPIC} (drift)", f"J - {MYOPIC} (static)",
                                "difference J", "difference R_cum_true", "ΔJ trained − frozen"], rows) + [""]
            pays = [r["method"] for r in plan if all(
                (iv := interval(r[x])) is not None and iv[1] > 0 for x in ("did_J", "did_R_cum_true", "learning_J"))]
            lines += [("Planning pays (all three intervals above 0) for: " + ", ".join(pays)) if pays else
                      "No method shows planning paying: for none do the J and R_cum_true differences and the "
                      "learning gain all have intervals above 0.", ""]
    return lines


def write_report(sweep_dir: str) -> str:
    """Write ``sweep_dir/report.md`` (atomically) and the PNG plots the data allows; return its path.

    Only records with status ``ok`` enter tables and plots; failed runs are listed at the end with
    their error.

    Rows: a row is a method (the record's ``method`` label, e.g. DSRM-HRL, TD3) *plus the values of any other grid field that
    varies in the sweep* (e.g. ``dsrm_hrl (dsrm.steps=20)``, ``flat (agent.lambda_fair=0.1)``);
    ``env.max_len`` is a column block and the world preset (``config.world.preset``) a separate
    table, so they never enter the label (the env file does only when several env files share a
    preset). The resolved slate head (``head``, with ``slate.tail_share`` under grouped-fixed), the
    action rule (``action``) and the split (``split``) also tell rows apart, shown in the label where
    they vary. Every cell is thus a plain mean over seeds of otherwise identical configs; no run is
    dropped or mixed with a different configuration. Frozen twins (``frozen``: the same config and
    seed with every RL learning rate 0) are no rows: they give the learning gains.

    Tables: Table 2 (all methods) in blocks by the configured ``slate_head`` (native heads = native
    or auto; shared grouped head; shared top-K head), and Table 3 (the method and its ablations, by
    each record's ``table``; only when a world has at least two of them), one per world preset,
    columns ``Len@L | R_each@L | R_cum@L | AD@L`` for every max_len L, cells ``mean ± std`` with the
    population std (``np.std``) over seeds, 4 significant digits. Table 2's blocks add the head and
    action rule of a row, and ``ΔLen@L | ΔR_cum@L`` = trained − frozen twin paired by seed (mean
    [min, max]) where twins exist; the frozen DSRM-HRL under a grouped head is the reference row
    ``Stage I + grouped head, no RL``; under each table, computed findings (``block_findings``).
    Table 4: training wall time per row label and world; then the training budget (episodes, env
    steps, gradient steps). Under the agents, Tables 2 and 3 show the reference policies' rows from
    ``DIR/reference.json`` (same protocol), when the sweep wrote one.

    Plots (written only when the data exists; otherwise the report says why, and a stale file of
    that name from an earlier report is removed):
    ``pareto.png`` (R_cum vs AD across ≥ 2 lambda_fair values, a line per method, a panel per
    world and max_len), ``learning_curves.png`` (``curves_figure``: a row of panels per method,
    Len / R_cum / AD vs training update, mean over seeds with the min-max range, frozen dashed),
    ``diffusion_steps.png`` (Len, R_cum, AD vs K on a log axis, a row per world, needs ≥ 2 K).
    Plots use matplotlib's Agg canvas (no pyplot state); ImportError if matplotlib is missing.
    """
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as e:
        raise ImportError("purerec.report.tables needs matplotlib for its plots: pip install purerec[plots]") from e

    spec, records, unreadable = _load(sweep_dir)
    reference = {}  # written by the sweep: the reference policies' rows per world and max_len
    try:
        with open(os.path.join(sweep_dir, "reference.json")) as fh:
            reference = json.load(fh)
    except (OSError, ValueError):
        pass
    ok, varying, order, presets = _runs_of(spec, records)
    failed = [r for r in records if r.get("status") != "ok"]
    trained, frozen = [r for r in ok if not r.frozen], [r for r in ok if r.frozen]

    name = spec.get("name") or os.path.basename(os.path.normpath(sweep_dir))
    lines = [f"# Sweep report: {name}", ""]
    if spec.get("budget"):
        lines.append(f"- budget: {spec['budget']} (budget factor {spec.get('budget_factor', 1.0)})")
    grid = spec.get("grid")
    for g in (grid if isinstance(grid, list) else [grid] if grid else []):
        lines.append("- grid: " + ", ".join(f"`{k}` = {v}" for k, v in g.items()))
    if spec.get("seeds"):
        lines.append(f"- seeds: {list(spec['seeds'])}")
    lines.append(f"- runs: {len(ok)} ok ({len(frozen)} of them frozen twins), {len(failed)} failed"
                 if frozen else f"- runs: {len(ok)} ok, {len(failed)} failed"
                 + (f", {len(unreadable)} unreadable record file(s)" if unreadable else ""))
    ad_forms = sorted({str(_get(r, "config", "eval", "ad_form")) for r in records if r.get("status") == "ok"})
    if ad_forms:
        lines.append(f"- AD form: {', '.join(ad_forms)}")
    for what, vals in (("evaluation split", {r.split for r in ok}), ("action rule", {r.action for r in ok})):
        if vals - {None}:
            lines.append(f"- {what}: {', '.join(sorted(str(v) for v in vals))}")
    if varying:
        lines.append("- row labels carry the other varying grid fields: " + ", ".join(f"`{v}`" for v in varying))
    lines.append("")

    if not ok:
        lines += ["No successful runs: no tables or plots.", ""]
    else:
        lens = sorted({r.max_len for r in ok}, key=lambda x: (x is None, x or 0))
        lines += ["## Table 2: main results", "",
                  "In blocks by the configured slate head (`slate.head`): native heads (native or auto), the "
                  "shared grouped head, the shared top-K head. Frozen twins (every RL learning rate 0) are not "
                  "rows; they give the learning gains Δ.", ""]
        for title, _ in BLOCKS:
            tr = [r for r in trained if _block_of(r) == title]
            fr = [r for r in frozen if _block_of(r) == title]
            if not tr and not any(_is_stage1(f) for f in fr):
                continue
            lines += [f"### {title}", ""]
            main = [r for r in tr if r.table in ("method", "baseline")]
            for L in (lens if main else []):
                lines += [f"#### The paper's layout, max_len {L}", "",
                          "The method and the baselines, grouped by family; a column block per world.", ""]
                lines += _paper_table(main, order, presets, L, reference) + [""]
            lines += ["Every row of the block, one table per world:", ""]
            for p in presets:
                tp, fp = [r for r in tr if r.preset == p], [r for r in fr if r.preset == p]
                if tp or any(_is_stage1(f) for f in fp):
                    lines += [f"#### World: {p}", ""] + _block_table(tp, fp, order, lens, reference.get(p)) + [""]

        abl_tables = []
        abl = [r for r in trained if _is_ablation(r)]
        if len({r.kind for r in abl}) >= 2:
            for L in lens:
                abl_tables += [f"### The paper's layout, max_len {L}", ""]
                abl_tables += _paper_table(abl, order, presets, L, reference) + [""]
        for p in presets:
            rs = [r for r in trained if r.preset == p and _is_ablation(r)]
            if len({r.kind for r in rs}) >= 2:
                abl_tables += [f"### World: {p}", ""] + _results_table(rs, order, reference.get(p)) + [""]
        if abl_tables:
            lines += ["## Table 3: ablations", "",
                      "The method and its ablations (rows whose record's table is `method` or `ablation`).",
                      ""] + abl_tables

        if any(_has_dynamics(r) for r in trained):
            lines += _dynamics_section(trained, frozen, order, presets, reference)
        if any(_has_loop(r) for r in trained):
            lines += _loop_section(trained, frozen, order, presets)
        lines += ["## Table 4: training wall time", ""] + _timing_table(trained, order, presets) + [""]
        lines += ["## Training budget", ""] + _budget_table(trained, order, presets) + [""]

    lines += ["## Figures", ""]
    plotters = {"pareto.png": ("Accuracy-fairness Pareto front (R_cum vs AD; a point per run, lines along each "
                               "method's trade-off knob)", _plot_pareto),
                "learning_curves.png": ("Learning curves: a row per method, mean over seeds with the min-max "
                                        "range shaded; frozen twins dashed", _plot_curves),
                "diffusion_steps.png": ("Diffusion-step sensitivity (Len, R_cum, AD vs K)", _plot_diffusion)}
    for fname in PLOTS:
        title, fn = plotters[fname]
        path = os.path.join(sweep_dir, fname)
        # the curves show frozen twins (dashed) beside their trained runs; the other plots trained runs only
        why = fn(ok if fn is _plot_curves else trained, presets, order, path) if ok else "no successful runs"
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
        print("usage: python -m purerec.report.tables SWEEP_DIR", file=sys.stderr)
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
              ("manager_entropy", "manager policy entropy"),
              # on a platform with memory (platform.loop): the long-term fairness course
              ("gini_pop", "Gini of the exposure mass"), ("gini_window", "exposure Gini, last relabel window"),
              ("label_flips", "popular labels flipped"), ("turnover", "popular-group turnover"),
              ("constraint", "constrained cost - limit (FCPO)"))


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
