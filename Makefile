# ModelHub: the two commands a fresh machine needs.
#   make run   set up .venv, migrate, create the first admin, start web + one worker (embedded default)
#   make test  install what is missing (Debian + pip), start throwaway PostgreSQL + Redis, run pytest
# make test-all is make test with the slow set too (heavy architectures, benchmarks), which CI skips.
.PHONY: run test test-all venv lint bench compose-check

venv:
	@scripts/venv.sh requirements.txt

run:
	@scripts/run.sh

test:
	@scripts/test.sh $(PYTEST_ARGS)

test-all:
	@scripts/test.sh -m "slow or not slow" $(PYTEST_ARGS)

lint:
	@scripts/venv.sh requirements-dev.txt
	.venv/bin/ruff check .

bench:
	@scripts/venv.sh requirements-dev.txt
	.venv/bin/python bench/assembly.py --heads 200
	.venv/bin/python bench/assembly.py --heads 10000  # slow: ~4 min to write the heads, ~4 min to measure
	.venv/bin/python bench/training.py --heads 10
	.venv/bin/python bench/grow.py
	.venv/bin/python bench/import.py --models 200
	.venv/bin/python bench/load.py --clients 24 --seconds 60
	.venv/bin/python bench/listing.py --heads 10000
	.venv/bin/python bench/branches.py --tasks 50

compose-check:
	docker-compose -f docker-compose.yml config -q
