"""Finding passages: dense search with tenant/ACL filters inside it, BM25, fusion, the optional reranker, context
assembly for citations, and the labelled evaluation sets (the Python FAQ, the Debian FAQ) with their ranking
metrics.

May import: ragfn.core, ragfn.eventing, ragfn.store, ragfn.ingest.
"""
