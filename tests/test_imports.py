"""Imports run one way, down the pipeline: a module may import its own part and the parts below it, never above."""

import ast
from pathlib import Path

import injc

LEVELS = {"errors": 0, "tables": 0, "tokenizer": 0, "hfdata": 0, "storage": 0, "shards": 1, "injectors": 2,
          "compiler": 3, "train": 4, "evals": 5, "loop": 6, "command": 7, "cli": 7, "cli_models": 7, "__main__": 8,
          "__init__": 8}


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_no_module_imports_a_part_above_its_own():
    root = Path(injc.__file__).parent
    upward = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        own = relative.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name == "injc" or name.startswith("injc."):
                    target = part(name)
                    if LEVELS[target] > LEVELS[own]:
                        upward.append(f"{relative} imports {name}")
    assert upward == []


def import_graph() -> dict[str, set[str]]:
    """Each module of injc and the injc modules it imports (at the top or inside a function): `from injc.a import b`
    names module injc.a.b where b is one, else injc.a."""
    root = Path(injc.__file__).parent
    modules = {".".join(("injc", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("injc"):
                for alias in node.names:
                    inner = f"{node.module}.{alias.name}"
                    graph[name].add(inner if inner in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name] |= {alias.name for alias in node.names if alias.name in modules}
    return {name: targets - {name} for name, targets in graph.items()}


def test_no_import_circle_anywhere():
    graph = import_graph()
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                circles.append(" → ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []
