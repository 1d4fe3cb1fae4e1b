import pytest
import torch
from torch.nn import functional as F

from streamlmu.nn.conv import CausalConv1d, Delay
from streamlmu.nn.linear import FrameLinear
from streamlmu.testing import check_stream_op, max_abs_diff, run_chunked, run_step_loop


@pytest.mark.parametrize("lookahead", [0, 1, 2])
def test_causal_conv_is_a_delayed_padded_conv(lookahead):
    """Output frame t == Conv1d with `lookahead` frames of right context, centred on frame t - lookahead."""
    conv = CausalConv1d(5, 7, kernel_size=3, lookahead=lookahead)
    x = torch.randn(2, 30, 5)
    with torch.no_grad():
        y, _ = conv(x)
        left = 2 - lookahead
        ref = F.conv1d(F.pad(x.transpose(1, 2), (left, lookahead)), conv.weight, conv.bias).transpose(1, 2)
    assert conv.latency_frames == lookahead
    assert max_abs_diff(y[:, lookahead:], ref[:, :30 - lookahead]) <= 1e-5


def test_kernel_path_equals_torch_conv_and_is_row_exact():
    conv = CausalConv1d(16, 8, kernel_size=3)
    x = torch.randn(3, 50, 16)
    y_torch, _ = conv(x)
    with torch.no_grad():
        y_full, _ = conv(x)
        y_step, _ = run_step_loop(conv, x)
        y_chunks, _ = run_chunked(conv, x, [1, 7, 20, 3, 19])
    assert max_abs_diff(y_full, y_torch.detach()) <= 1e-5
    assert torch.equal(y_step, y_full) and torch.equal(y_chunks, y_full)


def test_frame_linear_is_row_exact_and_skips_zeros_exactly():
    lin = FrameLinear(64, 33)
    x = torch.randn(5, 9, 64)
    x[x < 0.3] = 0.0  # sparse, like spikes
    with torch.no_grad():
        full = lin(x)
        rows = torch.stack([lin(x[:, t:t + 1])[:, 0] for t in range(9)], dim=1)
    assert torch.equal(full, rows)
    assert max_abs_diff(full, F.linear(x, lin.weight, lin.bias).detach()) <= 1e-5
    with torch.no_grad(), pytest.raises(ValueError, match="expects 64 input features"):
        lin(torch.randn(2, 63))


def test_stream_contracts():
    with torch.no_grad():
        check_stream_op(CausalConv1d(4, 3, kernel_size=3, lookahead=1), torch.randn(2, 25, 4))
        check_stream_op(Delay(3, 2), torch.randn(2, 25, 3))


def test_bad_input():
    conv = CausalConv1d(4, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, time, features=4\)"):
        conv(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"state.buffer must have shape \(batch, frames, channels\)=\(2, 2, 4\)"):
        conv(torch.randn(2, 5, 4), conv.init_state(3))
    with pytest.raises(ValueError, match="need kernel_size >= 1 and 0 <= lookahead < kernel_size"):
        CausalConv1d(4, 3, kernel_size=3, lookahead=3)
