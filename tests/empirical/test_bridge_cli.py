"""``python -m empirical.bridge`` as a user runs it: from any folder with only the installed packages (``figures``
is not installed), every file it wrote named, one run named twice counted once, bad flags refused first."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from empirical import bridge  # noqa: E402
from tests.empirical.test_bridge import toy_run  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = ["bridge.json"] + [f"{n}.{e}" for n in ("bridge_growth", "bridge_early_warning", "bridge_depth")
                           for e in ("png", "pdf", "json")]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("bridge-cli")
    return [toy_run(str(root / f"s{s}"), seed=s, depth=2, steps=40, every=5, strength=0.3) for s in (0, 1)]


def test_cli_from_another_folder_without_figures(small, tmp_path):
    """Only the ``empirical`` and ``theory`` packages on the path, the working folder elsewhere: bridge.json and
    the three figures are written, each named, and no ``figures`` module is imported."""
    pkgs = tmp_path / "pkgs"
    pkgs.mkdir()
    for name in ("empirical", "theory"):
        os.symlink(os.path.join(REPO, name), pkgs / name)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    code = ("import importlib.util, sys\n"
            "assert importlib.util.find_spec('figures') is None, 'figures importable: the test proves nothing'\n"
            "from empirical import bridge\n"
            f"rc = bridge.main([{small[0]!r}, {small[1]!r}, '--out', 'out', '--no-progress'])\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'figures'], 'imported figures'\n"
            "sys.exit(rc)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(pkgs), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    wrote = [line.removeprefix("wrote ") for line in r.stdout.splitlines() if line.startswith("wrote ")]
    assert sorted(wrote) == sorted(os.path.join("out", f) for f in FILES)
    assert all((cwd / p).is_file() for p in wrote)


def test_the_module_does_not_import_figures():
    code = ("import sys\nimport empirical.bridge, empirical.bridge_plots\n"
            "sys.exit(1 if [m for m in sys.modules if m.split('.')[0] == 'figures'] else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120).returncode == 0


def test_same_run_twice_counts_once_and_figures_match_the_gallery(small, tmp_path, capsys):
    out = tmp_path / "out"
    again = small[0].rstrip("/") + "/"
    assert bridge.main([small[0], again, small[1], "--out", str(out), "--no-progress"]) == 0
    io = capsys.readouterr()
    assert "counted once" in io.err and io.err.count("\n") == 1
    res = json.load(open(out / "bridge.json"))
    assert sorted(res["runs"]) == ["s0", "s1"] and {g["seeds"] for g in res["groups"]} == {2}
    assert sorted(line.removeprefix("wrote ") for line in io.out.splitlines() if line.startswith("wrote ")) == \
        sorted(str(out / f) for f in FILES)
    # the gallery's module draws the same figure from the same results, byte for byte
    from figures import bridge_depth

    bridge_depth.draw(res, tmp_path / "gallery")
    for ext in ("png", "pdf", "json"):
        assert (tmp_path / "gallery" / f"bridge_depth.{ext}").read_bytes() == (out / f"bridge_depth.{ext}").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed -1 must be at least 0"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--seed", "1.5"], "invalid int value"),
    (["--out", ""], "--out is empty"),
])
def test_bad_flags_one_line_before_work(small, args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bridge, "analyse", lambda *a, **k: pytest.fail("worked before checking the flags"))
    full = [small[0], "--out", str(tmp_path / "o"), *args]
    assert bridge.main(full) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "bridge.json").exists()


def test_out_naming_a_file(small, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert bridge.main([small[0], "--out", str(tmp_path / "afile"), "--no-progress"]) == 2
    assert "is an existing file" in capsys.readouterr().err
