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
	@for b in bench/bench_*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done
