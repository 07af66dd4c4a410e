"""The calibration card of a world: how its logs compare with KuaiRec / KuaiRand and the paper.

Computed from the train world alone (its visible ``item_pop`` / ``popular`` / ``item_log_reward``
and hidden ``item_log_true``), so it works for every source (synthetic, kuairec, kuairand, csv)
and needs no access to the raw logs. "The logs" below are the train world's logs: for the
synthetic world the simulated logging policy's, for real data the train file(s).

- users, items: the train world's; interactions = sum of item_pop = distinct logged
  (user, item) pairs; density = interactions / (users x items); test_users, test_items: the
  test world's sizes.
- mean_feedback: mean observed feedback over the logged pairs (sum pop x log reward / sum pop).
- exposure_gini: Gini of item_pop over ALL train items (zero-exposure items included),
  G = sum_k (2k - n - 1) x_(k) / (n sum x), x sorted ascending (= ``purerec.sim.metrics.gini``).
- popular_share: share of the logged exposures that fall on the ``popular`` items (the top
  ``world.popular_frac`` of items by exposure).
- Observation 1 of the paper ("popular items get higher feedback"), in two forms, over the
  logged items (item_pop > 0), each as the R^2 of a straight-line fit (squared Pearson r; None
  when undefined, e.g. every item has the same exposure):
  * ``reward_vs_exposure``: an item's MEAN feedback over its exposures vs its exposure count.
    With the observed feedback it measures popularity bias in the logs; with the true response
    (``*_true``) it should be near 0 when the bias is in the feedback, not in the items.
  * ``plays_vs_shows``: the paper's literal form -- an item's plays (the SUM of its feedback
    over its exposures; for binary feedback the play count) vs its shows (exposure count).
    Since plays = shows x mean feedback, this is high for ANY data whose mean feedback does not
    vary much across items: 0.99 on our synthetic worlds with the TRUE (unbiased) response. It
    cannot show bias by itself; read it next to ``reward_vs_exposure``.
  For real data (kuairec, kuairand, csv) the "true response" is the simulator's fitted hidden
  truth; on the train world it is fitted on these same logs (csv without an unbiased file: on
  all the logs), so it inherits their bias and its R^2 is not an unbiased measurement.

``datasets.get_worlds`` prints the card when it builds or first loads a world (``verbose``) and,
for real data (kuairec, kuairand, csv), stores it as JSON next to the cached world
(``world-<key>-card.json``, ``save_card`` / ``load_card``); ``benchmarks/observation1.py`` prints
the cards and an Observation-1 table for several worlds.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np

PLAYS_CAVEAT = ("plays vs shows is high even for unbiased data (plays = shows x mean feedback; 0.99 on "
                "our synthetic worlds with the true response), so it cannot show bias by itself")


@dataclass(frozen=True)
class Observation1:
    """R^2 of the two Observation-1 regressions over ``n_items`` logged items (None: undefined)."""

    n_items: int
    reward_vs_exposure_observed: float | None
    reward_vs_exposure_true: float | None
    plays_vs_shows_observed: float | None
    plays_vs_shows_true: float | None


@dataclass(frozen=True)
class CalibrationCard:
    source: str
    split: str
    users: int
    items: int
    interactions: int
    density: float
    test_users: int
    test_items: int
    mean_feedback: float
    exposure_gini: float
    popular_frac: float
    popular_share: float
    observation1: Observation1
    note: str = PLAYS_CAVEAT

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "CalibrationCard":
        d = dict(d)
        d["observation1"] = Observation1(**d["observation1"])
        return CalibrationCard(**d)


def gini(x: np.ndarray) -> float:
    """G = sum_k (2k - n - 1) x_(k) / (n sum x), x ascending; 0 for an all-zero vector."""
    x = np.sort(np.asarray(x, np.float64).ravel())
    n = x.size
    total = x.sum()
    if n == 0 or total <= 0:
        return 0.0
    k = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2.0 * k - n - 1.0) * x) / (n * total))


def r2(x: np.ndarray, y: np.ndarray) -> float | None:
    """Squared Pearson correlation (the R^2 of a straight-line fit); None with < 3 points or a constant."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.sum(xc * xc)) * float(np.sum(yc * yc)))
    if den == 0:
        return None
    return float((np.sum(xc * yc) / den) ** 2)


