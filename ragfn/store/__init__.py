"""The index: the `Index` protocol and ledger every backend shares, the Chroma backend (embedded or `chroma run`), and
vectors on the wire.

May import: ragfn.core, ragfn.eventing.
"""
