"""View-wise batch norm: both views through the network in one call, each view's batch normalized alone.

The official code runs the backbone once per view, so every BatchNorm sees one view's batch. Stacking the
views, x = [x1; x2] (2B rows), and running the network once halves the kernel launches of everything but
BatchNorm; a view-wise BatchNorm keeps the official statistics: in training mode it normalizes rows [0, B)
and [B, 2B) separately, by the module's own forward (plain, CPU-synchronized or ``nn.SyncBatchNorm``), view 1
first, so the running statistics receive the same two updates in the same order as two separate calls.
Eval mode (running statistics, row-wise) is unchanged.

The module's class is swapped for a subclass (as ``torch.nn.utils.parametrize`` does): parameters, buffers
and state-dict keys stay the same, so checkpoints are interchangeable with the two-call model.
"""

from __future__ import annotations

import torch
import torch.nn as nn

_CLASSES: dict[type, type] = {}


def _viewwise_class(cls: type) -> type:
    if cls not in _CLASSES:

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training or self.views == 1:
                return cls.forward(self, x)
            return torch.cat([cls.forward(self, c) for c in x.chunk(self.views)])

        _CLASSES[cls] = type(f"Viewwise{cls.__name__}", (cls,), {"forward": forward, "views": 1})
    return _CLASSES[cls]


def make_viewwise(module: nn.Module, views: int = 2) -> nn.Module:
    """Every BatchNorm in ``module`` (in place) normalizes each of ``views`` equal row blocks on its own in
    training mode. Apply after any SyncBatchNorm conversion. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if type(m) not in _CLASSES.values():
                m.__class__ = _viewwise_class(type(m))
            m.views = views
    return module


def stack_views(model: nn.Module) -> nn.Module:
    """``model`` (an ``empirical.models.SSLModel``, in place) runs both views through the backbone and the
    projector in one call, with view-wise BatchNorm: the official per-view statistics. Returns ``model``."""
    make_viewwise(model, 2)
    model.one_call = True
    return model
