"""The torch modules behind the sequence, text and scale ops (imported when a model is built)."""

from __future__ import annotations

import math

import torch
from torch import nn


class Scale(nn.Module):
    """``x * s`` with one learnable scalar ``s``: Petridish's switch for a grown branch and its
    candidates' alpha. ``l1 > 0`` adds ``l1 · |s|`` to the training loss (``penalty``); the
    learned value is reported with the trial (``trial_facts``)."""

    def __init__(self, init: float, l1: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))
        self.l1 = float(l1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def penalty(self) -> torch.Tensor:
        return self.l1 * self.scale.abs()

    def trial_facts(self) -> dict[str, float]:
        return {"scale": float(self.scale.detach())}


class StopGradient(nn.Module):
    """Forward identity, backward zero (``x.detach()``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()


class StopForward(nn.Module):
    """Forward zero, backward identity (``x - x.detach()``; Hu et al. 2019, §3.1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.detach()


class GlobalPool(nn.Module):
    """``(N, C, *positions) -> (N, C)``: the mean (``avg``) or max over all positions."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = torch.flatten(x, 2)
        return flat.mean(dim=2) if self.kind == "avg" else flat.amax(dim=2)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class Recurrent(nn.Module):
    """``nn.GRU`` / ``nn.LSTM`` on channels-first sequences: ``(N, C, L)`` to ``(N, H·D, L)``
    (every step) or ``(N, H·D)`` (the last layer's final state of each direction, side by side),
    D = 2 when bidirectional."""

    def __init__(
        self,
        kind: str,
        channels: int,
        units: int,
        layers: int,
        bidirectional: bool,
        return_sequences: bool,
    ) -> None:
        super().__init__()
        rnn = nn.GRU if kind == "gru" else nn.LSTM
        self.rnn = rnn(
            channels, units, num_layers=layers, batch_first=True, bidirectional=bidirectional
        )
        self.directions = 2 if bidirectional else 1
        self.return_sequences = return_sequences

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(x.transpose(1, 2))
        if self.return_sequences:
            return out.transpose(1, 2)
        h_n = state[0] if isinstance(state, tuple) else state  # LSTM's state is (h_n, c_n)
        # h_n is (layers·D, N, H), the last layer's directions last.
        return torch.cat(list(h_n[-self.directions :]), dim=1)


class TokenEmbedding(nn.Module):
    """Token ids ``(N, L)`` to vectors ``(N, dim, L)``; id 0 is padding (a zero vector that
    gets no gradient, ``nn.Embedding(padding_idx=0)``)."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens).transpose(1, 2)


class PositionalEncoding(nn.Module):
    """Adds a position code to ``(N, C, L)``: the fixed sinusoids of Vaswani et al. 2017 §3.5
    (``sinusoidal``) or a learned ``(C, L)`` table (``learned``, as BERT)."""

    def __init__(self, kind: str, channels: int, length: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "learned":
            self.table = nn.Parameter(torch.randn(channels, length) * 0.02)
            return
        position = torch.arange(length, dtype=torch.float32)
        # Channel pairs (2i, 2i+1) share frequency 1 / 10000^(2i / C).
        pair = torch.arange(channels, dtype=torch.float32).div(2, rounding_mode="floor")
        frequency = torch.exp(-math.log(10000.0) * 2 * pair / channels)
        angle = frequency[:, None] * position[None, :]
        even = (torch.arange(channels) % 2 == 0)[:, None]
        self.register_buffer("table", torch.where(even, angle.sin(), angle.cos()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class AttentionBlock(nn.Module):
    """A pre-norm Transformer encoder block on ``(N, C, L)``: a 1x1 projection to ``width``
    channels when C differs, then ``nn.TransformerEncoderLayer(norm_first=True)`` (multi-head
    self-attention with ``heads`` heads, a GELU feed-forward of ``ffn_ratio·width``, residuals;
    Vaswani et al. 2017, pre-norm as Xiong et al. 2020). Output ``(N, width, L)``."""

    def __init__(self, channels: int, width: int, heads: int, ffn_ratio: int) -> None:
        super().__init__()
        self.project = nn.Conv1d(channels, width, 1) if channels != width else nn.Identity()
        self.block = nn.TransformerEncoderLayer(
            width,
            heads,
            dim_feedforward=ffn_ratio * width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.project(x).transpose(1, 2)).transpose(1, 2)
