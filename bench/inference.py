"""What the KServe layer costs: the predictor (llamacpp engine, over HTTP, streamed) against raw llama-cpp-python
on the same GGUF, the same prompts and the same threads, in the same run.

    .venv/bin/python bench/inference.py [--requests 8] [--max-tokens 64] [--rounds 2]

For each concurrency (1 and 4) it reports time to first token (median, from sending the request to the first
text) and tokens per second (all completion tokens over the wall time of the batch). Raw llama-cpp-python runs one
generation at a time on one thread, as the engine does (a llama.cpp context is not re-entrant), so at concurrency 4
both queue the same way. The two sides run one after the other, never at once, alternating over `--rounds`.
Targets: at most 5 % fewer tokens per second and at most 10 ms more time to first token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts"), str(REPO / "tests")]

from conftest import PredictorProcess, llamacpp_env  # noqa: E402 - the tests' way of starting the predictor
from fetch_llm import FILE_NAME, fetch  # noqa: E402

from ragfn.llm.client import build_messages  # noqa: E402
from ragfn.retrieval.context import Passage  # noqa: E402

QUESTIONS = ["How do I sort a list?", "What does the sorted() built-in return?", "Are lists mutable?",
             "How do dictionaries keep their order?", "How do I copy a list?", "What is a tuple?",
             "How do I reverse a list?", "What does list.sort() return?"]
PASSAGES = [Passage(1, "c1", "file:///faq.md", "Lists", 0, 0,
                    "Lists are mutable sequences. To sort a list in place, call list.sort(); it returns None. "
                    "The sorted() built-in returns a new sorted list from any iterable.", 1.0),
            Passage(2, "c2", "file:///faq.md", "Dictionaries", 0, 0,
                    "Dictionaries map keys to values and keep insertion order since Python 3.7. "
                    "Use dict.copy() or copy.deepcopy() to copy one.", 0.5)]


def prompts(count: int) -> list[list[dict]]:
    return [build_messages(QUESTIONS[i % len(QUESTIONS)], PASSAGES) for i in range(count)]


class RawLlama:
    """llama-cpp-python used well: one model, and every generation on one long-lived thread, in arrival order.
    (Taking turns on the model from several threads under a lock ran 2.5x slower here: see docs/benchmarks.md.)"""

    def __init__(self, model: Path, threads: int) -> None:
        from llama_cpp import Llama

        self.llama = Llama(model_path=str(model), n_ctx=2048, n_threads=threads, verbose=False)
        self.generator = ThreadPoolExecutor(1)

    def one(self, messages: list[dict], max_tokens: int) -> tuple[float, int]:
        sent = time.perf_counter()
        first, tokens = self.generator.submit(self._generate, messages, max_tokens).result()
        return first - sent, tokens

    def _generate(self, messages: list[dict], max_tokens: int) -> tuple[float, int]:
        first, tokens = None, 0
        for chunk in self.llama.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0,
                                                       stream=True):
            if chunk["choices"][0].get("delta", {}).get("content"):
                first = first or time.perf_counter()
                tokens += 1
        return first, tokens


class Predictor:
    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/chat/completions"
        self.http = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=16))

    def one(self, messages: list[dict], max_tokens: int) -> tuple[float, int]:
        sent = time.perf_counter()
        first, usage = None, {}
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
        with self.http.stream("POST", self.url, json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    first = first or time.perf_counter()
                usage = chunk.get("usage") or usage
        return first - sent, usage["completion_tokens"]


def batch(side, messages: list[list[dict]], max_tokens: int, concurrency: int) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda m: side.one(m, max_tokens), messages))
    wall = time.perf_counter() - started
    return {"ttft_ms": [r[0] * 1000 for r in results], "tokens": sum(r[1] for r in results), "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8, help="requests per side per concurrency per round")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads, the same on both sides")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    model = fetch(REPO / ".ragfn" / "models" / FILE_NAME)
    work = REPO / ".ragfn" / "bench" / "inference"
    work.mkdir(parents=True, exist_ok=True)
    server = PredictorProcess(work, llamacpp_env(model, RAGFN_LLM_THREADS=str(args.threads))).start()
    try:
        raw, predictor = RawLlama(model, args.threads), Predictor(server.base_url)
        messages = prompts(args.requests)
        for side in (raw, predictor):  # warm both: page in the weights, fill llama.cpp's caches
            batch(side, messages[:2], 8, 1)
        totals: dict = {}
        for round_ in range(args.rounds):
            for concurrency in args.concurrency:
                order = [("raw", raw), ("predictor", predictor)]
                for name, side in order if round_ % 2 == 0 else order[::-1]:
                    result = batch(side, messages, args.max_tokens, concurrency)
                    entry = totals.setdefault((name, concurrency), {"ttft_ms": [], "tokens": 0, "wall_s": 0.0})
                    entry["ttft_ms"] += result["ttft_ms"]
                    entry["tokens"] += result["tokens"]
                    entry["wall_s"] += result["wall_s"]
                    print(f"round {round_ + 1} {name:9} c={concurrency}: {result['tokens'] / result['wall_s']:.1f} "
                          f"tok/s, TTFT p50 {statistics.median(result['ttft_ms']):.1f} ms", file=sys.stderr)
    finally:
        server.stop()
    report(totals, args)
    return 0


def report(totals: dict, args: argparse.Namespace) -> None:
    print(f"\nSmolLM2-135M-Instruct Q4_1, {args.threads} threads, {args.requests} requests x {args.rounds} rounds, "
          f"max_tokens {args.max_tokens}, greedy\n")
    print("| concurrency | raw tok/s | predictor tok/s | predictor/raw | raw TTFT p50 | predictor TTFT p50 | "
          "TTFT cost |")
    print("|---|---|---|---|---|---|---|")
    for concurrency in args.concurrency:
        raw, ours = totals[("raw", concurrency)], totals[("predictor", concurrency)]
        raw_rate, our_rate = raw["tokens"] / raw["wall_s"], ours["tokens"] / ours["wall_s"]
        raw_ttft, our_ttft = statistics.median(raw["ttft_ms"]), statistics.median(ours["ttft_ms"])
        print(f"| {concurrency} | {raw_rate:.1f} | {our_rate:.1f} | {our_rate / raw_rate:.3f} | {raw_ttft:.1f} ms | "
              f"{our_ttft:.1f} ms | {our_ttft - raw_ttft:+.1f} ms |")


if __name__ == "__main__":
    sys.exit(main())
