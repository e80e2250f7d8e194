"""The `ragfn` command: ingest, ask, retrieve, eval, stats, the dead-letter store, and `ragfn dev`, which starts every
function, the predictor, the gateway and the chat on one machine.

May import: ragfn.core, ragfn.eventing, ragfn.store, ragfn.ingest, ragfn.retrieval, ragfn.cache, ragfn.llm,
ragfn.gateway, ragfn.serve.
"""
