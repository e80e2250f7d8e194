"""Ingestion loses nothing: several hundred files through `ragfn dev`'s broker while its parts fail, then the index
compared row by row with a clean ingest of the final files.

    .venv/bin/python bench/ingest_faults.py                  # the Python library docs (about 300 files)
    .venv/bin/python bench/ingest_faults.py --files 40

While `ragfn ingest --dev` runs (bench/stack.py's stack): the embed function is killed (SIGKILL), then the index
function (each with its whole process tree, as an out-of-memory kill ends a pod); Chroma is stopped for a while and
started again; some files are edited and some deleted, each announced as a bucket would; some events are delivered
twice (the same event id) and some out of order: an older delete after a newer upsert of a file that is there, and
an older upsert after a newer delete of a file that is gone. Then every dead letter is replayed (`ragfn dlq
replay`), and the index (collection `default`) must equal a clean ingest of the final files (collection `clean`):
no row lost, none stale (of a version the files no longer hold), none twice. tests/test_reliability.py runs a
small version (a few files, one kill).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from stack import REPO, Stack, fresh_home

TENANT = "acme"


@dataclass
class Plan:
    """When each fault happens, in seconds from the ingest's start; None leaves it out."""

    kill_embed: float | None = 3.0
    kill_index: float | None = 8.0
    chroma_down: tuple[float, float] | None = (12.0, 8.0)  # at, for
    edits_at: float | None = 15.0
    duplicates_at: float | None = 20.0
    collection: str = "default"
    edit: int = 10
    delete: int = 10
    duplicate: int = 20
    reorder: int = 5
    log: list[str] = field(default_factory=list)


def sample_files(target: Path, count: int) -> list[Path]:
    """`count` files of the Python library docs (scripts/fetch_corpus.py) under `target`, index pages left out."""
    sys.path.insert(0, str(REPO / "scripts"))
    from fetch_corpus import sources_dir

    target.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in (sources_dir() / "library").glob("*.rst.txt") if p.name != "index.rst.txt")
    chosen = []
    for path in sources:
        text = path.read_text(errors="replace")
        if len(text.split()) < 50:  # a bare toctree: no text to index
            continue
        (target / path.name).write_text(text)
        chosen.append(target / path.name)
        if len(chosen) == count:
            break
    return chosen


def post(stack: Stack, event_type: str, data: dict, *, event_id: str | None = None) -> None:
    """Into the dev broker, as a bucket notification would arrive (the dev publishers' token)."""
    event = CloudEvent({"type": event_type, "source": "bench/ingest_faults", "id": event_id or uuid.uuid4().hex},
                       data)
    headers, body = to_binary(event)
    token = Path(stack.state["sink_token_file"]).read_text().strip()
    response = httpx.post(stack.state["broker"], headers=dict(headers) | {"Authorization": f"Bearer {token}"},
                          content=body, timeout=10)
    response.raise_for_status()


def faults(stack: Stack, files: list[Path], plan: Plan, started: float, done: threading.Event) -> None:
    def at(offset: float | None) -> bool:
        if offset is None:
            return False
        while time.monotonic() - started < offset:
            if done.wait(0.05):
                return False
        return True

    steps = sorted([(plan.kill_embed, "kill-embed"), (plan.kill_index, "kill-index"),
                    (plan.chroma_down[0] if plan.chroma_down else None, "chroma"),
                    (plan.edits_at, "edits"), (plan.duplicates_at, "duplicates")],
                   key=lambda step: (step[0] is None, step[0] or 0))
    for offset, step in steps:
        if not at(offset):
            continue
        if step == "kill-embed":
            plan.log.append(f"{time.monotonic() - started:.1f}s kill -9 embed (pid {stack.kill_function('embed')})")
        elif step == "kill-index":
            plan.log.append(f"{time.monotonic() - started:.1f}s kill -9 index (pid {stack.kill_function('index')})")
        elif step == "chroma":
            stack.stop("chroma")
            plan.log.append(f"{time.monotonic() - started:.1f}s chroma stopped for {plan.chroma_down[1]:.0f}s")
            time.sleep(plan.chroma_down[1])
            stack.start("chroma")
            plan.log.append(f"{time.monotonic() - started:.1f}s chroma back")
        elif step == "edits":
            edit_and_delete(stack, files, plan)
            plan.log.append(f"{time.monotonic() - started:.1f}s edited {plan.edit}, deleted {plan.delete} files")
        elif step == "duplicates":
            duplicate_and_reorder(stack, files, plan)
            plan.log.append(f"{time.monotonic() - started:.1f}s {plan.duplicate} duplicate deliveries, {plan.reorder} "
                            f"late older deletes of files still there, {plan.reorder} late older upserts of deleted "
                            "files")


def edit_and_delete(stack: Stack, files: list[Path], plan: Plan) -> None:
    for path in files[:plan.edit]:
        path.write_text(path.read_text() + "\n\nEdited during the ingestion bench: this paragraph is new.\n")
        post(stack, "dev.ragfn.document.upserted.v1", {"uri": path.as_uri(), "tenant": TENANT,
                                                        "collection": plan.collection})
    for path in files[plan.edit:plan.edit + plan.delete]:
        path.unlink()
        post(stack, "dev.ragfn.document.deleted.v1", {"uri": path.as_uri(), "collection": plan.collection})


