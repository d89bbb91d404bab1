"""The code reads top-down: each layer imports only the layers below it, and no module imports itself back.

Imports inside functions count (a lazy import is still a dependency); those under
`if TYPE_CHECKING:` do not, since they never run.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("chatbot", "ingest", "adapters", "ui")

# Layer of each module, by the longest matching prefix; a layer may import its own and those listed.
LAYERS = {
    "chatbot.core": "foundation",
    "chatbot.rag": "rag",
    "adapters": "adapter runtime",
    "chatbot.llm": "llm",
    "chatbot": "engine",
    "chatbot.eval": "eval",
    "ingest": "ingest",
    "adapters.training": "adapter training",
    "chatbot.cli": "cli",
    "ui": "ui",
}
ALLOWED = {
    "foundation": set(),
    "rag": {"foundation"},
    "adapter runtime": {"foundation", "rag"},
    "llm": {"foundation", "rag", "adapter runtime"},
    "engine": {"foundation", "rag", "adapter runtime", "llm"},
    "eval": {"foundation", "rag", "adapter runtime", "llm", "engine"},
    "ingest": {"foundation", "rag", "llm"},
    "adapter training": {"foundation", "rag", "adapter runtime", "llm", "engine", "eval"},
    "cli": {"foundation", "rag", "adapter runtime", "llm", "engine", "eval"},
    "ui": {"foundation", "rag", "adapter runtime", "llm", "engine", "eval", "ingest"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    prefixes = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(prefixes, key=len)]


def project_imports() -> dict[str, set[str]]:
    """Each project module and the project modules it imports (at any depth, outside TYPE_CHECKING)."""
    paths = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(node)
            for branch in ast.walk(tree)
            if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
            for node in ast.walk(branch)
        }
        targets = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        resolved = {target for target in targets if target in paths and target != module}
        graph[module] = resolved
    return graph


def test_each_layer_imports_only_the_layers_below_it():
    wrong = [
        f"{module} ({layer(module)}) imports {target} ({layer(target)})"
        for module, targets in project_imports().items()
        for target in sorted(targets)
        if layer(target) != layer(module)
        and layer(target) not in ALLOWED[layer(module)]
        and target not in PACKAGES  # a package's __init__ only re-exports
    ]
    assert wrong == []


def test_no_module_imports_itself_back():
    graph = project_imports()
    # A package's __init__ re-exports from its own modules: an edge into it is not a dependency on them.
    inits = {module for module in graph if (ROOT / module.replace(".", "/") / "__init__.py").exists()}
    edges = {module: targets - inits for module, targets in graph.items()}
    cycles = []
    for start in edges:
        seen, frontier = set(), list(edges[start])
        while frontier:
            current = frontier.pop()
            if current == start:
                cycles.append(start)
                break
            if current not in seen:
                seen.add(current)
                frontier.extend(edges.get(current, ()))
    assert cycles == []


def test_the_checks_see_a_wrong_arrow():
    assert "rag" not in ALLOWED["foundation"] and layer("chatbot.rag.store") == "rag"
    assert layer("chatbot.core.config") == "foundation" and layer("chatbot.engine") == "engine"
    assert layer("adapters.training.train") == "adapter training" and layer("adapters.registry") == "adapter runtime"
