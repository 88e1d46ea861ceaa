# make demo: install into .venv and run the main job on the embedded demo set.
# make test: install into .venv and run the tests.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERAS_MODELS := $${KERAS_HOME:-$$HOME/.keras}/models

.PHONY: install demo test lint mutation clean

install: $(STAMP)

$(STAMP): setup.py Makefile
	@ldconfig -p | grep -q libusb-1.0.so.0 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq libusb-1.0-0; \
	  else \
	    echo "error: missing system library libusb-1.0 (needed by tflite-support): install the Debian package libusb-1.0-0 (apt-get install libusb-1.0-0)" >&2; exit 1; \
	  fi; }
	@# node and npm (LiteRT.js for the browser preview) and Chromium (its test), from Debian where missing
	@missing="$$(command -v npm >/dev/null || echo nodejs npm) $$(command -v chromium >/dev/null || echo chromium)"; \
	if [ -n "$$(echo $$missing)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "warning: missing $$missing: preview and its tests need them (apt-get install $$missing)" >&2; \
	  fi; fi
	@if command -v npm >/dev/null; then npm ci --prefix toolkit/preview/web --no-audit --no-fund --silent; fi
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11 or run make PYTHON=/path/to/python3.11" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,jax]"
	$(PY) -m pip install -q --no-deps tflite-support==0.4.4 mediapipe==1.2.2
	$(PY) -m toolkit.base.env
	@# ImageNet weights shipped beside the checkout (as on our CI machines) go where Keras looks offline.
	@if [ -d ../shared/weights ]; then mkdir -p $(KERAS_MODELS) && cp -n ../shared/weights/*.h5 $(KERAS_MODELS)/; fi
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m toolkit train --demo --epochs-head 3 --epochs-finetune 3 --out runs/demo --force
	@# The demo test split has 67 images (one flip moves balanced accuracy 1.2 to 1.8 points, a referral of its
	@# 26 malignant ones 3.8) and this small 64x64 model drifts by a few of them in int8: the gate reports, and a
	@# failure is published with a warning.
	$(PY) -m toolkit export --quantize --run runs/demo --force --accept-drift \
	  --min-agreement 0.95 --max-balanced-accuracy-drop 4 --max-recall-drop 25 --max-sensitivity-drop 12

# The tests spend most of their time in single-threaded conversion and tracing: one worker per core (at most 4),
# a file per worker, so the fixtures a file shares are built once.
test: $(STAMP)
	$(VENV)/bin/ruff check toolkit tests benchmarks research app_steps
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile --durations 25  # the slowest, for keeping CI short

lint: $(STAMP)
	$(VENV)/bin/ruff check toolkit tests benchmarks research app_steps
	$(VENV)/bin/ruff format --check toolkit tests benchmarks research app_steps
	$(VENV)/bin/lint-imports --no-cache

# Mutation testing of the pure-Python core (setup.cfg says which files and tests): about 14 minutes on 2 cores.
MUTATE = 'toolkit.drift.*' 'toolkit.train.decision.*' 'toolkit.base.referral.*' 'toolkit.export.calibration.*' \
  'toolkit.data.images.*' 'toolkit.export.bundle.*' 'toolkit.model.classifier.x_set_phase*' 'toolkit.model.classifier.x_boundary_index*' \
  'toolkit.model.classifier.x_backbone_of*' 'toolkit.train.fit.x_uses_bn_fix*'
mutation: $(STAMP)
	$(PY) -m pip install -q mutmut==3.8.1
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2 $(MUTATE)
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) runs mutants
