"""`ragfn dev` end to end: real functions-framework servers, the local broker, `chroma run`, a moto S3 server.

One test session starts the whole stack once; each test drives it the way a user or a bucket would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from conftest import DEV_PORTS, REPO, DevProcess, free_port, free_port_block

pytestmark = pytest.mark.e2e

GUIDE = "# Caching\n\nThe cache keeps answers for a day.\n\n## Invalidation\n\nA changed document evicts its answers.\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, model_dir, chat_server):
    from chat_server import API_KEY
    from moto.server import ThreadedMotoServer

    root = tmp_path_factory.mktemp("dev")
    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    env = dict(os.environ, RAGFN_HOME=str(root / "home"), RAGFN_EMBED_MODEL="sentence-transformers/all-MiniLM-L6-v2",
               RAGFN_EMBED_MODEL_PATH=str(model_dir), RAGFN_FILE_ROOTS=str(root / "docs"),
               RAGFN_TRACE_FILE=str(root / "traces.jsonl"), RAGFN_S3_ENDPOINT_URL=f"http://127.0.0.1:{moto_port}",
               AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
               # the background judge on: every answer sampled, to chat_server's stand-in for a capable judge model
               RAGFN_JUDGE_URL=chat_server.base_url, RAGFN_JUDGE_SERVED_NAME="word-judge",
               RAGFN_JUDGE_API_KEY=API_KEY, RAGFN_JUDGE_SAMPLE_RATE="1")
    for key in ("RAGFN_CHROMA_URL", "K_SINK"):
        env.pop(key, None)
    dev = DevProcess(root, env).start(timeout=120)
    yield {"root": root, "env": env, "state": dev.state, "moto_port": moto_port}
    dev.stop()
    moto.stop()
    assert not (root / "home" / "dev.json").exists(), "ragfn dev did not clean up on SIGTERM"


def cli(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragfn", *args], cwd=stack["root"], env=stack["env"],
                          capture_output=True, text=True, timeout=300)


def wait_idle(stack, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(f"{stack['state']['broker']}/status").json()
        if status["in_flight"] == 0:
            return status
        time.sleep(0.1)
    raise TimeoutError(status)


def stats(stack) -> dict:
    result = cli(stack, "stats", "--dev", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["collections"]


def send(stack, event_type: str, data, *, structured=False, **attributes) -> httpx.Response:
    """Into the dev broker, with the token `ragfn dev` keeps for its publishers (a SinkBinding's, in a cluster)."""
    event = CloudEvent({"type": event_type, "source": "test", **attributes}, data)
    headers, body = (to_structured if structured else to_binary)(event)
    token = Path(stack["state"]["sink_token_file"]).read_text().strip()
    return httpx.post(stack["state"]["broker"], headers=headers | {"Authorization": f"Bearer {token}"}, content=body)


def test_ingest_through_the_broker_makes_one_connected_trace(stack):
    docs = stack["root"] / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "caching.md").write_text(GUIDE)
    result = cli(stack, "ingest", str(docs), "--dev", "--json")
    assert result.returncode == 0, result.stderr
    assert stats(stack)["default"] == {"documents": 1, "chunks": 2}
    # without --dev the CLI notices the running stack and reads its Chroma server, not the folder under it
    plain = cli(stack, "stats", "--json")
    assert json.loads(plain.stdout)["collections"]["default"] == {"documents": 1, "chunks": 2}
    second = cli(stack, "dev", "--port", "1")
    assert second.returncode != 0 and "already runs" in second.stderr

    spans = [json.loads(line) for line in (stack["root"] / "traces.jsonl").read_text().splitlines()]
    root = next(s for s in spans if s["name"] == "ragfn.ingest" and s["parent_id"] is None)
    trace = [s for s in spans if s["trace_id"] == root["trace_id"]]
    ids = {s["span_id"] for s in trace}
    assert {s["name"] for s in trace} >= {"ragfn.ingest", "ragfn.chunk", "ragfn.embed", "ragfn.index"}
    assert {s["service"] for s in trace} >= {"ragfn-cli", "ragfn-chunk", "ragfn-embed", "ragfn-index"}
    assert all(s["parent_id"] in ids for s in trace if s is not root), "a span's parent is outside the trace"
    by_name = {s["name"]: s for s in trace}
    assert by_name["ragfn.chunk"]["parent_id"] == root["span_id"]
    assert by_name["ragfn.embed"]["parent_id"] == by_name["ragfn.chunk"]["span_id"]
    assert by_name["ragfn.index"]["parent_id"] == by_name["ragfn.embed"]["span_id"]


