"""The answering side: the `LLM` protocol, the OpenAI-compatible client of the predictor, prompts, the extractive
engine, what is known of the predictor's warmth, and an LLM judge of answers (in evaluations, and in the background
over sampled live answers, whose answer.sampled events it reads).

May import: ragfn.core, ragfn.eventing, ragfn.retrieval.
"""
