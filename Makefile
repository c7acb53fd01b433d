SHELL := /bin/bash
.PHONY: setup test demo bench lint
setup:
	bash scripts/setup.sh
test:
	bash scripts/test.sh
demo:
	bash scripts/demo.sh
lint:
	.venv/bin/ruff check . && .venv/bin/mypy && .venv/bin/lint-imports
bench:
	@for b in bench/bench_*.py; do m=$${b%.py}; echo "== $$b"; .venv/bin/python -m $${m//\//.} || exit 1; done
