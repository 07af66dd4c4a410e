"""The package's layers (docs/architecture.md): imports go downward only, and no module-level
import cycle. Read from the source with ``ast`` (function-level imports included in the direction
check), so a new upward import fails here before it can tangle the layers."""

from __future__ import annotations

import ast
import os

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "purerec")
# Lowest first. The top level (config, cli, gym_adapter, the ``purerec.env`` face) may import anything.
LAYERS = ("core", "sim", "data", "state", "agents", "report", "run")
TOP = "top"
# Modules below run/ that still read ``purerec.config`` (issue "The house", item 3: each component
# should take its own section). The list may only shrink.
CONFIG_READERS_BELOW_RUN = {
    "agents", "agents.a2c", "agents.base", "agents.bcq", "agents.dnair", "agents.dorl", "agents.fcpo",
    "agents.heads", "agents.hrl", "agents.mofir", "agents.replay", "agents.sac4ir", "agents.td3",
    "agents.user_model", "data.datasets", "data.loaders.common", "data.loaders.kuairand",
    "data.loaders.kuairec", "data.loaders.user_csv", "data.synthetic", "report.tables", "sim.env",
    "state.denoise", "state.dsrm", "state.purifier", "state.stage1",
}


def _modules() -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(SRC):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), SRC)[:-3].replace(os.sep, ".")
                rel = "" if rel == "__init__" else rel[:-len(".__init__")] if rel.endswith(".__init__") else rel
                out[rel] = os.path.join(dirpath, f)
    return out


MODULES = _modules()


def _imports(name: str, path: str, top_level_only: bool) -> set[str]:
    """The purerec modules ``name`` imports (``purerec.`` stripped); a name imported from a package
    counts as its submodule when one exists."""
    tree = ast.parse(open(path).read())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: relative import (purerec uses absolute imports)"
            mod = node.module or ""
            if mod != "purerec" and not mod.startswith("purerec."):
                continue
            base = mod[len("purerec."):] if mod != "purerec" else ""
            for alias in node.names:
                sub = f"{base}.{alias.name}".strip(".")
                found.add(sub if sub in MODULES else base)
        elif isinstance(node, ast.Import):
            found |= {a.name[len("purerec."):] for a in node.names if a.name.startswith("purerec.")}
    return {m for m in found if m and m != name}


def layer(mod: str) -> str:
    head = mod.split(".")[0]
    return head if head in LAYERS else TOP


def _rank(mod: str) -> int:
    lay = layer(mod)
    return LAYERS.index(lay) if lay in LAYERS else len(LAYERS)


def test_the_layers_cover_the_package():
    assert {layer(m) for m in MODULES} == set(LAYERS) | {TOP}
    assert {m for m in MODULES if layer(m) == TOP} == {"", "config", "cli", "gym_adapter", "env"}


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if layer(m) != TOP))
def test_imports_go_downward(mod):
    up = sorted(t for t in _imports(mod, MODULES[mod], top_level_only=False)
                if t != "config" and _rank(t) > _rank(mod))
    assert not up, f"purerec.{mod} ({layer(mod)}) imports upward: {up}"


def test_config_readers_below_run_only_shrink():
    readers = {m for m in MODULES if _rank(m) < LAYERS.index("run")
               and "config" in _imports(m, MODULES[m], top_level_only=False)}
    assert readers <= CONFIG_READERS_BELOW_RUN, f"new readers of the whole config: {sorted(readers - CONFIG_READERS_BELOW_RUN)}"


def test_no_module_level_import_cycle():
    graph = {m: _imports(m, p, top_level_only=True) & set(MODULES) for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_checker_sees_an_upward_import(tmp_path):
    """The checker itself: a planted upward import (sim importing run) is reported."""
    p = tmp_path / "planted.py"
    p.write_text("def f():\n    from purerec.run import experiment\n    return experiment\n")
    assert "run.experiment" in _imports("sim.planted", str(p), top_level_only=False)
    assert _rank("run.experiment") > _rank("sim.planted")
    assert not _imports("sim.planted", str(p), top_level_only=True)


ROOT = os.path.dirname(os.path.dirname(SRC))


def _doc(name: str) -> str:
    return open(os.path.join(ROOT, name)).read()


def test_the_readme_table_and_the_architecture_doc_match_the_tree():
    """Every module is named in the README's "What is where" table and in docs/architecture.md,
    and every ``purerec/...py`` path either of them names exists."""
    import re

    readme, arch = _doc("README.md"), _doc(os.path.join("docs", "architecture.md"))
    table = readme[readme.index("## What is where"):readme.index("## The simulator")]
    for mod, path in MODULES.items():
        if mod in ("", "env") or ".loaders" in mod or mod in LAYERS:
            continue  # the package faces; the loaders are named as a folder
        rel = "purerec/" + os.path.relpath(path, SRC).replace(os.sep, "/")
        leaf = mod.split(".")[-1]
        assert rel in table or (mod.startswith("agents.") and f"`{leaf}.py`" in table), f"README table lacks {rel}"
        if mod != "agents":
            assert re.search(rf"\b{leaf}\b", arch), f"docs/architecture.md does not name {leaf}"
    for text in (table, arch):
        for rel in re.findall(r"purerec/[\w/]+\.py", text):
            assert os.path.isfile(os.path.join(ROOT, "src", rel)), f"{rel} is named but does not exist"


def test_no_module_below_run_names_the_whole_config():
    """Below ``run/`` a component is typed to receive ``config.Sections`` (its own sections), never
    ``Config``: no such module imports the name."""
    offenders = []
    for mod, path in MODULES.items():
        if _rank(mod) >= LAYERS.index("run"):
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.module == "purerec.config":
                if any(a.name == "Config" for a in node.names):
                    offenders.append(mod)
    assert not offenders, f"import purerec.config.Config below run/: {offenders}"
