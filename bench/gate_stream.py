"""What the groundedness gate costs a streamed answer, against the same gateway without it, in the same run.

    .venv/bin/python bench/gate_stream.py --home /tmp/ae/home --queries /tmp/ae/faq/queries.jsonl \\
        --llm-url http://127.0.0.1:18997/v1 --model smollm --questions 12

Each question is streamed through the gateway's real path twice, gate off and gate on, in alternating order. The
gate adds its check (milliseconds) but, watching the stream, ends a looping generation at the loop instead of at
max_tokens. Reported per mode: time to the last event (p50, mean), tokens streamed, and answers replaced; the
ratios are gate on / gate off. Results go to bench/results/gate_stream.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench")]

from offline import offline_model_dir  # noqa: E402

from ragfn.core.config import OFFLINE_MODEL, Settings  # noqa: E402
from ragfn.gateway.answer import AskRequest  # noqa: E402
from ragfn.gateway.ask import Gateway  # noqa: E402
from ragfn.gateway.gate import AnswerGate  # noqa: E402
from ragfn.llm.client import OpenAIChatClient  # noqa: E402
from ragfn.retrieval.dense import Caller  # noqa: E402
from ragfn.retrieval.evalset import load_queries  # noqa: E402
from ragfn.serve.runtime import Runtime  # noqa: E402


def stream_once(gateway: Gateway, question: str, max_tokens: int) -> dict:
    started = time.perf_counter()
    tokens, replaced = 0, False
    for name, _ in gateway.stream(AskRequest(question=question, stream=True, max_tokens=max_tokens),
                                  Caller(None, ())):
        tokens += name == "token"
        replaced |= name == "replace"
    return {"seconds": time.perf_counter() - started, "tokens": tokens, "replaced": replaced}


def summary(runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    return {"p50_s": round(statistics.median(seconds), 3), "mean_s": round(statistics.fmean(seconds), 3),
            "tokens_mean": round(statistics.fmean(r["tokens"] for r in runs), 1),
            "replaced": sum(r["replaced"] for r in runs)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="RAGFN_HOME with the labelled corpus ingested")
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--llm-url", required=True)
    parser.add_argument("--model", default="smollm")
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gate_stream.json")
    args = parser.parse_args(argv)
    runtime = Runtime(Settings(home=args.home, embed_model=OFFLINE_MODEL,
                               embed_model_path=offline_model_dir(REPO / ".ragfn")))
    llm = OpenAIChatClient(args.llm_url, args.model, read_timeout=300)
    from ragfn.cli.answer_eval import NoAnswerCache

    gateways = {"off": Gateway(llm, retrieval=runtime.local_retrieval, cache=NoAnswerCache()),
                "on": Gateway(llm, retrieval=runtime.local_retrieval, cache=NoAnswerCache(), gate=AnswerGate())}
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for n, query in enumerate(load_queries(args.queries)[:args.questions]):
        for mode in (("off", "on") if n % 2 == 0 else ("on", "off")):  # take turns: a busy moment hits both
            runs[mode].append(stream_once(gateways[mode], query.question, args.max_tokens))
        print(f"{n + 1}/{args.questions} off {runs['off'][-1]['seconds']:.1f}s on {runs['on'][-1]['seconds']:.1f}s",
              file=sys.stderr)
    result = {mode: summary(r) for mode, r in runs.items()}
    result["ratio_on_off"] = {"p50": round(result["on"]["p50_s"] / result["off"]["p50_s"], 3),
                              "mean": round(result["on"]["mean_s"] / result["off"]["mean_s"], 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
