"""A stream operator's ``step`` as ONNX, with its state as explicit inputs and outputs: ``to_onnx``,
``OnnxStream``.

The exported graph is one step: ``(x, state_in.*) -> (y.*, state_out.*)``, every tensor with a dynamic batch
axis first. The state's leaves are named by their path in the operator's state (``state_in.m``,
``state_in.layers.0.v``, ...), in the order of :func:`streamlmu.stream.tree_paths`. The ONNX metadata holds
what a runtime needs besides: the state layout and its initial values, the frame layout, and the model's
labels and front-end settings where it has them.

Export traces the operator's torch path on purpose (:func:`streamlmu.stream.exporting`: no Numba
kernel, no check of values while tracing), then runs the file in onnxruntime against ``step`` on random
frames and refuses to write a file that disagrees. Operators that change the frame rate are refused (one fixed
graph cannot return 0 or more frames); ``HopFbank`` is the filterbank in a form that exports. ``WithSpikes`` adds a
spiking model's spike trains to its outputs.
"""
from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from torch import Tensor, nn

from streamlmu.audio.features import HopFbank, StreamingFbank
from streamlmu.nn.lif import LIF
from streamlmu.stream import Frame, Map, Pipeline, State, StreamModule, forward_by_steps, tree_map, tree_paths

META_PREFIX = "streamlmu."


def _name(prefix: str, path: tuple) -> str:
    return ".".join([prefix, *map(str, path)]) if path else prefix


def _unflatten(template: State, leaves: list[Tensor]) -> State:
    """``template``'s tree with ``leaves`` in the order of :func:`tree_paths`."""
    it = iter(leaves)
    return tree_map(lambda _: next(it), template)


class _Step(nn.Module):
    """``op.step`` over flat tensors: ``(x, *state leaves) -> (*output leaves, *state leaves)``."""

    def __init__(self, op: nn.Module, state: State):
        super().__init__()
        self.op, self.template = op, state

    def forward(self, x: Tensor, *leaves: Tensor) -> tuple[Tensor, ...]:
        y, state = self.op.step(x, _unflatten(self.template, list(leaves)))
        return tuple(t for _, t in tree_paths(y)) + tuple(t for _, t in tree_paths(state))


