"""The answering side: the `LLM` protocol, the OpenAI-compatible client of the predictor, prompts, the extractive
engine, what is known of the predictor's warmth, and an LLM judge of answers.

May import: ragfn.core, ragfn.retrieval.
"""
