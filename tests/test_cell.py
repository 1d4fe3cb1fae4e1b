import pytest
import torch

from streamlmu import LMUCell, LMUCellState
from streamlmu.testing import check_stream_op, max_abs_diff, run_step_loop


@pytest.mark.parametrize("switches", [
    {},
    {"hidden_to_memory": True},
    {"memory_to_memory": True, "input_to_hidden": False},
])
def test_stream_contract(switches):
    cell = LMUCell(input_size=3, hidden_size=5, memory_d=2, order=8, theta=12.0, **switches)
    print(check_stream_op(cell, torch.randn(3, 40, 3)))


def test_parallel_form_equals_step_loop_with_gradients():
    cell = LMUCell(4, 6, memory_d=1, order=32, theta=20.0, memory_activation="relu", hidden_activation="relu")
    assert cell.parallel
    x = torch.randn(2, 50, 4)
    h_fft, state_fft = cell(x)                     # autograd on: FFT path
    h_step, state_step = run_step_loop(cell, x)    # torch step
    assert max_abs_diff(h_fft, h_step) <= 1e-5
    assert max_abs_diff(state_fft, state_step) <= 1e-5
    h_fft.sum().backward()
    assert cell.input_encoder.weight.grad is not None and cell.hidden.weight.grad.abs().sum() > 0


def test_recurrent_variant_is_not_parallel_but_trains():
    cell = LMUCell(2, 3, order=4, theta=5.0, hidden_to_memory=True)
    assert not cell.parallel
    h, _ = cell(torch.randn(2, 7, 2))
    h.square().mean().backward()
    assert cell.hidden_encoder.weight.grad.abs().sum() > 0


def test_learns_to_recall_a_delayed_input():
    """Trained on band-limited noise, the cell recalls its input of 10 frames ago."""
    torch.manual_seed(0)
    cell = LMUCell(1, 16, order=12, theta=20.0, hidden_activation=None)
    opt = torch.optim.Adam(cell.parameters(), lr=1e-2)
    kernel = torch.exp(-0.5 * (torch.arange(-9, 10.0) / 3.0) ** 2).view(1, 1, -1)
    kernel = kernel / kernel.square().sum().sqrt()       # unit-variance low-pass noise
    for _ in range(150):
        x = torch.nn.functional.conv1d(torch.randn(16, 1, 78), kernel).transpose(1, 2)  # (16, 60, 1)
        h, _ = cell(x)
        target = torch.nn.functional.pad(x[:, :-10], (0, 0, 10, 0))
        loss = (h[:, 20:, :1] - target[:, 20:]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"recall loss {loss.item():.4f}")
    assert loss.item() < 0.1, f"recall loss {loss.item():.3f} (a silent model scores 1.0)"


def test_bad_input_and_state():
    cell = LMUCell(3, 4, order=4, theta=5.0)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, features=3\)"):
        cell.step(torch.randn(2, 4), cell.init_state(2))
    with pytest.raises(TypeError, match="state must be an LMUCellState"):
        cell.step(torch.randn(2, 3), cell.memory.init_state(2))
    with pytest.raises(ValueError, match=r"state.h must have shape \(batch, hidden_size\)=\(2, 4\)"):
        cell.step(torch.randn(2, 3), cell.init_state(5))
    wrong_order = LMUCellState(torch.zeros(2, 1, 9), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"state.m must have shape \(batch, channels, order\)=\(2, 1, 4\)"):
        cell(torch.randn(2, 6, 3), wrong_order)
    x = torch.randn(2, 3)
    x[0, 1] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        with torch.no_grad():
            cell.step(x, cell.init_state(2))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="activation must be one of"):
        LMUCell(1, 2, order=4, theta=5.0, hidden_activation="swish")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        LMUCell(1, 0, order=4, theta=5.0)
