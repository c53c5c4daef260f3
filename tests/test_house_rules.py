"""The structure rules of the house, read from the source (every import statement, also the ones
inside functions): data flows one way, rooms below never import rooms above, checkpoint reading
lives below engine and inference, metrics take arrays, one config loader and one training loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "keyreid"


def _imports() -> dict[str, set[str]]:
    """module path (engine/trainer.py) -> the keyreid modules it imports (keyreid.x.y)."""
    out = {}
    for path in SRC.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        out[str(path.relative_to(SRC))] = {n for n in names if n.startswith("keyreid.")}
    return out


IMPORTS = _imports()


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


# room -> rooms it must never import (what lies above it in the flow)
FORBIDDEN = {
    "utils": {"data", "models", "losses", "regularizers", "engine", "evaluation", "inference", "search", "serve",
              "export", "generation", "viz", "demo", "commands", "pose", "cli"},
    "data": {"models", "losses", "engine", "evaluation", "inference", "search", "serve", "export", "generation",
             "demo", "commands", "cli"},
    "evaluation": {"models", "losses", "engine", "inference", "search", "serve", "export", "generation", "demo",
                   "commands", "cli"},
    "inference": {"engine", "search", "serve", "generation", "demo", "commands", "cli"},
    "models": {"engine", "evaluation", "inference", "search", "serve", "export", "generation", "demo",
               "commands", "cli"},
    "losses": {"engine", "evaluation", "inference", "search", "serve", "export", "generation", "demo",
               "commands", "cli"},
    "engine": {"search", "serve", "export", "generation", "demo", "commands", "cli"},
    "search": {"engine", "serve", "generation", "demo", "commands", "cli"},
    "export": {"engine", "serve", "generation", "demo", "commands", "cli"},
    "serve": {"engine", "generation", "demo", "commands", "cli"},
    # adaptation trains on top of everything below the consumers; nothing below it may need it
    "adapt": {"search", "serve", "export", "generation", "demo", "commands", "cli"},
}
for _below in ("utils", "data", "evaluation", "inference", "models", "losses", "engine", "search", "export", "serve"):
    FORBIDDEN[_below].add("adapt")
# tracking embeds through inference/ and ranks through search/; it needs no trainer, and only the
# consumers (commands, demo) may use it
FORBIDDEN["tracking"] = {"engine", "serve", "generation", "adapt", "demo", "commands", "cli"}
for _below in ("utils", "data", "evaluation", "inference", "models", "losses", "engine", "search", "export", "serve",
               "adapt"):
    FORBIDDEN[_below].add("tracking")


@pytest.mark.parametrize("below", sorted(FORBIDDEN))
def test_rooms_below_never_import_rooms_above(below):
    bad = [(path, module) for path, modules in IMPORTS.items() if path.split("/")[0] == below
           for module in modules if room(module) in FORBIDDEN[below]]
    assert not bad, f"{below}/ imports what lies above it: {bad}"


def test_only_the_cli_config_and_errors_at_the_package_root():
    root = sorted(p.name for p in SRC.glob("*.py"))
    assert root == ["__init__.py", "cli.py", "config.py", "errors.py"], root


def test_no_import_cycle_between_modules_at_import_time():
    """Module-level imports only (a function-level import is how a lazy edge is made on purpose)."""
    graph: dict[str, set[str]] = {}
    modules = {str(p.relative_to(SRC.parent)).removesuffix(".py").replace("/", ".").removesuffix(".__init__")
               for p in SRC.rglob("*.py")}
    for path in SRC.rglob("*.py"):
        name = str(path.relative_to(SRC.parent)).removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        edges = set()
        for node in ast.parse(path.read_text()).body:   # top level only
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                edges.add(node.module)
                edges.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
        graph[name] = {e for e in edges if e in modules and e != name}
    # a package's __init__ importing its own submodules is how packages work: not a cycle
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [node, nxt])
                                     if nxt in stack else f"import cycle through {nxt} and {node}")
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_one_config_loader_and_one_training_loop():
    """YAML config files are read by keyreid.config alone; only engine/loop.py iterates epochs
    and writes last.pt (the trainers of re-ID and generation are methods of it)."""
    yaml_readers = [p for p, mods in IMPORTS.items() if p != "config.py" and "yaml" in (SRC / p).read_text()
                    and "safe_load(" in (SRC / p).read_text() and p.startswith(("generation/", "engine/"))]
    assert not yaml_readers, yaml_readers
    loops = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
             if "set_rng_state(" in p.read_text() or "torch.set_rng_state(" in p.read_text()]
    assert loops == ["engine/loop.py"], loops
    for trainer in ("engine/trainer.py", "generation/trainer.py"):
        assert any(m == "keyreid.engine.loop" for m in IMPORTS[trainer]), trainer
        assert "TrainingLoop(" in (SRC / trainer).read_text()
