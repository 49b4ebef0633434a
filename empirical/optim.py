"""Optimizers and the learning-rate schedule of the official recipe (paper.md 3.1, App. D).

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


class LARS(torch.optim.Optimizer):
    """LARS with per-group ``lars_exclude`` (no weight decay and no trust-ratio scaling for that group)."""

    def __init__(
        self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.001
    ):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["lars_exclude"]:
                    g = g.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.norm(p), torch.norm(g)
                    one = torch.ones_like(p_norm)
                    q = torch.where(
                        p_norm > 0, torch.where(g_norm > 0, group["eta"] * p_norm / g_norm, one), one
                    )
                    g = g.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(g)
                p.add_(mu, alpha=-group["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Biases and norm parameters (ndim <= 1) get no weight decay and no LARS adaptation (official code)."""
    decay, plain = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (plain if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": plain, "weight_decay": 0.0, "lars_exclude": True},
    ]


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay)
    for g in groups:
        g.pop("lars_exclude")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
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
    for g in optimizer.param_groups:
        g["lr"] = lr
