"""Optimizers and the learning-rate schedule of the official recipe (paper App. D; official DirectCLR code).

LARS (You et al. 2017) as in the official code, per parameter p with gradient g::

    g <- g + wd * p                                   (skipped for biases and norm parameters)
    q  = eta * ||p|| / ||g||   (q = 1 if either norm is 0; skipped for biases and norm parameters)
    mu <- momentum * mu + q * g
    p  <- p - lr * mu

Schedule (per step, official code): linear warm-up from 0 over ``warmup`` steps, then cosine from the base
rate down to 0.001 x base at the last step.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

OPTIMIZERS = ("lars", "sgd", "adamw")


def trust_ratio(p_norm: torch.Tensor, g_norm: torch.Tensor, eta: float) -> torch.Tensor:
    """LARS's q = eta ||p|| / ||g|| (elementwise over stacked norms), 1 where either norm is 0; on the device."""
    one = torch.ones_like(p_norm)
    return torch.where((p_norm > 0) & (g_norm > 0), eta * p_norm / torch.where(g_norm > 0, g_norm, one), one)


class LARS(torch.optim.Optimizer):
    """LARS with per-group ``lars_exclude`` (no weight decay and no trust-ratio scaling for that group).

    ``foreach=True`` updates all parameters of a group, device and dtype with a few ``torch._foreach_*``
    kernels and keeps the trust ratios on the device (no host sync); ``foreach=False`` is the per-parameter loop
    of the official code, kept as the reference. ``None`` (default), as torch.optim: vectorized on CUDA, where
    the loop is bound by kernel launches, and the loop on the CPU, where it is faster (each tensor stays in
    cache through all its operations; see bench/README.md). ``lr`` may be a float or a 0-d tensor
    on the parameters' device (so that a captured step can read a changing rate).
    """

    def __init__(
        self,
        params,
        lr: float | torch.Tensor,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
        foreach: bool | None = None,
    ):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars_exclude=False)
        super().__init__(params, defaults)
        self.foreach = foreach

    def _mu(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "mu" not in state:
            state["mu"] = torch.zeros_like(p)
        return state["mu"]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            buckets: dict = {}
            for p in group["params"]:
                if p.grad is not None:
                    buckets.setdefault((p.device, p.dtype), []).append(p)
            for (device, _), bucket in buckets.items():
                if self.foreach or (self.foreach is None and device.type == "cuda"):
                    self._step_foreach(group, bucket)
                else:
                    for p in bucket:
                        self._step_one(group, p)
        return loss

    def _step_one(self, group: dict, p: torch.Tensor) -> None:
        """The reference: one parameter at a time, as the official code."""
        g = p.grad
        if not group["lars_exclude"]:
            g = g.add(p, alpha=group["weight_decay"])
            g = g.mul(trust_ratio(torch.norm(p), torch.norm(g), group["eta"]))
        mu = self._mu(p)
        mu.mul_(group["momentum"]).add_(g)
        if torch.is_tensor(group["lr"]):
            p.sub_(mu * group["lr"])
        else:
            p.add_(mu, alpha=-group["lr"])

    def _step_foreach(self, group: dict, params: list[torch.Tensor]) -> None:
        grads = [p.grad for p in params]
        mus = [self._mu(p) for p in params]
        if not group["lars_exclude"]:
            decayed = group["weight_decay"] != 0
            if decayed:  # new tensors: p.grad itself is never modified
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            p_norm = torch.stack(torch._foreach_norm(params))
            g_norm = torch.stack(torch._foreach_norm(grads))
            q = trust_ratio(p_norm, g_norm, group["eta"])
            if decayed:
                torch._foreach_mul_(grads, list(q.unbind(0)))
            else:
                grads = torch._foreach_mul(grads, list(q.unbind(0)))
        torch._foreach_mul_(mus, group["momentum"])
        torch._foreach_add_(mus, grads)
        lr = group["lr"]
        if torch.is_tensor(lr):
            torch._foreach_sub_(params, torch._foreach_mul(mus, lr))
        else:
            torch._foreach_add_(params, mus, alpha=-lr)


NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


def excluded_params(model: nn.Module) -> set[int]:
    """ids of the parameters excluded from weight decay and trust-ratio scaling: biases and norm parameters.

    Chosen by role, not by shape: every parameter of a normalization module (BatchNorm, SyncBatchNorm, GroupNorm,
    LayerNorm, ...) and every parameter named ``bias``. A 1-D weight that is not a norm parameter (the
    diagonal projector's) stays in the trust-ratio group with weight decay.
    """
    out: set[int] = set()
    for mod in model.modules():
        if isinstance(mod, NORM_TYPES):
            out.update(id(p) for p in mod.parameters())
    for name, p in model.named_parameters():
        parts = name.split(".")
        if parts[-1] == "bias" or (len(parts) >= 3 and parts[-3:-1] == ["parametrizations", "bias"]):
            out.add(id(p))
    return out


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """[trust-ratio group with weight decay, excluded group (biases and norm parameters, no decay)]."""
    skip = excluded_params(model)
    decay, plain = [], []
    for p in model.parameters():
        if p.requires_grad:
            (plain if id(p) in skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": plain, "weight_decay": 0.0, "lars_exclude": True},
    ]


def build_optimizer(
    name: str,
    model: nn.Module,
    lr: float,
    weight_decay: float,
    foreach: bool | None = None,
    momentum: float = 0.9,
    eta: float = 0.001,
) -> torch.optim.Optimizer:
    """``foreach`` only concerns LARS (True: vectorized, False: the per-parameter loop, None: by device);
    ``momentum`` sgd and LARS, ``eta`` (trust coefficient) LARS only."""
    groups = param_groups(model, weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, foreach=foreach)
    for g in groups:
        g.pop("lars_exclude")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r} (choose {', '.join(OPTIMIZERS)})")


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, end_factor: float = 0.001) -> float:
    """lr = base * step / warmup during warm-up, then base*q + end*(1-q), q = (1 + cos(pi * t / T)) / 2."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    q = 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))
    end_lr = base_lr * end_factor
    return base_lr * q + end_lr * (1 - q)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's rate; a 0-d tensor rate is filled in place (no new tensor, no host sync)."""
    for g in optimizer.param_groups:
        if torch.is_tensor(g["lr"]):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr
