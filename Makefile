.PHONY: chat demo test bench schemas

chat:  ## set up, then run everything on the embedded default with the chat UI (ingest PATHS first if given)
	bash scripts/chat.sh $(PATHS)

demo:  ## ingest a folder on the embedded default and show what was indexed
	bash scripts/demo.sh $(PATHS)

test:  ## install what the tests need and run them
	bash scripts/test.sh $(PYTEST_ARGS)

bench:  ## the ingestion benchmark (not part of CI)
	bash scripts/bootstrap.sh all --group bench && .venv/bin/python bench/ingest.py

schemas:  ## re-export eventing/schemas from ragfn/eventing/events.py, and manifests/schemas/kserve from the kserve SDK
	.venv/bin/python -m ragfn.eventing.events
	.venv/bin/python scripts/kserve_schema.py
