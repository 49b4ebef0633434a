"""Figures of the paper (Jing et al., ICLR 2022) redrawn from ``theory``: predictions drawn over simulations.

One script per figure, each with ``main(quick=False, out_dir=None) -> dict`` returning the numbers it drew;
``python -m figures.make_all`` runs them all and writes PNG, PDF and JSON to ``figures/out/``.
"""
