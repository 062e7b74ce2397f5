"""The house's rule that lower rooms never import higher ones, read from the source."""

import ast

import pytest

from conftest import REPO

PACKAGE = REPO / "src" / "rnnlab"
HIGHER = ("rnnlab.runs", "rnnlab.tasks", "rnnlab.reporting", "rnnlab.training", "rnnlab.cli", "rnnlab.builders")


def imported(path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("room", ["models", "data"])
def test_models_and_data_import_no_higher_room(room):
    files = sorted((PACKAGE / room).rglob("*.py"))
    assert files
    climbing = [
        f"{path.relative_to(PACKAGE)}: {name}" for path in files for name in imported(path) if name.startswith(HIGHER)
    ]
    assert climbing == []
