"""Fixed-rate load on a real `ragfn dev` stack (bench/stack.py), and the knee: the highest rate at which the p95 of
questions stays under 500 ms with no error, on this machine.

    .venv/bin/python bench/load.py                       # rates 4..28 per second, 40 s each, then a profile
    .venv/bin/python bench/load.py --rates 4 --seconds 10 --no-profile

The mix, per request, from one seeded generator: questions repeated verbatim (exact cache hits), paraphrases of
asked questions (semantic hits), questions not asked before, about a third of them streamed (server-sent events),
from two tenants with the same documents (the Python FAQ) and their own caches; and an upload every 50 requests.

Why not Locust: its users are closed-loop, so a slow answer delays that user's next request and the measured
latency hides the queue that built up (coordinated omission). Here every request has a scheduled start on a fixed
grid and its latency counts from that time, whatever the stack's state; gevent's monkey-patching would also have to
share a process with httpx's threads. The figures go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from stack import REPO, TENANTS, Stack, fresh_home

KNEE_P95_MS = 500.0
UPLOAD_EVERY = 50


@dataclass
class Record:
    route: str  # ask, ask-stream, upload
    kind: str  # repeat, paraphrase, new, upload
    tenant: str
    scheduled: float  # seconds from the level's start
    latency_ms: float = 0.0
    status: int = 0  # 0: no answer (a dropped connection, a timeout)
    cache: str | None = None
    degraded: str | None = None
    error: str = ""


class Workload:
    """The question pools and the mix; `next()` gives (route, kind, tenant, payload)."""

    def __init__(self, questions: list[str], paraphrases: list[tuple[str, str]], seed: int = 7,
                 upload_every: int = UPLOAD_EVERY) -> None:
        self.rng = random.Random(seed)
        self.upload_every = upload_every  # 0: no uploads
        self.pool = list(questions)
        self.fresh = {tenant: list(questions) for tenant in TENANTS}
        for pool in self.fresh.values():
            self.rng.shuffle(pool)
        self.asked: dict[str, list[str]] = {tenant: [] for tenant in TENANTS}
        self.paraphrases = paraphrases
        self.count = 0
        self._lock = threading.Lock()

    def _new(self, tenant: str) -> str:
        """A question this tenant has not asked: the pool's first, then two of them joined, which no cached
        question is near (the pool alone would run dry at a few requests a second and turn the mix into repeats)."""
        if self.fresh[tenant]:
            return self.fresh[tenant].pop()
        first, second = self.rng.sample(self.pool, 2)
        return f"{first} And {second[0].lower()}{second[1:]}"

    def warm_up_questions(self) -> list[str]:
        """Asked once per tenant before measuring: the questions the paraphrases rephrase."""
        return [cached for cached, _ in self.paraphrases]

    def seen(self, tenant: str, question: str) -> None:
        with self._lock:
            self.asked[tenant].append(question)

    def next(self) -> tuple[str, str, str, dict]:
        with self._lock:
            self.count += 1
            tenant = self.rng.choice(list(TENANTS))
            if self.upload_every and self.count % self.upload_every == 0:
                return "upload", "upload", tenant, {"name": f"note-{self.count}.md"}
            roll = self.rng.random()
            if roll < 0.35 and self.asked[tenant]:
                kind, question = "repeat", self.rng.choice(self.asked[tenant])
            elif roll < 0.5 and self.paraphrases:
                kind, question = "paraphrase", self.rng.choice(self.paraphrases)[1]
            else:
                kind, question = "new", self._new(tenant)
                self.asked[tenant].append(question)
            stream = self.rng.random() < 0.33
            return ("ask-stream" if stream else "ask"), kind, tenant, {"question": question, "stream": stream}


def send(client: httpx.Client, stack: Stack, route: str, tenant: str, payload: dict, record: Record) -> None:
    """One request; fills `record` (status, cache, degraded, error). Latency is the caller's to set."""
    headers = stack.headers(tenant)
    try:
        if route == "upload":
            files = {"file": (payload["name"], f"# Note {payload['name']}\n\nA short note for the load bench.\n",
                              "text/markdown")}
            response = client.post(f"{stack.ask_url}/v1/documents", headers=headers, files=files)
            record.status = response.status_code
            if response.status_code != 202:
                record.error = response.text[:300]
            return
        if route == "ask":
            response = client.post(f"{stack.ask_url}/v1/ask", headers=headers, json=payload)
            record.status = response.status_code
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        else:
            with client.stream("POST", f"{stack.ask_url}/v1/ask", headers=headers, json=payload) as response:
                record.status = response.status_code
                body, event = {}, None
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event in ("final", "error"):
                        body = json.loads(line[5:])
                if event == "error":
                    record.status, record.error = 599, json.dumps(body)[:300]  # an error after the 200 header
        record.cache, record.degraded = body.get("cache"), body.get("degraded")
        if record.status >= 400 and not record.error:
            record.error = json.dumps(body)[:300] if body else response.text[:300]
    except httpx.HTTPError as exc:
        record.status, record.error = 0, f"{type(exc).__name__}: {exc}"[:300]


