"""The package's shape: no import circles, and the hub apart from the client."""

import ast
import subprocess
import sys
from pathlib import Path

import tallyhub

ROOT = Path(tallyhub.__file__).parent
SKIP = {"tests", "benchmarks", "build", "scripts", "deploy", "docs"}


def module_imports() -> dict[str, set[str]]:
    """Each tallyhub module and the tallyhub modules it imports when it is loaded (module level:
    imports inside functions are deferred on purpose, e.g. ``tallyhub.instrument``)."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[0] in SKIP or parts[0].startswith("."):
            continue
        name = ".".join(("tallyhub", *parts)).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tallyhub"):
                targets = {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
                graph[name] |= targets & modules.keys()
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_no_module_imports_itself_through_others() -> None:
    graph = module_imports()
    circles = sorted(name for name in graph if name in reachable(graph, name))
    assert circles == []


def test_the_hub_loads_without_the_client() -> None:
    """The hub never imports tallyhub.instrumentation: the sides meet in wire.py and bucket_mapping.py."""
    hub_modules = [
        "tallyhub.collector_processor.cli",
        "tallyhub.collector_processor.hub",
        "tallyhub.collector_processor.store",
        "tallyhub.collector_processor.receive.receiver",
        "tallyhub.collector_processor.receive.http_receiver",
        "tallyhub.dashboard.app",
    ]
    code = "import sys\n" + "".join(f"import {m}\n" for m in hub_modules)
    code += "print(sorted(m for m in sys.modules if m.startswith('tallyhub.instrumentation')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
