"""Real-network experiments of Jing et al. (ICLR 2022): SimCLR / DirectCLR ResNets with every projector of
Tables 1-2, trained while the embedding spectrum is watched.

``from empirical import info_nce, nt_xent``; training: ``python -m empirical.train --help``. The losses load on
first use, so that torch-free parts (``empirical.bridge_plots``, used by ``make figures``) import without torch.
"""

__all__ = ["info_nce", "nt_xent"]


def __getattr__(name: str):
    if name in __all__:
        from empirical import losses

        return getattr(losses, name)
    raise AttributeError(f"module 'empirical' has no attribute {name!r}")
