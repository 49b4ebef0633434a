"""Every figure of ``make_all`` as it is saved: no text outside the canvas, no legend or text over a data line.

The toy-model figures are redrawn from their committed JSON (the gallery's own numbers, no training); the
figures of trained networks read the committed results, as ``make_all`` does. Each figure is caught at
``style.save`` and drawn at the saved size (savefig dpi, no tight bounding box), then:

* every text that is drawn (titles, labels, tick labels, legends, annotations) lies inside the figure;
* no legend and no text placed in an axes covers a point of a plotted data line or scatter, nor a segment
  between two drawn points (reference lines such as ``axhline`` are not data and may pass under a legend);
* a legend is either inside its axes or wholly outside them (placed beside or below), never half across the
  frame.
"""

from __future__ import annotations

import importlib
import json
from unittest import mock

import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cbook import STEP_LOOKUP_MAP
from matplotlib.collections import PathCollection
from matplotlib.text import Text

from figures import make_all, style

# figures with ``draw(data, out_dir)``: redrawn from figures/out/<name>.json
REDRAWN = (
    "phase_diagram",
    "fig11_depth",
    "fig5_alignment",
    "fig6_singular_values",
    "fig3_strong_augmentation",
    "x_over_time",
)
SLACK = 0.5  # pixels: rounding of extents at the canvas edge


def make(name: str, tmp_path, monkeypatch) -> matplotlib.figure.Figure:
    """The figure ``name`` exactly as ``style.save`` received it (saved into tmp_path, not figures/out)."""
    caught = []
    real_save = style.save

    def spy(fig, fig_name, data, out_dir=None):
        caught.append(fig)
        return real_save(fig, fig_name, data, tmp_path)

    monkeypatch.setattr(style, "save", spy)
    module = importlib.import_module(f"figures.{name}")
    try:
        if name in REDRAWN:
            module.draw(json.loads((style.OUT_DIR / f"{name}.json").read_text()), tmp_path)
        else:
            module.main(quick=True, out_dir=tmp_path)
    except style.MissingResults as err:
        pytest.skip(f"results absent: {err}")
    assert len(caught) == 1, f"{name} saved {len(caught)} figures"
    return caught[0]


def drawn_texts(fig) -> tuple[list[tuple[Text, object]], object]:
    """Draw ``fig`` at the saved size; return every non-empty text that was drawn, with its window extent."""
    seen = []
    original = Text.draw

    def recording_draw(self, renderer):
        original(self, renderer)
        if self.get_visible() and self.get_text().strip():
            seen.append((self, self.get_window_extent(renderer)))

    FigureCanvasAgg(fig)  # a closed pyplot figure keeps only a base canvas
    fig.set_dpi(matplotlib.rcParams["savefig.dpi"])
    with mock.patch.object(Text, "draw", recording_draw):
        fig.canvas.draw()
    return seen, fig.canvas.get_renderer()


