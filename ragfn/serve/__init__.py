"""What runs the library as services: `Runtime`, the composition root that builds every client from Settings; the
wrapper every CloudEvent function uses; the ask gateway's web app and its OpenAPI document.

May import: ragfn.core, ragfn.eventing, ragfn.store, ragfn.ingest, ragfn.retrieval, ragfn.cache, ragfn.llm,
ragfn.gateway.
"""
