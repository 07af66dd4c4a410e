"""Typed configuration: dataclasses loaded from TOML, overridable from the command line.

Every section is a frozen dataclass with a ``validate`` method; ``load_config`` validates the
whole tree once, at the edge, so nothing downstream re-checks values. Errors name the field
(``section.field``), the value given and the allowed range.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from purerec.core.errors import ConfigError, PurerecError  # noqa: F401
from purerec.core.fields import (  # re-exported (__all__)
    traced, MAX_SESSIONS, MAX_BATCH, MAX_WORLD, _finite, _check, Sections,
)
from purerec.data.sections import (  # re-exported (__all__)
    WORLD_SOURCES, PRESETS, WorldConfig,
)
from purerec.sim.sections import (  # re-exported (__all__)
    EXIT_RULES, FAIR_SCOPES, AD_FORMS, FeedbackConfig, EnvConfig, DYNAMICS, DRIFT_MODES, DRIFT_BLOCKS,
    HARM_REWARDS, AttractionConfig, COST_LABELS, PlatformConfig,
)
from purerec.state.sections import (  # re-exported (__all__)
    SCHEDULES, DSRM_TARGETS, REVERSE_STARTS, AGENT_KINDS, AGENT_ALIASES, AGENTS, PURIFIERS, DENOISERS,
    DEFAULT_PURIFIER, EncoderConfig, DSRMConfig, StateConfig, resolve_agent, DenoiseConfig,
)
from purerec.agents.sections import (  # re-exported (__all__)
    AGENT_ACTIONS, SLATE_HEADS, SLATE_TAILS, SCORES, FAIR_REWARDS, AgentConfig, SlateConfig, PPOConfig,
    ReplayConfig, A2CConfig, TD3Config, DNaIRConfig, SAC4IRConfig, OfflineConfig, BCQConfig,
    DORLConfig, MOFIRConfig, FCPO_COSTS, DISCRETE_SLATE_AGENTS, FCPOConfig, HSRL_UPDATES, HSRLConfig,
)
from purerec.run.sections import (  # re-exported (__all__)
    EVAL_PROTOCOLS, EVAL_ACTIONS, EVAL_SPLITS, EvalConfig, SEED_BATCHING, DEFAULT_SESSION_SHARDS,
    STAGE1_BEHAVIOURS, TrainConfig,
)


@dataclass(frozen=True)
class Config:
    world: WorldConfig = field(default_factory=WorldConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    attraction: AttractionConfig = field(default_factory=AttractionConfig)
    platform: PlatformConfig = field(default_factory=PlatformConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    dsrm: DSRMConfig = field(default_factory=DSRMConfig)
    state: StateConfig = field(default_factory=StateConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    slate: SlateConfig = field(default_factory=SlateConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    a2c: A2CConfig = field(default_factory=A2CConfig)
    td3: TD3Config = field(default_factory=TD3Config)
    dnair: DNaIRConfig = field(default_factory=DNaIRConfig)
    sac4ir: SAC4IRConfig = field(default_factory=SAC4IRConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    bcq: BCQConfig = field(default_factory=BCQConfig)
    dorl: DORLConfig = field(default_factory=DORLConfig)
    mofir: MOFIRConfig = field(default_factory=MOFIRConfig)
    fcpo: FCPOConfig = field(default_factory=FCPOConfig)
    hsrl: HSRLConfig = field(default_factory=HSRLConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        for f in dataclasses.fields(self):
            _finite(getattr(self, f.name), f.name)
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if f.name == "env":
                section.validate(n_items=min(self.world.n_items, self.world.n_test_items))
            else:
                section.validate()
        if self.platform.persist == "user":
            _check(self.platform.loop and self.env.dynamics == "attraction", "platform.persist",
                   self.platform.persist, "'none' unless platform.loop = true and env.dynamics = 'attraction' "
                   "(the profiles users come back with are the platform's and move only under attraction)")
        if self.agent.action == "plackett_luce" and resolve_agent(agent_id(self))[0] in ("hrl", "flat"):
            from purerec.agents.heads import resolve  # the registry's default heads (imports no config)

            _check(resolve(view(self, HEAD_SECTIONS)).rule == "topk", "slate.head", self.slate.head,
                   "'topk' or 'native' with agent.action = 'plackett_luce' (slates sampled over all items "
                   "have no group quota)")
        batch = self.train.num_envs * self.train.rollout_len
        for name in ("ppo", "a2c"):
            mbs = getattr(self, name).minibatches
            _check(batch % mbs == 0, f"{name}.minibatches", mbs, f"a divisor of num_envs * rollout_len ({batch})")
        s = self.train.session_shards
        if s > 1:
            _check(shards_fit(self, s), "train.session_shards", s,
                   f"a divisor of train.num_envs ({self.train.num_envs}) that leaves each shard a whole share "
                   f"of every minibatch (num_envs / shards * rollout_len divisible by ppo.minibatches)")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Sections every run reads; an agent adds the ones it declares (``AgentSpec.sections``).
SHARED_SECTIONS = ("world", "feedback", "env", "eval", "encoder", "state", "agent", "slate", "train")


def run_sections(cfg: Config, agent_sections: tuple[str, ...]) -> tuple[str, ...]:
    """The config sections a run depends on: the shared ones, dsrm with that purifier, the agent's."""
    purifier = resolve_agent(agent_id(cfg))[1]
    extra = ("dsrm",) if purifier == "dsrm" else ("denoise",) if purifier in DENOISERS else ()
    dyn = ("attraction",) if cfg.env.dynamics == "attraction" else ()
    dyn += ("platform",) if cfg.platform.loop else ()
    return SHARED_SECTIONS + dyn + extra + tuple(agent_sections)


