.PHONY: demo test bench schemas

demo:  ## ingest a folder on the embedded default and show what was indexed
	bash scripts/demo.sh $(PATHS)

test:  ## install what the tests need and run them
	bash scripts/test.sh $(PYTEST_ARGS)

bench:  ## the ingestion benchmark (not part of CI)
	bash scripts/bootstrap.sh all --group bench && .venv/bin/python bench/ingest.py

schemas:  ## re-export eventing/schemas from ragfn/events.py
	.venv/bin/python -m ragfn.events
