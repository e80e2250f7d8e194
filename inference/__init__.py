"""The KServe predictor for ragfn's answers and the generation engines behind it (docs/architecture.md, Inference)."""
