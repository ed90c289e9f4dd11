# `make help` lists the targets. Every target builds the environment it needs (.venv, patched transformers).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# the interpreter that creates .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
# the environment's python; conda users: make <target> PY=python (then no .venv is made)
PY ?= $(VENV)/bin/python
# GPU users: TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
TORCH ?= $(shell grep '^torch==' requirements.txt)
# a transformers git checkout at the pinned version, instead of the pinned sdist
TRANSFORMERS_SRC ?=
SRC_FLAG := $(if $(TRANSFORMERS_SRC),--src $(TRANSFORMERS_SRC))

SETUP := $(if $(filter $(VENV)/bin/python,$(PY)),$(VENV)/.installed,)

.PHONY: help venv patch modeling patches test clean demo infer plots data eval bench

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	grep -v '^torch==' requirements.txt | $(PY) -m pip install --quiet -r /dev/stdin
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(SETUP) ## create .venv with the pinned packages (requirements.txt)

patch: $(SETUP) ## fetch the pinned transformers source, apply patches/, install it
	$(PY) scripts/patch_transformers.py install $(SRC_FLAG)

modeling: $(SETUP) ## regenerate modeling/ (drop-in patched files) from patches/
	$(PY) scripts/patch_transformers.py modeling $(SRC_FLAG)

patches: $(SETUP) ## developers: rewrite patches/ from edited modeling/ files
	$(PY) scripts/patch_transformers.py diff $(SRC_FLAG)

# --- inference and demo (scripts/infer_activate.py) ---

# --- data (data/) ---

# --- analyses (analysis/) ---

# --- evaluation ---

# --- benchmark ---

test: patch ## set up everything and run the test suite
	$(PY) -m pytest -q $(ARGS)

clean: ## remove results/ and models/ (keeps .venv and third_party/)
	rm -rf results models
