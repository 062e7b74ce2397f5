"""Smoke test of ``bench/cells.py``: one timed step per row on tiny shapes; no timing assertions."""

import importlib.util
import json
import sys

from conftest import REPO

_spec = importlib.util.spec_from_file_location("bench_cells", REPO / "bench" / "cells.py")
bench_cells = sys.modules["bench_cells"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_cells)


def test_a_cell_gets_a_row_at_equal_hidden_size_and_at_the_lstms_parameter_count(tmp_path):
    out, docs = tmp_path / "cells.json", tmp_path / "cells.md"
    args = ["--only", "lru", "--seq", "6", "--batch", "2", "--embed", "4", "--hidden", "16", "--steps", "1"]
    assert bench_cells.main([*args, "--warmup", "1", "--threads", "1", "--out", str(out), "--docs", str(docs)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["cell"], r["sizing"], r["seq"]) for r in rows] == [
        (c, s, 6) for s in bench_cells.SIZINGS for c in ["lru"]
    ]
    assert rows[0]["hidden"] == 16 and all(r["tokens_per_s"] > 0 and r["threads"] == 1 for r in rows)
    lstm = bench_cells.parameters_at("lstm", 4, 16)
    sized = rows[1]
    for neighbour in (sized["hidden"] - 8, sized["hidden"] + 8):  # nearest a multiple of 8 units allows
        if neighbour > 0:
            assert abs(sized["parameters"] - lstm) <= abs(bench_cells.parameters_at("lru", 4, neighbour) - lstm)
    assert docs.read_text().count("\n| 6 |") == 2


def test_the_equal_parameter_search_finds_the_nearest_size_for_every_cell():
    """Every cell's count grows with its hidden size, so nearer than both neighbours is nearest of all."""
    lstm = bench_cells.parameters_at("lstm", 64, 512)
    for cell in bench_cells.CELL_NAMES:
        hidden = bench_cells.hidden_at_parameters(cell, 64, lstm)
        assert 8 <= hidden < bench_cells.MAX_HIDDEN, (cell, hidden)
        gap = abs(bench_cells.parameters_at(cell, 64, hidden) - lstm)
        for neighbour in (hidden - 8, hidden + 8):
            if neighbour >= 8:
                assert gap <= abs(bench_cells.parameters_at(cell, 64, neighbour) - lstm), (cell, hidden)
    assert bench_cells.hidden_at_parameters("lstm", 64, lstm) == 512


def test_an_unknown_cell_is_named(capsys):
    assert bench_cells.main(["--only", "transformer"]) == 2
    assert "'transformer'" in capsys.readouterr().err
