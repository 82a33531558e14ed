"""The package's shape: no import cycle between its modules, counting imports inside functions too
(an import moved into a function hides a cycle from Python, not from a reader)."""

from __future__ import annotations

import ast
from pathlib import Path

import smalldata

PACKAGE = Path(smalldata.__file__).parent


def module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(file: Path, modules: set[str]) -> set[str]:
    """The package's modules `file` imports anywhere in it (top level or inside functions)."""
    this = module_name(file)
    package = this if file.name == "__init__.py" else this.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parents + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {name for name in found if name in modules and name != this}


def import_graph() -> dict[str, set[str]]:
    files = list(PACKAGE.rglob("*.py"))
    modules = {module_name(file) for file in files}
    return {module_name(file): imports_of(file, modules) for file in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "smalldata.head_io" in graph["smalldata.heads"]  # at the top
    assert "smalldata.finetune_text" in graph["smalldata.finetune_choice"]  # inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_model_imports_no_head_module():
    """Heads save and load themselves through `head_io`; `model.py` knows none of them."""
    heads = {"smalldata.heads", "smalldata.describe", "smalldata.ensemble", "smalldata.finetune",
             "smalldata.finetune_text"}
    assert not import_graph()["smalldata.model"] & heads


def test_the_package_imports_its_public_names_on_first_use():
    """`import smalldata` loads no submodule; each public name is imported when first read, and
    `smalldata.train` stays the function once the module of that name is imported too."""
    import subprocess
    import sys

    code = ("import smalldata, sys\n"
            "assert not [m for m in sys.modules if m.startswith('smalldata.')], sorted(sys.modules)\n"
            "import smalldata.train\n"
            "from smalldata.train import curve_of\n"
            "assert callable(smalldata.train) and smalldata.train.__module__ == 'smalldata.train'\n"
            "assert set(smalldata.__all__) <= set(dir(smalldata))\n"
            "assert all(getattr(smalldata, name) is not None for name in smalldata.__all__)\n"
            "print('ok')\n")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.stdout == "ok\n", found.stderr


def test_importing_the_package_makes_torch_threads_wait_passively_unless_the_user_said_otherwise():
    # Spinning OpenMP threads beside other busy processes slowed a fine-tune's folds 4-5 times, enough
    # for the deadline to change the model (BENCHMARKS.md, "Targets of the automatic choice").
    import os
    import subprocess
    import sys

    ask = "import smalldata, os, sys; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    answer = subprocess.run([sys.executable, "-c", ask], env=env, capture_output=True, text=True, check=True)
    assert answer.stdout.split() == ["PASSIVE", "False"]  # set before torch is ever loaded
    answer = subprocess.run([sys.executable, "-c", ask], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                            capture_output=True, text=True, check=True)
    assert answer.stdout.split()[0] == "ACTIVE"
