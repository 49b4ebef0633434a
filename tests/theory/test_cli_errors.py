"""User errors of theory.simulate and theory.phase: one line naming the flag and what is allowed, exit 2, before
any work (sizes that cannot fit in memory or finish in a day included); the phase heat map's title and cells."""

from __future__ import annotations

import numpy as np
import pytest

from theory import phase
from theory import simulate as sim


def run_main(main, argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in captured.err, captured.err
    assert captured.out == "", "refused before the run"
    return lines[0]


SIMULATE = [
    (["--time", "1e300"], ["--time", "years", "at most a day"]),
    (["--time", "1e308", "--lr", "1e-10"], ["--time", "at most a day"]),
    (["--dim", "100000", "--augmented-dims", "8"], ["--dim", "GiB of memory"]),
    (["--samples", "100000000"], ["--samples", "GiB of memory"]),
    (["--steps", str(10**12)], ["--steps", "years"]),
    (["--init", "1e200"], ["--init", "at most 1e+08"]),
    (["--init", "paper:1e9"], ["--init", "at most 1e+08"]),
    (["--plot", ""], ["--plot ''", ".png or .pdf"]),
    (["--json", ""], ["--json ''", "give a path"]),
    (["--json", "somefolder/"], ["--json 'somefolder/'"]),
    (["--plot", "out.xyz"], ["--plot", ".png or .pdf"]),
]


@pytest.mark.parametrize(("argv", "needles"), SIMULATE)
def test_simulate_refuses_before_any_work(argv, needles, monkeypatch, capsys):
    monkeypatch.setattr(sim, "run_experiment", lambda *a, **k: pytest.fail("ran before checking the input"))
    assert run_main(sim.main, [*argv, "--quiet"]) == 2
    line = one_line_error(capsys)
    assert all(n in line for n in needles), line


def test_simulate_accepts_png_and_pdf(tmp_path):
    for name in ("traj.png", "traj.pdf"):
        path = tmp_path / name
        argv = ["--dim", "4", "--augmented-dims", "2", "--samples", "16", "--steps", "20", "--plot", str(path)]
        assert run_main(sim.main, [*argv, "--quiet"]) == 0
        assert path.stat().st_size > 1000


PHASE = [
    (["--strengths", "nan"], ["--strengths nan", "finite number >= 0"]),
    (["--strengths", "0,2000"], ["--strengths 2000", "at most 1000"]),
    (["--lrs", "nan"], ["--lrs nan", "finite number > 0"]),
    (["--lrs", "0.02,-1"], ["--lrs -1", "finite number > 0"]),
    (["--widths", "1000000"], ["--widths", "GiB of memory"]),
    (["--strengths", "0:4:100000000"], ["--strengths", "at most 1000000 per axis"]),
    (["--strengths", "0:4:1000000"], ["--strengths", "GiB of memory"]),
    (["--steps", "100000000"], ["--steps", "days"]),
    (["--backend", "torch", "--device", "foo"], ["--device 'foo'", "cpu, cuda, cuda:N or mps"]),
    (["--steps", "0"], ["--steps must be >= 1"]),
]


@pytest.mark.parametrize(("argv", "needles"), PHASE)
def test_phase_refuses_before_any_work(argv, needles, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(phase, "run", lambda *a, **k: pytest.fail("swept before checking the input"))
    assert run_main(phase.main, [*argv, "--out", str(tmp_path / "out")]) == 2
    line = one_line_error(capsys)
    assert all(n in line for n in needles), line
    assert not (tmp_path / "out").exists()


def test_phase_torch_cuda_without_cuda_is_refused(monkeypatch, capsys, tmp_path):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(phase, "run", lambda *a, **k: pytest.fail("swept before checking the input"))
    assert run_main(phase.main, ["--backend", "torch", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "--device cuda: CUDA is not available" in one_line_error(capsys)


def test_phase_heat_map_title_inside_and_counts_in_cells(tmp_path, monkeypatch):
    """The default single-panel map: the wrapped title lies inside the canvas, each cell carries its mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    strengths = [0.0, 1.0, 2.0, 3.0]
    data = {
        "grid": {"widths": [16], "depths": [1], "strengths": strengths, "lrs": [0.02], "seeds": [0, 1, 2],
                 "augmented_dims": [8]},
        "config": {"steps": 2000, "loss": "paper", "noisy_views": 1},
        "collapsed_dims": np.array([[[[[0, 0, 0]], [[0, 0, 0]], [[8, 8, 8]], [[8, 8, 7]]]]]),
        "collapsed_dims_initial": np.zeros((1, 1, 4, 1, 3), dtype=int),
        "diverged": np.zeros((1, 1, 4, 1, 3), dtype=bool),
    }
    phase.plot(data, str(tmp_path / "phase"))
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    box, canvas = fig._suptitle.get_window_extent(renderer), fig.bbox
    assert box.x0 >= canvas.x0 and box.x1 <= canvas.x1 and box.y1 <= canvas.y1, (box, canvas)
    cells = [t.get_text() for t in fig.axes[0].texts]
    monkeypatch.undo()
    plt.close(fig)
    assert cells == ["0.0", "0.0", "8.0", "7.7"]
