"""Command line: ``python train.py [sub-command] [options] [--section.field value ...]``.

Built on tyro: each sub-command (training, ``sweep``, ``tune``, ``report``, ``logs``,
``stationary``) is a dataclass below whose fields are its options and whose attribute docstrings
are their help (``train.py <sub-command> --help``). The config fields are options too, read by
``purerec.config`` on top of the ``--env`` TOML file (``parse`` says why); ``--help-config`` lists
them with their help. Every error a user can cause ends as one line ``error: ...`` (``main``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shlex
import sys
import time
from typing import Annotated, Any, Optional

import tyro

from purerec.config import agent_id, Config, ConfigError, env_sections, field_paths, world_sections
from purerec.core.errors import PurerecError, UsageError
from purerec.core.fields import field_docs
from purerec.run.distributed import launch_from


def split_args(argv: list[str], flags: dict[str, int]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Split argv into (flags, overrides, positionals).

    ``flags`` maps known flag names to their arity (0 = boolean switch, 1 = one value).
    Everything else of the form ``--name v [v ...]`` is a config override.
    """
    out_flags: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    positionals: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--"):
            positionals.append(tok)
            i += 1
            continue
        name, eq, inline = tok[2:].partition("=")
        if name in flags:
            arity = flags[name]
            if arity == 0:
                out_flags[name] = True
                i += 1
            else:
                if eq:
                    out_flags[name] = inline
                    i += 1
                elif i + 1 < len(argv):
                    out_flags[name] = argv[i + 1]
                    i += 2
                else:
                    raise ConfigError(f"--{name}", None, "this option needs a value")
            continue
        if eq:
            overrides[name] = inline
            i += 1
            continue
        values = []
        j = i + 1
        while j < len(argv) and not (argv[j].startswith("--") and not _is_number(argv[j])):
            values.append(argv[j])
            j += 1
        if not values:
            raise ConfigError(f"--{name}", None, "this option needs a value")
        overrides[name] = values[0] if len(values) == 1 else values
        i = j
    return out_flags, overrides, positionals


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def describe_config(cfg: Any) -> str:
    """Every config field as ``--section.field  default  help``, one section after another."""
    lines = []
    for path in field_paths(cfg):
        section, name = path.split(".")
        node = getattr(cfg, section)
        if name == next(iter(field_docs(type(node))), None):
            lines.append(f"[{section}]")
        flag = f"--{path.replace('_', '-')}"
        lines.append(f"  {flag:<36} {getattr(node, name)!r:<14} {field_docs(type(node)).get(name, '')}")
    return "\n".join(lines)


def format_table(rows: dict[str, dict[str, float]], columns: list[str], stds: dict | None = None) -> str:
    """A markdown table, one row per method; ``stds`` adds '± std' per cell."""
    head = "| method | " + " | ".join(columns) + " |"
    sep = "|---|" + "---|" * len(columns)
    body = []
    for name, vals in rows.items():
        cells = []
        for c in columns:
            v = vals.get(c, float("nan"))
            if stds is not None and name in stds:
                cells.append(f"{v:.4g} ± {stds[name].get(c, float('nan')):.2g}")
            else:
                cells.append(f"{v:.4g}")
        body.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


def run_reference(cfg: Config) -> dict[str, dict[str, float]]:
    """The reference policies' rows under the test protocol (``purerec.run.evaluation.reference_rows``)."""
    from purerec.run.evaluation import reference_rows

    return reference_rows(cfg, verbose=True)


def _n_test(cfg: Config) -> int:
    return min(cfg.eval.n_sessions, cfg.world.n_test_users)


def protocol_line(cfg: Config, n_sessions: int | None = None) -> str:
    """The evaluation protocol in words, for every table's caption."""
    e = cfg.eval
    n = n_sessions if n_sessions is not None else e.n_sessions
    where = ("validation users (new users on the test world's items)" if e.split == "validation"
             else "held-out test world")
    return (f"protocol test: {where}, {n} distinct users x {e.repeats} repeats "
            f"(seeds {e.seed}..{e.seed + e.repeats - 1}), each to its first exit, max_len {cfg.env.max_len}, "
            f"AD = {e.ad_form} form" + _dynamics_words(cfg))


