"""Hyperparameter selection on the validation split, written as checked-in config files.

``python train.py tune sweeps/tune/<world>.toml`` runs a tuning sweep (``tune = true``: every run
evaluates on ``eval.split = validation``, with tuning seeds disjoint from the reporting seeds;
``purerec.run.sweep`` refuses anything else) and then ``choose`` picks, per world preset and agent, the
grid point and action rule (greedy / sample) with the best mean validation R_cum over the tuning
seeds. Each choice is written to ``<tuned_dir>/<preset>/<agent>.toml``: a ``[chosen]`` table of
dotted overrides (the grid fields and ``eval.action``) and, as comments, the command that chose it
and every candidate's validation figures. A sweep with ``tuned = "sweeps/tuned"`` applies them as
the agents' defaults before its own grid (``purerec.run.sweep.tuned_overrides``).

Only the validation split is ever read here: a record from another split is an error.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np

from purerec.core.errors import SweepSpecError

CRITERION = "R_cum"  # session return: length and per-step reward together
# Grid fields that are not hyperparameters of the learner (they stay the sweep's choice).
NOT_TUNED = ("env", "frozen", "agent.kind")


def _toml_value(v) -> str:
    return json.dumps(v) if isinstance(v, (str, bool)) else repr(v) if isinstance(v, float) else str(v)


def candidates(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """{(preset, agent): [{"point", "action", "Len", "R_cum", "AD", "seeds"}]} from a tuning sweep's
    records (ok, trained, validation split), mean over seeds per (point, action)."""
    by: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("status") != "ok" or r.get("frozen"):
            continue
        split = r.get("split", r.get("config", {}).get("eval", {}).get("split"))
        if split != "validation":
            raise SweepSpecError(f"run {r.get('run_id')}: evaluated on the {split!r} split; hyperparameters are "
                                 f"chosen on the validation split only")
        cfg = r["config"]
        key = (cfg["world"]["preset"], cfg["agent"]["kind"])
        point = {k: v for k, v in r["point"].items() if k not in NOT_TUNED}
        for action, m in r.get("metrics_by_action", {r.get("action", cfg["eval"]["action"]): r["metrics"]}).items():
            by[key][(json.dumps(point, sort_keys=True), action)].append((r["seed"], m))
    out = {}
    for key, cands in by.items():
        rows = []
        for (point, action), per_seed in cands.items():
            rows.append({"point": json.loads(point), "action": action, "seeds": sorted(s for s, _ in per_seed),
                         **{k: float(np.mean([m[k] for _, m in per_seed])) for k in ("Len", "R_cum", "AD")}})
        out[key] = sorted(rows, key=lambda c: -c[CRITERION])
    return out


def choose(records: list[dict], tuned_dir: str, command: str) -> list[str]:
    """Write the best candidate per (preset, agent) to ``tuned_dir``; return the files written."""
    from purerec.core.atomic import atomic_write

    written = []
    for (preset, agent), rows in sorted(candidates(records).items()):
        best = rows[0]
        chosen = {**best["point"], "eval.action": best["action"]}
        lines = [f"# {agent} on the {preset}-like world: chosen on the validation split by", f"#   {command}",
                 f"# criterion: the highest mean validation {CRITERION} over the tuning seeds {best['seeds']};",
                 f"# {len({json.dumps(r['point'], sort_keys=True) for r in rows})} configurations x "
                 f"{len({r['action'] for r in rows})} action rule(s) searched. Every candidate (validation "
                 f"Len / R_cum / AD):"]
        for r in rows:
            pt = ", ".join(f"{k}={v}" for k, v in r["point"].items()) or "(defaults)"
            lines.append(f"#   {pt}, {r['action']}: {r['Len']:.2f} / {r['R_cum']:.2f} / {r['AD']:.3f}")
        lines += ["", "[chosen]"] + [f'"{k}" = {_toml_value(v)}' for k, v in chosen.items()] + [""]
        path = os.path.join(tuned_dir, preset, f"{agent}.toml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda fh, text="\n".join(lines): fh.write(text))
        written.append(path)
    return written
