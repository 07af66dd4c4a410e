"""The state layer's config sections: ``[encoder]``, ``[dsrm]`` (the diffusion purifier),
``[state]`` (which purifier) and ``[denoise]`` (T-CE, R-CE, BOD), and ``resolve_agent``: the
(kind, purifier) a run's agent name stands for. Light: dataclasses only, no JAX."""

from __future__ import annotations

from dataclasses import dataclass

from purerec.core.fields import _check, _check_rate


SCHEDULES = ("linear", "cosine")


DSRM_TARGETS = ("paper", "unbiased")


REVERSE_STARTS = ("noise", "observed")


# Registered agent kinds (``purerec.agents.REGISTRY``; kept here so that validation needs no import
# of the agents) and the preset aliases that also choose the purifier.
AGENT_KINDS = ("hrl", "flat", "a2c", "td3", "bcq", "mofir", "dorl", "dnair", "sac4ir", "fcpo", "hsrl", "hsrl_flat")


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


@dataclass(frozen=True)
class EncoderConfig:
    """State encoder s~ = f(last W items, their feedback): see ``purerec.state.encoder``."""

    state_dim: int = 32
    """Dimension of the state s~ the encoder outputs (and DSRM purifies)."""
    hidden: int = 64
    """Hidden width of the encoder network."""
    lr: float = 3e-3
    """Encoder learning rate in Stage I."""
    train_steps: int = 2000
    """Encoder gradient steps in Stage I."""
    batch_size: int = 512
    """Encoder minibatch size in Stage I."""

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
    """Diffusion steps K of the purifier (the paper's sensitivity range: 5..500)."""
    schedule: str = "linear"
    """Noise schedule: linear or cosine."""
    beta_start: float = 1e-4
    """First beta of the linear schedule."""
    beta_end: float = 0.02
    """Last beta of the linear schedule."""
    target: str = "paper"
    """DSRM's training target: paper (the observed state) or unbiased (the state of true responses)."""
    reverse_start: str = "observed"
    """Where the reverse chain starts: observed (the noised state) or noise (pure Gaussian)."""
    start_step: int = 0
    """Reverse steps start at this step (0 = K, the whole chain)."""
    hidden: int = 128
    """Hidden width of the denoiser network."""
    t_emb_dim: int = 32
    """Dimension of the diffusion-step embedding."""
    lr: float = 1e-3
    """Denoiser learning rate in Stage I."""
    train_steps: int = 1000
    """Denoiser gradient steps in Stage I (noise-prediction loss, eq. 7)."""
    batch_size: int = 512
    """Denoiser minibatch size in Stage I."""

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


@dataclass(frozen=True)
class StateConfig:
    """How every agent's state is built: the Stage-I encoder's state, then a purifier.

    ``purifier``: ``none`` (the encoder's state s~), ``dsrm`` (the diffusion purifier's s^,
    ``purerec.state.dsrm``), or ``auto`` = the agent's row in the paper (DSRM for flat and for the
    dsrm_hrl alias, none otherwise). Stage I trains DSRM only when the purifier is dsrm.
    """

    purifier: str = "auto"
    """State purifier: auto (the agent's paper row), none, dsrm, tce, rce or bod."""

    def validate(self, p: str = "state") -> None:
        _check(self.purifier in PURIFIERS, f"{p}.purifier", self.purifier, f"one of {PURIFIERS}")


def resolve_agent(cfg) -> tuple[str, str]:
    """(registry kind, purifier) of a config: aliases and ``state.purifier = auto`` resolved."""
    kind, alias_purifier = AGENT_ALIASES.get(cfg.agent.kind, (cfg.agent.kind, None))
    purifier = cfg.state.purifier
    if cfg.agent.kind in AGENT_ALIASES and purifier == "auto":
        purifier = alias_purifier
    if purifier == "auto":
        purifier = DEFAULT_PURIFIER.get(kind, "none")
    return kind, purifier


@dataclass(frozen=True)
class DenoiseConfig:
    """The heuristic denoisers of the paper's Table 3 as state filters (``state.purifier`` = tce,
    rce or bod; ``purerec.state.denoise``): a feedback model trained in Stage I with the denoiser's loss
    on the same sessions DSRM trains on, whose per-item weights drop (T-CE) or scale (R-CE, BOD)
    the history's feedback before the state is built."""

    steps: int = 1000
    """Gradient steps of the denoiser's feedback model in Stage I."""
    lr: float = 1e-3
    """Feedback-model learning rate."""
    batch_size: int = 256
    """Feedback-model minibatch size."""
    tce_drop_rate: float = 0.2
    """T-CE: final share of largest-loss interactions dropped."""
    tce_num_gradual: int = 500
    """T-CE: steps over which the drop rate rises to tce_drop_rate."""
    rce_beta: float = 0.2
    """R-CE: beta of the loss reweighting."""
    bod_lr: float = 1e-3
    """BOD: learning rate of the bi-level weight generator."""
    bod_hidden: int = 64
    """BOD: hidden width of the weight generator."""

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