def env_identity(cfg: Config) -> dict:
    """The env section as run ids and cache keys see it: ``env.dynamics`` (and the [attraction]
    section) only when the dynamics are on, the [platform] section only when its loop is on, so the default world's ids and keys are those from
    before the option existed (opt-in dynamics leave everything already computed valid)."""
    d = dataclasses.asdict(cfg.env)
    if cfg.env.dynamics == "none":
        d.pop("dynamics")
    else:
        d["attraction"] = dataclasses.asdict(cfg.attraction)
    if cfg.platform.loop:  # likewise the platform state ("Worlds with memory")
        d["platform"] = dataclasses.asdict(cfg.platform)
    return d


@functools.lru_cache(maxsize=None)
def _view_type(fields: tuple[tuple[str, type], ...]) -> type:
    return dataclasses.make_dataclass("Sections", list(fields), bases=(Sections,), frozen=True)


def view(cfg: Any, names: tuple[str, ...]) -> Sections:
    """The sections ``names`` of ``cfg`` (a ``Config`` or a wider view) as a ``Sections``."""
    names = tuple(dict.fromkeys(names))
    values = {n: getattr(cfg, n) for n in names}
    return _view_type(tuple((n, type(v)) for n, v in values.items()))(**values)


# The views the run layer hands the layers below (each names what that component reads).
ENV_SECTIONS = ("env", "feedback", "attraction", "platform")  # sim.env.make_params, the reference policies
WORLD_SECTIONS = ("world", "feedback", "env", "attraction")  # data.datasets.get_worlds (and its cache key)
AGENT_ID_SECTIONS = ("agent", "state")  # the registry: kind and purifier (``resolve_agent``)
HEAD_SECTIONS = ("slate", "agent", "state")  # agents.heads.resolve: the static slate head
EVAL_WORLD_SECTIONS = ("world", "eval")  # data.validation.eval_world
MEMORY_SECTIONS = ("world", "env", "eval", "train", "replay")  # core.memory's run estimate


def env_sections(cfg: Any) -> Sections:
    return view(cfg, ENV_SECTIONS)


def world_sections(cfg: Any) -> Sections:
    return view(cfg, WORLD_SECTIONS)


