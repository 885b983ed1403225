"""The layering rule (docs/architecture.md): the ML core (parking_ml minus ops/ and cli/) imports no web server,
scheduler or command-line framework, nor the operations code, the CLI or the API package that sit on top of it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap

from tests.fakes import REPO

FORBIDDEN_PACKAGES = ("airflow", "fastapi", "starlette", "uvicorn", "typer", "serving")
FORBIDDEN_MODULES = ("parking_ml.cli", "parking_ml.ops")
OUTSIDE_CORE = ("ops", "cli")


def _core_files() -> list:
    root = REPO / "parking_ml"
    return [p for p in sorted(root.rglob("*.py")) if p.relative_to(root).parts[0] not in OUTSIDE_CORE]


def _module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _forbidden(name: str) -> bool:
    return name.split(".")[0] in FORBIDDEN_PACKAGES or any(
        name == m or name.startswith(m + ".") for m in FORBIDDEN_MODULES
    )


def _imports(path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, function bodies included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            # `from parking_ml import cli` names the module in the alias
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def test_the_core_has_modules_to_check():
    names = {_module_name(p) for p in _core_files()}
    assert {"parking_ml.config", "parking_ml.inference", "parking_ml.model.tune", "parking_ml.synth"} <= names
    assert not any(n.startswith(FORBIDDEN_MODULES) for n in names)


def test_no_core_module_imports_the_layers_above_it():
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in _core_files()
        for line, name in _imports(path)
        if _forbidden(name)
    ]
    assert not offences, "the ML core must not import these (see docs/architecture.md):\n" + "\n".join(offences)


# inside the core, what each part may import of parking_ml (docs/architecture.md): the order config -> lake ->
# inference -> data -> synth / features -> model; inference stays alone so the API image needs no torch
CORE_ORDER = {
    "parking_ml.config": ("parking_ml.config",),
    "parking_ml.logs": ("parking_ml.logs", "parking_ml.config"),
    "parking_ml.lake": ("parking_ml.lake", "parking_ml.config"),
    "parking_ml.inference": ("parking_ml.inference",),
    "parking_ml.data": ("parking_ml.data", "parking_ml.config", "parking_ml.lake", "parking_ml.inference"),
    "parking_ml.synth": ("parking_ml.synth", "parking_ml.data"),
    "parking_ml.features": ("parking_ml.features", "parking_ml.inference"),
}


def test_core_parts_import_only_the_parts_below_them():
    offences = []
    for path in _core_files():
        name = _module_name(path)
        part = next((p for p in CORE_ORDER if name == p or name.startswith(p + ".")), None)
        if part is None:
            continue  # parking_ml.model (the top of the core) and the package root
        allowed = CORE_ORDER[part]
        for line, imported in _imports(path):
            if imported.startswith("parking_ml.") and not imported.startswith(allowed):
                offences.append(f"{path.relative_to(REPO)}:{line} ({part}) imports {imported}")
    assert not offences, "a core part imports one above it (see docs/architecture.md):\n" + "\n".join(offences)


def test_the_rule_catches_a_function_level_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from parking_ml.ops.stack import free_port\n    import uvicorn\n")
    assert [name for _, name in _imports(bad) if _forbidden(name)] == [
        "parking_ml.ops.stack",
        "parking_ml.ops.stack.free_port",
        "uvicorn",
    ]


def test_importing_the_core_loads_none_of_the_layers_above_it():
    """In a fresh interpreter every core module is imported while a finder records who asks for a forbidden
    package: the core must never be the asker (mlflow itself loads fastapi; that is its business), and the
    CLI, the operations code and the API package must not be loaded at all."""
    script = textwrap.dedent(
        """
        import importlib, json, sys, traceback

        forbidden = set(sys.argv[1].split(","))
        core_root = sys.argv[2]
        askers = []

        class Recorder:
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in forbidden:
                    frames = [f for f in traceback.extract_stack() if "importlib" not in f.filename]
                    caller = frames[-2].filename if len(frames) > 1 else ""
                    if caller.startswith(core_root) and "/ops/" not in caller and "/cli/" not in caller:
                        askers.append(f"{caller} -> {name}")
                return None

        sys.meta_path.insert(0, Recorder())
        for module in sys.argv[3:]:
            importlib.import_module(module)
        loaded = sorted(m for m in sys.modules if m.startswith(("parking_ml.cli", "parking_ml.ops", "serving")))
        print(json.dumps({"askers": askers, "loaded": loaded}))
        """
    )
    modules = [_module_name(p) for p in _core_files()]
    proc = subprocess.run(
        [sys.executable, "-c", script, ",".join(FORBIDDEN_PACKAGES), str(REPO / "parking_ml"), *modules],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"askers": [], "loaded": []}


def test_no_test_module_imports_another_or_conftest():
    """Shared test code lives in tests/fakes/ and fixtures in conftest.py, so a test module never reaches into
    another test module (or conftest) for a helper."""
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] == "tests" and len(parts) > 1 and (parts[1] == "conftest" or parts[-1].startswith("test_")):
                offenders.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not offenders, "\n".join(offenders)
