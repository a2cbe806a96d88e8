# The commands a person types. Everything installs into .venv on first use.
VENV    ?= .venv
PY      := $(VENV)/bin/python
HELPKIT := $(VENV)/bin/helpkit
PYTEST_ARGS ?=
DEMO_DIR ?= demo-run
NAME    ?= simple-maxprob
BASE_IMAGE ?= helpkit/base:bookworm

.PHONY: install demo test test-all bench submission base-image wheel clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## make demo [QUICK=1] [LAYOUT=camelyon16|camelyon17]: a whole synthetic competition end to end, then the report path
demo: install
	$(HELPKIT) demo $(DEMO_DIR) $(if $(QUICK),--quick,) $(if $(LAYOUT),--layout $(LAYOUT),)

## make test: the default suite (unit, integration, docker; not the slow training runs)
test: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

## make test-all: everything, slow training runs included
test-all: install
	$(PY) -m pytest $(PYTEST_ARGS)

## make bench: the benchmarks, each printing ratios against a baseline of the same run
bench: install
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

## make base-image: helpkit/base:bookworm from Debian with debootstrap (no registry needed)
base-image: install
	$(HELPKIT) submission base-image --tag $(BASE_IMAGE)

## make submission NAME=x: render build/x, vendor the wheelhouse, build the image
submission: install
	$(HELPKIT) submission build $(NAME)

## make wheel: dist/helpkit-*.whl, what `pip install` takes (templates and example submissions inside)
wheel: install
	$(PY) -c "from pathlib import Path; from helpkit.submission.wheelhouse import build_helpkit_wheel as b; print(b(Path('dist')))"

clean:
	rm -rf build dist $(DEMO_DIR) .pytest_cache
