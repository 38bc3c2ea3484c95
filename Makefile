# Quickstart targets: `make demo` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATASET ?= cifar10
# The demo's studies live apart from runs/: a smoke study never mixes with a paper one.
OUT ?= runs/demo
WANDB ?= disabled
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile -e '.[dev,postgres,dashboard]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

# The main job on a CPU-sized budget: crop ablation, 2 seeds, ResNet-20, smoke budget,
# then its statistics and the write-up. Without LaTeX, studies.paper writes the generated
# sources, names the Debian packages that build the PDF and exits 3: the demo still passes.
demo: $(STAMP)
	$(PY) -m studies.run crop_ablation --seeds 2 --depths 20 --budget smoke \
		--dataset $(DATASET) --out $(OUT) --wandb $(WANDB)
	$(PY) -m studies.analyze crop_ablation --out $(OUT)
	$(PY) -m studies.paper crop_ablation --out $(OUT) || test $$? -eq 3

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
