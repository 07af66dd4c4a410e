"""Helpers every config section uses: traced fields (rejax's habit), range checks that raise the
named ``ConfigError``, and the upper bounds on sizes allocated at once. Imports nothing but the
errors, so every layer's ``sections`` module can use it."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import textwrap
from dataclasses import field
from typing import Any

from purerec.core.errors import ConfigError


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

def _check_rate(p: str, name: str, v: float) -> None:
    _check(0 <= v < 1, f"{p}.{name}", v, "in [0, 1) (0 freezes that network)")


class Sections:
    """A component's view of the run's config: only the sections it declares, as attributes of the
    same names and types as on ``Config`` (built by ``view``). Modules below ``purerec.run`` receive
    one of these, never the whole ``Config``: reading a section the component did not declare is an
    ``AttributeError`` at trace time, so a run's declared sections (and its run id) are its inputs."""

    __slots__ = ()


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """{field: its one-line help} of a section dataclass: the docstring written under each field
    (read from the source, as tyro and Sphinx read attribute docstrings)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    out = {}
    for st, nxt in zip(body, body[1:]):
        if (isinstance(st, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            out[st.target.id] = nxt.value.value.strip()
    return out
