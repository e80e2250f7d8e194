"""The ask gateway's logic: cache, then retrieve, then generate, degrading instead of failing; its local and remote
backends, its model providers (primary, second, extractive), the groundedness gate, circuit breakers, rate limits,
keep-alive, answer feedback, inferred citations and uploads. No HTTP framework here: `ragfn.serve.gateway_app`
serves it.

May import: ragfn.core, ragfn.eventing, ragfn.store, ragfn.ingest, ragfn.retrieval, ragfn.cache, ragfn.llm.
"""
