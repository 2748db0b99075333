"""A small 2-D CNN, written as anyone would: PyTorch's default init, a plain nn.Dropout."""

import torch
from torch import nn


class MeanPool(nn.Module):
    """Global mean over height and width: (B, C, H, W) -> (B, C)."""

    def forward(self, x):
        return x.mean((2, 3))


class SmallCNN(nn.Module):
    def __init__(self, in_channels, num_classes, channels=16, dropout=0.2):
        super().__init__()
        layers, c_in = [], in_channels
        for c_out in (channels, 2 * channels, 2 * channels):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.pool = MeanPool()  # the penultimate representation (features: pool in the config)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.body(x))))


def build(input_shape, num_classes, channels=16, dropout=0.2):
    """What the pipeline calls: (input_shape, num_classes, **params) -> nn.Module (logits)."""
    return SmallCNN(input_shape[0], num_classes, channels, dropout)
