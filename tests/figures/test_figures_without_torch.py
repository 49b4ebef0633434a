"""`make figures` installs only the core packages: every figure module must import without torch."""

import subprocess
import sys


def test_every_figure_module_imports_without_torch():
    code = (
        "import importlib, pkgutil, sys\n"
        "sys.modules['torch'] = None  # any import of torch now raises ImportError\n"
        "import figures\n"
        "names = [m.name for m in pkgutil.iter_modules(figures.__path__)]\n"
        "for name in names:\n"
        "    importlib.import_module(f'figures.{name}')\n"
        "print(len(names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) >= 16
