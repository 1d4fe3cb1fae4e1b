import doctest
import re
from pathlib import Path

import pytest
import torch

import streamlmu.audio.features
import streamlmu.audio.kws
import streamlmu.audio.resample
import streamlmu.engine
import streamlmu.legendre
import streamlmu.models.kwt
import streamlmu.models.lmuformer
import streamlmu.nn.cell
import streamlmu.nn.memory
import streamlmu.serve.pool

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", [streamlmu.legendre, streamlmu.nn.memory, streamlmu.nn.cell, streamlmu.engine,
                                    streamlmu.models.lmuformer, streamlmu.models.kwt,
                                    streamlmu.audio.features, streamlmu.audio.kws, streamlmu.audio.resample,
                                    streamlmu.serve.pool])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0


def test_readme_usage_example_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    usage = next(b for b in blocks if "LMUMemory(" in b)
    scope: dict = {}
    exec(compile(usage, "README.md", "exec"), scope)
    assert scope["y"].shape == (1, 500, 1) and scope["y_t"].shape == (1, 1)


def test_readme_pipeline_example_runs():
    text = (ROOT / "README.md").read_text()
    usage = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if ".streaming()" in b)
    scope: dict = {}
    exec(compile(usage, "README.md", "exec"), scope)
    assert scope["logits"].shape == (1, 10, 35) and int(scope["state"][0].samples[0]) == 3200


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text().split("\n\n")[:3]
    assert any("make demo" in part and "make test" in part for part in head)


def test_readme_keyword_spotting_example_runs():
    text = (ROOT / "README.md").read_text()
    usage = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "StreamingKWS" in b)
    scope: dict = {}
    exec(compile(usage, "README.md", "exec"), scope)
    assert scope["kws"].streams == 2 and scope["kws"].stream_time(1) == 0.0
