"""The method registry: no import circle, lazy listing, every paper defined once."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hf_unlearn import papers
from hf_unlearn.papers import Paper
from hf_unlearn.registry import METHODS, get_method, list_methods, register_method

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hf_unlearn"
BIBTEX_ENTRY = re.compile(r"@(article|inproceedings|misc|book|techreport|phdthesis)\{", re.I)


def _modules() -> dict[str, tuple[Path, bool]]:
    """{dotted module name: (file, is package)} of every module of hf_unlearn."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the hf_unlearn modules it imports, at module level or inside functions. ``from . import x``
    is an import of the submodule ``x``; a module's own parent packages are not counted (Python imports
    them before the module)."""
    modules = _modules()
    graph = {}
    for name, (path, is_pkg) in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # ``from P import x``: the submodule P.x if there is one, else a name of P; P itself runs
                # first unless it is a parent package of this module (then it is already being imported)
                targets = [f"{prefix}.{a.name}" for a in node.names]
                if not (name + ".").startswith(prefix + "."):
                    targets.append(prefix)
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(v):
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state and (cycle := visit(w)):
                return cycle
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (cycle := visit(v)):
            return cycle
    return None


def test_find_cycle_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_hf_unlearn_has_no_import_cycle():
    graph = import_graph()
    assert {"hf_unlearn.registry", "hf_unlearn.trainers.flat", "hf_unlearn.generation.guard"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_registry_and_papers_import_no_method():
    graph = import_graph()
    assert graph["hf_unlearn.papers"] == set()
    assert graph["hf_unlearn.registry"] == {"hf_unlearn.papers"}
    # and importing them loads nothing else of the library (listing is lazy)
    code = (
        "import sys, hf_unlearn.registry, hf_unlearn.papers; "
        "print(sorted(m for m in sys.modules if m.startswith('hf_unlearn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['hf_unlearn', 'hf_unlearn.papers', 'hf_unlearn.registry']"


def _source_files():
    for folder in ("hf_unlearn", "benchmarks"):
        yield from (ROOT / folder).rglob("*.py")


def test_every_paper_is_defined_once_in_papers_py():
    defined: dict[str, list[str]] = {}
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Paper"
            ):
                kw = {k.arg: k.value for k in node.keywords}
                arxiv = kw["arxiv_id"].value if "arxiv_id" in kw else node.args[1].value
                title = kw["title"] if "title" in kw else node.args[0]
                key = arxiv or ast.unparse(title)
                defined.setdefault(key, []).append(str(path.relative_to(ROOT)))
    assert defined, "no Paper(...) found"
    for key, where in defined.items():
        assert where == ["hf_unlearn/papers.py"], f"{key} is defined in {where}"
    # no BibTeX literal outside papers.py either
    for path in _source_files():
        if path.name != "papers.py" or path.parent != PACKAGE:
            assert not BIBTEX_ENTRY.search(path.read_text(encoding="utf-8")), f"BibTeX in {path}"
    all_papers = [v for v in vars(papers).values() if isinstance(v, Paper)]
    ids = [p.arxiv_id for p in all_papers if p.arxiv_id]
    assert len(ids) == len(set(ids))
    for paper in all_papers:
        assert BIBTEX_ENTRY.match(paper.bibtex) and paper.bibtex.count("@") == 1 and paper.link


def test_method_table_matches_what_registers():
    entries = {e.id: e for e in list_methods()}
    assert set(METHODS) <= set(entries)
    for method_id, target in METHODS.items():
        module, name = target.split(":")
        entry = entries[method_id]
        assert (entry.cls.__module__, entry.cls.__name__) == (module, name)
        assert entry.cls._name == method_id and entry.paper is entry.cls._paper
        assert entry.paper in vars(papers).values()  # the shared definition, not a copy
        assert get_method(method_id) is entry
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")


def test_register_method_checks_metadata():
    with pytest.raises(TypeError, match="no _paper"):

        @register_method()
        class NoPaper:
            _name = "no_paper"
            _tag_names = ("x",)

    with pytest.raises(TypeError, match="must be a hf_unlearn.papers.Paper"):

        @register_method()
        class WrongPaper:
            _name = "wrong_paper"
            _paper = "a title"
            _tag_names = ("x",)

    get_method("flat")
    with pytest.raises(ValueError, match="already registered"):

        @register_method()
        class Clash:
            _name = "flat"
            _paper = papers.FLAT_PAPER
            _tag_names = ("x",)
