"""Packages depend one way: ``pipeline`` may use ``recon``, never both ways (issue 13).

Read from the source with ``ast``, so every import counts, the lazy ones inside functions
too; only imports under ``if TYPE_CHECKING:`` are left out, since they never run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "recon")
Edges = dict[tuple[str, str], list[str]]


class _Imports(ast.NodeVisitor):
    def __init__(self) -> None:
        self.names: list[str] = []

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.names += [alias.name for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:  # a relative import stays in its package
            self.names += [f"{node.module}.{alias.name}" for alias in node.names]


def runtime_imports(path: Path) -> list[str]:
    found = _Imports()
    found.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found.names


def package_edges() -> Edges:
    """(importing package, imported package) -> "file: name" for each import across them."""
    edges: Edges = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in runtime_imports(path):
                target = name.split(".")[0]
                if target in PACKAGES and target != package:
                    edges[package, target].append(f"{path.relative_to(ROOT)}: {name}")
    return dict(edges)


def test_the_scan_sees_imports_and_leaves_out_type_checking_ones(tmp_path: Path) -> None:
    assert "pipeline/job.py: recon.checks.failure_summary" in package_edges()["pipeline", "recon"]
    source = tmp_path / "example.py"
    source.write_text(
        "import typing\n"
        "from typing import TYPE_CHECKING\n"
        "from pipeline.outcome import RunOutcome\n"
        "if TYPE_CHECKING:\n"
        "    from pipeline.job import run_job\n"
        "if typing.TYPE_CHECKING:\n"
        "    import pipeline.db\n"
        "else:\n"
        "    import pipeline.audit\n"
        "def later() -> None:\n"
        "    from pipeline.audit.reader import open_audit\n", encoding="utf-8")
    assert runtime_imports(source) == [
        "typing", "typing.TYPE_CHECKING", "pipeline.outcome.RunOutcome", "pipeline.audit",
        "pipeline.audit.reader.open_audit"]


def test_no_import_cycle_between_packages() -> None:
    edges = package_edges()
    cycles = [(a, b) for (a, b) in edges if a < b and (b, a) in edges]
    assert not cycles, "\n".join(
        f"{a} <-> {b}:\n  " + "\n  ".join(edges[a, b] + edges[b, a]) for a, b in cycles)
