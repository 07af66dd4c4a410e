#!/usr/bin/env python
"""Observation 1 of the paper in our simulator: logged reward tracks exposure, truth does not.

For every train-world item with at least one logged exposure, regress its mean observed
(contaminated) feedback in the logs on its exposure count, and likewise its mean true
response over the same exposures; print both linear R^2.

    python benchmarks/observation1.py [--env envs/kuairec.toml] [--field value ...]
"""

from __future__ import annotations

import sys

import numpy as np

from purerec.cli import split_args
from purerec.config import load_config
from purerec.datasets import get_worlds


def linear_r2(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1] ** 2)


def main(argv: list[str]) -> None:
    opts, overrides, _ = split_args(argv, {"env": 1})
    cfg = load_config(opts.get("env", "envs/kuairec.toml"), overrides)
    train, _ = get_worlds(cfg, verbose=True)
    pop = np.asarray(train.item_pop)
    seen = pop > 0
    r2_obs = linear_r2(pop[seen], np.asarray(train.item_log_reward)[seen])
    r2_true = linear_r2(pop[seen], np.asarray(train.item_log_true)[seen])
    print(f"world: {cfg.world.source}/{cfg.world.preset} train {train.n_users} x {train.n_items}, "
          f"{int(seen.sum())} logged items, conformity {cfg.feedback.conformity}")
    print(f"R^2(exposure, mean observed reward) = {r2_obs:.3f}")
    print(f"R^2(exposure, mean true response)   = {r2_true:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
