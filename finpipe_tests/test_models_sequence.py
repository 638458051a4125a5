"""The PyTorch networks: output shapes for every horizon, gradient flow to every parameter,
causality inside the window, and dropout that is live only for Monte Carlo sampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from finpipe.models.sequence import (
    CNNLSTMNet,
    RecurrentNet,
    TFTNet,
    TransformerNet,
    sinusoidal_encoding,
)

torch.set_num_threads(1)

B, L, F, H = 5, 12, 7, 3


def networks(n_outputs: int) -> dict[str, nn.Module]:
    return {
        "lstm": RecurrentNet(F, H, n_outputs, "lstm", hidden_size=8),
        "lstm_bi_attention": RecurrentNet(
            F, H, n_outputs, "lstm", hidden_size=8, num_layers=2, bidirectional=True, attention=True
        ),
        "gru_bi": RecurrentNet(F, H, n_outputs, "gru", hidden_size=8, bidirectional=True),
        "transformer_learned": TransformerNet(F, H, n_outputs, L, d_model=8, n_heads=2),
        "transformer_sinusoidal": TransformerNet(
            F, H, n_outputs, L, d_model=8, n_heads=2, positional="sinusoidal"
        ),
        "cnn_lstm": CNNLSTMNet(F, H, n_outputs, kernel_sizes=(2, 3, 5), conv_channels=4),
        "tft": TFTNet(F, H, n_outputs, hidden_size=8, n_heads=2),
    }


@pytest.mark.parametrize("n_outputs", [1, 3])
@pytest.mark.parametrize("name", list(networks(1)))
def test_output_shape_covers_every_horizon(name: str, n_outputs: int) -> None:
    net = networks(n_outputs)[name]
    assert net(torch.randn(B, L, F)).shape == (B, H, n_outputs)


@pytest.mark.parametrize("name", list(networks(1)))
def test_gradient_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    net = networks(3)[name]
    net(torch.randn(B, L, F)).pow(2).sum().backward()
    for param_name, param in net.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", list(networks(1)))
def test_window_is_read_only_up_to_its_last_step(name: str) -> None:
    """The output depends on the last step (today's features) and on earlier steps."""
    torch.manual_seed(0)
    net = networks(1)[name].eval()
    x = torch.randn(B, L, F)
    base = net(x)
    for step in (0, L - 1):
        changed = x.clone()
        changed[:, step] += 1.0
        assert not torch.allclose(net(changed), base), step


def test_transformer_attention_is_causal() -> None:
    """Hidden states at step t do not change when later steps change."""
    torch.manual_seed(0)
    net = TransformerNet(F, H, 1, L, d_model=8, n_heads=2).eval()
    x = torch.randn(B, L, F)
    changed = x.clone()
    changed[:, 6:] += 3.0

    def states(inputs: torch.Tensor) -> torch.Tensor:
        h = net.embed(inputs) + net.position
        for block in net.blocks:
            h = block(h)
        return h

    torch.testing.assert_close(states(x)[:, :6], states(changed)[:, :6])


@pytest.mark.parametrize("name", list(networks(1)))
def test_dropout_only_in_train_mode(name: str) -> None:
    torch.manual_seed(0)
    net = networks(1)[name]
    x = torch.randn(B, L, F)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.allclose(net(x), net(x))


def test_sinusoidal_encoding_values() -> None:
    enc = sinusoidal_encoding(4, 6)
    assert enc.shape == (4, 6)
    torch.testing.assert_close(enc[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    assert enc[1, 0] == pytest.approx(torch.sin(torch.tensor(1.0)).item())
