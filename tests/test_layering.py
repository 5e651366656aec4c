"""Layering: the engine never loads Qt; spec never loads torch (import-linter contracts too)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_engine_and_methods_load_no_qt():
    code = ("import sys, neurolens, neurolens.engine, neurolens.engine.lm, neurolens.cli, "
            "neurolens.store, neurolens.spec.edits;"
            "bad=[m for m in sys.modules if m.split('.')[0] in ('PySide6','pyqtgraph','shiboken6')"
            " or m.startswith('neurolens.gui')];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_spec_loads_no_torch():
    code = ("import sys, neurolens.spec.edits, neurolens.spec.sites;"
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_cli_parser_and_the_method_registry_load_no_torch():
    """Every command builds the parser, which lists the registered methods: that must not load
    torch, or `neurolens gui` would load it before gui.process.configure() sets OpenMP's
    waiting policy (and `--help` would take seconds)."""
    code = ("import sys, neurolens.methods.registry as r; from neurolens.cli import build_parser;"
            "build_parser(); assert len(r.all_methods()) >= 5;"
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_linter_contracts():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broken" in r.stdout and "0 broken" in r.stdout


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), imports as grimp sees
    them: lazy imports inside functions count."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycles_among_neurolens_modules():
    import grimp
    graph = grimp.build_graph("neurolens")
    assert len(graph.modules) > 50
    assert _cycles(graph) == []
    # the check sees a cycle when there is one
    graph.add_import(importer="neurolens.spec.sites", imported="neurolens.engine.lm")
    assert any("neurolens.spec.sites" in c for c in _cycles(graph))
