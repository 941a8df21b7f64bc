"""Optimiser and learning-rate schedule builders (AdamW / SGD; poly / cosine / constant + warm-up)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from medseg.engine.config import OptimConfig, ScheduleConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with (Nesterov) momentum as in nnU-Net."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(
    cfg: ScheduleConfig, total_steps: int, warmup_steps: int, base_lr: float
) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimiser step ``t`` (0-based)."""
    total_steps = max(total_steps, 1)
    min_factor = min(cfg.min_lr / base_lr, 1.0) if base_lr > 0 else 0.0

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        if cfg.name == "poly":
            return max((1.0 - progress) ** cfg.power, min_factor)
        if cfg.name == "cosine":
            return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR``; its state (the step count) is saved in checkpoints."""
    base_lr = optimizer.param_groups[0]["lr"]
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    factor = lr_factor(cfg, epochs * steps_per_epoch, warmup, base_lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
