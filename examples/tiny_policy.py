"""A tiny image + state -> action-chunk policy, small enough to train on 2 CPUs in seconds.

Shared by the examples: the model, its masked loss (padded chunk steps carry no gradient, as in
ACT / LeRobot), and one training step on a VLA batch.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyPolicy(nn.Module):
    def __init__(self, cameras: int, state_dim: int, action_dim: int, horizon: int, pooled: int = 8) -> None:
        super().__init__()
        self.horizon, self.action_dim, self.pooled = horizon, action_dim, pooled
        features = cameras * 3 * pooled * pooled + state_dim
        self.net = nn.Sequential(nn.Linear(features, 128), nn.ReLU(), nn.Linear(128, horizon * action_dim))

    def forward(self, images: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """images uint8 [B, K, 3, H, W], state [B, Ds] -> actions [B, horizon, Da]."""
        b, k = images.shape[:2]
        pixels = images.reshape(b * k, *images.shape[2:]).to(torch.float32) / 255.0
        pooled = nn.functional.adaptive_avg_pool2d(pixels, self.pooled).reshape(b, -1)
        return self.net(torch.cat([pooled, state], dim=1)).reshape(b, self.horizon, self.action_dim)


def masked_loss(predicted: torch.Tensor, actions: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
    keep = (~is_pad).unsqueeze(-1).to(predicted.dtype)
    return ((predicted - actions) ** 2 * keep).sum() / keep.sum().clamp(min=1) / actions.shape[-1]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    optimizer.zero_grad()
    loss = masked_loss(model(batch["images"], batch["state"]), batch["actions"], batch["action_is_pad"])
    loss.backward()
    optimizer.step()
    return float(loss)