class FramePooled(StreamModule):
    """A keyword model (LMUFormer or Spiking LMUFormer) whose logits are the head on each frame alone
    (``forward(..., pooling="frame")``): what ``StreamingKWS`` averages over its window. ``(B, in) -> (B, classes)``
    per step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.input_frame, self.output_frame = model.input_frame, model.output_frame
        self.labels, self.features = getattr(model, "labels", None), getattr(model, "features", None)
        self.thresholds = getattr(model, "thresholds", None)

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> State:
        return self.model.init_state(batch_size, dtype, device)

    def forward(self, x: Tensor, state: State = None) -> tuple[Tensor, State]:
        return self.model(x, state, pooling="frame")

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        y, state = self.forward(x[:, None], state)
        return y[:, 0], state


def _frame_pooled(op: nn.Module) -> StreamModule:
    """``op`` (a keyword model, or a pipeline ending in one) with :class:`FramePooled` logits."""
    last = op.stages[-1] if isinstance(op, Pipeline) else op
    if not hasattr(last, "_features"):
        raise ValueError(f"pooling='frame' needs an LMUFormer or Spiking LMUFormer, or a pipeline ending in one "
                         f"(got {type(last).__name__})")
    return Pipeline(*op.stages[:-1], FramePooled(last)) if isinstance(op, Pipeline) else FramePooled(op)


class WithSpikes(StreamModule):
    """``op`` with the spikes its LIF neurons fired beside its output: ``step(x, state) -> ({"output": y,
    "spikes": {layer: (B, features)}}, state)``, spikes 0.0 / 1.0 per frame, a layer named by its path in ``op``
    (``conv_lifs.0``, ``block_lifs.0.1``, ...). The same state as ``op``."""

    def __init__(self, op: nn.Module):
        super().__init__()
        self.op = op
        self.layers = [(name or type(m).__name__, m) for name, m in op.named_modules() if isinstance(m, LIF)]
        if not self.layers:
            raise ValueError(f"{type(op).__name__} has no LIF neurons: it fires no spikes to export")
        self.input_frame = op.input_frame

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> State:
        return self.op.init_state(batch_size, dtype, device)

    def step(self, x: Tensor, state: State) -> tuple[dict, State]:
        fired: dict[str, Tensor] = {}
        hooks = [layer.register_forward_hook(lambda _, __, out, name=name: fired.__setitem__(name, out[0]))
                 for name, layer in self.layers]
        try:
            y, state = self.op.step(x, state)
        finally:
            for hook in hooks:
                hook.remove()
        silent = [name for name, _ in self.layers if name not in fired]
        if silent:
            raise ValueError(f"the LIF layers {silent} did not run in {type(self.op).__name__}.step")
        return {"output": y, "spikes": {name: fired[name].reshape(x.shape[0], -1) for name, _ in self.layers}}, state

    def forward(self, x: Tensor, state: State = None) -> tuple[dict, State]:
        return forward_by_steps(self, x, self.init_state(x.shape[0], x.dtype) if state is None else state)


def _model_metadata(op: nn.Module) -> dict[str, str]:
    """Labels, calibrated thresholds, front-end settings and frame rate of a keyword model (or a pipeline
    ending in one), or the settings of an exported filterbank."""
    found: dict[str, str] = {}
    for module in op.modules():
        labels, features = getattr(module, "labels", None), getattr(module, "features", None)
        features = module.config if isinstance(module, HopFbank) else features
        if labels is not None and "labels" not in found:
            found["labels"] = json.dumps(list(labels))
        if getattr(module, "thresholds", None) and "thresholds" not in found:
            found["thresholds"] = json.dumps(dict(module.thresholds))
        if hasattr(features, "to_dict") and "features" not in found:
            found["features"] = json.dumps(features.to_dict())
            found["frame_rate_hz"] = str(1000.0 / features.frame_shift_ms)
    return found


def _encode(state: State) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, *[t.detach().cpu().numpy() for _, t in tree_paths(state)])
    return base64.b64encode(buffer.getvalue()).decode()


def to_onnx(op: nn.Module, path: str | Path, frame: Tensor | None = None, check_steps: int = 100,
            atol: float = 1e-4, opset: int = 17, metadata: dict[str, str] | None = None,
            pooling: str = "mean", spikes: bool = False) -> Path:
    """Export ``op.step`` to ``path``; returns the path.

    ``pooling="frame"`` (keyword models): export the head on each frame alone (:class:`FramePooled`), the
    logits ``StreamingKWS`` averages over its window, so the file can run a spotter (:class:`OnnxKeywordModel`).
    ``spikes=True`` (spiking models): the file also outputs each LIF layer's spikes (:class:`WithSpikes`), which
    the check then requires to be identical to ``step``'s.

    ``frame``: an example frame ``(1, *frame)`` (default: from ``op.input_frame``, a float feature frame).
    ``check_steps`` random frames (normal, scale 1) for two streams are run through ``step`` and onnxruntime from
    the initial state; outputs and states must agree within ``atol`` (times their magnitude where it exceeds 1),
    else ``ValueError`` and nothing is written.
    ``metadata``: more key/value pairs for the file."""
    if pooling not in ("mean", "frame"):
        raise ValueError(f"pooling must be 'mean' or 'frame' (got {pooling!r})")
    for stage in (op.stages if isinstance(op, Pipeline) else [op]):
        if getattr(stage, "changes_rate", False):
            hint = ("export HopFbank (streamlmu.audio.features), its form that takes one hop of samples per step"
                    if isinstance(stage, StreamingFbank) else "export the operators after it and run it "
                    "before the exported step")
            raise ValueError(f"{type(stage).__name__} changes the frame rate (a step returns 0 or more frames), "
                             f"which one fixed ONNX graph cannot express: {hint}")
    op = _frame_pooled(op) if pooling == "frame" else op
    op = (WithSpikes(op) if spikes else op).eval()
    x = _example(op) if frame is None else frame
    state = op.init_state(x.shape[0])
    state_paths = [p for p, _ in tree_paths(state)]
    with torch.no_grad():
        y, _ = op.step(x, state)
    y_paths = [p for p, _ in tree_paths(y)]
    inputs = ["x"] + [_name("state_in", p) for p in state_paths]
    outputs = [_name("y", p) for p in y_paths] + [_name("state_out", p) for p in state_paths]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            try:
                torch.onnx.export(_Step(op, state).eval(), (x, *[t for _, t in tree_paths(state)]), tmp, dynamo=False,
                                  input_names=inputs, output_names=outputs, opset_version=opset,
                                  dynamic_axes={name: {0: "batch"} for name in inputs + outputs})
            except Exception as err:  # the exporter's errors name the torch op, not the layer
                raise ValueError(f"{_label(op)}.step cannot be expressed in ONNX: {err}") from err
        model = onnx.load(tmp)
        layout = [{"name": _name("state_in", p), "shape": list(t.shape[1:]), "dtype": str(t.dtype).split(".")[-1]}
                  for p, t in tree_paths(state)]
        meta = {"state": json.dumps(layout), "init_state": _encode(op.init_state(1)),
                "input_frame": json.dumps(list(x.shape[1:])), "outputs": json.dumps(outputs[:len(y_paths)]),
                "output_frame": json.dumps(list(y.shape[1:]) if isinstance(y, Tensor) else None),
                "operator": type(op).__name__, "pooling": pooling, "spikes": json.dumps(spikes),
                **_model_metadata(op), **(metadata or {})}
        for key, value in meta.items():
            model.metadata_props.add(key=META_PREFIX + key, value=value)
        onnx.save(model, tmp)
        _check(op, OnnxStream(tmp), x, check_steps, atol)
        os.replace(tmp, path)
    except ValueError as err:
        stage = _failing_stage(op, x, check_steps, atol) if isinstance(op, Pipeline) else None
        if stage is None:
            raise
        raise ValueError(f"{err}; the first stage that fails alone: {stage}") from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _label(op: nn.Module) -> str:
    """An operator as errors name it: its class, and a Map's name."""
    return f"Map {op.name!r}" if isinstance(op, Map) else type(op).__name__