def duplicate_and_reorder(stack: Stack, files: list[Path], plan: Plan) -> None:
    kept = [p for p in files if p.exists()]
    for path in kept[-plan.duplicate:]:  # the same event, delivered twice
        event_id = hashlib.sha256(f"dup:{path}".encode()).hexdigest()[:32]
        for _ in range(2):
            post(stack, "dev.ragfn.document.upserted.v1", {"uri": path.as_uri(), "tenant": TENANT,
                                                            "collection": plan.collection}, event_id=event_id)
    now, older = time.time_ns() // 1000, time.time_ns() // 1000 - 10_000_000
    upsert, delete = "dev.ragfn.document.upserted.v1", "dev.ragfn.document.deleted.v1"
    for path in files[:plan.reorder]:  # edited, still there: the upsert, then an older delete arriving late
        post(stack, upsert, {"uri": path.as_uri(), "tenant": TENANT, "collection": plan.collection, "sequence": now})
        post(stack, delete, {"uri": path.as_uri(), "collection": plan.collection, "sequence": older})
    for path in files[plan.edit:plan.edit + plan.reorder]:  # deleted: the delete, then an older upsert arriving late
        post(stack, delete, {"uri": path.as_uri(), "collection": plan.collection, "sequence": now})
        post(stack, upsert, {"uri": path.as_uri(), "tenant": TENANT, "collection": plan.collection, "sequence": older})


def wait_idle(stack: Stack, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while stack.broker_status()["in_flight"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the broker still has work after {timeout:.0f} s")
        time.sleep(0.2)


def replay_dead_letters(stack: Stack, rounds: int = 3) -> list[dict]:
    """`ragfn dlq replay` every letter, until none is left or `rounds` ran; what each round found."""
    env = stack.env
    found = []
    for _ in range(rounds):
        listed = subprocess.run([sys.executable, "-m", "ragfn", "dlq", "list", "--json"], cwd=str(REPO), env=env,
                                capture_output=True, text=True, timeout=60)
        letters = json.loads(listed.stdout or "[]")
        found.append({"letters": len(letters), "why": sorted({str(letter.get("status")) for letter in letters})})
        if not letters:
            break
        for letter in letters:
            subprocess.run([sys.executable, "-m", "ragfn", "dlq", "replay", letter["id"]], cwd=str(REPO), env=env,
                           capture_output=True, text=True, timeout=60)
        wait_idle(stack)
    return found


def snapshot(stack: Stack, collection: str) -> dict[str, tuple]:
    """Row id -> (text hash, document version, tenant) of every chunk row of `collection`."""
    from ragfn.core.config import Settings
    from ragfn.serve.runtime import Runtime

    settings = Settings(home=stack.home, chroma_url=f"http://127.0.0.1:{stack.chroma_port}")
    rows: dict[str, tuple] = {}
    for page in Runtime(settings).index.rows(collection):
        for row_id, text, meta in zip(page.ids, page.texts, page.metadatas, strict=True):
            if row_id in rows:
                raise AssertionError(f"row {row_id} listed twice")
            rows[row_id] = (hashlib.sha256(text.encode()).hexdigest()[:16], meta.get("version"), meta.get("tenant"))
    return rows


def compare(faulty: dict[str, tuple], clean: dict[str, tuple]) -> dict:
    lost = sorted(set(clean) - set(faulty))
    extra = sorted(set(faulty) - set(clean))  # rows of versions or documents the final files no longer hold
    differ = sorted(i for i in set(clean) & set(faulty) if clean[i] != faulty[i])
    docs = {i.split("#", 1)[0] for i in clean}
    return {"rows": len(faulty), "clean_rows": len(clean), "documents": len(docs), "lost": len(lost),
            "stale": len(extra), "different": len(differ), "examples": (lost + extra + differ)[:5]}


def run(stack: Stack, folder: Path, files: list[Path], plan: Plan, *, clean: str = "clean") -> dict:
    """Ingest `folder` into plan.collection under the plan's faults, repair, ingest it clean into `clean`, compare."""
    started = time.monotonic()
    done = threading.Event()
    failed: list[BaseException] = []

    def inject() -> None:
        try:
            faults(stack, files, plan, started, done)
        except BaseException as exc:  # noqa: BLE001 - raised again below, in the caller's thread
            failed.append(exc)

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    ingest = subprocess.run([sys.executable, "-m", "ragfn", "ingest", "--dev", "--tenant", TENANT, "--collection",
                             plan.collection, "--json", str(folder)], cwd=str(REPO), env=stack.env,
                            capture_output=True, text=True, timeout=3600)
    injector.join()  # every planned fault happened, even if the ingest finished first
    done.set()
    if failed:
        raise RuntimeError(f"a fault could not be injected (done: {plan.log})") from failed[0]
    wait_idle(stack)
    ingest_seconds = time.monotonic() - started
    dead = replay_dead_letters(stack)
    finished = subprocess.run([sys.executable, "-m", "ragfn", "ingest", "--dev", "--tenant", TENANT, "--collection",
                               clean, "--json", str(folder)], cwd=str(REPO), env=stack.env,
                           capture_output=True, text=True, timeout=3600)
    if finished.returncode != 0:
        raise RuntimeError(f"the clean ingest failed: {finished.stderr[-1500:]}")
    wait_idle(stack)
    return {"files": len(files), "final_files": sum(p.exists() for p in files), "ingest_exit": ingest.returncode,
            "ingest_seconds": round(ingest_seconds, 1), "faults": plan.log, "dead_letters": dead,
            **compare(snapshot(stack, plan.collection), snapshot(stack, clean))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / ".ragfn" / "bench" / "ingest_faults")
    args = parser.parse_args()
    home = fresh_home(args.out)
    with Stack(home) as stack:
        folder = stack.home / "docs" / "library"
        files = sample_files(folder, args.files)
        report = run(stack, folder, files, Plan())
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
