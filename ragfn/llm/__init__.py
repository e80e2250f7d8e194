"""The answering side: the `LLM` protocol, the OpenAI-compatible client of the predictor, prompts, the extractive
engine, and what is known of the predictor's warmth.

May import: ragfn.core, ragfn.retrieval.
"""
