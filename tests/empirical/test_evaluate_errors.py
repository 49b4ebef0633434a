"""User errors of empirical.evaluate and empirical.compare: one line naming the bad flag or file and what is
allowed, exit 2, before any work; an unreadable final.pt falls back to the checkpoint beside it; the plot's
display floor is labelled."""

import os
import shutil

import pytest

torch = pytest.importorskip("torch")

from empirical import compare as cmp  # noqa: E402
from empirical import evaluate as ev  # noqa: E402


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "text,needle",
    [("", "is empty"), ('{"backbone": "tiny", "proj', "is not valid JSON"), ("{", "is not valid JSON"),
     ("[1]", "is not a training config"), ('{"backbone": "tiny"}', "missing projector")],
)
@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_broken_config_json_is_one_line(tiny_run, tmp_path, capsys, monkeypatch, text, needle, command):
    shutil.copy(os.path.join(tiny_run, "final.pt"), tmp_path / "final.pt")
    (tmp_path / "config.json").write_text(text)
    monkeypatch.setattr(ev, "load_split", lambda *a, **k: pytest.fail("loaded data before reading the config"))
    main = ev.main if command == "evaluate" else cmp.main
    assert main([str(tmp_path), "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert "config.json" in err and needle in err, err




def test_cuda_without_cuda_is_refused(tiny_run, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking the input"))
    assert ev.main([tiny_run, "--device", "cuda"]) == 2
    assert "--device cuda: CUDA is not available" in one_line_error(capsys)


def test_library_refuses_a_single_training_image(tiny_run):
    """evaluate() itself (not only the CLI) refuses a probe it cannot fit, naming the minimum."""
    with pytest.raises(ev.UserError, match="the linear probe needs at least 2"):
        ev.evaluate(tiny_run, max_train=1)


def test_truncated_final_falls_back_to_the_checkpoint_beside_it(tiny_run, tmp_path, capsys):
    for name in os.listdir(tiny_run):
        if name.endswith(".pt") or name == "config.json":
            shutil.copy(os.path.join(tiny_run, name), tmp_path / name)
    data = (tmp_path / "final.pt").read_bytes()
    (tmp_path / "final.pt").write_bytes(data[: len(data) // 2])
    assert ev.main([str(tmp_path), "--spectra-only", "--no-progress"]) == 0
    err = capsys.readouterr().err
    ckpt = [n for n in os.listdir(tmp_path) if n.startswith("ckpt-")][0]
    assert "final.pt" in err and ckpt in err and "using the newest readable checkpoint" in err
    # the checkpoint truncated too: refused, naming final.pt
    (tmp_path / ckpt).write_bytes((tmp_path / ckpt).read_bytes()[:2000])
    assert ev.main([str(tmp_path / "final.pt"), "--spectra-only", "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert "final.pt" in err and "no readable ckpt-*.pt beside it" in err


def test_plot_accepts_pdf_and_labels_the_display_floor(tiny_run, tmp_path, monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    pdf = tmp_path / "s.pdf"
    assert ev.main([tiny_run, "--out", str(tmp_path), "--plot", str(pdf), "--spectra-only", "--no-progress"]) == 0
    assert pdf.stat().st_size > 1000 and (tmp_path / "s.png").stat().st_size > 10_000
    labels = [t.get_text() for ax in figures[0].axes for t in ax.get_legend().get_texts()]
    monkeypatch.undo()
    plt.close(figures[0])
    floor = [t for t in labels if "display floor" in t]
    assert floor and all("at or below" in t for t in floor), labels


def test_step0_counts_read_from_the_runs_spectra(tmp_path):
    """The trained counts stand beside the step-0 ones: 3 of the 5 log10 values lie 3 or more decades below the
    largest; a run without a step-0 row gives None."""
    import json as _json

    from empirical.evaluate import step0_collapsed

    (tmp_path / "spectra.jsonl").write_text(_json.dumps({"step": 0, "log10_z": [0.0, -1.0, -3.0, -5.0, -9.0],
                                                         "log10_r": [-2.0, -2.5]}) + "\n")
    got = step0_collapsed(str(tmp_path / "final.pt"), {"spectrum_samples": 256})
    assert got == {"z": 3, "r": 0, "images": 256}
    (tmp_path / "spectra.jsonl").write_text(_json.dumps({"step": 150, "log10_z": [0.0]}) + "\n")
    assert step0_collapsed(str(tmp_path / "final.pt"), {}) is None
