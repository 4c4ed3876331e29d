# The README's two commands: `make demo` (the main job) and `make test`.
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-timm lint models

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The main job: Fashion-MNIST (installed if missing), a mini SKNet trained on the CPU,
# a results table at the end (docs/training.md, "The demo: Fashion-MNIST on two CPU cores").
# Every run gets its own folder (a finished run is never overwritten); the link runs/demo
# points at the latest, the path README's commands use. A real folder named runs/demo is left alone.
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
DEMO_OUT ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

demo: $(STAMP)
	FASHION_MNIST_DIR=$(FASHION_MNIST_DIR) sh scripts/get_fashion_mnist.sh
	$(VENV)/bin/sknet train --config fashion_mnist --data-dir $(FASHION_MNIST_DIR) --output $(DEMO_OUT)
	@if [ -L runs/demo ] || [ ! -e runs/demo ]; then \
		mkdir -p runs && ln -sfn "$(abspath $(DEMO_OUT))" runs/demo && echo "runs/demo -> $(DEMO_OUT)"; fi

models: $(STAMP)
	$(VENV)/bin/sknet models

lint: $(STAMP)
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

# The real-data tests need Fashion-MNIST; if it cannot be installed they skip and say why.
test: $(STAMP)
	-FASHION_MNIST_DIR=$(FASHION_MNIST_DIR) sh scripts/get_fashion_mnist.sh
	$(PY) -m ruff check src tests
	$(PY) -m pytest -q

# timm's own tests/test_models.py (the installed timm release's, fetched from PyPI once and cached)
# over every model `import sknet.timm` registers: the drop-in check (docs/deploy.md, "timm").
test-timm: $(STAMP)
	PY=$(abspath $(PY)) sh scripts/test_timm.sh
