"""ragfn: retrieval-augmented generation as small CloudEvents-driven functions (import is side-effect free)."""

__version__ = "0.1.0"
