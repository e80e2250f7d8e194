"""A bounded soak: bench/load.py's mix at a fixed rate for --minutes, sampling every --every seconds the memory,
open files and threads of every process of the stack and the Redis keys; a plot (docs/soak.png) and the growth of
each over the second half, per hour. It stops by itself.

    .venv/bin/python bench/soak.py --rate 16 --minutes 20         # half the knee (docs/reliability.md)
    .venv/bin/python bench/soak.py --rate 16 --minutes 20 --caps 1000

--caps N lowers the two bounds on what Redis keeps (answers per cache scope, answers remembered for feedback per
tenant) from their defaults (10,000 and 20,000) to N, so that a 20-minute run reaches them and shows whether
Redis, and the cache's vectors held in memory, stay flat once full.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import redis
from load import UPLOAD_EVERY, paraphrase_pairs, prepare, python_faq, run_level
from stack import REPO, Stack, fresh_home


def role(cmdline: list[str]) -> str:
    """A process's part in the stack, from its command line."""
    text = " ".join(cmdline)
    if "functions_framework" in text and "--source" in cmdline:
        source = cmdline[cmdline.index("--source") + 1]
        target = cmdline[cmdline.index("--target") + 1] if "--target" in cmdline else "handle"
        name = Path(source).parent.name.replace("_", "-")
        return "cache-invalidate" if target == "invalidate" else name
    for marker, name in (("gateway_app", "ask"), ("-m inference", "predictor"), ("chroma run", "chroma"),
                         ("redis-server", "redis"), ("ragfn dev", "dev (broker)"), ("delay_proxy", "proxy (bench)")):
        if marker in text:
            return name
    return "other"


def sample(stack: Stack) -> dict:
    import psutil

    roots = [psutil.Process(p.pid) for p in stack.children.values() if p.poll() is None]
    processes = {}
    for root in roots:
        for process in [root, *root.children(recursive=True)]:
            try:
                with process.oneshot():
                    name = role(process.cmdline())
                    entry = processes.setdefault(name, {"rss_mib": 0.0, "fds": 0, "threads": 0})
                    entry["rss_mib"] += process.memory_info().rss / 2**20
                    entry["fds"] += process.num_fds()
                    entry["threads"] += process.num_threads()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    info = redis.Redis(port=stack.redis_port).info()
    return {"processes": processes, "redis_keys": redis.Redis(port=stack.redis_port).dbsize(),
            "redis_used_mib": info["used_memory"] / 2**20}


def growth_per_hour(times: list[float], values: list[float]) -> float:
    """The least-squares slope over the second half of the run, per hour."""
    half = len(times) // 2
    xs, ys = times[half:], values[half:]
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    denominator = sum((x - mx) ** 2 for x in xs) or 1.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / denominator * 3600


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [s["t"] / 60 for s in samples]
    names = sorted({n for s in samples for n in s["processes"]})
    figure, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for metric, axis, title in (("rss_mib", axes[0][0], "resident memory (MiB)"),
                                ("fds", axes[0][1], "open files"), ("threads", axes[1][0], "threads")):
        for name in names:
            axis.plot(times, [s["processes"].get(name, {}).get(metric, 0) for s in samples], label=name)
        axis.set_title(title)
    axes[1][1].plot(times, [s["redis_keys"] for s in samples], label="keys")
    axes[1][1].set_title("Redis keys")
    for axis in axes[1]:
        axis.set_xlabel("minutes")
    axes[0][0].legend(fontsize=7, ncol=2)
    figure.suptitle("ragfn dev under a steady load (bench/soak.py)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=16.0)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=REPO / ".ragfn" / "bench" / "soak")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "soak.png")
    parser.add_argument("--caps", type=int, default=None, help="RAGFN_CACHE_MAX_ENTRIES and "
                        "RAGFN_FEEDBACK_MAX_ANSWERS for the run (default: the settings' defaults)")
    parser.add_argument("--upload-every", type=int, default=UPLOAD_EVERY, help="one request in N is an upload, "
                        "which grows the index (0: none, so that the data stays the same size)")
    args = parser.parse_args()
    home = fresh_home(args.out)
    samples: list[dict] = []
    caps = {} if args.caps is None else {"RAGFN_CACHE_MAX_ENTRIES": str(args.caps),
                                         "RAGFN_FEEDBACK_MAX_ANSWERS": str(args.caps)}
    with Stack(home, extra_env=caps) as stack:
        docs, questions = python_faq(stack)
        workload = prepare(stack, docs, questions, paraphrase_pairs(), upload_every=args.upload_every)
        stop = threading.Event()
        started = time.monotonic()

        def sampler() -> None:
            while True:
                samples.append({"t": round(time.monotonic() - started, 1), **sample(stack)})
                if stop.wait(args.every):
                    return

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        level = run_level(stack, workload, args.rate, args.minutes * 60).summary()
        stop.set()
        thread.join()
    plot(samples, args.plot)
    times = [s["t"] for s in samples]
    names = sorted({n for s in samples for n in s["processes"]})
    growth = {name: {metric: round(growth_per_hour(times, [s["processes"].get(name, {}).get(metric, 0)
                                                           for s in samples]), 1)
                     for metric in ("rss_mib", "fds", "threads")} for name in names}
    growth["redis_keys"] = round(growth_per_hour(times, [s["redis_keys"] for s in samples]), 1)
    report = {"rate": args.rate, "minutes": args.minutes, "caps": args.caps, "upload_every": args.upload_every,
              "load": {k: level[k] for k in
              ("sent", "achieved_rps", "errors", "cache_hit_share", "degraded", "asks", "first_errors")},
              "first": samples[0], "last": samples[-1], "growth_per_hour_second_half": growth}
    (args.out / "report.json").write_text(json.dumps({"report": report, "samples": samples}, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
