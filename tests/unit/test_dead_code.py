"""No dead settings and no dead state: what is configured or kept is read somewhere.

A setting that is validated but never read lies to the operator who changes it; an attribute
that is set but never read is state a reader must understand for nothing. Both are found by
reading the package's source (its syntax trees), not by running it.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from vledger.config import cluster, settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("broker", "client", "config", "ingest", "node", "tools", "verifier")
SETTINGS = (
    settings.Limits,
    settings.StoreSettings,
    settings.BrokerSettings,
    cluster.IngestSettings,
    cluster.ReplicationSettings,
    cluster.VerifierSettings,
    cluster.ObserverSettings,
)


def _sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _attributes_read(tree: ast.AST) -> set[str]:
    return {
        node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Store)
    }


def test_every_setting_is_read_by_the_code() -> None:
    read: set[str] = set()
    for path in _sources():
        read |= _attributes_read(ast.parse(path.read_text(encoding="utf-8")))
    dead = [f"{cls.__name__}.{f.name}" for cls in SETTINGS for f in dataclasses.fields(cls) if f.name not in read]
    assert dead == []


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_private_attribute_a_module_sets_is_read_in_it(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    set_on_self = {
        node.attr: node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    }
    read = _attributes_read(tree)
    assert {name: line for name, line in set_on_self.items() if name not in read} == {}
