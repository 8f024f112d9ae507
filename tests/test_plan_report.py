"""The plan's table and picture: right numbers in the table, a real PNG of sensible size."""
import struct

import numpy as np
import pytest
from matplotlib.image import imread
from rich.console import Console

from test_plan_validity import fc_chain
from tinymem.model.tflite import parse_tflite
from tinymem.plan import make_plan
from tinymem.report.plots import plot_plan
from tinymem.report.tables import plan_table

WIDTHS, BATCHES = [40, 64, 48, 10], 2


@pytest.fixture(scope="module")
def plans():
    g = parse_tflite(fc_chain(np.random.default_rng(4), WIDTHS, batches=BATCHES))
    return make_plan(g, "tinymem"), make_plan(g, "greedy")


def rendered_rows(table) -> list[list[str]]:
    console = Console(record=True, width=160, color_system=None)
    console.print(table)
    lines = console.export_text().splitlines()
    return [[c.strip() for c in line.strip("│┃").split("│")] for line in lines if line.startswith("│")]


def test_plan_table_rows_and_totals(plans):
    plan, _ = plans
    rows = rendered_rows(plan_table(plan))
    assert len(rows) == len(WIDTHS) - 1 + 1  # one per FC, then the total (footer) row
    macs = [BATCHES * i * o for i, o in zip(WIDTHS, WIDTHS[1:])]  # from the shapes, not the plan
    for row, layer, want in zip(rows, plan.layers, macs):
        assert row[:6] == [str(layer.index), "FULLY_CONNECTED", f"{want:,}", f"{layer.live_bytes:,}",
                           "yes" if layer.in_place else "", f"{layer.flash_bytes:,}"]
    total = rows[-1]
    assert total[0] == "total" and total[2] == f"{sum(macs):,}"
    assert total[3] == f"{plan.arena_bytes:,} arena"
    assert total[4] == f"{sum(layer.in_place for layer in plan.layers)} of {len(plan.layers)}"
    assert total[5] == f"{sum(layer.flash_bytes for layer in plan.layers):,}"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("with_baseline", [True, False])
def test_plot_writes_a_real_png(plans, tmp_path, with_baseline):
    plan, greedy = plans
    out = plot_plan(plan, tmp_path / "sub" / "memory.png", baseline=greedy if with_baseline else None)
    assert out == tmp_path / "sub" / "memory.png"
    w, h = png_size(out)
    assert 900 <= w <= 2700 and 700 <= h <= 1200 and out.stat().st_size > 20_000
    pixels = imread(out)  # decodes the whole file: a truncated PNG fails here
    assert pixels.shape[:2] == (h, w)
    assert (pixels[..., :3] < 0.9).any(axis=-1).mean() > 0.05  # drawn on, not a blank canvas
