"""Plot plumbing shared by the figures and the installed commands (torch-free): the project's matplotlib look
(``RC``) and titles fitted to their room."""

from __future__ import annotations

import textwrap

RC = {  # the gallery's look: same settings, same bytes, wherever a figure is drawn
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "legend.framealpha": 0.85,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "lines.linewidth": 1.3,
    "figure.constrained_layout.use": True,
    "svg.hashsalt": "dimcollapse",
    "pdf.fonttype": 42,
}


def _wrap_to(text_artist, renderer, max_width: float) -> None:
    """Re-wrap ``text_artist`` at spaces (keeping its explicit line breaks) until it is at most ``max_width``
    pixels wide; a single word longer than that is left as it is."""
    if text_artist.get_window_extent(renderer).width <= max_width:
        return
    lines = text_artist.get_text().split("\n")
    longest = max(len(line) for line in lines)
    width = max(int(longest * max_width / text_artist.get_window_extent(renderer).width), 8)
    while width >= 8:
        text_artist.set_text("\n".join(textwrap.fill(line, width) for line in lines))
        if text_artist.get_window_extent(renderer).width <= max_width:
            return
        width -= 2


def _subfigures(fig) -> list:
    out = [fig]
    for sub in getattr(fig, "subfigs", []):
        out += _subfigures(sub)
    return out


def fit_titles(fig) -> None:
    """Wrap every (sup)title that is wider than the room it has: an axes title to its axes' width, a
    suptitle to its (sub)figure's width. Constrained layout then makes room for the extra lines on save."""
    for _ in range(2):  # wrapping changes the layout, which changes the widths
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for f in _subfigures(fig):
            if getattr(f, "_suptitle", None) is not None and f._suptitle.get_text():
                _wrap_to(f._suptitle, renderer, 0.97 * f.bbox.width)
        for ax in fig.get_axes():
            for title in (ax.title, ax._left_title, ax._right_title):
                if title.get_text():
                    _wrap_to(title, renderer, 1.02 * ax.bbox.width)
