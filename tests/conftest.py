"""Shared fixtures: a small synthetic world that builds in about a second."""

from __future__ import annotations

import dataclasses
import os

# XLA's cheaper CPU optimisation for the test programs (small shapes: compiling dominates, and
# these flags about halve it); set before JAX starts its backend. Subprocess tests inherit it or
# set their own.
_FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_XLA}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from purerec.config import Config, WorldConfig


# Persistent XLA cache: identical programs compiled by several tests (a run, its resume, its
# rerun) are compiled once.
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("PUREREC_JAX_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "jax")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def small_config(**env_overrides) -> Config:
    world = WorldConfig(n_users=300, n_items=400, n_test_users=120, n_test_items=150, n_tags=12,
                        true_dim=8, emb_dim=8, log_density=0.2, cache_dir="")
    cfg = Config(world=world)
    if env_overrides:
        cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, **env_overrides))
    return cfg.validate()


@pytest.fixture(scope="session")
def small_cfg() -> Config:
    return small_config()


@pytest.fixture(scope="session")
def small_worlds(small_cfg):
    from purerec.data.datasets import get_worlds

    return get_worlds(small_cfg, use_cache=False)


@pytest.fixture(scope="session")
def small_params(small_cfg, small_worlds):
    from purerec.sim.env import make_params

    return make_params(small_worlds[1], small_cfg)


# Two tiers: the default run is the fast tier (unit tests against hand-worked values, every agent
# for an update or two, the CLI, bad inputs, resume); tests marked ``@pytest.mark.slow`` (learning
# margins, several processes, long runs) run only with ``--slow`` (``python -m pytest --slow``).
def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the slow tier (tests marked @pytest.mark.slow)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the slow tier (learning margins, several processes, long runs); "
                                       "run with --slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow tier: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