@dataclass
class Level:
    rate: float
    seconds: float
    records: list[Record] = field(default_factory=list)
    wall: float = 0.0

    def summary(self) -> dict:
        done = [r for r in self.records if r.status]
        asks = [r for r in self.records if r.route.startswith("ask")]
        errors = [r for r in self.records if r.status == 0 or r.status >= 500]
        routes = {}
        for route in ("ask", "ask-stream", "upload"):
            latencies = sorted(r.latency_ms for r in self.records if r.route == route and r.status)
            if latencies:
                routes[route] = {"n": len(latencies), **percentiles(latencies)}
        ask_latencies = sorted(r.latency_ms for r in asks if r.status)
        return {"rate": self.rate, "seconds": self.seconds, "sent": len(self.records),
                "achieved_rps": round(len(done) / self.wall, 2) if self.wall else 0.0,
                "errors": len(errors), "error_rate": round(len(errors) / max(1, len(self.records)), 4),
                "cache_hit_share": round(sum(r.cache == "hit" for r in asks)
                                         / max(1, len(asks)), 3),
                "degraded_share": round(sum(bool(r.degraded) for r in asks) / max(1, len(asks)), 3),
                "degraded": {label: sum(r.degraded == label for r in asks)
                             for label in sorted({r.degraded for r in asks if r.degraded})},
                "asks": percentiles(ask_latencies) if ask_latencies else {}, "routes": routes,
                "first_errors": [asdict(r) for r in errors[:3]]}


def percentiles(values: list[float]) -> dict:
    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "mean": round(statistics.fmean(values), 1)}


def run_level(stack: Stack, workload: Workload, rate: float, seconds: float, *, timeout: float = 30.0,
              on_tick=None) -> Level:
    """`rate` requests a second for `seconds`, each started at its scheduled time (open loop), then wait for the
    last answers (each request gives up after `timeout`). `on_tick(elapsed)` runs about every 0.1 s (chaos injects
    faults there)."""
    level = Level(rate, seconds)
    total = int(rate * seconds)
    client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
    started = time.monotonic()

    def one(index: int) -> None:
        route, kind, tenant, payload = workload.next()
        record = Record(route, kind, tenant, index / rate)
        send(client, stack, route, tenant, payload, record)
        record.latency_ms = (time.monotonic() - started - record.scheduled) * 1000  # from the scheduled start
        level.records.append(record)

    with ThreadPoolExecutor(max_workers=128, thread_name_prefix="load") as pool:
        next_tick = 0.0
        for index in range(total):
            due = started + index / rate
            while (now := time.monotonic()) < due:
                if on_tick and now - started >= next_tick:
                    on_tick(now - started)
                    next_tick = now - started + 0.1
                time.sleep(min(0.01, due - now))
            pool.submit(one, index)
    level.wall = time.monotonic() - started
    client.close()
    return level


def python_faq(stack: Stack) -> tuple[Path, list[str]]:
    """The Python FAQ sources (scripts/fetch_corpus.py) and their question headings."""
    sys.path.insert(0, str(REPO / "scripts"))
    from fetch_corpus import sources_dir

    from ragfn.retrieval.evalset import build_eval_set, load_queries

    out = stack.home / "evalset"
    build_eval_set(sources_dir() / "faq", out)
    faq = stack.add_docs(sources_dir() / "faq", "python-faq")
    for path in faq.iterdir():  # the FAQ's index is a bare toctree: no text to index (a 400, dead-lettered)
        if not (out / "corpus" / path.name).exists():
            path.unlink()
    return faq, [q.question for q in load_queries(out / "queries.jsonl")]


def paraphrase_pairs() -> list[tuple[str, str]]:
    pairs = json.loads((REPO / "bench" / "query_questions.json").read_text())["paraphrases"]
    return [(cached, asked) for cached, asked in pairs]


