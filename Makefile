# The two Quickstart commands: `make run` (set up, build the imagenette store if missing, run the bot)
# and `make test` (set up, lint, run the whole test suite). `.ci/run` runs `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= $(or $(CLIPBOT_STORE),stores/imagenette)
# torch is pinned and installed first: a bare `torch` requirement can pull a multi-GB CUDA build.
# On machines with PyTorch's own index in reach, TORCH_INDEX=https://download.pytorch.org/whl/cpu gets the CPU wheel.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: setup run test lint bench clean

$(BIN)/clipbot: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/clipbot

setup: $(BIN)/clipbot

run: setup
	@$(BIN)/python -c "import sys; from bot.config import Settings; sys.exit(not Settings.from_env().discord_token)" \
		|| { echo "Put DISCORD_TOKEN in .env first: cp .env.example .env (see README)"; exit 1; }
	@test -f $(STORE)/manifest.json || $(BIN)/clipbot build --out $(STORE)
	$(BIN)/clipbot run

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
