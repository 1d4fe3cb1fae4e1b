import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from streamlmu.metrics import macs_per_frame, mean_run_macs, run_macs
from streamlmu.models import KWT, KWTConfig, LMUFormer, LMUFormerConfig
from streamlmu.testing import check_stream_op, max_abs_diff


def build(window: int = 128, seed: int = 0, **overrides) -> KWT:
    torch.manual_seed(seed)
    return KWT(KWTConfig.preset("tiny", window=window, **overrides)).eval()


def frames(batch: int, time: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, time, 128, generator=torch.Generator().manual_seed(seed))


def test_tiny_preset_size():
    count = sum(p.numel() for p in build().parameters())
    print(f"KWT tiny: {count:,} parameters; paper (KWT-1 sizes): "
          f"{sum(p.numel() for p in KWT(KWTConfig.preset('paper')).parameters()):,}")
    assert count <= 100_000


@pytest.mark.parametrize("window", [16, 128])
def test_stream_contract_before_and_after_the_window_fills(window):
    errors = check_stream_op(build(window), frames(3, 40))
    print(f"window {window}: max errors {max(errors.values()):.2e}")


def test_each_frame_is_the_model_rerun_on_its_window():
    model, window = build(window=8), 8
    x = frames(2, 20)
    with torch.no_grad():
        y, _ = model(x)
        for t in (0, 3, 7, 8, 19):
            start = max(0, t - window + 1)
            rerun = model.classify(x[:, start:t + 1])
            assert max_abs_diff(y[:, t], rerun) <= 1e-5, f"frame {t}"


def test_streams_at_different_positions_share_a_batch():
    """After a per-stream reset, one stream restarts while the other goes on sliding."""
    model = build(window=8)
    x = frames(2, 30)
    with torch.no_grad():
        y_all, _ = model(x)
        _, state = model(x[:, :12])
        state = model.reset(state, torch.tensor([True, False]))
        y_rest, _ = model(x[:, 12:], state)
        y_fresh, _ = model(x[:1, 12:])
    assert max_abs_diff(y_rest[:1], y_fresh) <= 1e-5
    assert max_abs_diff(y_rest[1:], y_all[1:, 12:]) <= 1e-5


def test_trains_by_backpropagation():
    model = build().train()
    x, target = frames(4, 20), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(model.classify(x), target)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("bad, error, words", [
    (torch.randn(2, 5, 64), ValueError, "128"),
    (torch.randn(2, 128), ValueError, r"\(batch, time, features=128\)"),
    (torch.full((2, 5, 128), float("nan")), ValueError, "NaN"),
])
def test_bad_input_names_what_was_expected(bad, error, words):
    with pytest.raises(error, match=words):
        build()(bad)


def test_bad_state_names_what_was_expected():
    model = build()
    with pytest.raises(ValueError, match="batch 2"):
        model(frames(2, 3), model.init_state(3))
    with pytest.raises(TypeError, match="KWTState"):
        model(frames(2, 3), (torch.zeros(2, 128, 128),))


def test_run_macs_match_the_counted_matrix_products():
    model = build(window=32)
    cfg = model.config
    for n in (1, 17, 32, 50):
        counted = FlopCounterMode(display=False)
        with counted, torch.no_grad():
            model.encode(frames(1, min(n, cfg.window)))
        macs = run_macs(model, n)
        length = min(n, cfg.window)
        attention = sum(v for k, v in macs.items() if k.endswith("attention"))
        assert attention == cfg.depth * length * (length + 1) * cfg.dim
        dense = sum(macs.values()) - attention - macs["head"]
        assert counted.get_total_flops() == 2 * dense, n  # FLOPs of the linear layers = 2 x MACs


def test_rerunning_costs_far_more_per_frame_than_the_lmuformer():
    kwt, lmuformer = KWT(KWTConfig.preset("paper")), LMUFormer(LMUFormerConfig.preset("paper"))
    full = sum(macs_per_frame(kwt).values())
    mean = mean_run_macs(kwt, 98)  # the real frames of a 1 s clip
    per_frame = [sum(run_macs(kwt, t).values()) for t in range(1, 99)]
    assert mean == pytest.approx(sum(per_frame) / 98)
    assert full == sum(run_macs(kwt, 10_000).values())  # the window caps a run
    lmu = sum(macs_per_frame(lmuformer).values())
    print(f"MACs per frame: KWT re-run on a full 128-frame window {full / 1e6:.1f} M, mean over a 98-frame "
          f"clip {mean / 1e6:.1f} M; LMUFormer {lmu / 1e6:.2f} M (a full-window run costs {full / lmu:.0f}x that)")
    assert full > 10 * lmu
