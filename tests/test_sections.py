"""Components below ``purerec.run`` receive a view of the sections they read, not the whole
Config (issue "The house"): ``config.view`` and what ``run.loop.make_train`` hands the agent and
Stage I. Traced with ``jax.eval_shape`` (nothing is compiled)."""

from __future__ import annotations

import dataclasses

import jax
import pytest

from purerec import agents
from purerec.config import AGENT_KINDS, apply_overrides, component_sections, Config, Sections, view
from purerec.run import loop
from purerec.state import stage1 as stage1_mod

from conftest import small_config


def test_a_view_holds_only_its_sections():
    cfg = small_config()
    v = view(cfg, ("env", "ppo", "env"))
    assert isinstance(v, Sections) and not isinstance(v, Config)
    assert [f.name for f in dataclasses.fields(v)] == ["env", "ppo"]
    assert v.env is cfg.env and v.ppo is cfg.ppo
    with pytest.raises(AttributeError):
        v.td3  # noqa: B018  (a section it does not hold)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.env = cfg.env
    assert view(v, ("env",)).env is cfg.env  # a narrower view of a view
    assert view(cfg, ("env", "ppo")) == v and hash(view(cfg, ("env", "ppo"))) == hash(v)


@pytest.mark.parametrize("kind", AGENT_KINDS + ("dsrm_hrl", "hrl_bod"))
def test_make_train_hands_every_agent_its_sections_only(kind, small_cfg, small_params, monkeypatch):
    cfg = apply_overrides(small_cfg, {"agent.kind": kind, "train.num_envs": 8, "train.rollout_len": 4,
                                      "ppo.minibatches": 1, "a2c.minibatches": 1, "train.stage1_sessions": 8})
    spec = agents.spec_of(cfg)
    seen = {}
    real_make, real_stage1 = spec.make, stage1_mod.make_stage1

    def spy_make(c, *a, **k):
        seen["agent"] = c
        return real_make(c, *a, **k)

    def spy_stage1(c, *a, **k):
        seen["stage1"] = c
        return real_stage1(c, *a, **k)

    monkeypatch.setattr(type(spec), "make", property(lambda self: spy_make))
    monkeypatch.setattr(loop, "make_stage1", spy_stage1)
    fns = loop.make_train(cfg, small_params)
    for who in ("agent", "stage1"):
        assert isinstance(seen[who], Sections) and not isinstance(seen[who], Config), who
    own = set(spec.sections)
    held = {f.name for f in dataclasses.fields(seen["agent"])}
    assert held == set(component_sections(cfg, spec.sections)) and own <= held
    others = {f.name for f in dataclasses.fields(Config)} - held
    assert others, "the view should leave out at least one section (another agent's)"
    # The whole program traces with the views: no agent reads a section it did not declare.
    key = jax.random.PRNGKey(0)
    frozen, state, logs, _ = jax.eval_shape(fns.train, key)
    assert "episodes" in logs


@pytest.mark.slow  # a profiled run compiles slowly (~60 s); the watch's own check below stays fast
def test_no_component_below_run_receives_the_whole_config(tmp_path):
    """A whole small run (worlds, Stage I, training, evaluation with the untrained twin, records)
    and the reference rows,
    watched by a profiler: no function of a module below ``purerec.run`` is called with a ``Config``
    argument (the run layer hands each the view of what it reads)."""
    import os
    import sys
    import threading

    import purerec
    from purerec.config import apply_overrides
    from purerec.run.evaluation import reference_rows
    from purerec.run.experiment import run

    src = os.path.dirname(purerec.__file__)
    below = tuple(os.path.join(src, p) + os.sep for p in ("core", "sim", "data", "state", "agents", "report"))
    hits = set()

    def watch(frame, event, arg):
        if event != "call" or not frame.f_code.co_filename.startswith(below):
            return
        code = frame.f_code
        for name in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]:
            if isinstance(frame.f_locals.get(name), Config):
                hits.add(f"{os.path.relpath(code.co_filename, src)}:{code.co_name}({name})")

    cfg = small_config()
    cfg = apply_overrides(cfg, {
        "agent.kind": "dsrm_hrl", "train.num_envs": 16, "train.rollout_len": 4, "train.total_updates": 1,
        "train.chunk_updates": 1, "train.seeds": [1], "train.stage1_sessions": 16, "encoder.train_steps": 5,
        "dsrm.steps": 3, "dsrm.train_steps": 5, "eval.n_sessions": 16, "eval.repeats": 1, "ppo.minibatches": 1,
        "train.target_episodes": 0}).validate()
    sys.setprofile(watch)
    threading.setprofile(watch)
    try:
        res = run(cfg, run_dir=str(tmp_path / "r"), progress=False, log=lambda *a: None)
        reference_rows(cfg)  # the reference rows' cache key and worlds, as train.py and sweeps ask for them
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    assert res["updates"] == 1
    assert not hits, f"called with the whole Config: {sorted(hits)}"


def test_the_watch_sees_a_whole_config(small_cfg):
    """The profiler check above can fail: a direct call with the Config is reported."""
    import os
    import sys

    import purerec
    from purerec.sim import env as E

    src = os.path.dirname(purerec.__file__)
    seen = []

    def watch(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(os.path.join(src, "sim")):
            code = frame.f_code
            if any(isinstance(frame.f_locals.get(n), Config) for n in code.co_varnames[:code.co_argcount]):
                seen.append(code.co_name)

    from purerec.data.datasets import get_worlds
    from purerec.config import world_sections

    world = get_worlds(world_sections(small_cfg), use_cache=False)[1]
    sys.setprofile(watch)
    try:
        E.make_params(world, small_cfg)
    finally:
        sys.setprofile(None)
    assert seen == ["make_params"]


def test_every_field_has_a_one_line_help_and_help_config_prints_it(capsys):
    from purerec.cli import main
    from purerec.core.fields import field_docs

    cfg = Config()
    for sec in dataclasses.fields(cfg):
        cls = type(getattr(cfg, sec.name))
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            h = docs.get(f.name, "")
            assert h and "\n" not in h and len(h) <= 120, f"{sec.name}.{f.name}: help {h!r}"
    assert main(["--help-config"]) == 0
    out = capsys.readouterr().out
    assert "--ppo.actor-lr" in out and field_docs(type(cfg.ppo))["actor_lr"] in out
    assert "[attraction]" in out and out.count("\n  --") + 1 >= sum(len(dataclasses.fields(getattr(cfg, s.name)))
                                                                    for s in dataclasses.fields(cfg))


def test_field_docs_reads_the_docstring_under_each_field():
    from dataclasses import dataclass

    from purerec.core.fields import field_docs

    @dataclass(frozen=True)
    class Probe:
        a: int = 1
        """The a."""
        b: float = 2.0
        c: str = "x"
        """The c."""

    assert field_docs(Probe) == {"a": "The a.", "c": "The c."}