def test_s3_bucket_events_follow_creates_changes_and_deletes(stack):
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{stack['moto_port']}", region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="kb-docs")

    def put(body: str, sequencer: str) -> None:
        head = s3.put_object(Bucket="kb-docs", Key="team docs/faq.md", Body=body.encode(),
                             Metadata={"ragfn-tenant": "acme", "ragfn-groups": "eng"})
        record = {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                  "eventTime": "2026-11-21T10:00:00.000Z", "eventName": "ObjectCreated:Put",
                  "s3": {"s3SchemaVersion": "1.0", "configurationId": "ragfn", "bucket": {
                      "name": "kb-docs", "arn": "arn:aws:s3:::kb-docs"}, "object": {
                      "key": "team+docs/faq.md", "size": len(body), "eTag": head["ETag"].strip('"'),
                      "sequencer": sequencer}}}
        for _ in range(2):  # delivered twice, as at-least-once delivery may
            assert send(stack, "com.amazonaws.s3.notification", {"Records": [record]}).status_code == 202

    put(GUIDE, "0055AED6DCD90281E5")
    wait_idle(stack)
    assert stats(stack)["default"]["documents"] == 2
    put(GUIDE.replace("a day", "an hour"), "0055AED6DCD90281E6")
    wait_idle(stack)
    assert stats(stack)["default"] == {"documents": 2, "chunks": 4}

    removal = {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete",
                            "s3": {"bucket": {"name": "kb-docs"}, "object": {"key": "team+docs/faq.md",
                                                                        "sequencer": "0055AED6DCD90281E7"}}}]}
    s3.delete_object(Bucket="kb-docs", Key="team docs/faq.md")
    assert send(stack, "com.amazonaws.s3.notification", removal, structured=True).status_code == 202
    wait_idle(stack)
    assert stats(stack)["default"] == {"documents": 1, "chunks": 2}
    # without --dev the CLI notices the running stack and reads its Chroma server, not the folder under it
    plain = cli(stack, "stats", "--json")
    assert json.loads(plain.stdout)["collections"]["default"] == {"documents": 1, "chunks": 2}
    second = cli(stack, "dev", "--port", "1")
    assert second.returncode != 0 and "already runs" in second.stderr


def test_bad_objects_go_to_the_dead_letter_store_and_can_be_replayed(stack):
    docs = stack["root"] / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "empty.md").write_text("")
    before = stats(stack)
    assert send(stack, "dev.ragfn.document.upserted.v1", {"uri": f"file://{docs}/empty.md"}).status_code == 202
    assert send(stack, "dev.ragfn.document.upserted.v1", {"uri": f"file://{docs}/../../etc/passwd"}).status_code == 202
    wait_idle(stack)
    letters = json.loads(cli(stack, "dlq", "list", "--json").stdout)
    by_reason = {letter["event"]["data"]["uri"].rsplit("/", 1)[-1]: letter for letter in letters}
    assert by_reason["empty.md"]["status"] == 400 and by_reason["empty.md"]["attempts"] == 1
    assert "empty" in by_reason["empty.md"]["error"].lower()
    assert by_reason["passwd"]["status"] == 400 and ".." in by_reason["passwd"]["error"]
    assert stats(stack) == before  # nothing half-written

    (docs / "empty.md").write_text("Now it has content worth indexing.\n")  # the fix, then a replay
    replay = cli(stack, "dlq", "replay", by_reason["empty.md"]["id"])
    assert replay.returncode == 0, replay.stderr
    wait_idle(stack)
    assert stats(stack)["default"]["documents"] == before["default"]["documents"] + 1
    remaining = [letter["id"] for letter in json.loads(cli(stack, "dlq", "list", "--json").stdout)]
    assert by_reason["empty.md"]["id"] not in remaining


