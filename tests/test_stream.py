import pickle

import pytest
import torch

from streamlmu import LMUCell, LMUMemory, Map, Pipeline, load_state, run_chunks, save_state
from streamlmu.stream import StreamModule, StreamOperator
from streamlmu.testing import check_stream_op, max_abs_diff


class Delay(StreamModule):
    """Test operator: outputs the input of ``latency_frames`` frames ago."""

    def __init__(self, frames: int, features: int):
        super().__init__()
        self.latency_frames, self.features = frames, features

    def init_state(self, batch_size=1, dtype=torch.float32, device=None):
        return torch.zeros(batch_size, self.latency_frames, self.features, dtype=dtype, device=device)

    def step(self, x, state):
        buf = torch.cat([state, x.unsqueeze(1)], dim=1)
        return buf[:, 0], buf[:, 1:]

    def forward(self, x, state=None):
        state = self.init_state(x.shape[0], x.dtype) if state is None else state
        buf = torch.cat([state, x], dim=1)
        return buf[:, :x.shape[1]], buf[:, x.shape[1]:]


def make_pipeline():
    return LMUMemory(2, 8, 10.0, flatten=True) | torch.tanh | LMUCell(16, 4, order=6, theta=8.0) | Delay(3, 4)


def test_pipeline_is_a_stream_operator():
    pipe = make_pipeline()
    assert isinstance(pipe, StreamOperator)
    assert pipe.latency_frames == 3
    print(check_stream_op(pipe, torch.randn(3, 30, 2)))


def test_composition_builds_new_objects_and_keeps_operands():
    a, b = LMUMemory(1, 4, 5.0, flatten=True), Map(torch.relu)
    ab = a | b
    abc = ab | Delay(2, 4)
    assert isinstance(ab, Pipeline) and len(ab) == 2 and len(abc) == 3
    assert ab is not abc and len(ab) == 2, "a | b must not change its left operand"
    assert abc[0] is a and abc["relu"] is b and abc["Delay"] is abc[2]
    assert (torch.sigmoid | a)[0].name == "sigmoid"
    with pytest.raises(KeyError, match="no stage named 'nope'"):
        abc["nope"]
    with pytest.raises(TypeError, match="a pipeline stage must be a StreamModule or a callable"):
        Pipeline(a, 3)


def test_duplicate_stage_names_are_numbered():
    pipe = Delay(1, 2) | Delay(2, 2)
    assert pipe.names == ["Delay", "Delay_2"]


def test_pipeline_matches_manual_composition():
    pipe = make_pipeline()
    x = torch.randn(2, 12, 2)
    with torch.no_grad():
        y, _ = pipe(x)
        z, _ = pipe[0](x)
        z, _ = pipe[2](torch.tanh(z))
        z, _ = pipe[3](z)
    assert torch.equal(y, z)


def test_run_chunks_and_state_files(tmp_path):
    pipe = make_pipeline()
    x = torch.randn(2, 20, 2)
    with torch.no_grad():
        y_full, _ = pipe(x)
        outs = []
        for k, (y, state) in enumerate(run_chunks(pipe, x.split(7, dim=1))):
            outs.append(y)
            if k == 1:
                save_state(state, tmp_path / "pipe.pt")
        assert max_abs_diff(torch.cat(outs, 1), y_full) <= 1e-5
        y_tail, _ = pipe(x[:, 14:], load_state(tmp_path / "pipe.pt"))
    assert torch.equal(y_tail, outs[-1])


def test_pipeline_rejects_foreign_state():
    pipe = make_pipeline()
    with pytest.raises(TypeError, match="state must be the tuple of 4 stage states"):
        pipe.step(torch.randn(1, 2), pipe[0].init_state(1))
    with pytest.raises(ValueError, match="a Pipeline needs at least one stage"):
        Pipeline()


def test_map_rejects_non_callables():
    with pytest.raises(TypeError, match="fn must be callable"):
        Map(42)


def test_pipeline_pickles():
    pipe = make_pipeline()
    clone = pickle.loads(pickle.dumps(pipe))
    x = torch.randn(1, 5, 2)
    with torch.no_grad():
        assert torch.equal(clone(x)[0], pipe(x)[0])
