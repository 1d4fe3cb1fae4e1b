import pytest
import snntorch as snn
import torch
from snntorch import surrogate

from streamlmu.nn.lif import LIF, LIFState, lif_step
from streamlmu.testing import check_stream_op


def drive(batch=3, time=150, features=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, time, features, generator=gen) * 1.5 + 0.8


def test_lif_matches_snntorch_leaky_configured_alike():
    """spikingjelly-style LIF (tau 2, hard reset to 0) == snntorch Leaky(beta=1-1/tau) fed x/tau."""
    x = drive()
    with torch.no_grad():
        z, _ = LIF(32)(x)
        leaky = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero", reset_delay=False)
        mem, ref = leaky.init_leaky(), []
        for t in range(x.shape[1]):
            spk, mem = leaky(x[:, t] / 2.0, mem)
            ref.append(spk)
    ref = torch.stack(ref, dim=1)
    print(f"spike rate {z.mean():.3f}, mismatches {(z != ref).sum().item()} of {z.numel()}")
    assert 0.05 < z.mean() < 0.6
    assert torch.equal(z, ref)


def test_numba_kernel_equals_torch_step_bit_for_bit():
    x = drive(features=20)
    lif = LIF(20, threshold=0.5)
    with torch.no_grad():
        z_kernel, s_kernel = lif(x)
    z_torch, s_torch = lif(x.clone().requires_grad_())
    assert torch.equal(z_kernel, z_torch.detach()) and torch.equal(s_kernel.v, s_torch.v.detach())


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
def test_training_kernel_equals_autograd_through_torch_steps(dtype, tol):
    """The one-node Numba scan gives the spikes and gradients of a loop of lif_step under autograd."""
    lif = LIF(24, threshold=0.5)
    x = drive(features=24, time=60).to(dtype).requires_grad_()
    v0 = (torch.rand(3, 24, dtype=dtype) * 0.4).requires_grad_()
    z, state = lif(x, LIFState(v0))
    gen = torch.Generator().manual_seed(1)
    wz, wv = torch.randn(z.shape, generator=gen, dtype=dtype), torch.randn(v0.shape, generator=gen, dtype=dtype)
    ((z * wz).sum() + (state.v * wv).sum()).backward()
    grads = x.grad.clone(), v0.grad.clone()
    x.grad = v0.grad = None
    v, zs = v0, []
    for t in range(x.shape[1]):
        zt, v = lif_step(x[:, t], v, lif.params, lif.surrogate)
        zs.append(zt)
    ref = torch.stack(zs, dim=1)
    ((ref * wz).sum() + (v * wv).sum()).backward()
    assert torch.equal(z, ref) and torch.equal(state.v, v)
    assert 0.05 < float(z.detach().mean()) < 0.6
    scale = float(x.grad.abs().max())
    assert (grads[0] - x.grad).abs().max() <= tol * scale and (grads[1] - v0.grad).abs().max() <= tol * scale


def test_bfloat16_input_integrates_in_float32():
    """Autocast hands LIF bfloat16; the membrane runs in float32, as on the widened input."""
    lif = LIF(24, threshold=0.5)
    x = drive(features=24, time=60).to(torch.bfloat16).requires_grad_()
    z, state = lif(x)
    with torch.no_grad():
        ref, ref_state = lif(x.float())
    assert z.dtype == state.v.dtype == torch.float32
    assert torch.equal(z.detach(), ref) and torch.equal(state.v.detach(), ref_state.v)
    z.sum().backward()
    assert x.grad.dtype == torch.bfloat16 and float(x.grad.abs().sum()) > 0


def test_surrogate_gradient_is_the_sigmoid_derivative():
    x = torch.tensor([[0.2, 1.0, 1.7, 3.0]], requires_grad=True)
    z, _ = lif_step(x, torch.zeros(1, 4))
    z.sum().backward()
    s = torch.sigmoid(4.0 * (x.detach() / 2 - 1.0))
    assert torch.allclose(x.grad, 4.0 * s * (1 - s) / 2)
    assert z.tolist() == [[0.0, 0.0, 0.0, 1.0]]


def test_snntorch_surrogates_are_accepted():
    lif = LIF(8, surrogate=surrogate.sigmoid(slope=4))
    x = drive(features=8).requires_grad_()
    z, _ = lif(x)
    z.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_stream_contract():
    with torch.no_grad():
        check_stream_op(LIF(6), drive(features=6, time=40))


def test_bad_input_names_what_was_expected():
    lif = LIF(4)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, time, features=4\)"):
        lif(torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=r"state.v must have shape \(batch, features\)=\(2, 4\)"):
        lif(torch.zeros(2, 3, 4), lif.init_state(3))
    with pytest.raises(TypeError, match="state must be an LIFState"):
        lif.step(torch.zeros(2, 4), (torch.zeros(2, 4),))
    bad = torch.zeros(2, 3, 4)
    bad[0, 1, 2] = float("nan")
    state = LIFState(torch.ones(2, 4) * 0.3)
    with torch.no_grad(), pytest.raises(ValueError, match="x contains NaN or Inf"):
        lif(bad, state)
    assert torch.equal(state.v, torch.ones(2, 4) * 0.3)


def test_training_scan_names_a_bad_input_or_state():
    """The training kernel flags NaN in x or in the incoming membrane, whichever stream holds it."""
    lif = LIF(4)
    bad = torch.zeros(3, 5, 4, requires_grad=True)
    with torch.no_grad():
        bad[2, 4, 1] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        lif(bad, LIFState(torch.zeros(3, 4)))
    v = torch.zeros(3, 4)
    v[1, 2] = float("inf")
    with pytest.raises(ValueError, match="state.v contains NaN or Inf"):
        lif(torch.zeros(3, 5, 4, requires_grad=True), LIFState(v))