def _dynamics_words(cfg: Config) -> str:
    pf = cfg.platform
    loop = (f"; a platform with memory (exposure decay rho {pf.rho:g}, labels recomputed every "
            f"{pf.relabel_every} steps)" if pf.loop else "")
    if cfg.env.dynamics == "none":
        return loop
    a = cfg.attraction
    c = (f"c {a.premium_c:g}" if a.premium_c > 0 else f"c for a median top-k click of {a.click_target:g}"
         if a.click_target > 0 else "c by the authors' rule")
    return (f"; preferences move (attraction, {a.mode} mode, {a.block} block: alpha_H {a.alpha_h:g}, alpha_NH "
            f"{a.alpha_nh:g}, beta {a.beta:g}, {c}, lambda {a.harm_lambda:g}, agents' reward {a.reward})" + loop)


TABLE_COLUMNS = ["Len", "R_each", "R_cum", "AD", "Gini", "coverage", "long_tail_share"]
DYNAMICS_COLUMNS = ["R_cum_true", "CTR", "harm", "harm_picks", "J", "drift"]  # purerec.sim.metrics.dynamics_metrics


PLATFORM_COLUMNS = ["gini_pop", "gini_total", "label_flips", "turnover"]  # purerec.sim.platform.stats


def table_columns(cfg: Config) -> list[str]:
    """The printed columns: the harm paper's quantities too when preferences move, the long-term
    fairness figures on a platform with memory."""
    return (TABLE_COLUMNS + (DYNAMICS_COLUMNS if cfg.env.dynamics != "none" else [])
            + (PLATFORM_COLUMNS if cfg.platform.loop else []))


FIDELITY = ["probe_cos_observed", "probe_cos_purified", "state_cos_observed", "state_cos_purified"]


def print_results(cfg: Config, res: dict, reference: dict | None = None, reference_s: float = 0.0) -> None:
    from purerec.agents import describe

    name = describe(agent_id(cfg))["method"]
    print(f"\n{protocol_line(cfg, res['n_sessions'])}; training seeds {list(cfg.train.seeds)} (mean ± std over seeds)\n")
    rows = {f"{name} ({rule})": res["test"][rule]["mean"] for rule in res["test"]}
    stds = {f"{name} ({rule})": res["test"][rule]["std"] for rule in res["test"]}
    if "untrained" in res:  # the same agent, head and Stage I with learning rates 0
        label = f"{name} frozen, learning rates 0 ({res['action']})"
        rows[label], stds[label] = res["untrained"]["mean"], res["untrained"]["std"]
    for ref, row in (reference or {}).items():
        rows[f"reference: {ref}"] = row
    print(format_table(rows, table_columns(cfg), stds))
    if "gain" in res:
        g = res["gain"]
        print("\nwhat learning adds (trained - frozen, " + res["action"] + ", mean [min, max] over seeds): "
              + ", ".join(f"{k} {g[k]['mean']:+.3g} [{g[k]['min']:+.3g}, {g[k]['max']:+.3g}]" for k in ("Len", "R_cum", "AD"))
              + ("; learning adds nothing measurable here (the Len interval holds 0)"
                 if g["Len"]["min"] <= 0 <= g["Len"]["max"] else ""))
    print(f"\nprotocol train_report: mean of the last {cfg.eval.report_updates} training updates (train world, "
          f"exploring policy)\n")
    tr = res["train_report"]
    print(format_table({name: tr["mean"]}, ["Len", "R_each", "R_cum", "AD"], {name: tr["std"]}))
    print("\nPurification fidelity (cosine to the hidden preference via a linear probe; to s* in state space)\n")
    print(format_table({name: res["mean"]}, FIDELITY, {name: res["std"]}))
    print(f"\n{timing_line(res['timings'], reference_s)}; results in {res['run_dir']}/results.json")


def timing_line(t: dict, reference_s: float = 0.0) -> str:
    """Where a run's wall time went: compile, Stage I, Stage II, checkpoints and the evaluation
    (with the reference rows when this invocation computed them), and evaluation's share."""
    total = t["total_s"] + reference_s
    ev = t.get("eval_s", 0.0) + reference_s
    stage2 = t["run_s"] - t.get("stage1_s", 0.0)
    ref = f" (reference rows {reference_s:.1f}s)" if reference_s >= 0.05 else ""
    return (f"wall {total:.1f}s: compile {t['compile_s']:.1f}s, Stage I {t.get('stage1_s', 0.0):.1f}s, "
            f"Stage II {stage2:.1f}s, checkpoints {t.get('checkpoint_s', 0.0):.1f}s, evaluation {ev:.1f}s{ref} "
            f"= {100 * ev / max(total, 1e-9):.0f}% of the wall time")


# ---------------------------------------------------------------------------------------------
# The sub-commands' own options, one dataclass each: tyro builds their flags, types, defaults and
# ``--help`` from the fields and the docstring under each. Config fields (``--section.field v``)
# are not declared here: they are what tyro leaves over (``return_unknown_args``) and go through
# ``purerec.config.apply_overrides``, on top of the ``--env`` TOML file (see ``parse``).

