VENV ?= .venv
STAMP := $(VENV)/.streamlmu-installed
PYTEST_ARGS ?=

.PHONY: setup test test-slow demo bench clean

# Installs system packages, .venv and the package; re-runs only when the
# dependency pins or setup.py change.
$(STAMP): requirements.txt setup.py scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -m slow $(PYTEST_ARGS)

# Streaming keyword spotting on the bundled recording, then 15 s of the microphone if there is one.
demo: $(STAMP)
	$(VENV)/bin/streamlmu listen demo
	@if $(VENV)/bin/streamlmu listen --list-devices 2>/dev/null | grep -q .; then \
		echo "listening to the microphone for 15 s: say yes, no, up, down, left, right, on, off, stop or go"; \
		$(VENV)/bin/streamlmu listen --seconds 15; \
	else echo "no microphone found: skipped the live part (streamlmu listen --list-devices)"; fi

bench: $(STAMP)
	$(VENV)/bin/python bench/lmu_memory.py
	$(VENV)/bin/python bench/model_step.py
	$(VENV)/bin/python bench/kws_stream.py
	$(VENV)/bin/python bench/train_step.py
	$(VENV)/bin/python bench/report.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
