import torch

from streamlmu.metrics import macs_per_frame, synops_per_frame
from streamlmu.models import LMUFormer, LMUFormerConfig, SpikingLMUFormer


def test_paper_lmuformer_costs_about_1_7_million_macs_per_frame():
    macs = macs_per_frame(LMUFormer(LMUFormerConfig.preset("paper")))
    groups = {
        "convs": sum(v for k, v in macs.items() if k.startswith("convs")),
        "lmu": sum(macs[f"blocks.0.{k}"] for k in ("encoder", "memory", "hidden")),
        "projection": macs["blocks.0.proj"],
        "ffn": macs["blocks.0.fc1"] + macs["blocks.0.fc2"],
        "head": macs["head"],
    }
    total = sum(macs.values())
    print(f"paper LMUFormer MACs per frame: {total:,} ({groups})")
    # the official model layer by layer: convs 885 k, LMU 197 k, projection 66 k, FFN 524 k, head 9 k
    assert groups["convs"] == 884_736 and groups["projection"] == 65_536 and groups["ffn"] == 524_288
    assert 196_000 <= groups["lmu"] <= 198_000 and groups["head"] == 8_960
    assert 1.65e6 <= total <= 1.75e6


def test_spiking_synops_follow_the_measured_firing_rates():
    torch.manual_seed(0)
    model = SpikingLMUFormer(LMUFormerConfig.preset("tiny", spiking=True)).eval()
    x = torch.randn(2, 30, 128)
    macs, ops = macs_per_frame(model), synops_per_frame(model, x)
    assert ops["convs.0"] == macs["convs.0"]            # real-valued input: every MAC happens
    spiking_layers = [k for k in macs if k not in ("convs.0",) and not k.endswith("memory")]
    assert all(0 <= ops[k] <= macs[k] for k in spiking_layers)
    assert sum(ops[k] for k in spiking_layers) < sum(macs[k] for k in spiking_layers)
    print(f"tiny spiking: {sum(ops.values()):,.0f} SynOps vs {sum(macs.values()):,} MACs per frame")
