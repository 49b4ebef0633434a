"""Shared test settings: one BLAS thread per worker, bounded and derandomized hypothesis."""

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

from hypothesis import settings  # noqa: E402

settings.register_profile("dimcollapse", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("dimcollapse")
