"""Packages depend one way: ``pipeline`` may use ``recon``, never the other way (issue 13);
inside ``pipeline``, a module uses its own layer and the layers below it only (issue 20).

Read from the source with ``ast``, so every import counts, the lazy ones inside functions
too; only imports under ``if TYPE_CHECKING:`` are left out, since they never run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "recon")
Edges = dict[tuple[str, str], list[str]]

# pipeline's layers, lowest first, by top-level module or subpackage: each may import its
# own layer and those below it (and recon, below them all). A new module gets a place here.
LAYERS: tuple[tuple[str, ...], ...] = (
    # values, formats and machinery every part uses; nothing of the job's settings
    ("__init__", "errors", "money", "settings", "layouts", "source", "stages",
     "interrupts", "logs", "rejects", "repeats", "metrics", "progress", "outcome",
     "generate", "generate_mainframe", "jobs"),
    ("inputs",),  # the input formats behind one contract (INPUTS_MAY_USE below)
    # tables, repositories, backends, MERGE: given plain values (names, layouts, keys,
    # bounds), so below the configuration they are read from
    ("db",),
    ("config",),  # the job's configuration
    ("audit",),  # BATCH_RUN and the audit's other tables: what is written and read
    # a run's parts
    ("workers", "reconcile", "staging_totals", "column_proof", "chains", "identity"),
    # the commands and their outputs
    ("job", "resume", "resume_types", "validate", "explain", "reporting", "publish",
     "summary", "__main__"),
)
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}
# and recon; settings: reading a TOML table's values (the input formats' own sections)
INPUTS_MAY_USE = {"inputs", "layouts", "source", "errors", "money", "settings"}


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


def unit_of(path: Path, root: Path) -> str:
    """A module's place in LAYERS: pipeline/<unit>.py or pipeline/<unit>/..."""
    parts = path.relative_to(root / "pipeline").with_suffix("").parts
    return parts[0]


def unit_imports(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """(importing unit, imported unit, "file: name") for each import of another unit."""
    found = []
    for path in sorted((root / "pipeline").rglob("*.py")):
        unit = unit_of(path, root)
        for name in runtime_imports(path):
            parts = name.split(".")
            if parts[0] == "pipeline" and len(parts) > 1 and parts[1] != unit:
                found.append((unit, parts[1], f"{path.relative_to(root)}: {name}"))
    return found


def upward_imports(root: Path = ROOT) -> list[str]:
    """Every import of ``pipeline`` from a layer above the importing module's."""
    def upward(unit: str, used: str) -> bool:
        if unit == "inputs" and used not in INPUTS_MAY_USE:
            return True
        return LAYER_OF.get(used, -1) > LAYER_OF.get(unit, len(LAYERS))

    return [where for unit, used, where in unit_imports(root) if upward(unit, used)]


def test_recon_imports_nothing_of_pipeline() -> None:
    found = package_edges().get(("recon", "pipeline"), [])
    assert not found, "\n".join(found)


def test_every_module_of_pipeline_has_a_layer() -> None:
    units = {unit_of(p, ROOT) for p in (ROOT / "pipeline").rglob("*.py")}
    assert not units - LAYER_OF.keys(), f"place these in LAYERS: {sorted(units - LAYER_OF.keys())}"


def test_pipeline_imports_only_its_own_layer_and_lower() -> None:
    assert not upward_imports(), "\n".join(upward_imports())


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    db = tmp_path / "pipeline" / "db"
    db.mkdir(parents=True)
    (db / "tables.py").write_text("from typing import TYPE_CHECKING\n"
                                  "from pipeline.errors import ConfigError\n"
                                  "if TYPE_CHECKING:\n"
                                  "    from pipeline.job import run_job\n"
                                  "def later() -> None:\n"
                                  "    from pipeline.audit.schema import to_audit\n",
                                  encoding="utf-8")
    inputs = tmp_path / "pipeline" / "inputs"
    inputs.mkdir()
    (inputs / "fixed.py").write_text("from pipeline.layouts import fields\n"
                                     "from pipeline.metrics.bus import MetricsBus\n",
                                     encoding="utf-8")
    assert upward_imports(tmp_path) == ["pipeline/db/tables.py: pipeline.audit.schema.to_audit",
                                        "pipeline/inputs/fixed.py: pipeline.metrics.bus.MetricsBus"]


def cycles(edges: dict[str, set[str]]) -> list[str]:
    """Every import cycle of ``edges``, once each, from its least unit."""
    found = []

    def visit(unit: str, path: list[str]) -> None:
        for used in sorted(edges.get(unit, ())):
            if used == path[0]:
                found.append(" -> ".join([*path, used]))
            elif used not in path and used > path[0]:
                visit(used, [*path, used])

    for unit in sorted(edges):
        visit(unit, [unit])
    return found


def test_cycles_are_found_once_each() -> None:
    assert cycles({"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a"}}) == [
        "a -> b -> a", "a -> b -> c -> a"]


def test_no_import_cycle_between_modules_or_subpackages() -> None:
    # within a layer too: layouts and source, say, may not use each other
    edges: dict[str, set[str]] = defaultdict(set)
    for unit, used, _ in unit_imports():
        edges[unit].add(used)
    assert not cycles(edges), "\n".join(cycles(edges))
