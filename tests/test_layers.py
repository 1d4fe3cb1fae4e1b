"""The layer order (kernels -> core -> models, engine -> audio, data -> train -> apps) holds."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_linter_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and done.stdout.count("KEPT") == 4


def test_kernels_import_without_torch():
    modules = ", ".join(f"streamlmu.kernels.{name}" for name in
                        ("dense", "detect", "engine", "legendre", "lif", "quant", "status"))
    assert _python(f"import sys, {modules}; print('torch' in sys.modules)") == "False"


def test_a_bundled_model_loads_without_the_training_package():
    loaded = _python("import sys, streamlmu; m = streamlmu.load_model('lmuformer-tiny-voices35'); "
                     "print(type(m).__name__, any(n.startswith('streamlmu.train') for n in sys.modules))")
    assert loaded == "LMUFormer False"


def test_the_old_checkpoint_module_still_loads_models_with_a_warning():
    from streamlmu.train import checkpoint
    with pytest.warns(DeprecationWarning, match="streamlmu.audio.bundle.load_model"):
        load_model = checkpoint.load_model
    assert load_model("lmuformer-tiny-synth35").labels[0] == "backward"
