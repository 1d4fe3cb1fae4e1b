"""Generated documents are current: a card per bundled model from one template (short, up to date with its
figures), and the benchmark tables of bench/README.md from bench/results."""
import subprocess
import sys
from pathlib import Path

from streamlmu.pretrained import FOLDER, available

ROOT = Path(__file__).resolve().parents[1]


def test_every_bundled_model_has_a_current_card_of_at_most_60_lines():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "model_cards.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in available():
        card = (FOLDER / f"{name}.md").read_text()
        assert card.count("\n") <= 60, f"{name}.md has {card.count(chr(10))} lines"
        for section in ("## Intended use", "## Data", "## Training", "## Metrics", "## Limitations"):
            assert section in card, f"{name}.md lacks {section}"


def test_training_logs_stay_out_of_the_package():
    assert not list(FOLDER.glob("*.csv")) and not list(FOLDER.glob("*.png"))
    assert (ROOT / "docs" / "models.md").is_file()


def test_the_benchmark_tables_are_current_with_their_results():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
