"""The agent registry: ``agent.kind`` -> ``AgentSpec`` (row label, report group, config sections,
and the module whose ``make(cfg, params, axis_name)`` builds the ``purerec.agents.base.Agent``).

Nothing outside this registry tests a kind string. Adding an agent = one module in this package
with a ``make`` function, one entry below, its kind in ``purerec.config.AGENT_KINDS`` and its
config section in ``purerec.config.Config``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from purerec.state.sections import AGENT_KINDS, resolve_agent

from purerec.core.fields import Sections

GROUPS = ("method", "ablation", "baseline")
# The paper's row families (Table 2 groups its baselines by them).
FAMILIES = ("general RL", "fairness-aware RL", "ours")


@dataclass(frozen=True)
class AgentSpec:
    kind: str
    label: str  # the report's row name without a purifier
    group: str  # "method" | "ablation" | "baseline": which report table the row goes to
    sections: tuple[str, ...]  # the config sections the agent reads besides the shared ones
    module: str  # purerec.agents.<module> holds make()
    # Row labels for a purifier other than "none" (default: "<label>+<PURIFIER>").
    purified_labels: tuple[tuple[str, str], ...] = ()
    session_shards: bool = False  # whether its sessions can be split over devices (train.session_shards)
    family: str = "ours"  # one of FAMILIES
    tradeoff: str | None = None  # the config field that moves it along the accuracy-fairness front
    # The method's own slate rule (``slate.head = native``) and where it comes from.
    native_rule: str = "topk"
    native: str = "top-K of its scores"
    # (head, tail) under ``slate.head = auto`` / ``slate.tail = auto``: the native head unless the
    # README shows with numbers that another one serves users better.
    default_head: tuple[str, str] = ("native", "fixed")
    # Policy gradient steps per update (the budget table's count; the Stage-I and user-model fits
    # that precede training are not in it): cfg -> int.
    grad_steps: Callable[[Sections], int] = lambda cfg: cfg.replay.grad_steps

    @property
    def make(self) -> Callable:
        return importlib.import_module(f"purerec.agents.{self.module}").make

    def row_label(self, purifier: str) -> str:
        if purifier == "none":
            return self.label
        return dict(self.purified_labels).get(purifier, f"{self.label}+{purifier.upper()}")


_GROUPED_LEARNED = ("grouped", "learned")
REGISTRY: dict[str, AgentSpec] = {
    "hrl": AgentSpec("hrl", "HRL", "ablation", ("ppo",), "hrl",
                     (("dsrm", "DSRM-HRL"), ("tce", "HRL+T-CE"), ("rce", "HRL+R-CE"), ("bod", "HRL+BOD")),
                     session_shards=True, tradeoff="agent.lambda_fair",
                     native="top-K of eq. 6's score (the paper's eq. 6; the authors' KuaiSim-based code)",
                     default_head=_GROUPED_LEARNED, grad_steps=lambda c: 2 * c.ppo.epochs * c.ppo.minibatches),
    "flat": AgentSpec("flat", "FLAT (no DSRM)", "ablation", ("ppo",), "hrl", (("dsrm", "FLAT"),), session_shards=True,
                      tradeoff="agent.lambda_fair", native="top-K of eq. 6's score (as DSRM-HRL)",
                      default_head=_GROUPED_LEARNED, grad_steps=lambda c: c.ppo.epochs * c.ppo.minibatches),
    "a2c": AgentSpec("a2c", "A2C", "baseline", ("a2c",), "a2c", family="general RL",
                     native="top-K of the hyper-action's linear scores (KuaiSim's A2C)",
                     grad_steps=lambda c: c.a2c.minibatches),
    "td3": AgentSpec("td3", "TD3", "baseline", ("td3", "replay"), "td3", family="general RL",
                     native="top-K of the actor's scores (KuaiSim's DDPG/TD3 port)"),
    "bcq": AgentSpec("bcq", "BCQ", "baseline", ("bcq", "offline", "replay"), "bcq", family="general RL",
                     native="top-K of Q among items passing the tau filter (discrete BCQ, Fujimoto et al. 2019)"),
    "mofir": AgentSpec("mofir", "MOFIR (reading)", "baseline", ("mofir", "replay"), "mofir",
                       family="fairness-aware RL", tradeoff="mofir.eval_weight",
                       native="top-K of the actor's ranking scores (Ge et al. 2022; no public code)",
                       default_head=_GROUPED_LEARNED),
    "dorl": AgentSpec("dorl", "DORL", "baseline", ("dorl", "a2c", "offline"), "dorl", family="fairness-aware RL",
                      native="top-K of A2C's scores (EasyRL4Rec's DORL)", grad_steps=lambda c: c.a2c.minibatches),
    "dnair": AgentSpec("dnair", "DNaIR", "baseline", ("dnair", "replay"), "dnair", family="fairness-aware RL",
                       tradeoff="dnair.novelty_weight",
                       native="top-K of per-item Q, epsilon-replacement in training (DNaIR's public code)"),
    "sac4ir": AgentSpec("sac4ir", "SAC4IR", "baseline", ("sac4ir", "replay"), "sac4ir", family="fairness-aware RL",
                        native="K draws without replacement from the softmax policy in training, top-K at test "
                               "(SAC4IR's public code)"),
    "fcpo": AgentSpec("fcpo", "FCPO", "baseline", ("fcpo",), "fcpo", family="fairness-aware RL",
                      tradeoff="fcpo.cost_limit", native="top-K of the hyper-action's scores (FCPO's public code)",
                      grad_steps=lambda c: 1 + c.fcpo.critic_epochs * c.fcpo.critic_minibatches),
    "hsrl": AgentSpec("hsrl", "HSRL", "baseline", ("hsrl", "ppo", "replay"), "hsrl", family="general RL",
                      native="top-K of the summed level log-probabilities (HSRL's public code, topk_rate 1)",
                      grad_steps=lambda c: c.replay.grad_steps if c.hsrl.update == "faithful"
                      else c.ppo.epochs * c.ppo.minibatches),
    "hsrl_flat": AgentSpec("hsrl_flat", "HSRL-flat (softmax over items)", "baseline", ("hsrl", "ppo", "replay"),
                           "hsrl", family="general RL",
                           native="top-K of one softmax over all items (HSRL's flat comparison)",
                           grad_steps=lambda c: c.replay.grad_steps if c.hsrl.update == "faithful"
                           else c.ppo.epochs * c.ppo.minibatches),
}
assert tuple(REGISTRY) == AGENT_KINDS, "purerec.config.AGENT_KINDS must list the registry's kinds"


# The paper's Table 4: training seconds for 20,000 episodes on KuaiRec, max_len 30 (its hardware).
PAPER_TRAIN_S = {"A2C": 7512.0, "SAC4IR": 6755.0, "DNaIR": 5935.0, "HRL": 8463.0, "DSRM-HRL": 15909.0,
                 "HRL+R-CE": 29919.0}


def get(kind: str) -> AgentSpec:
    if kind not in REGISTRY:
        raise KeyError(f"unknown agent kind {kind!r}; registered: {sorted(REGISTRY)}")
    return REGISTRY[kind]


def spec_of(cfg: Sections) -> AgentSpec:
    return get(resolve_agent(cfg)[0])


def describe(cfg: Sections) -> dict:
    """{"kind", "purifier", "method" (row label), "group" (report table), "family", "tradeoff",
    "paper_train_s"} of a config; DSRM-HRL is the paper's method, its other rows (HRL, FLAT and
    purifier variants) are ablations."""
    kind, purifier = resolve_agent(cfg)
    spec = get(kind)
    label = spec.row_label(purifier)
    group = "method" if (kind, purifier) == ("hrl", "dsrm") else spec.group
    return {"kind": kind, "purifier": purifier, "method": label, "group": group, "family": spec.family,
            "tradeoff": spec.tradeoff, "paper_train_s": PAPER_TRAIN_S.get(label)}
