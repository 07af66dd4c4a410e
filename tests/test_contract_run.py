"""The whole-run contract every registered agent keeps (``purerec.run.experiment.run``): no
recompilation between chunks; the evaluation compiles once per run (nothing for a second seed); a
run killed after its first chunk and resumed from the checkpoint gives the same numbers, curves and
evaluation as the uninterrupted run (same seed, same config -> same numbers). Its own file so that
test workers share the contract tests out (``--dist loadfile``)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import small_config
from purerec.agents import REGISTRY
from purerec.config import apply_overrides
from purerec.run.experiment import run

KINDS = list(REGISTRY)


def contract_config(kind: str, seeds=(1,)):
    cfg = small_config()
    return apply_overrides(cfg, {
        "agent.kind": kind, "train.num_envs": 16, "train.rollout_len": 8, "train.total_updates": 2,
        "train.chunk_updates": 1, "train.stage1_sessions": 32, "train.seeds": list(seeds), "train.run_dir": "unused",
        "train.target_episodes": 0, "encoder.train_steps": 20, "dsrm.steps": 3, "dsrm.train_steps": 10,
        "dsrm.hidden": 32, "replay.capacity": 1024, "replay.batch_size": 32, "replay.min_size": 64,
        "replay.grad_steps": 4, "ppo.minibatches": 2, "a2c.minibatches": 2, "eval.n_sessions": 32,
        "eval.repeats": 1}).validate()


def _lines(path):
    with open(path) as fh:
        return [json.loads(ln) for ln in fh]


# The fast tier runs the whole-run contract for HRL (the most programs: Stage I with DSRM's data,
# two PPO levels, session shards) and its resume; the slow tier for every agent.
FAST_RUN_KINDS = ("hrl",)
RUN_KINDS = [k if k in FAST_RUN_KINDS else pytest.param(k, marks=pytest.mark.slow) for k in KINDS]


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_run_contract_resume_recompiles_and_evaluation(kind, tmp_path, small_worlds):
    cfg = contract_config(kind, seeds=(1, 2))
    quiet = dict(progress=False, log=lambda *a: None)
    d = str(tmp_path / "run")
    res = run(cfg, run_dir=d, **quiet)
    assert res["recompiles_in_loop"] == 0  # the second chunk reused the first chunk's program
    assert res["eval_compiles_per_seed"][1] == 0 < res["eval_compiles_per_seed"][0]
    assert res["updates"] == 2 and res["method"] == REGISTRY[res["kind"]].row_label(res["purifier"])
    first = _lines(os.path.join(d, "metrics.jsonl"))
    # Kill after the first chunk: the last checkpoint and the results are lost.
    shutil.rmtree(os.path.join(d, "checkpoints", "2"))
    os.remove(os.path.join(d, "results.json"))
    res2 = run(cfg, run_dir=d, resume=True, **quiet)
    assert _lines(os.path.join(d, "metrics.jsonl")) == first
    assert res2["per_seed"] == res["per_seed"] and res2["test"] == res["test"]
