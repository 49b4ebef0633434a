"""Real-network experiments of Jing et al. (ICLR 2022): SimCLR / DirectCLR ResNets with every projector of
Tables 1-2, trained while the embedding spectrum is watched.

``from empirical import info_nce, nt_xent``; training: ``python -m empirical.train --help``.
"""

from empirical.losses import info_nce, nt_xent

__all__ = ["info_nce", "nt_xent"]
