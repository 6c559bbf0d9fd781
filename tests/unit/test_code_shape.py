"""The shape of the code a newcomer reads, checked on the source's syntax tree: no two classes
share a name, names say what things are (no one-letter names outside comprehensions), and
functions stay short."""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "modeleval"
# Where one-letter names are refused. engine/ and api/ still hold about 140 (arrays named x and
# y, loop indices), each its own change; the rest of the package holds none.
NAMED_IN_FULL = ("controller", "ui", "report", "cli.py", "runner.py", "store.py", "demo.py",
                 "files.py", "settings.py", "report_output.py")
MAX_FUNCTION_LINES = 60
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def sources(*parts: str) -> list[Path]:
    found: list[Path] = []
    for part in parts or (".",):
        path = PACKAGE / part
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


@cache  # parsed once for the three checks
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def names_bound(node: ast.AST) -> list[str]:
    """The names a node gives: assigned, parameters, caught errors, imports, definitions."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        return [node.id]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.alias):
        return [node.asname or node.name.split(".")[0]]
    if isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
        return [node.name]
    return []


def one_letter_names(node: ast.AST, where: str, in_comprehension: bool = False) -> list[str]:
    in_comprehension = in_comprehension or isinstance(node, COMPREHENSIONS)
    found = [f"{where}:{node.lineno} {name}" for name in names_bound(node)
             if len(name) == 1 and name != "_" and not in_comprehension]
    for child in ast.iter_child_nodes(node):
        found += one_letter_names(child, where, in_comprehension)
    return found


def test_no_two_classes_share_a_name() -> None:
    defined: dict[str, list[str]] = defaultdict(list)
    for path in sources():
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.ClassDef):
                defined[node.name].append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    shared = {name: places for name, places in defined.items() if len(places) > 1}
    assert not shared, shared


def test_no_one_letter_names_outside_comprehensions() -> None:
    found = []
    for path in sources(*NAMED_IN_FULL):
        found += one_letter_names(tree(path), str(path.relative_to(PACKAGE)))
    assert not found, "\n".join(found)


def test_functions_are_short() -> None:
    long = [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} "
            f"({node.end_lineno - node.lineno + 1} lines)"
            for path in sources() for node in ast.walk(tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)


def test_the_checks_see_what_they_refuse() -> None:
    """Each check finds what it is there to find (a lambda's parameter, an except clause, a
    loop variable; not a comprehension's variable)."""
    code = ("def f(x):\n    try:\n        pass\n    except Exception as e:\n        pass\n"
            "    for i in []:\n        pass\n    key = lambda k: k\n    return [v for v in x]\n")
    found = one_letter_names(ast.parse(code), "probe")
    assert found == ["probe:1 f", "probe:1 x", "probe:4 e", "probe:6 i", "probe:8 k"]
