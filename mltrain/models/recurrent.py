"""Recurrent networks (Elman RNN, LSTM, GRU) over sequences and image rows."""

from __future__ import annotations

import torch
from torch import nn

from typing import Literal

from ..registry import ARCHITECTURES, IMAGE, SEQUENCE
from ..schema import Fraction, ModelSection, PositiveInt
from .layers import as_steps, steps_and_features


class RecurrentConfig(ModelSection):
    hidden_size: PositiveInt = 128
    """width of the recurrent state, per direction"""
    layers: PositiveInt = 2
    """stacked recurrent layers"""
    bidirectional: bool = False
    """also read each sequence backwards"""
    dropout: Fraction = 0.0
    """between stacked layers and on the readout, while training"""
    readout: Literal["last", "mean"] = "last"
    """final state, or mean of the outputs over steps"""


class Recurrent(nn.Module):
    """A stacked `cell` (nn.RNN, nn.LSTM or nn.GRU, batch-first) over the steps of each
    sample, then dropout and a Linear on its readout.

    Samples are read as steps by `layers.steps_and_features`: (L,) is L steps of 1 feature,
    (L, F) is L steps of F features, an image (C, H, W) is H rows of C*W features.
    Readout `last` is the last layer's output at the final step, and with `bidirectional` the
    backward direction's output at step 0 (where it has read the whole sequence) concatenated to
    it; `mean` averages the outputs over the steps. Dropout acts between stacked layers and on
    the readout. The gates use the cells' own fixed nonlinearities, so no `activation` applies.

    Initialisation: PyTorch's default for the cells (every weight and bias uniform in
    +-1/sqrt(hidden_size)) and for nn.Linear.
    """

    cell: type[nn.RNNBase]

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, hidden_size: int, layers: int,
                 bidirectional: bool, dropout: float, readout: str):
        super().__init__()
        _, features = steps_and_features(input_shape)
        # PyTorch's inter-layer dropout needs a second layer; below it, only the readout drops.
        self.rnn = self.cell(features, hidden_size, num_layers=layers, batch_first=True,
                             bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0)
        self.hidden_size, self.readout = hidden_size, readout
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size * (2 if bidirectional else 1), num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(as_steps(x))  # (B, T, directions * hidden_size)
        if self.readout == "mean":
            features = outputs.mean(dim=1)
        else:
            forward_final = outputs[:, -1, :self.hidden_size]
            backward_final = outputs[:, 0, self.hidden_size:]  # (B, 0) unless bidirectional
            features = torch.cat([forward_final, backward_final], dim=-1)
        return self.output(self.dropout(features))


@ARCHITECTURES.register("rnn", "Elman RNN (tanh) over sequence steps or image rows", RecurrentConfig, tags={SEQUENCE, IMAGE})
class RNN(Recurrent):
    """Elman RNN with tanh; see Recurrent (initialisation included)."""

    cell = nn.RNN


@ARCHITECTURES.register("lstm", "LSTM over sequence steps or image rows", RecurrentConfig, tags={SEQUENCE, IMAGE})
class LSTM(Recurrent):
    """Long short-term memory; see Recurrent (initialisation included)."""

    cell = nn.LSTM


@ARCHITECTURES.register("gru", "GRU over sequence steps or image rows", RecurrentConfig, tags={SEQUENCE, IMAGE})
class GRU(Recurrent):
    """Gated recurrent unit; see Recurrent (initialisation included)."""

    cell = nn.GRU