def prepare(stack: Stack, docs: Path, questions: list[str], paraphrases: list[tuple[str, str]], *,
            upload_every: int = UPLOAD_EVERY) -> Workload:
    for tenant in TENANTS:
        print(f"ingesting {docs} for {tenant} ...", file=sys.stderr, flush=True)
        stack.ingest(tenant, docs)
    workload = Workload([q for q in questions if q not in {c for c, _ in paraphrases}], paraphrases,
                        upload_every=upload_every)
    with httpx.Client(timeout=60) as client:
        for tenant in TENANTS:
            for question in workload.warm_up_questions():
                client.post(f"{stack.ask_url}/v1/ask", headers=stack.headers(tenant), json={"question": question})
                workload.seen(tenant, question)
    return workload


def profile(stack: Stack, workload: Workload, rate: float, seconds: float, out: Path) -> dict:
    """py-spy on the gateway and the retrieve function while `rate` runs: the frames most often on CPU."""
    import psutil

    pids = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid:
            for name, url in (("ask", stack.ask_url), ("retrieve", stack.function_url("retrieve")),
                              ("cache-check", stack.function_url("cache-check"))):
                if url.endswith(f":{conn.laddr.port}"):
                    pids[name] = conn.pid
    spy = str(Path(sys.executable).with_name("py-spy"))
    recorders = {name: subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                                         "--format", "raw", "--rate", "50", "--output", str(out / f"{name}.txt"),
                                         "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for name, pid in pids.items()}
    try:
        run_level(stack, workload, rate, seconds)
        for recorder in recorders.values():
            recorder.wait(timeout=seconds + 30)
    finally:
        for recorder in recorders.values():  # stopped even when the level or a wait failed
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait()
    top = {}
    for name, recorder in recorders.items():
        path = out / f"{name}.txt"
        top[name] = hottest(path) if path.exists() else {"error": recorder.stderr.read().decode()[-300:]}
    return top


def hottest(path: Path, n: int = 8) -> dict:
    """From py-spy's collapsed stacks: the samples of the process, and where they were spent: each stack counted
    once, at its deepest frame of ragfn or of the libraries it calls (fastembed, onnxruntime, chromadb, redis,
    httpx), so wrappers do not swamp the list."""
    interesting = ("ragfn/", "functions/", "fastembed", "onnxruntime", "chromadb", "redis/", "httpx", "httpcore",
                   "tokenizers", "numpy", "json/", "ssl")
    wrappers = ("serve/handler.py", "gateway/breaker.py", "core/telemetry.py", "serve/gateway_app.py")
    totals: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples += int(count)
        frames = [f for f in stack.split(";") if any(m in f for m in interesting)
                  and not any(w in f for w in wrappers)]
        leaf = frames[-1] if frames else "(other)"
        totals[leaf] = totals.get(leaf, 0) + int(count)
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:n]
    return {"samples": samples, "top": [{"frame": f[:160], "share": round(c / max(1, samples), 3)} for f, c in ranked]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="4,8,12,16,20,24,28", help="requests per second, one level each")
    parser.add_argument("--seconds", type=float, default=40.0, help="each level's length")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / ".ragfn" / "bench" / "load")
    args = parser.parse_args()
    home = fresh_home(args.out)
    report: dict = {"levels": []}
    with Stack(home) as stack:
        docs, questions = python_faq(stack)
        workload = prepare(stack, docs, questions, paraphrase_pairs())
        for rate in (float(r) for r in args.rates.split(",")):
            level = run_level(stack, workload, rate, args.seconds).summary()
            report["levels"].append(level)
            print(json.dumps({k: level[k] for k in ("rate", "achieved_rps", "errors", "cache_hit_share",
                                                    "degraded_share", "asks")}), file=sys.stderr, flush=True)
        good = [lv for lv in report["levels"] if lv["errors"] == 0 and lv["asks"].get("p95", 1e9) < KNEE_P95_MS]
        report["knee_rps"] = max((lv["rate"] for lv in good), default=None)
        if not args.no_profile:
            above = min((lv["rate"] for lv in report["levels"] if lv["rate"] > (report["knee_rps"] or 0)),
                        default=max(float(r) for r in args.rates.split(",")))
            report["profile"] = {"rate": above, "hottest": profile(stack, workload, above, 20, args.out)}
        report["restarts"] = stack.broker_status()
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