def _failing_stage(pipe: Pipeline, x: Tensor, steps: int, atol: float) -> str | None:
    """The first stage of ``pipe`` whose own export fails (on the frames the stages before it give), as
    ``"stage 1 (Map 'name')"``; None when each exports alone or the search itself fails."""
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for index, stage in enumerate(pipe.stages):
            try:
                to_onnx(stage, Path(tmp) / "stage.onnx", frame=x, check_steps=steps, atol=atol)
                x, _ = stage.step(x, stage.init_state(x.shape[0]))
            except ValueError:
                return f"stage {index} ({_label(stage)})"
            except Exception:  # a diagnosis only: the pipeline's own error stands
                return None
    return None


def _example(op: nn.Module) -> Tensor:
    frame = getattr(op, "input_frame", None)
    shape = getattr(frame, "shape", None)
    if shape is None or any(not isinstance(n, int) for n in shape):
        raise ValueError(f"{type(op).__name__} does not declare a fixed input frame: pass an example frame "
                         f"(1, *frame) as frame=")
    return torch.zeros(1, *shape)


def _check(op: nn.Module, exported: "OnnxStream", x: Tensor, steps: int, atol: float) -> None:
    """Run ``steps`` random frames through ``op.step`` and the export; raise if an output or a state differs by
    more than ``atol`` times its largest magnitude (at least 1: logits and running sums grow)."""
    generator = torch.Generator().manual_seed(0)
    x = x.expand(2, *x.shape[1:])  # two streams: a graph that ignores its batch axis shows here
    state, onnx_state = op.init_state(2), exported.init_state(2)
    name = _label(op)
    with torch.no_grad():
        for t in range(steps):
            frame = torch.randn(x.shape, generator=generator)
            y, state = op.step(frame, state)
            try:
                y_onnx, onnx_state = exported.step(frame, onnx_state)
            except Exception as err:
                raise ValueError(f"the ONNX export of {name}.step fails in onnxruntime at step {t} ({err}); the "
                                 f"file was not written") from None
            pairs = [(p, a, b) for (p, a), (_, b) in zip(tree_paths(y), tree_paths(y_onnx))] + \
                [(("state",) + p, a, b) for (p, a), (_, b) in zip(tree_paths(state), tree_paths(onnx_state))]
            pairs = [(p, a, b, max(1.0, float(a.abs().max()) if a.numel() else 1.0)) for p, a, b in pairs]
            for path, a, b, scale in pairs:
                diff = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
                if not diff <= atol * scale:
                    raise ValueError(f"the ONNX export of {name}.step disagrees with step: {diff:.3g} in "
                                     f"{'.'.join(map(str, path)) or 'y'} at step {t} (allowed {atol * scale:.3g}); "
                                     f"the file was not written")


