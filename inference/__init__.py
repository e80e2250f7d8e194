"""The KServe predictor for ragfn's answers and the generation engines behind it (see DESIGN.md, Inference)."""