def test_prune_through_the_broker_removes_deleted_files(stack):
    folder = stack["root"] / "docs" / "team"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keep.md").write_text("# Keep\n\nThis file stays.\n")
    (folder / "drop.md").write_text("# Drop\n\nThis file goes away.\n")
    assert cli(stack, "ingest", str(folder), "--dev", "--json").returncode == 0
    before = stats(stack)["default"]["documents"]
    (folder / "drop.md").unlink()
    result = cli(stack, "ingest", str(folder), "--dev", "--prune", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deleted"] == [f"file://{folder}/drop.md"]
    assert stats(stack)["default"]["documents"] == before - 1


def test_ask_answers_through_the_dev_stacks_predictor(stack):
    docs = stack["root"] / "docs"
    (docs / "predictor.md").write_text("# Predictor\n\nThe dev stack starts a KServe predictor next to the functions.\n")
    assert cli(stack, "ingest", "--dev", str(docs / "predictor.md")).returncode == 0
    wait_idle(stack)
    predictor = stack["state"]["predictor"]
    assert stack["state"]["predictor_engine"] == "extractive"  # no GGUF under this RAGFN_HOME/models
    result = cli(stack, "ask", "What does the dev stack start?", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["degraded"] is None and "KServe predictor" in answer["answer"]
    metrics = httpx.get(predictor.removesuffix("/v1") + "/metrics").text
    assert 'ragfn_predictor_requests_total{model="ragfn",outcome="stop"}' in metrics
    # dev wires the gateway's signed calls by itself: the functions behind it refuse a caller named in the body
    for name in ("ragfn-retrieve", "ragfn-cache-check"):
        refused = httpx.post(stack["state"]["functions"][name], json={"question": "What does the dev stack start?",
                                                                      "tenant": ""})
        assert refused.status_code == 401, refused.text
    # and the broker's deliveries carry the Triggers' identities: an event posted straight to a function, or into
    # the broker without the publishers' token, is refused
    headers, body = to_binary(CloudEvent({"type": "dev.ragfn.document.upserted.v1", "source": "test"},
                                         {"uri": "file:///nowhere.md"}))
    for url in (stack["state"]["functions"]["ragfn-chunk"], stack["state"]["broker"]):
        assert httpx.post(url, headers=headers, content=body).status_code == 401


def test_sampled_answers_reach_the_background_judge_through_the_broker(stack):
    docs = stack["root"] / "docs"
    (docs / "judge.md").write_text("# Judge\n\nThe background judge scores sampled answers from the gateway.\n")
    assert cli(stack, "ingest", "--dev", str(docs / "judge.md")).returncode == 0
    wait_idle(stack)
    judge = stack["state"]["functions"]["ragfn-judge"]

    def scored() -> float:
        text = httpx.get(f"{judge}/metrics").text
        line = next(x for x in text.splitlines() if x.startswith('ragfn_judge_samples_total{outcome="scored"}'))
        return float(line.split()[-1])

    before = scored()
    key = Path(stack["state"]["dev_key_file"]).read_text().strip()
    answer = httpx.post(f"{stack['state']['ask']}/v1/ask", json={"question": "What does the background judge score?"},
                        headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 30
    while scored() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert scored() == before + 1
    metrics = httpx.get(f"{judge}/metrics").text
    final = answer.json()
    assert f'ragfn_answer_groundedness_count{{model="{final["model"]}",provider="{final["provider"]}"}} 1.0' in metrics
    assert httpx.get(f"{stack['state']['broker']}/status").json()["in_flight"] == 0


def test_a_taken_port_is_named_before_anything_starts(tmp_path, model_dir):
    import socket

    port = free_port_block(DEV_PORTS)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 3))  # the index function's port
        taken.listen()
        env = dict(os.environ, RAGFN_HOME=str(tmp_path / "home"), RAGFN_EMBED_MODEL_PATH=str(model_dir))
        env.pop("RAGFN_CHROMA_URL", None)
        done = subprocess.run([sys.executable, "-m", "ragfn", "dev", "--port", str(port), "--chroma-port",
                               str(port + DEV_PORTS - 1)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"port {port + 3} on 127.0.0.1 already in use" in done.stderr + done.stdout
    assert not (tmp_path / "home" / "logs" / "chroma.log").exists()  # nothing was started
