"""Stage I's feedback predictor as a fixed policy: no RL, a slate from predicted feedback.

Stage I (``purerec.state.stage1``) fits the state encoder with a feedback head that predicts an
item's observed feedback from the state: f(s, e_i) = sigmoid(q(s) . e_i + b). Scoring every item by
it and composing the slate with a head (``purerec.agents.heads``) gives a policy that learns
nothing in Stage II, so two such policies that differ only in the state they read isolate what the
state is worth. That is the paper's Observation 2 ("the purified state alone helps"): the same
predictor acting on the purified state ŝ (``state = "purified"``) or on the observed state s~
(``"observed"``). ``train.py claims`` evaluates both under the test protocol.
"""

from __future__ import annotations

from typing import Callable

import jax

from purerec.agents import heads
from purerec.sim import env as E
from purerec.state.encoder import FeedbackHead
from purerec.state.purifier import Frozen, Observer

STATES = ("purified", "observed")


def make_policy(observer: Observer, head: heads.Head, k: int, tail_share: float, state: str = "purified") -> Callable:
    """A per-session ``act(key, obs, env_state, params, frozen, carry) -> (slate, carry)``: the top of
    f(s, e_i) over every item under ``head`` (the fixed long-tail share ``tail_share`` for a grouped
    head), s = ŝ or s~. ``frozen`` is Stage I's product; the carry passes through."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")

    def act(key: jax.Array, obs: E.Obs, env_state, params: E.EnvParams, frozen: Frozen, carry):
        emb = params.world.item_emb
        s = observer.state(frozen, key, obs, params) if state == "purified" else observer.observed(frozen, obs, emb)
        scores = FeedbackHead(emb.shape[-1]).apply(frozen.feedback_head, s, emb)
        return heads.compose(head, scores, params.world.popular, k, tail_share), carry

    return act
