"""Imports run one way, down the pipeline: a module may import its own part and the parts below it, never above."""

import ast
from pathlib import Path

import injc

LEVELS = {"errors": 0, "tables": 0, "tokenizer": 0, "hfdata": 0, "shards": 1, "injectors": 2, "compiler": 3, "train": 4,
          "evals": 5, "cli": 6, "cli_models": 6, "__main__": 7, "__init__": 7}


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