class OnnxStream(StreamModule):
    """An exported step (``to_onnx``) as a stream operator, run by onnxruntime: ``step(x, state)`` with the
    state the file describes; ``forward`` steps over a chunk's frames. ``metadata``: the file's streamlmu
    entries (``labels``, ``features``, ``state``, ...)."""

    def __init__(self, path: str | Path, threads: int = 1):
        super().__init__()
        path = Path(path)
        try:
            model = onnx.load(str(path))
        except Exception as err:
            raise ValueError(f"{path}: not a readable ONNX file ({err})") from None
        meta = {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}
        if "state" not in meta or "init_state" not in meta:
            raise ValueError(f"{path}: an ONNX file without streamlmu's state layout: export it with "
                             f"streamlmu.export.to_onnx")
        self.metadata, self.path = meta, path
        self.layout = json.loads(meta["state"])
        self.output_names = json.loads(meta["outputs"])
        self.labels = json.loads(meta["labels"]) if "labels" in meta else None
        arrays = np.load(io.BytesIO(base64.b64decode(meta["init_state"])))
        self._init = [torch.from_numpy(arrays[f"arr_{i}"]) for i in range(len(self.layout))]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        options.log_severity_level = 4  # failures come back as exceptions; no log lines on stderr
        self.session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                    providers=["CPUExecutionProvider"])
        self.frame_shape = tuple(json.loads(meta["input_frame"]))
        self.input_frame = Frame(self.frame_shape)
        shape = json.loads(meta.get("output_frame", "null"))
        if shape is not None:
            self.output_frame = Frame(tuple(shape))
        self._inputs = {i.name for i in self.session.get_inputs()}  # onnx drops inputs the graph never reads
        self.threads = threads

    def __getstate__(self) -> dict:  # an onnxruntime session does not pickle: the file is loaded again
        return {"path": self.path, "threads": self.threads}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["threads"])

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> tuple:
        """The initial state, as a tuple of tensors in the file's layout order."""
        return tuple(t.expand(batch_size, *t.shape[1:]).clone() for t in self._init)

    def step(self, x: Tensor, state: tuple) -> tuple[Any, tuple]:
        if tuple(x.shape[1:]) != self.frame_shape:
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, self.frame_shape))}) "
                             f"(got {tuple(x.shape)})")
        if len(state) != len(self.layout):
            raise ValueError(f"state must be the {len(self.layout)} tensors of OnnxStream.init_state")
        feed = {"x": x.detach().float().numpy()}
        feed.update({entry["name"]: s.detach().numpy() for entry, s in zip(self.layout, state)})
        out = self.session.run(None, {name: value for name, value in feed.items() if name in self._inputs})
        ys = [torch.from_numpy(o) for o in out[:len(self.output_names)]]
        return (ys[0] if len(ys) == 1 else tuple(ys)), tuple(torch.from_numpy(o) for o in out[len(ys):])

    def forward(self, x: Tensor, state: tuple | None = None) -> tuple[Any, tuple]:
        return forward_by_steps(self, x, self.init_state(x.shape[0]) if state is None else state)


class OnnxKeywordModel:
    """An export with ``pooling="frame"`` where ``StreamingKWS`` expects a keyword model: ``labels``,
    ``features``, ``thresholds`` from the file, and ``streaming()`` giving the :class:`OnnxStream` that the
    spotter steps instead of the engine.

    >>> kws = StreamingKWS(OnnxKeywordModel("spotter.onnx"))  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, threads: int = 1):
        from streamlmu.audio.frontend import config_from_dict
        self.stream = OnnxStream(path, threads)
        meta = self.stream.metadata
        if meta.get("pooling") != "frame" or "labels" not in meta or "features" not in meta:
            raise ValueError(f"{path}: not a keyword spotter's export: export a keyword model with "
                             f"pooling='frame' (streamlmu export --pooling frame)")
        self.labels = tuple(json.loads(meta["labels"]))
        self.features = config_from_dict(json.loads(meta["features"]))
        self.thresholds = json.loads(meta["thresholds"]) if "thresholds" in meta else None
        if self.stream.frame_shape != (self.features.feature_size,) or len(self.stream.output_names) != 1:
            raise ValueError(f"{path}: the spotter steps a file that takes {self.features.feature_size} features "
                             f"per frame and gives logits only (this one takes {list(self.stream.frame_shape)} "
                             f"and gives {len(self.stream.output_names)} outputs)")

    def eval(self) -> "OnnxKeywordModel":
        return self

    def streaming(self, blas_min_batch: int | None = None, pooling: str = "frame",
                  int8_min_batch: int | None = None) -> OnnxStream:
        if pooling != "frame":
            raise ValueError(f"this export gives per-frame logits only (asked for pooling={pooling!r})")
        return self.stream
