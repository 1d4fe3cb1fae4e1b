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

demo: $(STAMP)
	$(VENV)/bin/streamlmu lmu-demo

bench: $(STAMP)
	$(VENV)/bin/python bench/lmu_memory.py
	$(VENV)/bin/python bench/model_step.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