def agent_id(cfg: Any) -> Sections:
    return view(cfg, AGENT_ID_SECTIONS)


# What the state layer reads besides the shared sections: the purifier's and the denoisers' own
# sections (their networks are built, with their initial values, whichever purifier a run uses).
STATE_SECTIONS = ("encoder", "dsrm", "denoise", "state")


def component_sections(cfg: Any, agent_sections: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The sections an agent (with its own ``agent_sections``) and Stage I read: the run's sections
    (``run_sections``) and the state layer's (``STATE_SECTIONS``)."""
    return tuple(dict.fromkeys(run_sections(cfg, agent_sections) + STATE_SECTIONS + ("attraction", "platform")))


def traced_paths(cfg: Config, sections: tuple[str, ...]) -> tuple[str, ...]:
    """Dotted paths of the fields declared ``traced`` in ``sections``."""
    out = []
    for name in sections:
        for f in dataclasses.fields(getattr(cfg, name)):
            if f.metadata.get("traced"):
                out.append(f"{name}.{f.name}")
    return tuple(out)


def shards_fit(cfg: Config, shards: int) -> bool:
    """Whether ``shards`` devices can split the sessions and every PPO minibatch evenly."""
    t = cfg.train
    return t.num_envs % shards == 0 and (t.num_envs // shards * t.rollout_len) % cfg.ppo.minibatches == 0


def resolve_session_shards(cfg: Config, most: int = DEFAULT_SESSION_SHARDS) -> Config:
    """``train.session_shards = 0`` -> the most shards (<= ``most``) that split the batch evenly;
    a set value is kept. Callers pass 1 for agents that do not split their sessions and, over
    several processes, the global device count (``purerec.run.experiment.run``)."""
    if cfg.train.session_shards:
        return cfg
    shards = max(s for s in range(1, most + 1) if shards_fit(cfg, s))
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, session_shards=shards))


