"""The package's imports point one way: config -> model -> data -> analysis -> training -> experiments -> ui / cli.

Read from the source with ast (nothing is imported), so a wrong import fails here before it can make a cycle
or drag streamlit into the CLI.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a module may import its own layer or a lower one. ui and cli share a rank but are
# separate layers: neither imports the other.
LAYERS = {"config": 0, "model": 1, "data": 2, "analysis": 3, "training": 4, "experiments": 5, "ui": 6, "cli": 6}
# modules directly in tinyviz/ and their layer; a subpackage's layer is its name
TOP_LEVEL = {"__init__": "config", "config": "config", "resources": "config", "cli": "cli", "__main__": "cli"}


def module_name(path: Path, root: Path) -> str:
    """root/tinyviz/training/runs.py -> tinyviz.training.runs; a package's __init__.py -> the package."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    """The layer a tinyviz module belongs to; the root package (version, format number) is as low as config."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    if name in TOP_LEVEL:
        return TOP_LEVEL[name]
    if name not in LAYERS:
        raise AssertionError(f"{module} is in no layer; add it to LAYERS or TOP_LEVEL in tests/test_layers.py")
    return name


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, at any depth (function-local imports count too).

    ``from tinyviz import data`` names the module tinyviz.data when tinyviz/data exists; relative imports
    are resolved against the file's own package.
    """
    own = module_name(path, root).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                file = root / Path(*sub.split("."))
                is_module = file.with_suffix(".py").exists() or file.is_dir()
                out.append((node.lineno, sub if is_module else base))
    return out


def package_files(root: Path) -> list[Path]:
    return sorted((root / "tinyviz").rglob("*.py"))


def violations(root: Path) -> list[str]:
    """One line per import in root/tinyviz that breaks the layering, naming the file, line and the rule."""
    out = []
    for path in package_files(root):
        me = layer(module_name(path, root))
        where = path.relative_to(root)
        for line, mod in imports(path, root):
            top = mod.split(".")[0]
            if top == "tinyviz":
                other = layer(mod)
                if other != me and LAYERS[other] >= LAYERS[me]:
                    out.append(f"{where}:{line} imports {mod}: the {me} layer may not import from {other}")
            elif top == "streamlit" and me != "ui":
                out.append(f"{where}:{line} imports streamlit: only tinyviz/ui may")
            elif top == "benchmarks":
                out.append(f"{where}:{line} imports {mod}: the package never imports benchmarks/")
    return out


def test_every_package_module_sits_in_a_layer():
    names = {layer(module_name(p, ROOT)) for p in package_files(ROOT)}
    assert names == set(LAYERS), f"layers without modules or modules without layers: {names ^ set(LAYERS)}"


def test_imports_point_down_the_layers():
    assert violations(ROOT) == []


@pytest.mark.parametrize("where, line, rule", [
    ("model/hooks.py", "from tinyviz.training.runs import Run", "the model layer may not import from training"),
    ("data/text.py", "from tinyviz.analysis import plots", "the data layer may not import from analysis"),
    ("cli.py", "    from tinyviz.ui import state", "the cli layer may not import from ui"),
    ("ui/state.py", "import tinyviz.cli", "the ui layer may not import from cli"),
    ("training/session.py", "import streamlit as st", "only tinyviz/ui may"),
    ("experiments/ablate.py", "from benchmarks.reference import RefGPT", "never imports benchmarks/"),
    ("training/runs.py", "from ..experiments import sweep", "the training layer may not import from experiments"),
])
def test_a_wrong_import_is_named(tmp_path, where, line, rule):
    """The check itself can fail: one bad line added to a copy of the package is reported with its place."""
    for src in package_files(ROOT):
        dest = tmp_path / src.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(src.read_text())
    target = tmp_path / "tinyviz" / where
    wrong = f"\n\ndef _wrong():\n{line}\n" if line.startswith(" ") else f"\n{line}\n"  # indented: a local import
    target.write_text(target.read_text() + wrong)
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith(f"tinyviz/{where}:") and rule in found[0], found


def test_import_tinyviz_does_not_import_streamlit():
    """At run time too (a third-party import could pull it in): the CLI and the engine start without streamlit."""
    code = ("import sys, tinyviz, tinyviz.cli, tinyviz.training.session, tinyviz.analysis.probes, "
            "tinyviz.model.sampling, tinyviz.training.runs, tinyviz.experiments.sweep;"
            "assert 'streamlit' not in sys.modules, 'streamlit imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