def observation1(world) -> Observation1:
    """Both forms of Observation 1 over the world's logged items (item_pop > 0)."""
    pop = np.asarray(world.item_pop, np.float64)
    seen = pop > 0
    shows = pop[seen]
    mean_obs = np.asarray(world.item_log_reward, np.float64)[seen]
    mean_true = np.asarray(world.item_log_true, np.float64)[seen]
    return Observation1(
        n_items=int(seen.sum()),
        reward_vs_exposure_observed=r2(shows, mean_obs),
        reward_vs_exposure_true=r2(shows, mean_true),
        plays_vs_shows_observed=r2(shows, shows * mean_obs),
        plays_vs_shows_true=r2(shows, shows * mean_true),
    )


def card(train, test, source: str, popular_frac: float, split: str = "") -> CalibrationCard:
    """The card of a (train, test) world pair (see the module docstring)."""
    pop = np.asarray(train.item_pop, np.float64)
    total = float(pop.sum())
    popular = np.asarray(train.popular, bool)
    log_reward = np.asarray(train.item_log_reward, np.float64)
    return CalibrationCard(
        source=source,
        split=split,
        users=int(train.n_users),
        items=int(train.n_items),
        interactions=int(round(total)),
        density=total / (train.n_users * train.n_items),
        test_users=int(test.n_users),
        test_items=int(test.n_items),
        mean_feedback=float(np.sum(pop * log_reward) / total) if total > 0 else 0.0,
        exposure_gini=gini(pop),
        popular_frac=float(popular_frac),
        popular_share=float(pop[popular].sum() / total) if total > 0 else 0.0,
        observation1=observation1(train),
    )


def card_for_config(cfg, train, test) -> CalibrationCard:
    """``card`` with the source, popular_frac and (csv) split rule from a ``Config``."""
    split = ""
    if cfg.world.source == "csv":
        from purerec.data.loaders.user_csv import describe_split

        split = describe_split(cfg.world.data_dir)
    elif cfg.world.source == "kuairec":
        split = "train = big_matrix.csv, test = small_matrix.csv"
    elif cfg.world.source == "kuairand":
        split = "train = log_standard_*.csv, test = log_random_*.csv"
    else:
        split = f"{cfg.world.preset}-like, seed {cfg.world.seed}, conformity {cfg.feedback.conformity}"
    return card(train, test, cfg.world.source, cfg.world.popular_frac, split)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def format_observation1(o: Observation1, indent: str = "  ") -> str:
    return "\n".join([
        f"{indent}Observation 1 over {o.n_items:,} logged items (R^2 of a straight-line fit):",
        f"{indent}  mean reward vs exposure: observed {_fmt(o.reward_vs_exposure_observed)}, "
        f"true response {_fmt(o.reward_vs_exposure_true)}",
        f"{indent}  plays vs shows (the paper's literal form): observed {_fmt(o.plays_vs_shows_observed)}, "
        f"true response {_fmt(o.plays_vs_shows_true)}",
        f"{indent}  note: {PLAYS_CAVEAT}",
    ])


def format_card(c: CalibrationCard) -> str:
    return "\n".join([
        f"calibration card ({c.source}; {c.split}):" if c.split else f"calibration card ({c.source}):",
        f"  train logs: {c.users:,} users x {c.items:,} items, {c.interactions:,} interactions, "
        f"density {c.density:.4g}, mean feedback {c.mean_feedback:.3f}",
        f"  test world: {c.test_users:,} users x {c.test_items:,} items",
        f"  exposure Gini over items {c.exposure_gini:.3f}; the popular {c.popular_frac:.0%} of items get "
        f"{c.popular_share:.1%} of exposures",
        format_observation1(c.observation1),
    ])


def save_card(path: str, c: CalibrationCard) -> None:
    from purerec.core.atomic import atomic_write

    atomic_write(path, lambda fh: json.dump(c.to_dict(), fh, indent=2))


def load_card(path: str) -> CalibrationCard:
    with open(path) as fh:
        return CalibrationCard.from_dict(json.load(fh))
