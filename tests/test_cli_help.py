"""Every sub-command answers ``--help`` (and ``-h``) with its own usage (tyro's, built from the
sub-command's dataclass in ``purerec.cli``), exit 0, and runs nothing; each option's help is the
docstring under its field."""

from __future__ import annotations

import pytest

from purerec.cli import main

# (argv, the usage line's start, options the usage must name)
CASES = [
    (["--help"], "usage: train.py [-h]", ["--env FILE", "--resume DIR", "--reference", "--help-config", "--section.field"]),
    (["-h"], "usage: train.py [-h]", ["--env FILE", "--resume DIR"]),
    (["sweep", "--help"], "usage: train.py sweep",
     ["--dry-run", "--budget X", "--out DIR", "--reuse DIR[,DIR]", "--coordinator", "--distributed"]),
    (["sweep", "sweeps/x.toml", "--budget", "0.1", "-h"], "usage: train.py sweep", ["--dry-run"]),
    (["report", "--help"], "usage: train.py report", ["DIR", "runs/"]),
    (["logs", "--help"], "usage: train.py logs", ["--out DIR", "--env FILE", "--seed N", "logs.npz"]),
    (["logs", "--out", "d", "--help"], "usage: train.py logs", ["--seed N"]),
    (["tune", "--help"], "usage: train.py tune", ["FILE", "--tuned DIR", "validation"]),
    (["stationary", "--help"], "usage: train.py stationary", ["--lambdas", "--users N", "grad"]),
    (["claims", "--help"], "usage: train.py claims", ["--budget X", "--only N[,N]", "--out DIR", "claims.md"]),
]


@pytest.mark.parametrize("argv,head,names", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_help_prints_usage(argv, head, names, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written: the directory stays empty
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.lstrip().startswith(head), out[:200]
    for name in names:
        assert name in out, f"{name!r} missing from the usage of {argv}"
    assert "error" not in err and "invalid" not in out
    assert list(tmp_path.iterdir()) == []


def test_sub_command_usages_differ(capsys):
    """Each sub-command prints its own usage, not the training one."""
    outs = {}
    for cmd in ("sweep", "report", "logs"):
        assert main([cmd, "--help"]) == 0
        outs[cmd] = capsys.readouterr().out
    assert len(set(outs.values())) == 3
    for cmd, out in outs.items():
        assert f"usage: train.py {cmd}" in out
        assert "--resume DIR" not in out  # the training options are not theirs


def test_usage_errors_still_exit_2(capsys):
    """Without --help a missing argument is a usage error: exit 2, one line naming what is missing
    and the sub-command's --help (tyro's boxed message, flattened)."""
    for argv, missing in ((["report"], "Missing from train.py report: DIR"),
                          (["logs"], "Missing from train.py logs: --out DIR"),
                          (["sweep"], "Missing from train.py sweep: FILE"),
                          (["sweep", "s.toml", "--budget"], "--budget")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and missing in err[0], (argv, err)
        assert f"see train.py {argv[0]} --help" in err[0]


@pytest.mark.parametrize("cmd", ["", "sweep", "tune", "report", "logs", "stationary", "claims"])
def test_each_option_is_documented_by_its_field_docstring(cmd, capsys):
    """The help of every option is the docstring written under its dataclass field (tyro reads them;
    ``purerec.core.fields.field_docs`` reads them the same way for ``--help-config``)."""
    import dataclasses

    from purerec.cli import COMMANDS, TrainArgs
    from purerec.core.fields import field_docs

    cls = COMMANDS.get(cmd, TrainArgs)
    assert main([cmd, "--help"] if cmd else ["--help"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    docs = {}
    for klass in reversed(cls.__mro__):  # the inherited options (--debug, the launch flags) too
        if dataclasses.is_dataclass(klass):
            docs.update(field_docs(klass))
    assert set(docs) == {f.name for f in dataclasses.fields(cls)}, "a field without a docstring"
    for name, doc in docs.items():
        assert " ".join(doc.split()) in text, (cmd, name)


def test_a_closed_pipe_ends_quietly():
    """``train.py --help-config | head``: when the reader goes away the command stops without the
    misleading file-system error line, with the shell's SIGPIPE status (128 + 13)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write
    try:
        p = subprocess.run([sys.executable, os.path.join(root, "train.py"), "--help-config"], stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=120, cwd=root)
    finally:
        os.close(w)
    assert p.returncode == 141, p.stderr
    assert "error" not in p.stderr and "Broken pipe" not in p.stderr
