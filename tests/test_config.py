"""Config loading: TOML files, command-line overrides, type coercion and error messages."""

from __future__ import annotations

import pytest

from purerec.config import (Config, ConfigError, EnvConfig, apply_overrides, field_paths, load_config,
                            resolve_override_name)

TOML = """
[meta]
name = "test env"          # ignored by the loader

[world]
n_users = 500
n_test_items = 200
popular_frac = 0.25

[feedback]
conformity = 0.5
noise_std = 0.0

[env]
slate_size = 5
max_len = 12
exit_rule = "tag_repeat"
tag_window = 7

[train]
seeds = [3, 4]
"""


def write(tmp_path, text: str, name: str = "env.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def raises_on(field: str, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        load_config(**kw)
    assert field in str(ei.value), (field, str(ei.value))
    assert ei.value.field == field
    return ei.value


# --------------------------------------------------------------------------------------------
# Loading and overrides
# --------------------------------------------------------------------------------------------


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.env.max_len == 30 and cfg.env.exit_rule == "temper"
    assert cfg.env.temper_start == 30.0  # temper_init = 0 -> max_len
    assert cfg.env.history_len == max(cfg.env.obs_window, cfg.env.tag_window)


def test_load_toml_file(tmp_path):
    cfg = load_config(write(tmp_path, TOML))
    assert cfg.world.n_users == 500 and cfg.world.n_test_items == 200
    assert cfg.world.popular_frac == 0.25
    assert cfg.feedback == type(cfg.feedback)(conformity=0.5, noise_std=0.0)
    assert (cfg.env.slate_size, cfg.env.max_len, cfg.env.exit_rule, cfg.env.tag_window) == (5, 12, "tag_repeat", 7)
    assert cfg.train.seeds == (3, 4) and isinstance(cfg.train.seeds, tuple)
    # Untouched fields keep their defaults.
    assert cfg.world.n_items == Config().world.n_items
    assert cfg.env.obs_window == EnvConfig().obs_window
    assert cfg.env.temper_start == 12.0
    assert cfg.agent == Config().agent


@pytest.mark.parametrize("name", ["max-len", "max_len", "env.max_len", "env.max-len"])
def test_override_by_short_and_dotted_names(tmp_path, name):
    cfg = load_config(write(tmp_path, TOML), overrides={name: "50"})
    assert cfg.env.max_len == 50 and isinstance(cfg.env.max_len, int)
    assert cfg.env.slate_size == 5  # the rest of the file still applies
    assert resolve_override_name(Config(), name) == "env.max_len"


def test_overrides_beat_file_and_coerce_types(tmp_path):
    cfg = load_config(write(tmp_path, TOML), overrides={
        "noise-std": "0.1", "exit-rule": "none", "seeds": "7, 8 9", "world.seed": "3",
        "conformity": 1, "temper_init": "4", "n_tags": 20.0})
    assert cfg.feedback.noise_std == 0.1 and isinstance(cfg.feedback.noise_std, float)
    assert cfg.feedback.conformity == 1.0 and isinstance(cfg.feedback.conformity, float)
    assert cfg.env.exit_rule == "none"
    assert cfg.train.seeds == (7, 8, 9)
    assert cfg.world.seed == 3 and isinstance(cfg.world.seed, int)
    assert cfg.env.temper_init == 4.0 and isinstance(cfg.env.temper_init, float)
    assert cfg.env.temper_start == 4.0
    assert cfg.world.n_tags == 20 and isinstance(cfg.world.n_tags, int)


def test_toml_string_values_are_coerced(tmp_path):
    cfg = load_config(write(tmp_path, '[env]\nmax_len = "40"\nfair_threshold = "0.5"\n'))
    assert cfg.env.max_len == 40 and isinstance(cfg.env.max_len, int)
    assert cfg.env.fair_threshold == 0.5


def test_aliases():
    cfg = load_config(overrides={"agent": "flat", "lambda": "0.3", "diffusion-steps": "7"})
    assert cfg.agent.kind == "flat"
    assert cfg.agent.lambda_fair == 0.3
    assert cfg.dsrm.steps == 7


def test_apply_overrides_on_base_config():
    base = Config()
    cfg = apply_overrides(base, {"slate-size": "3", "env.obs_window": 4})
    assert (cfg.env.slate_size, cfg.env.obs_window) == (3, 4)
    assert base.env.slate_size == 10  # frozen, not mutated


def test_field_paths_cover_every_leaf():
    paths = field_paths(Config())
    assert "env.max_len" in paths and "world.n_items" in paths and "train.seeds" in paths
    assert "env" not in paths  # sections are not leaves
    assert all(k == v for k, v in paths.items())


# --------------------------------------------------------------------------------------------
# Errors name the field
# --------------------------------------------------------------------------------------------


def test_slate_size_larger_than_items(tmp_path):
    e = raises_on("env.slate_size", path=write(tmp_path, "[world]\nn_test_items = 8\n[env]\nslate_size = 9\n"))
    assert "8" in str(e)  # names the bound (the test world's item count)
    raises_on("env.slate_size", overrides={"slate-size": "0"})
    # Exactly n_items is allowed.
    assert load_config(write(tmp_path, "[world]\nn_test_items = 9\n[env]\nslate_size = 9\n")).env.slate_size == 9


@pytest.mark.parametrize("value", ["0", "-3"])
def test_max_len_must_be_positive(value):
    e = raises_on("env.max_len", overrides={"max-len": value})
    assert repr(int(value)) in str(e)


def test_negative_noise_std(tmp_path):
    raises_on("feedback.noise_std", path=write(tmp_path, "[feedback]\nnoise_std = -0.1\n"))


def test_conformity_out_of_range():
    raises_on("feedback.conformity", overrides={"conformity": "1.5"})


def test_unknown_exit_rule():
    e = raises_on("env.exit_rule", overrides={"exit_rule": "boredom"})
    assert "temper" in str(e) and "tag_repeat" in str(e)  # lists the allowed values


def test_unknown_field_in_toml(tmp_path):
    e = raises_on("env.max_length", path=write(tmp_path, "[env]\nmax_length = 3\n"))
    assert "max_len" in str(e)  # the known fields are listed
    raises_on("bogus", path=write(tmp_path, "[bogus]\nx = 1\n"))


def test_section_must_be_a_table(tmp_path):
    raises_on("env", path=write(tmp_path, "env = 5\n"))


def test_unknown_override_name():
    raises_on("max_lenn", overrides={"max_lenn": "3"})


@pytest.mark.parametrize("name,candidates", [
    ("seed", ["world.seed", "eval.seed"]),
    ("hidden", ["encoder.hidden", "dsrm.hidden", "agent.hidden"]),
    ("lr", ["encoder.lr", "dsrm.lr"]),
])
def test_ambiguous_short_name(name, candidates):
    e = raises_on(name, overrides={name: "1"})
    assert "ambiguous" in str(e)
    for c in candidates:
        assert c in str(e)
    # The dotted name resolves the ambiguity.
    assert resolve_override_name(Config(), candidates[0]) == candidates[0]


def test_kuairec_requires_data_dir(tmp_path):
    e = raises_on("world.data_dir", overrides={"world.source": "kuairec"})
    assert "kuairec" in str(e)
    raises_on("world.data_dir", overrides={"world.source": "kuairec", "data-dir": str(tmp_path / "missing")})
    cfg = load_config(overrides={"world.source": "kuairec", "data-dir": str(tmp_path)})
    assert cfg.world.source == "kuairec" and cfg.world.data_dir == str(tmp_path)


def test_unknown_source():
    raises_on("world.source", overrides={"world.source": "movielens"})


def test_nonexistent_toml_path(tmp_path):
    missing = str(tmp_path / "nope.toml")
    e = raises_on("--env", path=missing)
    assert missing in str(e)


def test_invalid_toml(tmp_path):
    e = raises_on("--env", path=write(tmp_path, "[env\nmax_len = 3\n"))
    assert "valid TOML" in str(e)


@pytest.mark.parametrize("value", ["abc", 2.5, [1, 2]])
def test_non_numeric_int(value):
    raises_on("env.max_len", overrides={"env.max_len": value})


def test_integral_float_for_int_field_is_accepted():
    assert load_config(overrides={"max-len": 50.0}).env.max_len == 50


@pytest.mark.parametrize("value", ["50.5", True])
def test_int_field_rejects_non_integral_or_boolean_values(value):
    """BUG: a string like "50.5" (how every command-line value arrives) is silently truncated to 50,
    although the float 50.5 is rejected; and a TOML boolean is accepted as the integer 1."""
    raises_on("env.max_len", overrides={"env.max_len": value})


def test_minibatches_must_divide_batch():
    e = raises_on("ppo.minibatches", overrides={"num-envs": "10", "rollout-len": "3", "ppo.minibatches": "4"})
    assert "30" in str(e)


def test_total_updates_multiple_of_chunk():
    raises_on("train.total_updates", overrides={"total-updates": "25", "chunk-updates": "10"})


def test_duplicate_seeds():
    raises_on("train.seeds", overrides={"seeds": "1,1"})


def test_popular_frac_range():
    raises_on("world.popular_frac", overrides={"popular-frac": "1.0"})


# --------------------------------------------------------------------------------------------
# Fields added with the slate-scope exit rule, the test protocol and the hyper-action agents
# --------------------------------------------------------------------------------------------


def test_new_field_defaults():
    cfg = Config()
    assert cfg.env.fair_scope == "slate"
    assert (cfg.eval.protocol, cfg.eval.action, cfg.eval.seed) == ("test", "greedy", 2027)
    assert cfg.train.target_episodes == 20000


@pytest.mark.parametrize("field,bad", [("env.fair_scope", "batch"), ("eval.protocol", "paper"),
                                       ("eval.action", "argmax"), ("eval.repeats", "0"),
                                       ("eval.report_updates", "0"), ("agent.fair_reward", "gini"),
                                       ("agent.action", "softmax"), ("agent.score", "l2"),
                                       ("agent.action_std", "0"), ("agent.manager_std", "2.5"),
                                       ("ppo.actor_lr", "-0.1"), ("ppo.critic_lr", "1")])
def test_new_fields_reject_bad_values(field, bad):
    raises_on(field, overrides={field: bad})


def test_session_scope_and_frozen_learners_are_valid():
    cfg = load_config(overrides={"env.fair_scope": "session", "ppo.actor_lr": "0", "ppo.critic_lr": "0"})
    assert cfg.env.fair_scope == "session" and cfg.ppo.actor_lr == 0.0 and cfg.ppo.critic_lr == 0.0


def test_sampled_slates_need_the_topk_rule():
    raises_on("slate.head", overrides={"agent.action": "plackett_luce"})
    raises_on("slate.head", overrides={"agent.action": "plackett_luce", "slate.head": "grouped"})
    for head in ("topk", "native"):
        cfg = load_config(overrides={"agent.action": "plackett_luce", "slate.head": head})
        assert cfg.agent.action == "plackett_luce"


@pytest.mark.parametrize("field, bad", [("slate.head", "best"), ("slate.tail", "fixed_0.5"),
                                        ("slate.tail_share", "1.5"), ("slate.tail_share", "-0.1"),
                                        ("eval.split", "train")])
def test_slate_and_split_fields_reject_bad_values(field, bad):
    raises_on(field, overrides={field: bad})