def _convert(value: Any, tp: Any, name: str) -> Any:
    """Coerce a TOML or command-line value to the field's declared type."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(name, value, "true or false")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(name, value, f"a number of type {tp.__name__}")
        try:
            x = float(value)
            if tp is int:
                if not x.is_integer():
                    raise ValueError
                return int(x)
            return x
        except (TypeError, ValueError):
            raise ConfigError(name, value, f"a number of type {tp.__name__}") from None
    if tp is str:
        return str(value)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_convert(v, inner, name) for v in value)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        return _convert(value, args[0], name)
    return value


def _section_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _apply(cfg: Any, updates: dict[str, Any], prefix: str) -> Any:
    hints = _section_types(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(full, value, f"unknown field; known fields: {sorted(names)}")
        sub = getattr(cfg, key)
        if dataclasses.is_dataclass(sub):
            if not isinstance(value, dict):
                raise ConfigError(full, value, "a TOML table")
            changes[key] = _apply(sub, value, f"{full}.")
        else:
            changes[key] = _convert(value, hints[key], full)
    return dataclasses.replace(cfg, **changes)


def field_paths(cfg: Any, prefix: str = "") -> dict[str, str]:
    """Map every leaf field's dotted path (``env.max_len``) to itself and short aliases."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(cfg):
        sub = getattr(cfg, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(sub):
            out.update(field_paths(sub, f"{path}."))
        else:
            out[path] = path
    return out


ALIASES = {"diffusion_steps": "dsrm.steps", "agent": "agent.kind", "lambda": "agent.lambda_fair"}


def resolve_override_name(cfg: Any, name: str) -> str:
    """Turn ``max-len`` or ``env.max_len`` into a dotted field path; ambiguity is an error."""
    key = name.replace("-", "_")
    key = ALIASES.get(key, key)
    paths = field_paths(cfg)
    if key in paths:
        return key
    hits = [p for p in paths if p.split(".")[-1] == key]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ConfigError(name, None, f"ambiguous; write one of {hits}")
    raise ConfigError(name, None, "no such config field; see `python train.py --help-config`")


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Apply ``{"env.max_len": "50", ...}`` (dotted or short names) to a config."""
    nested: dict[str, Any] = {}
    for name, value in overrides.items():
        path = resolve_override_name(cfg, name).split(".")
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return _apply(cfg, nested, "")


def load_toml(path: str, what: str = "--env") -> dict:
    """A TOML file as a dict; ``what`` names the option or spec the file came from in errors."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except IsADirectoryError:
        raise ConfigError(what, path, "a TOML file, not a directory") from None
    except FileNotFoundError:
        raise ConfigError(what, path, "an existing TOML file (see envs/ and sweeps/)") from None
    except UnicodeDecodeError:
        raise ConfigError(what, path, "a UTF-8 TOML text file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(what, path, f"valid TOML ({e})") from None


def load_config(path: str | None = None, overrides: dict[str, Any] | None = None,
                base: Any = None) -> Any:
    """Defaults <- TOML file <- overrides, then validate once."""
    cfg = base if base is not None else Config()
    if path:
        data = load_toml(path)
        data.pop("meta", None)
        if not data:
            raise ConfigError("--env", path, "an environment spec with at least one section (e.g. [world], [env]); "
                              "the file is empty -- see envs/kuairec.toml")
        cfg = _apply(cfg, data, "")
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg.validate()


# The names this module gives users: its own and those of the sections modules it composes.
__all__ = [
    'ConfigError', 'PurerecError', 'traced', 'MAX_SESSIONS', 'MAX_BATCH', 'MAX_WORLD', '_finite', '_check',
    'WORLD_SOURCES', 'PRESETS', 'WorldConfig', 'EXIT_RULES', 'FAIR_SCOPES', 'AD_FORMS', 'FeedbackConfig',
    'EnvConfig', 'DYNAMICS', 'DRIFT_MODES', 'DRIFT_BLOCKS', 'HARM_REWARDS', 'AttractionConfig', 'COST_LABELS', 'PlatformConfig', 'SCHEDULES',
    'DSRM_TARGETS', 'REVERSE_STARTS', 'AGENT_KINDS', 'AGENT_ALIASES', 'AGENTS', 'PURIFIERS', 'DENOISERS',
    'DEFAULT_PURIFIER', 'EncoderConfig', 'DSRMConfig', 'StateConfig', 'resolve_agent', 'DenoiseConfig',
    'AGENT_ACTIONS', 'SLATE_HEADS', 'SLATE_TAILS', 'SCORES', 'FAIR_REWARDS', 'AgentConfig', 'SlateConfig',
    'PPOConfig', 'ReplayConfig', 'A2CConfig', 'TD3Config', 'DNaIRConfig', 'SAC4IRConfig', 'OfflineConfig',
    'BCQConfig', 'DORLConfig', 'MOFIRConfig', 'FCPO_COSTS', 'DISCRETE_SLATE_AGENTS', 'FCPOConfig', 'HSRL_UPDATES',
    'HSRLConfig',
    'EVAL_PROTOCOLS', 'EVAL_ACTIONS', 'EVAL_SPLITS', 'EvalConfig', 'SEED_BATCHING', 'DEFAULT_SESSION_SHARDS',
    'STAGE1_BEHAVIOURS', 'TrainConfig', 'Config', 'SHARED_SECTIONS', 'run_sections', 'env_identity', 'Sections',
    'view', 'ENV_SECTIONS', 'WORLD_SECTIONS', 'AGENT_ID_SECTIONS', 'HEAD_SECTIONS',
    'EVAL_WORLD_SECTIONS', 'MEMORY_SECTIONS', 'env_sections', 'world_sections', 'agent_id', 'STATE_SECTIONS',
    'component_sections', 'traced_paths', 'shards_fit', 'resolve_session_shards', '_convert', '_section_types',
    '_apply', 'field_paths', 'ALIASES', 'resolve_override_name', 'apply_overrides', 'load_toml', 'load_config'
]
