import pytest
import torch
from torch.nn import functional as F

from streamlmu.models import LMUFormer, LMUFormerConfig, SpikingLMUFormer
from streamlmu.nn.inference import batched_torch, uses_kernels
from streamlmu.nn.lif import LIF
from streamlmu.testing import (check_stream_op, max_abs_diff, random_chunk_sizes, randomize_batchnorm, run_chunked,
                               run_step_loop)

OFFICIAL_PARAMETERS = {False: 1_621_796, True: 1_689_894}  # lmu_rnn_conv1d, slmu_rnn_ms_conv1d


def build(preset: str, spiking: bool, seed: int = 0, **overrides):
    """An eval-mode model with non-trivial BatchNorm statistics (gains that make neurons fire)."""
    torch.manual_seed(seed)
    cfg = LMUFormerConfig.preset(preset, spiking=spiking, **overrides)
    return randomize_batchnorm((SpikingLMUFormer if spiking else LMUFormer)(cfg).eval(), spiking)


class SpikeRecorder:
    """Collects the output spikes of every LIF layer, per call."""

    def __init__(self, model):
        self.calls: dict[int, list[torch.Tensor]] = {}
        self.hooks = [m.register_forward_hook(self._hook(k)) for k, m in enumerate(model.modules())
                      if isinstance(m, LIF)]

    def _hook(self, key):
        return lambda module, inputs, output: self.calls.setdefault(key, []).append(output[0].detach())

    def take(self) -> dict[int, torch.Tensor]:
        trains = {k: torch.cat(v, dim=1) for k, v in self.calls.items()}
        self.calls = {}
        return trains


@pytest.mark.parametrize("spiking", [False, True])
def test_paper_parameter_counts_match_the_official_code(spiking):
    model = build("paper", spiking)
    count = sum(p.numel() for p in model.parameters())
    official = OFFICIAL_PARAMETERS[spiking]
    print(f"{type(model).__name__} paper: {count:,} parameters (official {official:,}, "
          f"{100 * (count - official) / official:+.2f} %)")
    assert abs(count - official) <= 0.03 * official
    tiny = sum(p.numel() for p in build("tiny", spiking).parameters())
    print(f"{type(model).__name__} tiny: {tiny:,} parameters")
    assert tiny <= 100_000


@pytest.mark.parametrize("preset", ["tiny", "paper"])
@pytest.mark.parametrize("spiking", [False, True])
def test_step_forward_chunks_and_parallel_training_path_agree(preset, spiking):
    model = build(preset, spiking)
    x = torch.randn(2, 70, 128, generator=torch.Generator().manual_seed(1))
    rec = SpikeRecorder(model)
    with torch.no_grad():
        y_full, _ = model(x)
        s_full = rec.take()
        y_step, _ = run_step_loop(model, x)
        s_step = rec.take()
        y_chunks, _ = run_chunked(model, x, random_chunk_sizes(70, torch.Generator().manual_seed(2), max_chunk=23))
        s_chunks = rec.take()
    y_parallel, _ = model(x)  # autograd on: torch layers, LMU memory by FFT
    s_parallel = rec.take()
    with torch.no_grad(), batched_torch():  # the same torch path without autograd (teacher, validation)
        y_batched, _ = model(x)
    rec.take()
    assert torch.equal(y_batched, y_parallel.detach())
    # The training path rounds differently (BLAS sums, BatchNorm not folded), so a
    # membrane within rounding of the threshold may spike on one path only; from
    # that frame on the stream's logits legitimately differ. Compare logits up to
    # each stream's first mismatched spike, and bound the mismatches.
    agree_until = torch.full((x.shape[0],), x.shape[1])
    if spiking:
        for k in s_step:
            differs = (s_parallel[k] != s_step[k]).any(dim=-1)           # (B, T)
            first = torch.where(differs.any(1), differs.int().argmax(1), x.shape[1])
            agree_until = torch.minimum(agree_until, first)
    fft_error = max(max_abs_diff(y_parallel.detach()[b, :t], y_full[b, :t]) if t else 0.0
                    for b, t in enumerate(agree_until.tolist()))
    errors = {"step": max_abs_diff(y_step, y_full), "chunks": max_abs_diff(y_chunks, y_full), "fft": fft_error}
    print(f"{preset} {type(model).__name__}: max abs logit errors {errors}; "
          f"FFT path compared over {agree_until.tolist()} frames")
    assert errors["step"] <= 1e-5 and errors["chunks"] <= 1e-5 and errors["fft"] <= 1e-4
    if spiking:
        total = sum(s.numel() for s in s_step.values())
        rate = sum(s.sum().item() for s in s_step.values()) / total
        mismatched = sum((s_parallel[k] != s_step[k]).sum().item() for k in s_step)
        print(f"  spike rate {rate:.3f}; FFT path mismatches {mismatched} of {total}")
        assert 0.01 < rate < 0.9
        assert all(torch.equal(s_step[k], s_full[k]) and torch.equal(s_step[k], s_chunks[k]) for k in s_step)
        assert mismatched <= 1e-4 * total
        assert agree_until.sum() >= 0.5 * agree_until.numel() * x.shape[1]


