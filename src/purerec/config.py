"""Typed configuration: dataclasses loaded from TOML, overridable from the command line.

Every section is a frozen dataclass with a ``validate`` method; ``load_config`` validates the
whole tree once, at the edge, so nothing downstream re-checks values. Errors name the field
(``section.field``), the value given and the allowed range.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

EXIT_RULES = ("temper", "tag_repeat", "none")
FAIR_SCOPES = ("slate", "session")
AD_FORMS = ("exposure", "item")
WORLD_SOURCES = ("synthetic", "kuairec", "kuairand", "csv")
PRESETS = ("kuairec", "kuairand")


from purerec.core.errors import PurerecError


class ConfigError(PurerecError, ValueError):
    """A config value is out of range; the message names the field and the fix."""

    def __init__(self, field_name: str, value: Any, allowed: str):
        self.field = field_name
        super().__init__(f"config field '{field_name}' = {value!r} is invalid: {allowed}")


def traced(default: Any, rate: bool = False) -> Any:
    """A field whose value is a traced array in the compiled program (rejax's habit): runs that
    differ only in such fields share one program in a sweep (``traced_paths``). ``rate``: a step
    size of the learner that is not named ``*lr`` (e.g. FCPO's trust region): 0 freezes it, like
    a learning rate (``purerec.run.hyper.learning_rate_paths``)."""
    return field(default=default, metadata={"traced": True, "rate": rate})


# Upper bounds on sizes that are allocated at once (a typo such as num_envs = 100000000 must not
# take the host's memory before anything fails).
MAX_SESSIONS = 65536
MAX_BATCH = 2**21  # env steps held per update (num_envs x rollout_len)
MAX_WORLD = 5_000_000  # users or items of a world


def _finite(section: Any, prefix: str) -> None:
    """Every float (and tuple-of-float) field of a section is finite: NaN / inf are errors."""
    for f in dataclasses.fields(section):
        v = getattr(section, f.name)
        vals = v if isinstance(v, tuple) else (v,)
        for x in vals:
            if isinstance(x, float) and not math.isfinite(x):
                raise ConfigError(f"{prefix}.{f.name}", x, "a finite number (NaN and inf are not allowed)")


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(name, value, allowed)


@dataclass(frozen=True)
class WorldConfig:
    """Where the static world comes from and, for the synthetic generator, its calibration.

    Sizes default to KuaiRec (train = big matrix 7,176 x 10,728; test = small matrix
    1,411 x 3,327, a subset). ``envs/kuairand.toml`` sets the KuaiRand-Pure sizes.

    ``source``: ``synthetic`` (generated; the sizes and ``log_*`` / tag fields calibrate it),
    ``kuairec`` / ``kuairand`` (the public datasets' files in ``data_dir``) or ``csv`` (the user's
    own logs in ``data_dir``: ``interactions.csv`` with user_id, item_id, feedback in [0, 1] or
    watch_ratio, optional timestamp; optional ``unbiased.csv`` and ``items.csv``; schema and the
    train/test split in ``purerec.data.loaders.user_csv``). Real sources read their sizes and tags from
    the files: only ``seed``, ``true_dim``, ``emb_dim``, ``popular_frac`` and ``cache_dir`` apply.
    """

    source: str = "synthetic"
    preset: str = "kuairec"
    data_dir: str = ""
    seed: int = 0
    n_users: int = 7176
    n_items: int = 10728
    n_test_users: int = 1411
    n_test_items: int = 3327
    n_tags: int = 31
    tag_zipf: float = 0.1
    tag_cutoff: float = 7.0
    mean_tags_per_item: float = 1.18
    max_tags_per_item: int = 4
    true_dim: int = 16
    emb_dim: int = 32
    log_density: float = 0.163
    log_rounds: int = 4
    log_pop_bias: float = 1.0
    log_personalisation: float = 0.2
    item_bias_std: float = 0.15
    user_bias_std: float = 0.5
    pref_scale: float = 1.2
    score_offset: float = -0.6
    tag_pref_weight: float = 0.7
    popular_frac: float = 0.2
    cache_dir: str = ""

    def validate(self, p: str = "world") -> None:
        _check(self.source in WORLD_SOURCES, f"{p}.source", self.source, f"one of {WORLD_SOURCES}")
        _check(self.preset in PRESETS, f"{p}.preset", self.preset, f"one of {PRESETS}")
        _check(self.source != "synthetic" or not self.data_dir, f"{p}.data_dir", self.data_dir,
               f"empty with {p}.source = 'synthetic' (the synthetic world reads no files): set {p}.source "
               f"to one of {WORLD_SOURCES[1:]} to load that directory, or drop {p}.data_dir")
        if self.source != "synthetic":
            what = ("your interactions.csv (and optional unbiased.csv, items.csv)" if self.source == "csv"
                    else f"the {self.source} CSV files")
            _check(bool(self.data_dir), f"{p}.data_dir", self.data_dir,
                   f"a directory holding {what} (required when source != 'synthetic')")
            fix = ("put interactions.csv there" if self.source == "csv"
                   else "download the dataset there")
            _check(os.path.isdir(self.data_dir), f"{p}.data_dir", self.data_dir,
                   f"an existing directory; {fix} or use source = 'synthetic'")
        for name in ("n_users", "n_items", "n_test_users", "n_test_items"):
            _check(2 <= getattr(self, name) <= MAX_WORLD, f"{p}.{name}", getattr(self, name),
                   f"an integer in [2, {MAX_WORLD}]")
        _check(1 <= self.n_tags <= 1024, f"{p}.n_tags", self.n_tags, "an integer in [1, 1024]")
        _check(1.0 <= self.mean_tags_per_item <= self.max_tags_per_item, f"{p}.mean_tags_per_item",
               self.mean_tags_per_item, "in [1, max_tags_per_item]")
        _check(1 <= self.max_tags_per_item <= self.n_tags, f"{p}.max_tags_per_item",
               self.max_tags_per_item, "in [1, n_tags]")
        _check(self.tag_cutoff > 0, f"{p}.tag_cutoff", self.tag_cutoff, "> 0")
        _check(self.tag_zipf >= 0, f"{p}.tag_zipf", self.tag_zipf, ">= 0")
        _check(1 <= self.true_dim <= 256, f"{p}.true_dim", self.true_dim, "an integer in [1, 256]")
        _check(1 <= self.emb_dim <= 256, f"{p}.emb_dim", self.emb_dim, "an integer in [1, 256]")
        _check(0.0 < self.log_density < 1.0, f"{p}.log_density", self.log_density, "in (0, 1)")
        _check(1 <= self.log_rounds <= 64, f"{p}.log_rounds", self.log_rounds, "an integer in [1, 64]")
        for name in ("log_pop_bias", "log_personalisation", "item_bias_std", "user_bias_std",
                     "pref_scale", "tag_pref_weight"):
            _check(getattr(self, name) >= 0, f"{p}.{name}", getattr(self, name), ">= 0")
        _check(self.tag_pref_weight <= 1.0, f"{p}.tag_pref_weight", self.tag_pref_weight, "in [0, 1]")
        _check(0.0 < self.popular_frac < 1.0, f"{p}.popular_frac", self.popular_frac, "in (0, 1)")


@dataclass(frozen=True)
class FeedbackConfig:
    """Popularity contamination of observed feedback (see ``purerec.sim.feedback``)."""

    conformity: float = 0.8
    noise_std: float = 0.05

    def validate(self, p: str = "feedback") -> None:
        _check(0.0 <= self.conformity <= 1.0, f"{p}.conformity", self.conformity, "in [0, 1]")
        _check(self.noise_std >= 0.0, f"{p}.noise_std", self.noise_std, ">= 0 (a standard deviation)")


@dataclass(frozen=True)
class EnvConfig:
    """Session dynamics: slate, observation window and exit rules (see ``purerec.sim.abandonment``)."""

    slate_size: int = 10
    obs_window: int = 20
    max_len: int = 30
    exit_rule: str = "temper"
    fair_scope: str = "slate"
    temper_init: float = 0.0
    temper_offset: float = traced(2.0)
    fair_threshold: float = traced(0.3)
    fair_penalty: float = traced(1.0)
    tag_window: int = 10
    tag_threshold: int = 1
    dynamics: str = "none"

    def validate(self, n_items: int | None = None, p: str = "env") -> None:
        hi = n_items if n_items is not None else "n_items"
        _check(self.slate_size >= 1 and (n_items is None or self.slate_size <= n_items),
               f"{p}.slate_size", self.slate_size, f"an integer in [1, {hi}] (the test world's item count)")
        _check(1 <= self.obs_window <= 1000, f"{p}.obs_window", self.obs_window, "an integer in [1, 1000]")
        _check(1 <= self.max_len <= 10000, f"{p}.max_len", self.max_len, "an integer in [1, 10000]")
        _check(self.exit_rule in EXIT_RULES, f"{p}.exit_rule", self.exit_rule, f"one of {EXIT_RULES}")
        _check(self.fair_scope in FAIR_SCOPES, f"{p}.fair_scope", self.fair_scope,
               f"one of {FAIR_SCOPES} (slate: this step's slate, the authors' rule; session: all items shown so far)")
        _check(self.temper_init >= 0, f"{p}.temper_init", self.temper_init,
               ">= 0 (0 means: start at max_len)")
        _check(self.temper_offset >= 0, f"{p}.temper_offset", self.temper_offset, ">= 0")
        _check(0.0 <= self.fair_threshold <= 1.0, f"{p}.fair_threshold", self.fair_threshold, "in [0, 1]")
        _check(self.fair_penalty >= 0, f"{p}.fair_penalty", self.fair_penalty, ">= 0")
        _check(1 <= self.tag_window <= 1000, f"{p}.tag_window", self.tag_window, "an integer in [1, 1000]")
        _check(self.tag_threshold >= 0, f"{p}.tag_threshold", self.tag_threshold, "an integer >= 0")
        _check(self.dynamics in DYNAMICS, f"{p}.dynamics", self.dynamics,
               f"one of {DYNAMICS} (none: a fixed true preference per session; attraction: the profile "
               "moves toward what the user picks, settings in [attraction])")

    @property
    def history_len(self) -> int:
        """Length of the item history kept in the state: enough for the obs and the tag rule."""
        return max(self.obs_window, self.tag_window)

    @property
    def temper_start(self) -> float:
        return float(self.temper_init) if self.temper_init > 0 else float(self.max_len)


DYNAMICS = ("none", "attraction")
DRIFT_MODES = ("pick", "mean")
DRIFT_BLOCKS = ("full", "taste")
HARM_REWARDS = ("feedback", "penalised")


@dataclass(frozen=True)
class AttractionConfig:
    """Preferences that move (``env.dynamics = "attraction"``; ``purerec.sim.dynamics``, Chee et al.
    KDD 2024): the user picks one item per slate by a logit with an outside option (``premium_c``)
    and the picked item attracts the profile, u <- beta u0 + alpha_v v + (1 - alpha_v - beta) u.
    Read only when the dynamics are on; the default world never sees these fields.

    ``alpha_h`` / ``alpha_nh``: attraction toward a harmful / other pick (the paper's 0.5 / 0.25).
    ``beta``: pull back toward the initial profile (0.2). ``premium_c``: the outside option's weight;
    0 = the authors' rule per world (half the smallest gap between the catalogue's and a random
    safe slate's total score over users), recorded in the calibration card. ``harm_lambda``: lambda
    of J = sum_t (p_CLK - lambda p_H) (100). ``harm_frac``: share of items labelled harmful in
    worlds without labels (a region of taste space: the items farthest along a random taste
    direction). ``mode``: ``pick`` (the sampled pick moves the profile) or ``mean`` (the expectation
    over picks, the paper's code). ``block``: ``full`` (the whole factor vector moves, as the
    paper's code does with its MF vectors) or ``taste`` (only the taste block moves, toward kappa q_v
    with kappa matching the scales of user and item tastes; biases stay). ``reward``: what agents are
    trained on, ``feedback`` (the slate's mean observed feedback) or ``penalised`` (minus
    ``harm_lambda`` times 1[the pick was harmful]). ``harm_seed``: seed of the harm direction.
    """

    alpha_h: float = traced(0.5)
    alpha_nh: float = traced(0.25)
    beta: float = traced(0.2)
    premium_c: float = 0.0
    harm_lambda: float = traced(100.0)
    harm_frac: float = 0.2
    mode: str = "pick"
    block: str = "full"
    reward: str = "feedback"
    harm_seed: int = 0

    def validate(self, p: str = "attraction") -> None:
        for name in ("alpha_h", "alpha_nh", "beta"):
            v = getattr(self, name)
            _check(0 <= v <= 1, f"{p}.{name}", v, "in [0, 1]")
        _check(max(self.alpha_h, self.alpha_nh) + self.beta <= 1, f"{p}.beta", self.beta,
               f"at most 1 - max(alpha_h, alpha_nh) = {1 - max(self.alpha_h, self.alpha_nh):g} (the step is a "
               "convex combination of u0, the pick and the profile)")
        _check(self.premium_c >= 0, f"{p}.premium_c", self.premium_c, ">= 0 (0 = the authors' rule per world)")
        _check(self.harm_lambda >= 0, f"{p}.harm_lambda", self.harm_lambda, ">= 0")
        _check(0 < self.harm_frac < 1, f"{p}.harm_frac", self.harm_frac, "in (0, 1)")
        _check(self.mode in DRIFT_MODES, f"{p}.mode", self.mode, f"one of {DRIFT_MODES}")
        _check(self.block in DRIFT_BLOCKS, f"{p}.block", self.block, f"one of {DRIFT_BLOCKS}")
        _check(self.reward in HARM_REWARDS, f"{p}.reward", self.reward, f"one of {HARM_REWARDS}")
        _check(self.harm_seed >= 0, f"{p}.harm_seed", self.harm_seed, "an integer >= 0")


EVAL_PROTOCOLS = ("test", "train_report")
EVAL_ACTIONS = ("greedy", "sample")
EVAL_SPLITS = ("test", "validation")


@dataclass(frozen=True)
class EvalConfig:
    """The evaluation protocol, one for every agent (``purerec.run.evaluation``).

    ``protocol = "test"``: the held-out test world, ``n_sessions`` distinct users (capped at the
    world's users), each run to its first exit, ``repeats`` repeats with seeds ``seed + r``; a
    seed's figure is the mean over its repeats, the table gives mean +- std over training seeds.
    ``protocol = "train_report"``: the paper's likely reading (KuaiSim's report): the mean of the
    last ``report_updates`` updates' training metrics on the train world, exploration on.
    ``action``: how every agent acts at test time, ``greedy`` (mean goal and mean action) or
    ``sample`` (the training policy); ``results.json`` holds the test protocol under both.
    ``split``: which users the protocol runs on, ``test`` (the held-out test world) or
    ``validation`` (a third set of users, disjoint from the train and test users, on the test
    world's items: ``purerec.data.validation``); hyperparameters are chosen on validation only.
    """

    protocol: str = "test"
    split: str = "test"
    action: str = "greedy"
    n_sessions: int = 4096
    repeats: int = 3
    report_updates: int = 10
    ad_form: str = "exposure"
    seed: int = 2027

    def validate(self, p: str = "eval") -> None:
        _check(self.protocol in EVAL_PROTOCOLS, f"{p}.protocol", self.protocol, f"one of {EVAL_PROTOCOLS}")
        _check(self.action in EVAL_ACTIONS, f"{p}.action", self.action, f"one of {EVAL_ACTIONS}")
        _check(self.split in EVAL_SPLITS, f"{p}.split", self.split, f"one of {EVAL_SPLITS}")
        _check(self.n_sessions >= 1, f"{p}.n_sessions", self.n_sessions, "an integer >= 1")
        _check(1 <= self.repeats <= 100, f"{p}.repeats", self.repeats, "an integer in [1, 100]")
        _check(self.report_updates >= 1, f"{p}.report_updates", self.report_updates, "an integer >= 1")
        _check(self.ad_form in AD_FORMS, f"{p}.ad_form", self.ad_form, f"one of {AD_FORMS}")
        _check(self.seed >= 0, f"{p}.seed", self.seed, "an integer >= 0")


SCHEDULES = ("linear", "cosine")
DSRM_TARGETS = ("paper", "unbiased")
REVERSE_STARTS = ("noise", "observed")
# Registered agent kinds (``purerec.agents.REGISTRY``; kept here so that validation needs no import
# of the agents) and the preset aliases that also choose the purifier.
AGENT_KINDS = ("hrl", "flat", "a2c", "td3", "bcq", "mofir", "dorl", "dnair", "sac4ir", "fcpo")
AGENT_ALIASES = {"dsrm_hrl": ("hrl", "dsrm"), "hrl_tce": ("hrl", "tce"), "hrl_rce": ("hrl", "rce"),
                 "hrl_bod": ("hrl", "bod")}
AGENTS = AGENT_KINDS + tuple(AGENT_ALIASES)
# The state purifiers: the diffusion purifier (DSRM) and the heuristic denoisers of the paper's
# Table 3 (T-CE, R-CE, BOD; ``purerec.state.denoise``), which filter the history before the state is built.
PURIFIERS = ("auto", "none", "dsrm", "tce", "rce", "bod")
DENOISERS = ("tce", "rce", "bod")
# ``state.purifier = auto``: the purifier each kind has in the paper's rows (FLAT = flat + DSRM);
# every other kind observes the encoder's state as is.
DEFAULT_PURIFIER = {"flat": "dsrm"}
SEED_BATCHING = ("auto", "vmap", "map")
STAGE1_BEHAVIOURS = ("popularity", "uniform")


@dataclass(frozen=True)
class EncoderConfig:
    """State encoder s~ = f(last W items, their feedback): see ``purerec.state.encoder``."""

    state_dim: int = 32
    hidden: int = 64
    lr: float = 3e-3
    train_steps: int = 2000
    batch_size: int = 512

    def validate(self, p: str = "encoder") -> None:
        _check(1 <= self.state_dim <= 1024, f"{p}.state_dim", self.state_dim, "an integer in [1, 1024]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(0 < self.lr < 1, f"{p}.lr", self.lr, "in (0, 1)")
        _check(self.train_steps >= 0, f"{p}.train_steps", self.train_steps, "an integer >= 0")
        _check(self.batch_size >= 1, f"{p}.batch_size", self.batch_size, "an integer >= 1")


@dataclass(frozen=True)
class DSRMConfig:
    """Diffusion state purifier (paper eqs. 3 and 7): see ``purerec.state.dsrm`` and ``purerec.state.diffusion``."""

    steps: int = 20
    schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    target: str = "paper"
    reverse_start: str = "observed"
    start_step: int = 0
    hidden: int = 128
    t_emb_dim: int = 32
    lr: float = 1e-3
    train_steps: int = 1000
    batch_size: int = 512

    def validate(self, p: str = "dsrm") -> None:
        _check(1 <= self.steps <= 1000, f"{p}.steps", self.steps, "an integer in [1, 1000]")
        _check(self.schedule in SCHEDULES, f"{p}.schedule", self.schedule, f"one of {SCHEDULES}")
        _check(0 < self.beta_start < 1, f"{p}.beta_start", self.beta_start, "in (0, 1)")
        _check(self.beta_start <= self.beta_end < 1, f"{p}.beta_end", self.beta_end, "in [beta_start, 1)")
        _check(self.target in DSRM_TARGETS, f"{p}.target", self.target, f"one of {DSRM_TARGETS}")
        _check(self.reverse_start in REVERSE_STARTS, f"{p}.reverse_start", self.reverse_start,
               f"one of {REVERSE_STARTS}")
        _check(0 <= self.start_step <= self.steps, f"{p}.start_step", self.start_step,
               "an integer in [0, steps] (0 means: start the reverse chain at step `steps`)")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(2 <= self.t_emb_dim <= 1024 and self.t_emb_dim % 2 == 0, f"{p}.t_emb_dim", self.t_emb_dim,
               "an even integer in [2, 1024]")
        _check(0 < self.lr < 1, f"{p}.lr", self.lr, "in (0, 1)")
        _check(self.train_steps >= 0, f"{p}.train_steps", self.train_steps, "an integer >= 0")
        _check(self.batch_size >= 1, f"{p}.batch_size", self.batch_size, "an integer >= 1")


AGENT_ACTIONS = ("hyper", "plackett_luce")
SLATE_HEADS = ("auto", "native", "topk", "grouped")
SLATE_TAILS = ("auto", "fixed", "learned")
SCORES = ("dot", "cos")
FAIR_REWARDS = ("slate", "batch")


@dataclass(frozen=True)
class AgentConfig:
    """Which agent, its hierarchy and how its policies act: see ``purerec.agents.nets``.

    ``kind``: a registered agent (``purerec.agents``): hrl, flat, a2c, td3, dnair, sac4ir; or the
    alias dsrm_hrl = hrl with ``state.purifier = dsrm`` (the method). With ``state.purifier =
    auto``, hrl is the paper's "HRL" row (no purifier) and flat its "FLAT" row (DSRM + one PPO
    policy). The fields below are the HRL / FLAT agents'; baselines read their own sections. ``action``: ``hyper`` (the worker's Gaussian
    hyper-action over the scorer's coefficients, deterministic slate by the slate head (``[slate]``); the
    authors' KuaiSim lineage) or ``plackett_luce`` (slates sampled over all items from the
    scores). ``fair_reward``: the manager's Fair_t, ``slate`` = -Gini of the popular/long-tail
    exposure of this session's slate L_t (= -|2p_t - 1| / 2; a per-session signal) or ``batch``
    = -Gini of item exposure over all sessions' slates of the last ``fair_window`` steps.
    """

    kind: str = "dsrm_hrl"
    lambda_fair: float = traced(1.0)
    manager_interval: int = 4
    fair_reward: str = "slate"
    fair_window: int = 1
    hidden: int = 64
    action: str = "hyper"
    score: str = "dot"
    action_std: float = 0.05
    manager_std: float = 0.3
    pop_scale: float = 0.05
    context: bool = True
    init_logit_scale: float = 10.0

    def validate(self, p: str = "agent") -> None:
        _check(self.kind in AGENTS, f"{p}.kind", self.kind, f"one of {AGENTS}")
        _check(0 <= self.lambda_fair <= 1000, f"{p}.lambda_fair", self.lambda_fair, "in [0, 1000]")
        _check(1 <= self.manager_interval <= 1000, f"{p}.manager_interval", self.manager_interval,
               "an integer in [1, 1000]")
        _check(self.fair_reward in FAIR_REWARDS, f"{p}.fair_reward", self.fair_reward, f"one of {FAIR_REWARDS}")
        _check(1 <= self.fair_window <= 1000, f"{p}.fair_window", self.fair_window, "an integer in [1, 1000]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.action in AGENT_ACTIONS, f"{p}.action", self.action, f"one of {AGENT_ACTIONS}")
        _check(self.score in SCORES, f"{p}.score", self.score, f"one of {SCORES}")
        _check(0 < self.action_std <= 2.0, f"{p}.action_std", self.action_std, "in (0, 2]")
        _check(0 < self.manager_std <= 2.0, f"{p}.manager_std", self.manager_std, "in (0, 2]")
        _check(0 < self.pop_scale <= 100.0, f"{p}.pop_scale", self.pop_scale,
               "in (0, 100] (the initial weight kappa of eq. 6's popularity term)")
        _check(0 < self.init_logit_scale <= 1000, f"{p}.init_logit_scale", self.init_logit_scale, "in (0, 1000]")

    @property
    def resolved_kind(self) -> str:
        """The registry kind (aliases resolved)."""
        return AGENT_ALIASES[self.kind][0] if self.kind in AGENT_ALIASES else self.kind


@dataclass(frozen=True)
class SlateConfig:
    """How every agent's item scores become a slate (``purerec.agents.heads``): one axis for every agent.

    ``head``: ``native`` (the method's own rule, per agent in ``purerec.agents.REGISTRY``),
    ``topk`` (the K best scores), ``grouped`` (``round(K x share)`` long-tail items, the rest
    popular, each part the top of its group by score) or ``auto`` (the agent's default: native,
    except DSRM-HRL / HRL / FLAT / MOFIR, whose default is grouped with a learned share; the
    README shows why with numbers). ``tail``: under a grouped head, the long-tail share is
    ``fixed`` (``tail_share``) or ``learned`` from the agent's own action; ``auto`` = the agent's
    default. ``tail_share``: the fixed long-tail share (traced: a sweep over it is one program).
    """

    head: str = "auto"
    tail: str = "auto"
    tail_share: float = traced(0.5)

    def validate(self, p: str = "slate") -> None:
        _check(self.head in SLATE_HEADS, f"{p}.head", self.head, f"one of {SLATE_HEADS}")
        _check(self.tail in SLATE_TAILS, f"{p}.tail", self.tail, f"one of {SLATE_TAILS}")
        _check(0 <= self.tail_share <= 1, f"{p}.tail_share", self.tail_share,
               "in [0, 1] (the long-tail share of a grouped slate)")


@dataclass(frozen=True)
class StateConfig:
    """How every agent's state is built: the Stage-I encoder's state, then a purifier.

    ``purifier``: ``none`` (the encoder's state s~), ``dsrm`` (the diffusion purifier's s^,
    ``purerec.state.dsrm``), or ``auto`` = the agent's row in the paper (DSRM for flat and for the
    dsrm_hrl alias, none otherwise). Stage I trains DSRM only when the purifier is dsrm.
    """

    purifier: str = "auto"

    def validate(self, p: str = "state") -> None:
        _check(self.purifier in PURIFIERS, f"{p}.purifier", self.purifier, f"one of {PURIFIERS}")


def resolve_agent(cfg: "Config") -> tuple[str, str]:
    """(registry kind, purifier) of a config: aliases and ``state.purifier = auto`` resolved."""
    kind, alias_purifier = AGENT_ALIASES.get(cfg.agent.kind, (cfg.agent.kind, None))
    purifier = cfg.state.purifier
    if cfg.agent.kind in AGENT_ALIASES and purifier == "auto":
        purifier = alias_purifier
    if purifier == "auto":
        purifier = DEFAULT_PURIFIER.get(kind, "none")
    return kind, purifier


@dataclass(frozen=True)
class PPOConfig:
    """PPO for both levels (defaults from the sibling HRL4PFG code where public)."""

    actor_lr: float = traced(3e-4)
    critic_lr: float = traced(1e-3)
    gamma: float = traced(0.9)
    gae_lambda: float = traced(0.95)
    clip_eps: float = traced(0.2)
    ent_coef: float = traced(0.001)
    vf_coef: float = traced(0.5)
    epochs: int = 4
    minibatches: int = 4
    max_grad_norm: float = 0.5

    def validate(self, p: str = "ppo") -> None:
        for name in ("actor_lr", "critic_lr"):
            _check(0 <= getattr(self, name) < 1, f"{p}.{name}", getattr(self, name), "in [0, 1) (0 freezes that network)")
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 <= self.gae_lambda <= 1, f"{p}.gae_lambda", self.gae_lambda, "in [0, 1]")
        _check(0 < self.clip_eps < 1, f"{p}.clip_eps", self.clip_eps, "in (0, 1)")
        _check(self.ent_coef >= 0, f"{p}.ent_coef", self.ent_coef, ">= 0")
        _check(self.vf_coef >= 0, f"{p}.vf_coef", self.vf_coef, ">= 0")
        _check(1 <= self.epochs <= 100, f"{p}.epochs", self.epochs, "an integer in [1, 100]")
        _check(self.minibatches >= 1, f"{p}.minibatches", self.minibatches, "an integer >= 1")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


def _check_rate(p: str, name: str, v: float) -> None:
    _check(0 <= v < 1, f"{p}.{name}", v, "in [0, 1) (0 freezes that network)")


@dataclass(frozen=True)
class ReplayConfig:
    """The replay buffer and gradient steps of the off-policy agents (TD3, DNaIR, SAC4IR).

    128 x 16 per update (not 256 x 64): 4x cheaper, within 0.25 R_cum of it for TD3 and DNaIR in
    the tuning runs, and what keeps every baseline's Table-4 run under a minute on 2 CPU cores.

    Each update adds the ``num_envs x rollout_len`` transitions of its rollout (flashbax item
    buffer, FIFO) and then takes ``grad_steps`` gradient steps on minibatches of ``batch_size``
    uniformly sampled transitions (none before the buffer holds ``min_size``).
    """

    capacity: int = 100000
    batch_size: int = 128
    grad_steps: int = 16
    min_size: int = 2048

    def validate(self, p: str = "replay") -> None:
        _check(self.capacity >= 1, f"{p}.capacity", self.capacity, "an integer >= 1")
        _check(1 <= self.batch_size <= self.capacity, f"{p}.batch_size", self.batch_size, "an integer in [1, capacity]")
        _check(self.grad_steps >= 1, f"{p}.grad_steps", self.grad_steps, "an integer >= 1")
        _check(self.batch_size <= self.min_size <= self.capacity, f"{p}.min_size", self.min_size,
               "an integer in [batch_size, capacity]")


@dataclass(frozen=True)
class A2CConfig:
    """A2C (general RL, the KuaiSim lineage): a Gaussian hyper-action = the coefficients of a
    linear scorer over the item basis, top-K slate; synchronous advantage actor-critic on the
    env reward (``purerec.agents.a2c``)."""

    actor_lr: float = traced(3e-4)
    critic_lr: float = traced(1e-3)
    gamma: float = traced(0.9)
    gae_lambda: float = traced(1.0)
    ent_coef: float = traced(0.0)
    vf_coef: float = traced(0.5)
    action_std: float = 0.3
    minibatches: int = 4
    hidden: int = 64
    max_grad_norm: float = 0.5

    def validate(self, p: str = "a2c") -> None:
        _check_rate(p, "actor_lr", self.actor_lr)
        _check_rate(p, "critic_lr", self.critic_lr)
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 <= self.gae_lambda <= 1, f"{p}.gae_lambda", self.gae_lambda, "in [0, 1]")
        _check(self.ent_coef >= 0, f"{p}.ent_coef", self.ent_coef, ">= 0")
        _check(self.vf_coef >= 0, f"{p}.vf_coef", self.vf_coef, ">= 0")
        _check(0 < self.action_std <= 2.0, f"{p}.action_std", self.action_std, "in (0, 2]")
        _check(self.minibatches >= 1, f"{p}.minibatches", self.minibatches, "an integer >= 1")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


@dataclass(frozen=True)
class TD3Config:
    """TD3 (Fujimoto et al. 2018; general RL): a deterministic actor outputs a query in item-
    embedding space (plus a popularity weight), the slate is the top-K of its scores; twin
    critics, target policy smoothing, delayed actor (``purerec.agents.td3``)."""

    actor_lr: float = traced(1e-4)
    critic_lr: float = traced(1e-3)
    gamma: float = traced(0.9)
    tau: float = traced(0.01)
    explore_std: float = traced(0.1)
    policy_noise: float = traced(0.2)
    noise_clip: float = traced(0.5)
    policy_delay: int = 2
    hidden: int = 64
    max_grad_norm: float = 10.0

    def validate(self, p: str = "td3") -> None:
        _check_rate(p, "actor_lr", self.actor_lr)
        _check_rate(p, "critic_lr", self.critic_lr)
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 < self.tau <= 1, f"{p}.tau", self.tau, "in (0, 1]")
        for name in ("explore_std", "policy_noise", "noise_clip"):
            _check(getattr(self, name) >= 0, f"{p}.{name}", getattr(self, name), ">= 0")
        _check(1 <= self.policy_delay <= 100, f"{p}.policy_delay", self.policy_delay, "an integer in [1, 100]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


@dataclass(frozen=True)
class DNaIRConfig:
    """DNaIR (Shi et al. 2023; fairness-aware): DQN with per-item Q values, slate = top-K of Q,
    reward + ``novelty_weight`` x the slate's mean q_i / log10(pop_i + 1.1) (``purerec.agents.dnair``).

    ``novelty_weight`` 0.05, not the port's 0.2: the bonus reaches 1 / log10(1.1) ~ 24 per item
    against a reward in [0, 1], and 0.2 made the agent show only long-tail items (test Len 12.0,
    below random exposure); grid 0 / 0.02 / 0.04 / 0.05 / 0.06 / 0.08 / 0.2 on the KuaiRec-like
    world (seed 11): only ~0.05 mixes the groups (README, "Baselines")."""

    lr: float = traced(1e-3)
    gamma: float = traced(0.9)
    tau: float = traced(0.01)
    epsilon: float = traced(0.1)
    novelty_weight: float = traced(0.05)
    hidden: int = 64
    max_grad_norm: float = 10.0

    def validate(self, p: str = "dnair") -> None:
        _check_rate(p, "lr", self.lr)
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 < self.tau <= 1, f"{p}.tau", self.tau, "in (0, 1]")
        _check(0 <= self.epsilon <= 1, f"{p}.epsilon", self.epsilon, "in [0, 1]")
        _check(self.novelty_weight >= 0, f"{p}.novelty_weight", self.novelty_weight, ">= 0")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


@dataclass(frozen=True)
class SAC4IRConfig:
    """SAC4IR (Shi et al. 2023; fairness-aware): discrete soft actor-critic over items, twin Q,
    automatic temperature with target entropy ``target_entropy_ratio`` x log|I|; fairness
    enters only through the entropy (``purerec.agents.sac4ir``)."""

    actor_lr: float = traced(3e-4)
    critic_lr: float = traced(1e-3)
    alpha_lr: float = traced(1e-4)
    gamma: float = traced(0.9)
    tau: float = traced(0.01)
    target_entropy_ratio: float = traced(0.8)
    init_log_alpha: float = -1.5
    hidden: int = 64
    max_grad_norm: float = 10.0

    def validate(self, p: str = "sac4ir") -> None:
        for name in ("actor_lr", "critic_lr", "alpha_lr"):
            _check_rate(p, name, getattr(self, name))
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 < self.tau <= 1, f"{p}.tau", self.tau, "in (0, 1]")
        _check(0 < self.target_entropy_ratio <= 1, f"{p}.target_entropy_ratio", self.target_entropy_ratio, "in (0, 1]")
        _check(-10 <= self.init_log_alpha <= 2, f"{p}.init_log_alpha", self.init_log_alpha, "in [-10, 2]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


@dataclass(frozen=True)
class OfflineConfig:
    """The logged data of the offline and model-based agents (BCQ, DORL; ``purerec.sim.logs``): the
    train world's logging policy (Plackett-Luce over log(1 + pop), the rich-get-richer policy
    behind the world's popularity counts) run for ``sessions`` parallel sessions x ``max_len``
    steps (sessions that end are replaced, so more sessions than that are logged)."""

    sessions: int = 1024

    def validate(self, p: str = "offline") -> None:
        _check(1 <= self.sessions <= 65536, f"{p}.sessions", self.sessions, "an integer in [1, 65536]")


@dataclass(frozen=True)
class BCQConfig:
    """Discrete BCQ (Fujimoto et al. 2019; offline general RL), slate version: per-item Q and
    imitation (behaviour) heads learned from the logs only; the slate is the top-K by Q among the
    items whose imitation probability is at least ``threshold`` x that of the K-th most likely
    item (``purerec.agents.bcq``). Gradient steps per update and batch: ``replay.grad_steps``,
    ``replay.batch_size``.

    Grid (KuaiRec-like, seed 11, stopped at update 32 by the 20,000-episode cap), greedy Len / R_cum:
    threshold 0.6 13.49 / 10.46; 0.05 13.95 / 11.33 (most_popular: 14.01 / 12.25). The issue's
    0.6 is kept as the default."""

    lr: float = traced(1e-3)
    gamma: float = traced(0.9)
    threshold: float = traced(0.6)
    imitation_penalty: float = traced(0.01)
    target_every: int = 320
    hidden: int = 64
    max_grad_norm: float = 10.0

    def validate(self, p: str = "bcq") -> None:
        _check_rate(p, "lr", self.lr)
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 <= self.threshold <= 1, f"{p}.threshold", self.threshold, "in [0, 1]")
        _check(self.imitation_penalty >= 0, f"{p}.imitation_penalty", self.imitation_penalty, ">= 0")
        _check(1 <= self.target_every <= 100000, f"{p}.target_every", self.target_every, "an integer in [1, 100000]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


@dataclass(frozen=True)
class DORLConfig:
    """DORL (Gao et al. 2023; model-based offline RL with a fairness-minded entropy bonus): an
    ensemble of ``models`` heteroscedastic user models fitted on the logs, then the A2C policy
    (section ``a2c``) trained in the learned model with reward max(0, r^ - lambda_var max var +
    lambda_ent P_E - r_min) (``purerec.agents.dorl``). Defaults: the authors' KuaiRec values
    (KuaiRand: lambda_var 0.01, lambda_ent 0.05, set in envs/kuairand.toml).

    Grid (KuaiRec-like, seed 11, the paper's budget), greedy Len / R_cum: (lambda_var, lambda_ent) =
    (0.05, 5) 14.06 / 12.12; (0.05, 0.05) 14.05 / 12.27; (0.5, 0.05) 14.07 / 12.37: within seed
    noise of each other, so the authors' values are kept."""

    models: int = 5
    model_lr: float = 1e-3
    model_steps: int = 2000
    model_batch: int = 256
    model_hidden: int = 64
    lambda_var: float = traced(0.05)
    lambda_ent: float = traced(5.0)
    r_min: float = traced(0.0)

    def validate(self, p: str = "dorl") -> None:
        _check(1 <= self.models <= 64, f"{p}.models", self.models, "an integer in [1, 64]")
        _check_rate(p, "model_lr", self.model_lr)
        _check(1 <= self.model_steps <= 1000000, f"{p}.model_steps", self.model_steps, "an integer in [1, 1e6]")
        _check(1 <= self.model_batch <= 65536, f"{p}.model_batch", self.model_batch, "an integer in [1, 65536]")
        _check(1 <= self.model_hidden <= 4096, f"{p}.model_hidden", self.model_hidden, "an integer in [1, 4096]")
        for name in ("lambda_var", "lambda_ent"):
            _check(0 <= getattr(self, name) <= 1000, f"{p}.{name}", getattr(self, name), "in [0, 1000]")
        _check(-10 <= self.r_min <= 10, f"{p}.r_min", self.r_min, "in [-10, 10]")


@dataclass(frozen=True)
class MOFIRConfig:
    """MOFIR (Ge et al. 2022; fairness-aware multi-objective RL), a reading (no public code): DDPG
    whose actor and critic take a preference vector omega = [1 - w, w]; the critic outputs
    [utility, fairness] Q values and the actor maximises omega . Q; w ~ U[0, 1] per training
    session, ``eval_weight`` at test (swept to draw the Pareto front; ``purerec.agents.mofir``).

    Grid (KuaiRec-like, seed 11, greedy Len / R_cum / AD): actor_lr 1e-4 13.13 / 9.27 / 0.59 (the
    query collapses onto ~1% of the items); **3e-5 22.63 / 15.60 / 0.18 (default)**; a plain
    top-K slate (``slate.head = topk``) at 1e-4: 13.65 / 10.93 / 1.0."""

    actor_lr: float = traced(3e-5)
    critic_lr: float = traced(1e-3)
    gamma: float = traced(0.9)
    tau: float = traced(0.01)
    explore_std: float = traced(0.1)
    eval_weight: float = traced(0.5)
    hidden: int = 64
    max_grad_norm: float = 10.0

    def validate(self, p: str = "mofir") -> None:
        _check_rate(p, "actor_lr", self.actor_lr)
        _check_rate(p, "critic_lr", self.critic_lr)
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 < self.tau <= 1, f"{p}.tau", self.tau, "in (0, 1]")
        _check(0 <= self.explore_std <= 10, f"{p}.explore_std", self.explore_std, "in [0, 10]")
        _check(0 <= self.eval_weight <= 1, f"{p}.eval_weight", self.eval_weight, "in [0, 1]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


FCPO_COSTS = ("popular", "imbalance")
# Agents whose slates come from per-item values: a learned tail share is one more discrete choice.
DISCRETE_SLATE_AGENTS = ("dnair", "sac4ir", "bcq")


@dataclass(frozen=True)
class FCPOConfig:
    """FCPO (Ge et al. 2021; long-term fairness as a constraint): constrained policy optimisation
    (CPO, Achiam et al. 2017) of a Gaussian hyper-action policy with cost = the number of popular
    items in the slate and the limit ``cost_limit`` x K per step; the trust-region step is solved
    in the dual with conjugate gradients and a backtracking line search (``purerec.agents.fcpo``)."""

    cost_limit: float = traced(0.5)
    max_kl: float = traced(0.01, rate=True)
    gamma: float = traced(0.9)
    gae_lambda: float = traced(0.98)
    critic_lr: float = traced(1e-3)
    damping: float = traced(0.1)
    action_std: float = 0.3
    pop_std: float = 2.5
    cost: str = "popular"
    cg_iters: int = 10
    line_search_iters: int = 10
    backtrack: float = 0.8
    critic_minibatches: int = 4
    critic_epochs: int = 2
    hidden: int = 64
    max_grad_norm: float = 10.0

    def validate(self, p: str = "fcpo") -> None:
        _check(0 <= self.cost_limit <= 1, f"{p}.cost_limit", self.cost_limit, "in [0, 1] (a share of the slate)")
        _check(0 <= self.max_kl <= 1, f"{p}.max_kl", self.max_kl, "in [0, 1] (0 freezes the policy)")
        _check(0 < self.pop_std <= 10.0, f"{p}.pop_std", self.pop_std, "in (0, 10]")
        _check(self.cost in FCPO_COSTS, f"{p}.cost", self.cost, f"one of {FCPO_COSTS}")
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 <= self.gae_lambda <= 1, f"{p}.gae_lambda", self.gae_lambda, "in [0, 1]")
        _check_rate(p, "critic_lr", self.critic_lr)
        _check(0 <= self.damping <= 10, f"{p}.damping", self.damping, "in [0, 10]")
        _check(0 < self.action_std <= 2.0, f"{p}.action_std", self.action_std, "in (0, 2]")
        _check(1 <= self.cg_iters <= 100, f"{p}.cg_iters", self.cg_iters, "an integer in [1, 100]")
        _check(1 <= self.line_search_iters <= 100, f"{p}.line_search_iters", self.line_search_iters,
               "an integer in [1, 100]")
        _check(0 < self.backtrack < 1, f"{p}.backtrack", self.backtrack, "in (0, 1)")
        _check(self.critic_minibatches >= 1, f"{p}.critic_minibatches", self.critic_minibatches, "an integer >= 1")
        _check(1 <= self.critic_epochs <= 100, f"{p}.critic_epochs", self.critic_epochs, "an integer in [1, 100]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


@dataclass(frozen=True)
class DenoiseConfig:
    """The heuristic denoisers of the paper's Table 3 as state filters (``state.purifier`` = tce,
    rce or bod; ``purerec.state.denoise``): a feedback model trained in Stage I with the denoiser's loss
    on the same sessions DSRM trains on, whose per-item weights drop (T-CE) or scale (R-CE, BOD)
    the history's feedback before the state is built."""

    steps: int = 1000
    lr: float = 1e-3
    batch_size: int = 256
    tce_drop_rate: float = 0.2
    tce_num_gradual: int = 500
    rce_beta: float = 0.2
    bod_lr: float = 1e-3
    bod_hidden: int = 64

    def validate(self, p: str = "denoise") -> None:
        _check(1 <= self.steps <= 1000000, f"{p}.steps", self.steps, "an integer in [1, 1e6]")
        _check_rate(p, "lr", self.lr)
        _check(1 <= self.batch_size <= 65536, f"{p}.batch_size", self.batch_size, "an integer in [1, 65536]")
        _check(0 <= self.tce_drop_rate < 1, f"{p}.tce_drop_rate", self.tce_drop_rate, "in [0, 1)")
        _check(1 <= self.tce_num_gradual <= 1000000, f"{p}.tce_num_gradual", self.tce_num_gradual,
               "an integer in [1, 1e6]")
        _check(0 <= self.rce_beta <= 10, f"{p}.rce_beta", self.rce_beta, "in [0, 10]")
        _check_rate(p, "bod_lr", self.bod_lr)
        _check(1 <= self.bod_hidden <= 4096, f"{p}.bod_hidden", self.bod_hidden, "an integer in [1, 4096]")


# What ``train.session_shards = 0`` resolves to (for agents that split their sessions): the shard
# count every published single-machine figure used (one shard per core of the 2-core machine
# they were measured on). A constant, so that the same config gives the same numbers on any machine.
DEFAULT_SESSION_SHARDS = 2


@dataclass(frozen=True)
class TrainConfig:
    """The training run: seeds (one program for all), parallel sessions, budget, chunking and outputs.

    ``session_shards`` splits the parallel sessions of a run into that many shards (data
    parallelism: each shard steps its share of the sessions and takes its share of every PPO
    minibatch; exposure counts and gradients are summed across shards). It is part of the
    algorithm's definition (each shard has its own random stream), so it belongs to the config,
    never to the machine: the shards run one per device where there are enough devices and as a
    vmapped axis on one device where there are not (``purerec.run.experiment._stage2_programs``).
    0 (the default) = ``DEFAULT_SESSION_SHARDS`` (2) where they split the batch evenly (else 1),
    1 for agents that do not split their sessions, and, over several processes, every device of
    every process (see ``resolve_session_shards``); the resolved value is what ``config.json``
    records, and a resumed run keeps it.

    ``eval_every_chunks`` (0 = only at the end) also evaluates on the test world every that many
    chunks, into the run's ``evals.jsonl``: test-world learning curves, never used for training.

    ``target_episodes`` (0 = off; default 20,000, the paper's budget) caps the training episodes
    of every seed: a ``train.py`` run drops the first chunk that would take any seed past it (the
    run ends on the chunk before; only a first chunk is always kept); ``total_updates`` stays the
    cap on updates. ``seed_batching`` picks how one program
    runs the seeds (see ``purerec.run.experiment.seed_batcher``). Sweeps always run ``total_updates``, so
    that the runs sharing one program share one budget.
    """

    seeds: tuple[int, ...] = (11, 15, 19)
    num_envs: int = 256
    rollout_len: int = 32
    total_updates: int = 80
    chunk_updates: int = 2
    target_episodes: int = 20000
    seed_batching: str = "auto"
    session_shards: int = 0
    stage1_sessions: int = 512
    stage1_behaviour: str = "popularity"
    run_dir: str = "runs"
    eval_every_chunks: int = 0

    def validate(self, p: str = "train") -> None:
        _check(len(self.seeds) >= 1, f"{p}.seeds", self.seeds, "at least one integer seed")
        _check(len(set(self.seeds)) == len(self.seeds), f"{p}.seeds", self.seeds, "distinct seeds")
        _check(all(0 <= s < 2**31 for s in self.seeds), f"{p}.seeds", self.seeds, "integers in [0, 2^31)")
        _check(1 <= self.num_envs <= MAX_SESSIONS, f"{p}.num_envs", self.num_envs, f"an integer in [1, {MAX_SESSIONS}]")
        _check(1 <= self.rollout_len <= 4096, f"{p}.rollout_len", self.rollout_len, "an integer in [1, 4096]")
        _check(self.num_envs * self.rollout_len <= MAX_BATCH, f"{p}.num_envs", self.num_envs,
               f"num_envs x rollout_len <= {MAX_BATCH} env steps per update (the rollout is held in memory): "
               f"lower num_envs or rollout_len")
        _check(1 <= self.total_updates <= 10**7, f"{p}.total_updates", self.total_updates, "an integer in [1, 1e7]")
        _check(1 <= self.chunk_updates, f"{p}.chunk_updates", self.chunk_updates, "an integer >= 1")
        _check(self.total_updates % self.chunk_updates == 0, f"{p}.total_updates", self.total_updates,
               f"a multiple of chunk_updates ({self.chunk_updates})")
        _check(self.seed_batching in SEED_BATCHING, f"{p}.seed_batching", self.seed_batching,
               f"one of {SEED_BATCHING} (auto: map on CPU, vmap on accelerators)")
        _check(self.session_shards >= 0, f"{p}.session_shards", self.session_shards,
               f"an integer >= 0 (0 = {DEFAULT_SESSION_SHARDS} shards where they split the batch evenly)")
        _check(self.target_episodes >= 0, f"{p}.target_episodes", self.target_episodes,
               "an integer >= 0 (0 = run all total_updates)")
        _check(self.stage1_behaviour in STAGE1_BEHAVIOURS, f"{p}.stage1_behaviour", self.stage1_behaviour,
               f"one of {STAGE1_BEHAVIOURS} (the exposure policy of Stage I's pre-training sessions)")
        _check(1 <= self.stage1_sessions <= MAX_SESSIONS, f"{p}.stage1_sessions", self.stage1_sessions,
               f"an integer in [1, {MAX_SESSIONS}]")
        _check(self.eval_every_chunks >= 0, f"{p}.eval_every_chunks", self.eval_every_chunks,
               "an integer >= 0 (0 = only at the end)")


@dataclass(frozen=True)
class Config:
    world: WorldConfig = field(default_factory=WorldConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    attraction: AttractionConfig = field(default_factory=AttractionConfig)
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
        if self.agent.action == "plackett_luce" and resolve_agent(self)[0] in ("hrl", "flat"):
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
    purifier = resolve_agent(cfg)[1]
    extra = ("dsrm",) if purifier == "dsrm" else ("denoise",) if purifier in DENOISERS else ()
    dyn = ("attraction",) if cfg.env.dynamics == "attraction" else ()
    return SHARED_SECTIONS + dyn + extra + tuple(agent_sections)


def env_identity(cfg: Config) -> dict:
    """The env section as run ids and cache keys see it: ``env.dynamics`` (and the [attraction]
    section) only when the dynamics are on, so the default world's ids and keys are those from
    before the option existed (opt-in dynamics leave everything already computed valid)."""
    d = dataclasses.asdict(cfg.env)
    if cfg.env.dynamics == "none":
        d.pop("dynamics")
    else:
        d["attraction"] = dataclasses.asdict(cfg.attraction)
    return d


class Sections:
    """A component's view of the run's config: only the sections it declares, as attributes of the
    same names and types as on ``Config`` (built by ``view``). Modules below ``purerec.run`` receive
    one of these, never the whole ``Config``: reading a section the component did not declare is an
    ``AttributeError`` at trace time, so a run's declared sections (and its run id) are its inputs."""

    __slots__ = ()


@functools.lru_cache(maxsize=None)
def _view_type(names: tuple[str, ...]) -> type:
    hints = typing.get_type_hints(Config)
    return dataclasses.make_dataclass("Sections", [(n, hints[n]) for n in names], bases=(Sections,), frozen=True)


def view(cfg: Any, names: tuple[str, ...]) -> Sections:
    """The sections ``names`` of ``cfg`` (a ``Config`` or a wider view) as a ``Sections``."""
    names = tuple(dict.fromkeys(names))
    return _view_type(names)(**{n: getattr(cfg, n) for n in names})


# The views the run layer hands the layers below (each names what that component reads).
ENV_SECTIONS = ("env", "feedback", "attraction")  # sim.env.make_params, the reference policies
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
    return tuple(dict.fromkeys(run_sections(cfg, agent_sections) + STATE_SECTIONS + ("attraction",)))


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
