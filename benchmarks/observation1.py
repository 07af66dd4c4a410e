#!/usr/bin/env python
"""Observation 1 of the paper in our worlds, in both forms, with each world's calibration card.

For every train-world item with at least one logged exposure (``purerec.data.calibration``):
  * mean reward vs exposure: R^2 of a straight-line fit of the item's mean observed
    (contaminated) feedback in the logs on its exposure count, and of its mean TRUE response over
    the same exposures. Popularity bias shows as a high observed R^2 next to a low true one.
  * plays vs shows (the paper's literal form): R^2 of the item's plays (sum of feedback over its
    exposures) on its shows (exposure count). This is ~0.99 even with the true, unbiased
    response (plays = shows x mean), so it cannot show bias by itself.

Worlds: the synthetic KuaiRec-like (envs/kuairec.toml) and KuaiRand-like (envs/kuairand.toml)
defaults, or only ``--env FILE``; plus the user's CSV world with ``--data-dir DIR`` (schema in
``purerec.data.loaders.user_csv``; ``--no-synthetic`` for that one alone). Overrides apply to every
world. Worlds come from the cache (``purerec.data.datasets``) and are built on a miss.

    python benchmarks/observation1.py [--env FILE] [--data-dir DIR [--no-synthetic]] [--field value ...]
"""

from __future__ import annotations

import sys

from purerec.cli import split_args
from purerec.config import load_config, world_sections
from purerec.data.calibration import card_for_config, format_card, PLAYS_CAVEAT
from purerec.data.datasets import get_worlds

DEFAULT_ENVS = ("envs/kuairec.toml", "envs/kuairand.toml")


def world_configs(opts: dict, overrides: dict) -> list[tuple[str, object]]:
    """(label, Config) of every world to report."""
    out = []
    if not opts.get("no-synthetic"):
        for env in ([opts["env"]] if opts.get("env") else DEFAULT_ENVS):
            cfg = load_config(env, overrides)
            out.append((f"{cfg.world.source} {cfg.world.preset}-like ({env})" if cfg.world.source == "synthetic"
                        else f"{cfg.world.source} ({env})", cfg))
    if opts.get("data-dir"):
        cfg = load_config(opts.get("env", DEFAULT_ENVS[0]),
                          {**overrides, "world.source": "csv", "world.data_dir": opts["data-dir"]})
        out.append((f"csv world ({opts['data-dir']})", cfg))
    return out


def _f(v) -> str:
    return "  n/a" if v is None else f"{v:.3f}"


def main(argv: list[str]) -> None:
    opts, overrides, _ = split_args(argv, {"env": 1, "data-dir": 1, "no-synthetic": 0})
    rows = []
    for label, cfg in world_configs(opts, overrides):
        train, test = get_worlds(world_sections(cfg))
        card = card_for_config(world_sections(cfg), train, test)
        print(f"== {label}")
        print(format_card(card))
        print()
        o = card.observation1
        rows.append((label, o))
    print("Observation 1, R^2 over the logged items (observed feedback / true response):")
    print(f"  {'world':<44} {'mean reward vs exposure':>24} {'plays vs shows':>18}")
    for label, o in rows:
        print(f"  {label:<44} {_f(o.reward_vs_exposure_observed):>11} / {_f(o.reward_vs_exposure_true):<10} "
              f"{_f(o.plays_vs_shows_observed):>8} / {_f(o.plays_vs_shows_true):<7}")
    print(f"Note: {PLAYS_CAVEAT}.")


if __name__ == "__main__":
    main(sys.argv[1:])