@pytest.mark.parametrize("spiking", [False, True])
def test_bfloat16_autocast_training_pass(spiking):
    """Under autocast the products run in bfloat16 but the logits, state and gradients stay float32."""
    model = build("tiny", spiking, dim=16, order=16).train()
    x = torch.randn(4, 40, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state = model(x)
    assert logits.dtype == torch.float32
    assert all(t.dtype == torch.float32 for t in (state.feature_sum, *(m.m for m in state.memories),
                                                     *(n.v for n in state.neurons)))
    logits[:, -1].logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) == len(list(model.parameters()))
    assert all(g.dtype == torch.float32 and bool(torch.isfinite(g).all()) for g in grads)
    error = float((logits.detach() - full).abs().max() / full.abs().max())
    print(f"bfloat16 logits vs float32: largest difference {error:.4f} of the largest logit")
    if not spiking:  # a spike flipped by rounding carries on, so only the non-spiking model stays close
        assert error < 0.05


def test_batched_torch_is_a_scoped_switch():
    x = torch.zeros(1, 2, 3)
    with torch.no_grad():
        assert uses_kernels(x)
        with batched_torch():
            with batched_torch():
                assert not uses_kernels(x)
            assert not uses_kernels(x)
        assert uses_kernels(x)
        with pytest.raises(RuntimeError), batched_torch():
            raise RuntimeError
        assert uses_kernels(x)


def official_noncausal_logits(model: LMUFormer, x: torch.Tensor) -> torch.Tensor:
    """The official lmu_rnn_conv1d forward (symmetric padding), written out from its layers."""
    h = x
    for conv, bn in zip(model.convs[:-1], model.conv_bns):
        h = bn(F.relu(F.conv1d(h.transpose(1, 2), conv.weight, padding=1).transpose(1, 2)))
    h = h + F.conv1d(h.transpose(1, 2), model.convs[-1].weight, padding=1).transpose(1, 2)
    for block in model.blocks:
        m, _ = block.memory(F.relu(block.encoder(h)))
        hidden = F.relu(block.hidden(torch.cat([m, h], dim=-1)))
        h = h + block.proj_bn(block.proj(hidden))
        h = h + F.relu(block.fc2_bn(block.fc2(F.gelu(block.fc1_bn(block.fc1(h))))))
    return model.head(h.cumsum(1) / torch.arange(1, h.shape[1] + 1)[:, None])


def test_lookahead_streams_the_official_noncausal_model_with_its_latency():
    model = build("tiny", spiking=False, lookahead=1)
    assert model.latency_frames == 5
    x = torch.randn(2, 40, 128)
    with torch.no_grad():
        streamed, _ = run_step_loop(model, x)
        official = official_noncausal_logits(model, x)
    # frame t of the stream is the official output for frame t - 5 (the last 5 need the future)
    err = max_abs_diff(streamed[:, 5:], official[:, :35])
    print(f"lookahead stream vs official non-causal forward: {err:.2e}")
    assert err <= 1e-5


@pytest.mark.parametrize("spiking", [False, True])
def test_stream_contract(spiking):
    model = build("tiny", spiking, lookahead=1)
    with torch.no_grad():
        check_stream_op(model, torch.randn(3, 24, 128))


def test_bad_input_names_the_expected_shape():
    model = build("tiny", spiking=False)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, time, features=128\)"):
        model(torch.randn(2, 10, 40))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, features=128\)"):
        model.step(torch.randn(2, 10, 128), model.init_state(2))
    _, state = model(torch.randn(2, 5, 128))
    bad = torch.randn(2, 3, 128)
    bad[1, 2, 7] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        model(bad, state)
    with pytest.raises(ValueError, match=r"expected feature_sum \(batch, dim\)=\(2, 48\)"):
        model(torch.randn(2, 3, 128), model.init_state(3))
    spiking = build("tiny", spiking=True)
    with pytest.raises(ValueError, match="state does not belong to this model"):
        model(torch.randn(2, 3, 128), spiking.init_state(2))
    with pytest.raises(TypeError, match="state must be an LMUFormerState"):
        model(torch.randn(2, 3, 128), (torch.zeros(2, 48),))
    with pytest.raises(ValueError, match="preset must be one of"):
        LMUFormerConfig.preset("huge")