def _segments_hit(points: np.ndarray, rect: tuple[float, float, float, float]) -> np.ndarray:
    """For each segment between consecutive points: does it meet the rectangle (Liang-Barsky)?"""
    x0, y0, x1, y1 = rect
    a, b = points[:-1], points[1:]
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    a, b = a[ok], b[ok]
    d = b - a
    lo, hi = np.zeros(len(a)), np.ones(len(a))
    hit = np.ones(len(a), dtype=bool)
    for p, q in ((-d[:, 0], a[:, 0] - x0), (d[:, 0], x1 - a[:, 0]), (-d[:, 1], a[:, 1] - y0), (d[:, 1], y1 - a[:, 1])):
        parallel = p == 0
        hit &= ~(parallel & (q < 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = q / p
        lo = np.where((p < 0) & ~parallel, np.maximum(lo, r), lo)
        hi = np.where((p > 0) & ~parallel, np.minimum(hi, r), hi)
    return hit & (lo <= hi)


def _inside(points: np.ndarray, rect) -> np.ndarray:
    x0, y0, x1, y1 = rect
    return (points[:, 0] > x0) & (points[:, 0] < x1) & (points[:, 1] > y0) & (points[:, 1] < y1)


def data_shapes(fig):
    """(description, display points, joined?) for every data line and scatter, inside its axes only."""
    for ax in fig.get_axes():
        box = ax.bbox
        for line in ax.lines:
            if not line.get_visible() or line.get_transform() is not ax.transData:
                continue  # axhline / axvline: reference lines in axes coordinates
            x, y = (np.asarray(v, dtype=float) for v in line.get_data())
            if x.size == 0:
                continue
            if line.get_drawstyle() in STEP_LOOKUP_MAP and line.get_drawstyle() != "default":
                x, y = (np.asarray(v, dtype=float) for v in STEP_LOOKUP_MAP[line.get_drawstyle()](x, y))
            with np.errstate(invalid="ignore", divide="ignore"):
                pts = ax.transData.transform(np.column_stack([x, y]))
            joined = line.get_linestyle() not in ("None", "", " ", "none")
            yield f"line {line.get_label()!r} of axes {ax.get_title()!r}", pts, joined, box
        for coll in ax.collections:
            if isinstance(coll, PathCollection) and coll.get_visible() and len(coll.get_offsets()):
                pts = coll.get_offset_transform().transform(np.asarray(coll.get_offsets(), dtype=float))
                yield f"scatter of axes {ax.get_title()!r}", pts, False, box


def covering_boxes(fig, renderer):
    """(description, extent) of every legend and of every text placed in an axes."""
    for ax in fig.get_axes():
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            yield f"legend of axes {ax.get_title()!r}", legend.get_window_extent(renderer)
        for text in ax.texts:
            if text.get_visible() and text.get_text().strip():
                patch = text.get_bbox_patch()
                extent = patch.get_window_extent(renderer) if patch is not None else text.get_window_extent(renderer)
                yield f"text {text.get_text()[:40]!r}", extent
    for legend in fig.legends:
        yield "figure legend", legend.get_window_extent(renderer)


def problems(fig) -> list[str]:
    texts, renderer = drawn_texts(fig)
    width, height = fig.canvas.get_width_height()
    out = []
    for text, ext in texts:
        if not np.all(np.isfinite(ext.bounds)):
            continue
        if ext.x0 < -SLACK or ext.y0 < -SLACK or ext.x1 > width + SLACK or ext.y1 > height + SLACK:
            out.append(
                f"text {text.get_text()[:60]!r} outside the {width}x{height} canvas: "
                f"x {ext.x0:.0f}..{ext.x1:.0f}, y {ext.y0:.0f}..{ext.y1:.0f}"
            )
    for ax in fig.get_axes():
        legend = ax.get_legend()
        if legend is None or not legend.get_visible():
            continue
        ext, box = legend.get_window_extent(renderer), ax.bbox
        inside = ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1 and ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1
        apart = ext.x0 >= box.x1 - 1 or ext.x1 <= box.x0 + 1 or ext.y0 >= box.y1 - 1 or ext.y1 <= box.y0 + 1
        if not (inside or apart):
            out.append(f"legend of axes {ax.get_title()!r} runs across the axes frame")
    shapes = list(data_shapes(fig))
    for what, ext in covering_boxes(fig, renderer):
        for name, pts, joined, box in shapes:
            # only the part of the box inside the line's axes can cover it (lines are clipped to their axes)
            rect = (max(ext.x0, box.x0) + 1, max(ext.y0, box.y0) + 1, min(ext.x1, box.x1) - 1, min(ext.y1, box.y1) - 1)
            if rect[0] >= rect[2] or rect[1] >= rect[3]:
                continue
            hit = _inside(pts, rect).any() or (joined and len(pts) > 1 and _segments_hit(pts, rect).any())
            if hit:
                out.append(f"{what} covers {name}")
    return out


@pytest.mark.parametrize("name", make_all.FIGURES)
def test_nothing_clipped_or_covered(name, tmp_path, monkeypatch):
    fig = make(name, tmp_path, monkeypatch)
    found = problems(fig)
    assert not found, f"{name}:\n" + "\n".join(found)


def test_the_check_sees_a_clipped_title_and_a_covered_line(tmp_path):
    """The check itself: a title wider than the canvas and a legend over a line are both reported."""
    fig, ax = style.plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1], label="data")
    ax.legend(loc="center")
    fig.suptitle("a title much too long for a figure of three inches, so it runs off both edges of it")
    found = problems(fig)
    assert any("outside" in p for p in found) and any("covers" in p for p in found), found
    style.plt.close(fig)
