"""The ingestion path: storage notifications and bucket webhooks in, objects read and written by URI, loaders and
chunking, the embedder, the chunk/embed/index stages, walking paths and re-syncing a prefix.

May import: ragfn.core, ragfn.eventing, ragfn.store.
"""