_FILE = tyro.conf.arg(metavar="FILE")
_DIR = tyro.conf.arg(metavar="DIR")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Common:
    """Options every sub-command takes."""

    debug: bool = False
    """show the traceback of an error (errors are one line otherwise)"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Launching(Common):
    """Several processes or hosts (see purerec.run.distributed); each value is checked by
    ``launch_from``, which also reads the PUREREC_* / JAX variables when a flag is absent."""

    coordinator: Annotated[Optional[str], tyro.conf.arg(metavar="HOST:PORT")] = None
    """start process I of N (process 0 serves HOST:PORT); or set PUREREC_COORDINATOR"""
    num_processes: Annotated[Optional[str], tyro.conf.arg(metavar="N")] = None
    """how many processes the launch has (with --coordinator); or PUREREC_NUM_PROCESSES"""
    process_id: Annotated[Optional[str], tyro.conf.arg(metavar="I")] = None
    """this process's index in [0, N) (with --coordinator); or PUREREC_PROCESS_ID"""
    distributed: bool = False
    """join the cluster JAX detects (SLURM, Open MPI, Kubernetes)"""
    init_timeout: Annotated[Optional[str], tyro.conf.arg(metavar="S")] = None
    """stop with an error when the processes have not all met after S seconds (None: 120)"""

    def launch(self):
        """The checked launch (``purerec.run.distributed.Launch``), or None for one process."""
        return launch_from({"coordinator": self.coordinator, "num-processes": self.num_processes,
                            "process-id": self.process_id, "distributed": self.distributed,
                            "init-timeout": self.init_timeout})


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainArgs(Launching):
    """Train an agent (default DSRM-HRL; --agent KIND for any registered one: dsrm_hrl, hrl, flat, a2c,
    td3, bcq, mofir, dorl, dnair, sac4ir, fcpo, hsrl, hsrl_flat, hrl_tce, hrl_rce, hrl_bod) and evaluate it on the test
    world. Sub-commands: sweep, tune, report, logs, stationary, claims (each answers --help). Any config field
    is an option too: --section.field VALUE, or --field VALUE when the name is unique (dashes or
    underscores; tuple fields take several values: --seeds 11 15 19); --help-config lists them all."""

    env: Annotated[str, _FILE] = "envs/kuairec.toml"
    """environment spec (TOML; see envs/)"""
    out: Annotated[Optional[str], _DIR] = None
    """run directory (None: runs/<time>-<agent>)"""
    resume: Annotated[Optional[str], _DIR] = None
    """continue a killed run from its last checkpoint (alone: the run keeps its config)"""
    reference: bool = False
    """only roll out the reference policies (random, most-popular, balanced, oracle)"""
    progress: bool = True
    """--no-progress: no progress bar"""
    log: Annotated[Optional[str], tyro.conf.arg(metavar="tensorboard")] = None
    """also write TensorBoard event files to DIR/tensorboard (needs pip install -e '.[tensorboard]')"""
    help_config: bool = False
    """list every config field with its default and a line of help, then exit"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepArgs(Launching):
    """Run every config x seed of the sweep spec FILE (sweeps/*.toml) that has no finished record yet,
    then write DIR/report.md (re-running skips finished runs)."""

    file: Annotated[tyro.conf.Positional[str], _FILE]
    """the sweep spec (TOML; see sweeps/ and purerec.run.sweep)"""
    dry_run: bool = False
    """print the plan (groups, runs, runs to do) and run nothing"""
    budget: Annotated[float, tyro.conf.arg(metavar="X")] = 1.0
    """scale each run's training budget by X in (0, 10]"""
    out: Annotated[Optional[str], _DIR] = None
    """sweep directory (None: runs/sweeps/<name>)"""
    reuse: Annotated[str, tyro.conf.arg(metavar="DIR[,DIR]")] = ""
    """copy the finished runs with the same run id from other sweep directories"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TuneArgs(Launching):
    """Run the tuning sweep FILE (sweeps/tune/*.toml: `tune = true`, every run on the validation split,
    tuning seeds disjoint from the reporting seeds), then write, per world and agent, the grid point and
    action rule with the best mean validation R_cum to DIR/<preset>/<agent>.toml (with the command and
    every candidate's figures): the defaults that `tuned = "sweeps/tuned"` sweeps such as table2 apply."""

    file: Annotated[tyro.conf.Positional[str], _FILE]
    """the tuning sweep spec"""
    dry_run: bool = False
    """print the plan and run nothing"""
    budget: Annotated[float, tyro.conf.arg(metavar="X")] = 1.0
    """scale each run's training budget by X in (0, 10]"""
    out: Annotated[Optional[str], _DIR] = None
    """sweep directory (None: runs/sweeps/<name>)"""
    tuned: Annotated[str, _DIR] = os.path.join("sweeps", "tuned")
    """where the chosen configs go"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportArgs(Common):
    """Write DIR/report.md (tables) and its plots from the run records of a sweep directory written by
    `train.py sweep`, and print the markdown."""

    dir: Annotated[tyro.conf.Positional[str], _DIR]
    """a sweep directory (holding runs/)"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogsArgs(Common):
    """Export the train world's logged sessions (offline.sessions parallel sessions x env.max_len steps of
    the popularity logging policy) as DIR/logs.npz + DIR/logs.json (the schema). Config fields are
    options too (--field VALUE, as for training)."""

    out: Annotated[str, _DIR]
    """output directory"""
    env: Annotated[str, _FILE] = "envs/kuairec.toml"
    """environment spec"""
    seed: Annotated[int, tyro.conf.arg(metavar="N")] = 0
    """the logging policy's seed"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StationaryArgs(Common):
    """The harm paper's stationary-profile comparison (purerec.sim.stationary) on the test world of a
    world with preference dynamics (env.dynamics = "attraction"): for N random users, the stationary
    objective J = p_CLK - lambda p_H of unif (uniform over safe items), u0 (top-k on the initial
    profile), alt (alternating optimisation) and grad (the paper's gradient method), per lambda, the
    mean and the [min, max] over seeds (each seed: its own users, random numbers and harm direction).
    Config fields are options too (--field VALUE, as for training)."""

    env: Annotated[str, _FILE] = "envs/kuairec-drift.toml"
    """environment spec (a world with env.dynamics = "attraction")"""
    users: Annotated[int, tyro.conf.arg(metavar="N")] = 100
    """users per seed (the paper's 100)"""
    seeds: Annotated[tuple[int, ...], tyro.conf.arg(metavar="S")] = (11, 15, 19)
    """seeds"""
    lambdas: Annotated[tuple[float, ...], tyro.conf.arg(metavar="L")] = (1.0, 10.0, 100.0)
    """harm weights (>= 0)"""
    pool: Annotated[int, tyro.conf.arg(metavar="N")] = 100
    """grad's candidate items per user: the best safe items on u0"""
    samples: Annotated[int, tyro.conf.arg(metavar="S")] = 256
    """common-random-number slates for grad's estimator"""
    steps: Annotated[int, tyro.conf.arg(metavar="N")] = 100
    """projected gradient steps"""
    out: Annotated[Optional[str], _FILE] = None
    """also write the summary (and every user's J) as JSON"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClaimsArgs(Common):
    """Test the paper's nine claims in purerec (purerec.run.claims): run the sweeps they read (resumable:
    finished runs are kept and reused), the Stage-I fidelity probes and the world cards, then write
    DIR/claims.md (a verdict per claim, the paper's figure beside ours with a 95% interval over seeds)
    and its figures. --budget below 1 is a quick look (a reduced plan, verdicts marked). Config fields
    as options (--field VALUE) apply to every run."""

    budget: Annotated[float, tyro.conf.arg(metavar="X")] = 1.0
    """scale each run's training budget by X in (0, 10]; below 1 a quick look (about 40 min at 0.1)"""
    out: Annotated[Optional[str], _DIR] = None
    """output directory (None: runs/claims, or runs/claims-budget<X> below budget 1)"""
    only: Annotated[str, tyro.conf.arg(metavar="N[,N]")] = "1,2,3,4,5,6,7,8,9"
    """the claims to test (numbers 1..9)"""
    envs: Annotated[str, tyro.conf.arg(metavar="FILE[,FILE]")] = ""
    """replace every part's worlds with these env files ('': each part's own)"""
    agents: Annotated[str, tyro.conf.arg(metavar="KIND[,KIND]")] = ""
    """keep only these agents in the sweeps (a smaller check; '': all)"""
    reuse: Annotated[str, tyro.conf.arg(metavar="DIR[,DIR]")] = ""
    """also copy finished runs with the same run id from these sweep directories"""
    dry_run: bool = False
    """print the plan and run nothing"""


COMMANDS = {"sweep": SweepArgs, "tune": TuneArgs, "report": ReportArgs, "logs": LogsArgs,
            "stationary": StationaryArgs, "claims": ClaimsArgs}


class Helped(Exception):
    """tyro printed a sub-command's ``--help``: the command is done (exit 0)."""


def _flatten(text: str) -> str:
    """tyro's boxed error as one line: the box drawn away, what follows its first rule (the
    argument's help, 'For full helptext ...') dropped."""
    lines = []
    for raw in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines():
        line = raw.strip().strip("│╭╮╰╯").strip()
        if line and set(line) <= {"─"}:
            break
        line = line.strip("─ ")
        if line:
            lines.append(line)
    return ": ".join(lines[:1] + [" ".join(lines[1:])]) if len(lines) > 1 else " ".join(lines)


def parse(cls, argv: list[str], prog: str):
    """(``cls`` instance, config overrides) from ``argv``: tyro parses the sub-command's own options
    and leaves the rest, which ``split_args`` reads as ``--section.field value`` overrides. A parse
    error becomes one ``UsageError`` line naming the option; ``--help`` raises ``Helped``."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            args, rest = tyro.cli(cls, args=argv, prog=prog, return_unknown_args=True,
                                  config=(tyro.conf.FlagCreatePairsOff,))
    except SystemExit as e:
        if not e.code:
            raise Helped() from None
        raise UsageError(f"{prog}: {_flatten(buf.getvalue())} (see {prog} --help)") from None
    _, overrides, positionals = split_args(rest, {})
    return args, overrides, positionals


def sweep_main(cmd: str, argv: list[str]) -> int:
    """``train.py sweep|tune FILE ...`` (``SweepArgs`` / ``TuneArgs``) and ``train.py report DIR``
    (``ReportArgs``). ``--reuse`` copies the finished runs of other sweep directories that have the
    same run id (the same config) instead of running them again."""
    args, overrides, pos = parse(COMMANDS[cmd], argv, f"train.py {cmd}")
    if overrides or pos:
        extra = " ".join([*pos, *("--" + k for k in overrides)])
        raise UsageError(f"train.py {cmd}: unexpected {extra} (a sweep's configs come from its spec; see "
                         f"train.py {cmd} --help)")
    if cmd == "report":
        from purerec.report.tables import write_report

        if not os.path.isdir(os.path.join(args.dir, "runs")):
            raise ConfigError("report", args.dir, "a sweep directory (holding runs/) written by `train.py sweep`")
        path = write_report(args.dir)
        print(open(path).read())
        print(f"report written to {path}")
        return 0
    launch = args.launch()
    from purerec.run.sweep import load_sweep, run_sweep

    spec = load_sweep(args.file)
    if cmd == "tune" and not spec.tune:
        raise ConfigError("tune", args.file, "a tuning sweep spec (`tune = true` in [sweep], e.g. sweeps/tune/kuairec.toml)")
    if not 0 < args.budget <= 10:
        raise ConfigError("--budget", args.budget, "a number in (0, 10], e.g. 0.1")
    out = args.out or os.path.join("runs", "sweeps", spec.name)
    reuse = tuple(d for d in getattr(args, "reuse", "").split(",") if d)
    for d in reuse:
        if not os.path.isdir(os.path.join(d, "runs")):
            raise ConfigError("--reuse", d, "sweep directories (holding runs/) written by `train.py sweep`")
    log = print
    if launch:
        from purerec.run import distributed

        distributed.initialize(launch)
        log = print if distributed.is_main() else (lambda *a, **k: None)
    res = run_sweep(spec, out, budget=args.budget, dry_run=args.dry_run, reuse=reuse, log=log)
    if not args.dry_run:
        import jax

        if jax.process_index() == 0:
            from purerec.report.tables import write_report

            path = write_report(out)
            print(open(path).read())
            print(f"report written to {path}")
            if cmd == "tune":
                from purerec.run.tuning import choose

                command = "python train.py tune " + " ".join(shlex.quote(a) for a in argv)
                for f in choose(list(res["records"].values()), args.tuned, command):
                    print(f"chosen: {f}")
        if launch:
            from purerec.run import distributed

            distributed.barrier("end")  # the others exit with process 0, once it has written the report
        failed = [r for r in res["records"].values() if r["status"] != "ok"]
        if failed:
            print(f"{len(failed)} run(s) failed; see their records in {out}/runs", file=sys.stderr)
            return 1
    return 0


def claims_main(argv: list[str]) -> int:
    """``train.py claims ...`` (``ClaimsArgs``)."""
    args, overrides, pos = parse(ClaimsArgs, argv, "train.py claims")
    if pos:
        raise UsageError(f"train.py claims: unexpected {' '.join(pos)} (options only; see train.py claims --help)")
    try:
        only = tuple(int(x) for x in args.only.split(",") if x.strip())
    except ValueError:
        raise ConfigError("--only", args.only, "claim numbers from 1 to 9, comma-separated, e.g. 1,3,5") from None
    envs = tuple(e for e in args.envs.split(",") if e)
    for e in envs:
        if not os.path.isfile(e):
            raise ConfigError("--envs", e, "existing environment TOML files (see envs/)")
    reuse = tuple(d for d in args.reuse.split(",") if d)
    for d in reuse:
        if not os.path.isdir(os.path.join(d, "runs")):
            raise ConfigError("--reuse", d, "sweep directories (holding runs/) written by `train.py sweep`")
    from purerec.state.sections import AGENTS

    agents = tuple(a for a in args.agents.split(",") if a)
    for a in agents:
        if a not in AGENTS:
            raise ConfigError("--agents", a, f"agent kinds from {list(AGENTS)}")
    if not 0 < args.budget <= 10:
        raise ConfigError("--budget", args.budget, "a number in (0, 10], e.g. 0.1 for the quick look")
    out = args.out or os.path.join("runs", "claims" if args.budget == 1.0 else f"claims-budget{args.budget:g}")
    from purerec.run.claims import run_claims

    path = run_claims(out, budget=args.budget, only=only, envs=envs, agents=agents, overrides=overrides, reuse=reuse,
                      dry_run=args.dry_run, command="python train.py claims " + shlex.join(argv))
    if path:
        print(f"claims written to {path}")
    return 0


def stationary_main(argv: list[str]) -> int:
    """``train.py stationary ...`` (``StationaryArgs``)."""
    from purerec.config import load_config

    args, overrides, pos = parse(StationaryArgs, argv, "train.py stationary")
    if pos:
        raise UsageError(f"train.py stationary: unexpected {' '.join(pos)} (options only; see train.py stationary "
                         f"--help)")
    for name in ("users", "pool", "samples", "steps"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name}", getattr(args, name), "a number >= 1")
    seeds, lambdas, n_users = list(args.seeds), list(args.lambdas), args.users
    if not seeds or not lambdas or min(lambdas) < 0:
        raise ConfigError("--seeds/--lambdas", (seeds, lambdas), "at least one seed and one lambda >= 0")
    env_file = args.env
    cfg = load_config(env_file, overrides)
    if cfg.env.dynamics != "attraction":
        raise ConfigError("env.dynamics", cfg.env.dynamics, "'attraction' for the stationary analysis (e.g. "
                          "--env envs/kuairec-drift.toml)")
    import json

    import jax
    import numpy as np

    from purerec.data.datasets import get_worlds
    from purerec.sim import stationary

    tables = []
    t0 = time.perf_counter()
    for seed in seeds:
        c = dataclasses.replace(cfg, attraction=dataclasses.replace(cfg.attraction, harm_seed=seed))
        train, test = get_worlds(world_sections(c))
        if seed == seeds[0]:
            from purerec.sim.dynamics import card, format_card

            print(format_card(card(env_sections(c), train, test)))
        t = stationary.users_table(jax.random.PRNGKey(seed), test, env_sections(c), min(n_users, test.n_users), lambdas,
                                   pool_size=args.pool, n_samples=args.samples, steps=args.steps)
        tables.append(jax.device_get(t))
        print(f"seed {seed}: {min(n_users, test.n_users)} users in {time.perf_counter() - t0:.1f}s", flush=True)
    summary = stationary.summarize(tables, lambdas)
    print(f"\nStationary-profile policies ({env_file}, test world, {n_users} users x seeds {seeds}; "
          f"k = {cfg.env.slate_size}, pool {args.pool}, {args.samples} sampled slates, {args.steps} steps; mean "
          f"[min, max] over seeds)\n")
    print(stationary.format_summary(summary))
    if args.out:
        from purerec.core.atomic import atomic_write

        per_user = {str(s): {p: np.asarray(t[p]["J"]).tolist() for p in stationary.POLICIES} for s, t in zip(seeds, tables)}
        atomic_write(args.out, lambda fh: json.dump({**{str(k): v for k, v in summary.items()},
                                                      "lambdas": lambdas, "per_user_J": per_user}, fh))
    return 0


def logs_main(argv: list[str]) -> int:
    """``train.py logs --out DIR [--env FILE] [--seed N] [--field value ...]`` (``LogsArgs``): export
    the train world's logged sessions (``purerec.sim.logs``; ``offline.sessions`` parallel sessions x
    ``env.max_len`` steps of the popularity logging policy) as ``DIR/logs.npz`` + ``DIR/logs.json``."""
    from purerec.config import load_config

    args, overrides, pos = parse(LogsArgs, argv, "train.py logs")
    if pos:
        raise UsageError(f"train.py logs: unexpected {' '.join(pos)} (options only; see train.py logs --help)")
    seed, env_file = args.seed, args.env
    cfg = load_config(env_file, overrides)
    from purerec.sim.logs import check_out_dir

    check_out_dir(args.out)  # before the logs are collected
    import jax
    import numpy as np

    from purerec.data.datasets import get_worlds
    from purerec.sim import logs
    from purerec.sim.env import make_params

    world = get_worlds(world_sections(cfg))[0]
    params = make_params(world, env_sections(cfg))
    n = cfg.offline.sessions
    data = jax.jit(lambda k: logs.collect(k, params, n, params.max_len))(jax.random.PRNGKey(seed))
    meta = {"env": env_file, "seed": seed, "world": "train", "policy": "popularity (Plackett-Luce over log(1 + pop))",
            "parallel_sessions": n, "steps": params.max_len, "overrides": overrides}
    path = logs.save(data, args.out, n, world, meta)
    counts = np.asarray(logs.exposure_counts(data, world.n_items))
    pop = np.asarray(world.item_pop)
    share = counts[np.asarray(world.popular)].sum() / max(counts.sum(), 1)
    print(f"wrote {path}: {data.reward.shape[0]} logged steps; popular items' share of the exposures "
          f"{share:.3f} (world logs: {pop[np.asarray(world.popular)].sum() / pop.sum():.3f}); schema in logs.json")
    return 0


def train_main(argv: list[str]) -> int:
    """``train.py [--env FILE] [--out DIR | --resume DIR] [--reference] [--field value ...]`` (``TrainArgs``)."""
    from purerec.config import load_config

    args, overrides, pos = parse(TrainArgs, argv, "train.py")
    if args.help_config:
        print(describe_config(Config()))
        return 0
    if pos:
        hint = (f"; to use it as the environment spec write --env {pos[0]}" if pos[0].endswith(".toml") else
                "; the subcommands are " + ", ".join(COMMANDS))
        raise ConfigError("arguments", pos, f"options only (--name value){hint}")
    env_given = any(a == "--env" or a.startswith("--env=") for a in argv)
    if args.resume and (overrides or env_given or args.out or args.reference):
        raise ConfigError("--resume", args.resume, "alone: a resumed run keeps its saved config and run "
                          "directory; drop the other options (--env, --out, --reference, overrides)")
    if args.log not in (None, "tensorboard"):
        raise ConfigError("--log", args.log, "'tensorboard' (metrics.jsonl is always written)")
    if args.resume and args.log:
        raise ConfigError("--log", args.log, "not with --resume: a resumed run keeps logging to TensorBoard if it "
                          "did (it has DIR/tensorboard)")
    launch = args.launch()
    tensorboard = args.log == "tensorboard"
    if tensorboard:
        from purerec.report.tensorboard import require

        require()  # before anything is computed or written
    if launch and args.reference:
        raise ConfigError("--reference", True, "one process: the reference policies need no launch over hosts")
    main_process = True
    if launch:
        from purerec.run import distributed

        distributed.initialize(launch)
        main_process = distributed.is_main()
    if args.resume:
        from purerec.run.experiment import load_run_config

        # Over several processes only process 0 reads the run directory (``run`` hands its config on).
        cfg = load_run_config(args.resume) if main_process else Config()
    else:
        cfg = load_config(args.env, overrides)
    if args.reference:
        if args.out:
            raise ConfigError("--out", args.out, "not used with --reference (it writes no run directory)")
        from purerec.data.datasets import get_worlds
        from purerec.run.experiment import check_loaded_worlds

        check_loaded_worlds(cfg, *get_worlds(world_sections(cfg)))
        rows = run_reference(cfg)
        print(f"\nReference policies; {protocol_line(cfg, _n_test(cfg))}\n")
        print(format_table(rows, table_columns(cfg)))
        return 0
    from purerec.run.experiment import run

    if not main_process:  # the others compute their share; process 0 writes and reports
        res = run(cfg, run_dir=args.resume or args.out, resume=bool(args.resume), progress=False,
                  tensorboard=tensorboard)
        from purerec.run import distributed

        distributed.barrier("end")  # exit with process 0, once it has written and printed
        print(f"process {launch.process_id if launch.process_id is not None else '(detected)'}: done; process 0 "
              f"wrote {res['run_dir']}")
        return 0
    if args.resume:
        res = run(cfg, run_dir=args.resume, resume=True, progress=args.progress)
    else:
        res = run(cfg, run_dir=args.out, progress=args.progress, tensorboard=tensorboard)
    t0 = time.perf_counter()
    reference = run_reference(cfg)  # cached with the world after its first computation
    print_results(cfg, res, reference, time.perf_counter() - t0)
    if launch:
        from purerec.run import distributed

        distributed.barrier("end")
    return 0


def _then(argv: list[str]) -> str:
    """What to do after a file-system error or an interrupt, for this command."""
    if argv and argv[0] in ("sweep", "tune", "claims"):
        return "run the same command again (finished runs are kept): python train.py " + shlex.join(argv)
    if argv and argv[0] in ("report", "logs") or "--reference" in argv:
        return "run the command again"
    return "--resume the run"


def _interrupted(e: BaseException, argv: list[str]) -> str:
    """The one line an interrupt prints: the signal and how to carry on."""
    name = getattr(e, "name", "SIGINT")
    run_dir = getattr(e, "run_dir", None)
    if run_dir and os.path.exists(os.path.join(run_dir, "results.json")):
        return f"interrupted ({name}); the run had finished: its results are in {run_dir}/results.json"
    if run_dir:
        return f"interrupted ({name}); continue with: python train.py --resume {run_dir}"
    if argv and argv[0] in ("sweep", "tune", "claims"):
        return f"interrupted ({name}); continue with: python train.py {shlex.join(argv)} (finished runs are kept)"
    if argv and argv[0] in ("report", "logs") or "--reference" in argv or "--resume" in argv:
        return f"interrupted ({name})"
    return f"interrupted ({name}) before the run wrote anything; start it again"


def main(argv: list[str] | None = None) -> int:
    """The one place where errors become one line: any ``purerec.core.errors.PurerecError`` (config,
    data file, run directory, checkpoint, sweep spec, training) and any OS error (disk full,
    permissions) prints ``error: ...`` naming the field or file, exit code 2; ``--debug`` re-raises
    with the traceback. SIGINT / SIGTERM (``purerec.core.interrupts``) stop at the next safe point with
    one line saying how to continue, exit code 130 / 143."""
    from purerec.core import interrupts
    from purerec.core.errors import Interrupted, WriteError

    whole_process = argv is None  # train.py: the process ends with this command
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    with interrupts.handling():
        one_line = False  # the command stopped with its one line
        try:
            if argv and argv[0] in ("sweep", "report", "tune"):
                code = sweep_main(argv[0], argv[1:])
            elif argv and argv[0] == "logs":
                code = logs_main(argv[1:])
            elif argv and argv[0] == "stationary":
                code = stationary_main(argv[1:])
            elif argv and argv[0] == "claims":
                code = claims_main(argv[1:])
            else:
                code = train_main(argv)
            if interrupts.pending() is not None:  # a signal after the last safe point: the work is done
                name = Interrupted(interrupts.pending()).name
                print(f"interrupted ({name}) as the command finished; what it printed and wrote is complete",
                      file=sys.stderr)
                one_line = True
                return interrupts.exit_code(interrupts.pending())
            return code
        except Helped:  # a sub-command's --help: printed, nothing run
            return 0
        except Interrupted as e:
            print(_interrupted(e, argv), file=sys.stderr)
            one_line = True
            return interrupts.exit_code(e.signum)
        except KeyboardInterrupt as e:  # no handler here (not the main thread): Ctrl-C as Python raises it
            print(_interrupted(e, argv), file=sys.stderr)
            one_line = True
            return 130
        except PurerecError as e:
            if debug:
                raise
            fix = f" (free space or fix permissions, then {_then(argv)})" if isinstance(e, WriteError) else ""
            print(f"error: {e}{fix}", file=sys.stderr)
            one_line = True
            return 2
        except BrokenPipeError:  # the reader of our output went away (``train.py --help-config | head``)
            if whole_process:  # nothing more can reach it: no error line, and no flush error at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            one_line = True
            return 141 if whole_process else 0  # 128 + SIGPIPE, as a shell pipeline reports it
        except OSError as e:
            if debug:
                raise
            where = f" {e.filename}" if getattr(e, "filename", None) else ""
            print(f"error: file system:{where}: {e.strerror or e} (free space or fix permissions, then "
                  f"{_then(argv)})", file=sys.stderr)
            one_line = True
            return 2
        finally:
            # Background threads' tracebacks (e.g. Orbax's on a full disk): dropped behind an error's
            # one line, shown otherwise (nothing else explained them) and with --debug.
            interrupts.release_held(show=debug or not one_line)
            if one_line and whole_process and not debug:
                interrupts.quiet_after()


if __name__ == "__main__":
    raise SystemExit(main())
