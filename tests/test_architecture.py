"""The dependency rules of DESIGN.md, read from the source (function-level imports included):
no import cycle in harness/, the low layers (errors, model, data, compare, timing) import
nothing above them, and the model-neutral layers import nothing of MVSNet's (the model seam)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "harness"
#: Modules of the bottom layers and what they may import from the harness.
LOW_LAYERS = ("harness.errors", "harness.model", "harness.data", "harness.compare", "harness.timing",
              "harness.fileio", "harness.metrics", "harness.modelspec", "harness.default_model")
#: The model-neutral layers (DESIGN.md, "Model seam"): they read a ModelSpec and import nothing of
#: MVSNet's modules, not even through the modules they import.
NEUTRAL = ("harness.modelspec", "harness.options", "harness.errors", "harness.fileio", "harness.backends.base",
           "harness.backends.onnxruntime_runner", "harness.backends.tensorrt_runner", "harness.backends.trt_api",
           "harness.backends.renamed", "harness.backends.compiling", "harness.compare", "harness.timing", "harness.convert.cache",
           "harness.gates.limits", "harness.report")
#: What is MVSNet's: the model package, the data package and the export workarounds.
MVSNET = ("harness.model", "harness.data", "harness.convert.workarounds")
#: The one way a neutral layer reaches MVSNet: the default spec, imported when no spec is injected.
DEFAULT_MODEL = "harness.default_model"


def module_name(path: Path) -> str:
    parts = path.relative_to(HARNESS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def harness_imports() -> dict[str, set[str]]:
    """``{module: harness modules it imports anywhere in its body}`` (TYPE_CHECKING-only
    imports too: annotations are part of the design)."""
    modules = {module_name(p): p for p in HARNESS.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_cycle_it_is_shown():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_harness_has_no_import_cycle():
    assert cycles(harness_imports()) == []


def test_low_layers_import_nothing_above_them():
    def low(module: str) -> bool:
        return any(module == layer or module.startswith(layer + ".") for layer in LOW_LAYERS)

    offending = {m: sorted(t for t in targets if not low(t) and t != "harness")
                 for m, targets in harness_imports().items() if low(m)}
    assert {m: t for m, t in offending.items() if t} == {}


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_model_neutral_layers_import_nothing_of_mvsnet():
    graph = harness_imports()
    neutral = sorted(m for m in graph if within(m, NEUTRAL))
    assert {"harness.backends.base", "harness.compare", "harness.timing", "harness.convert.cache",
            "harness.report.markdown", "harness.report.write", "harness.report.record"} <= set(neutral)
    direct = {m: sorted(t for t in graph[m] if within(t, MVSNET)) for m in neutral}
    assert {m: t for m, t in direct.items() if t} == {}


def test_the_neutral_layers_reach_mvsnet_only_through_the_default_spec():
    """Everything a neutral module imports, followed transitively, is MVSNet-free, except past
    harness.default_model, which imports MVSNet's spec (inside its function) and nothing else."""
    graph = harness_imports()
    assert graph[DEFAULT_MODEL] == {"harness.modelspec", "harness.model.spec"}
    reached: dict[str, str] = {}  # module -> the neutral module it was reached from
    todo = [(m, m) for m in graph if within(m, NEUTRAL)]
    while todo:
        module, origin = todo.pop()
        if module in reached or module == DEFAULT_MODEL:
            continue
        reached[module] = origin
        todo += [(t, origin) for t in graph[module] if t in graph]
    assert {m: o for m, o in reached.items() if within(m, MVSNET)} == {}


def runner_classes() -> set[str]:
    """Classes in harness/backends/ that derive (directly or not) from Runner."""
    bases: dict[str, set[str]] = {}
    for path in (HARNESS / "backends").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = {b.id for b in node.bases if isinstance(b, ast.Name)}
    found = {"Runner"}
    while True:
        more = {name for name, parents in bases.items() if parents & found} - found
        if not more:
            return found - {"Runner"}
        found |= more


def test_only_the_backends_construct_runners():
    """One factory (harness.backends.registry.make_runner) makes every runner: no module outside
    harness/backends/ calls a runner class."""
    classes = runner_classes()
    assert {"OrtRunner", "TrtRunner", "TorchRunner", "TorchFastRunner"} <= classes
    calls = []
    for path in HARNESS.rglob("*.py"):
        if path.parent.name == "backends":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                if name in classes:
                    calls.append(f"{path.relative_to(HARNESS.parent)}:{node.lineno} {name}")
    assert calls == []


def test_every_declared_backend_has_a_tolerance_table():
    from harness.backends import registry
    from harness.gates.limits import Tolerances, machine_class

    tolerances = Tolerances.load()
    for name, spec in registry.specs().items():  # in the machine class the backend runs in
        tolerances.lookup("torch-fp32", name, spec.precision, ("depth", "photometric_confidence"),
                          machine=machine_class(spec.device))


def code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module's code (docstrings left out: prose may name anything)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
                  and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
    return [(node.lineno, node.value) for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("backend, module", [("torch-aoti", "aoti_runner.py"), ("torch-fast-fp16", "torch_runner.py")])
def test_a_backend_is_one_module(backend, module):
    """Adding ``torch-aoti`` and making ``torch-fast-fp16`` a gate candidate touched one module each
    (plus tolerances): no other code in harness/ names them; the gate, the main job, bench and
    doctor reach them through the registry."""
    named = [f"{path.relative_to(HARNESS.parent)}:{line}" for path in HARNESS.rglob("*.py") if path.name != module
             for line, text in code_strings(path) if backend in text]
    assert named == []


def test_the_one_module_check_can_fail(tmp_path):
    source = tmp_path / "m.py"
    source.write_text('"""torch-aoti in prose is fine."""\nBENCH = ("torch-aoti",)\n', encoding="utf-8")
    assert [text for _, text in code_strings(source)] == ["torch-aoti"]


def test_every_candidate_has_an_accuracy_gate():
    """suites/test_accuracy.py gates every candidate's thres2mm / thres4mm against torch's: a new
    candidate without its accuracy table would fail there with a ConfigError, not a verdict."""
    from harness.backends import registry
    from harness.gates.limits import Tolerances, machine_class

    tolerances = Tolerances.load()
    for name in registry.names(candidates_only=True):
        spec = registry.get(name)
        tolerances.lookup("torch-fp32", name, spec.precision, ("accuracy",), machine=machine_class(spec.device))
