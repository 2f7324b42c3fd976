"""The package's shape, kept: imports run one way, and a stage's config loads without its flow.

DESIGN.md, "How the package grows": cli/pipeline -> stage flows -> stage parts -> mechanics.
A module-level import circle, or a function-level import placed to dodge one, fails here.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
STAGES = ("corpus", "tokenizer", "init", "train", "evaluate", "distill", "report")


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "langadapt").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(module-level, function-level) langadapt modules `name` imports; `a.b.c` also imports `a.b` and `a`.

    Imports under `if TYPE_CHECKING:` never run and do not count.
    """
    is_package = path.name == "__init__.py"
    top: set[str] = set()
    inner: set[str] = set()

    def targets(node: ast.Import | ast.ImportFrom) -> set[str]:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
        found = set()
        for target in names:
            parts = target.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules.keys()
        return found - {name}

    def walk(nodes: list[ast.stmt], in_function: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                walk(node.orelse, in_function)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                (inner if in_function else top).update(targets(node))
            nested = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    walk(children, nested)

    walk(ast.parse(path.read_text(encoding="utf-8")).body, False)
    return top, inner


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in `graph`, as the list of modules around it; None when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], path[len(path) :] = 1, [node]
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    top, both = {}, {}
    for name, path in modules.items():
        module_level, function_level = _imports(name, path, modules)
        top[name], both[name] = module_level, module_level | function_level
    return top, both


def test_module_level_imports_have_no_circle():
    top, _ = _graphs()
    assert len(top) > 80  # the walk found the package
    cycle = _cycle(top)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_function_level_import_closes_a_circle():
    """A function-level import is for a heavy or optional dependency, never to dodge a circle."""
    _, both = _graphs()
    cycle = _cycle(both)
    assert cycle is None, "circle through a function-level import: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_circle_through_a_parent_package(tmp_path):
    """The check above can fail: `a.b` importing `a.c`, and `a.c` importing `a`, is a circle (a.c -> a -> ...)."""
    graph = {"pkg": {"pkg.flow"}, "pkg.flow": {"pkg.part"}, "pkg.part": {"pkg"}}
    assert _cycle(graph) == ["pkg", "pkg.flow", "pkg.part", "pkg"]
    assert _cycle({"pkg": set(), "pkg.part": {"pkg"}}) is None


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"import sys, json\n{statement}\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('langadapt'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_config_loads_no_flow(stage):
    loaded = _loaded_after(f"import langadapt.{stage}.config")
    flows = [m for m in loaded if m.endswith(".flow") or m == "langadapt.pipeline"]
    assert f"langadapt.{stage}.config" in loaded
    assert not flows, f"importing langadapt.{stage}.config loaded {flows}"


def test_the_package_root_is_lazy():
    assert _loaded_after("import langadapt") == ["langadapt"]
    loaded = _loaded_after("from langadapt import Recipe")
    assert "langadapt.recipe" in loaded and "langadapt.pipeline" not in loaded


# modules that compose stages (the command line, the pipeline, the recipe and its validation, the
# catalogue, export); everything else outside a stage package is mechanics and imports no stage
COMPOSERS = {"cli", "pipeline", "recipe", "validation", "catalog", "export"}
# stage flows built from other stages' parts, and which: distill trims the teacher's vocabulary with the
# tokenizer stage's trim and trains its student in the train stage's loop (its own parts import neither)
COMPOSED_FLOWS = {"langadapt.distill.flow": {"tokenizer", "train"}}


def test_parts_import_no_other_stage_and_mechanics_import_no_stage():
    _, both = _graphs()

    def stage(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in STAGES else None

    wrong = []
    for module, imported in both.items():
        for target in imported:
            composed = target.endswith(".flow") is False and stage(target) in COMPOSED_FLOWS.get(module, ())
            if stage(module) is not None and stage(target) not in (None, stage(module)) and not composed:
                wrong.append(f"{module} imports another stage: {target}")
            if stage(module) is not None and target.endswith(".flow") and not module.endswith(".flow"):
                wrong.append(f"{module} (a part) imports a flow: {target}")
            if stage(module) is None and module.split(".")[-1] not in COMPOSERS and stage(target) is not None:
                wrong.append(f"{module} (mechanics) imports a stage: {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_validation_alone_knows_every_registered_part():
    """A fresh process that only validates a shipped recipe sees every registry whole (no import order to rely on)."""
    code = (
        "from langadapt.recipe import Recipe, shipped_recipes\n"
        "for name, path in sorted(shipped_recipes().items()):\n"
        "    Recipe.from_yaml(path)\n"
        "import sys; print(sorted(m for m in sys.modules if m.startswith('langadapt') and (m.endswith('.flow') or m == 'langadapt.pipeline')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"  # and no flow was needed for it
