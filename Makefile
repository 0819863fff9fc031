# Shortcuts; every target is one documented command.
.PHONY: demo test bench mutation paper-small cpdt dynamic-control

demo:
	injc build examples/demo/plan.toml --out out/demo --force && injc inspect out/demo/manifest.json

test:
	python -m pytest

bench:
	bash bench/run.sh

mutation:
	bash bench/mutation.sh

paper-small:
	python examples/paper-small/reproduce.py

cpdt:
	python examples/cpdt/run.py

dynamic-control:
	python examples/dynamic-control/run.py
