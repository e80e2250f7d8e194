"""A real `ragfn dev` stack on loopback whose parts the reliability benches can stop, kill and slow down.

`ragfn dev` runs the functions, the broker and the gateway (and restarts a function that dies, as Knative would);
this module starts beside it, as separate processes it controls, what the faults hit: Redis (its own
`redis-server`, not the machine's), Chroma (`chroma run`), the predictor (the extractive engine, so the model does
not dominate the figures) and a TCP proxy in front of the retrieve function that can add a delay
(bench/delay_proxy.py). Two tenants, each with an API key. Everything it started is stopped when the `with` block
ends, failed or not.

    with Stack(home, corpus) as stack:
        stack.ingest("acme", corpus); stack.ask("acme", "Why is Python slow?")
        stack.stop("redis"); ...; stack.start("redis")
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from offline import offline_model_dir

from ragfn.cli.dev import FUNCTIONS
from ragfn.core.auth import ApiKeys
from ragfn.core.config import OFFLINE_MODEL

REPO = Path(__file__).resolve().parent.parent

TENANTS = {"acme": "bench-key-acme-0123456789", "globex": "bench-key-globex-0123456789"}
DEV_PORTS = len(FUNCTIONS) + 4  # the broker, the functions, the predictor, the gateway, the UI


def free_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports below the ephemeral range."""
    for base in random.sample(range(20_000, 32_000 - count), 200):
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports")


def fresh_home(out: Path) -> Path:
    """`out`/home, emptied: each bench run starts from nothing, and leaves its state there to look at."""
    import shutil

    home = out / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    return home


def wait_http(url: str, timeout: float = 120.0, ok=lambda r: r.status_code < 500) -> float:
    """Seconds until `url` answers as `ok` says; TimeoutError after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if ok(httpx.get(url, timeout=2.0)):
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


class Stack:
    def __init__(self, home: Path, *, extra_env: dict[str, str] | None = None, model_dir: Path | None = None) -> None:
        self.home = home.resolve()
        self.model_dir = model_dir
        self.logs = self.home / "bench-logs"
        self.extra_env = extra_env or {}
        self.children: dict[str, subprocess.Popen] = {}
        self._argv: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.state: dict = {}

    # -- the parts ------------------------------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        self.logs.mkdir(parents=True, exist_ok=True)
        base = free_ports(DEV_PORTS + 4)
        self.dev_port = base
        self.redis_port, self.chroma_port, self.llm_port, self.proxy_port = range(base + DEV_PORTS,
                                                                                   base + DEV_PORTS + 4)
        try:
            self._launch()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _launch(self) -> None:
        python, chroma = sys.executable, str(Path(sys.executable).with_name("chroma"))
        llm_key = "bench-llm-key-0123456789abcdef0123"
        keys_file = self.home / "bench-keys.json"
        keys_file.write_text(json.dumps({ApiKeys.hash(key): {"tenant": tenant, "groups": [], "name": tenant}
                                         for tenant, key in TENANTS.items()}))
        quiet = dict(os.environ, ANONYMIZED_TELEMETRY="False")
        self._define("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], quiet)
        self._define("chroma", [chroma, "run", "--path", str(self.home / "chroma"), "--host", "127.0.0.1",
                                "--port", str(self.chroma_port)], quiet)
        self._define("predictor", [python, "-m", "inference", "--http_port", str(self.llm_port), "--host",
                                   "127.0.0.1", "--model_name", "ragfn"],
                     quiet | {"RAGFN_LLM_ENGINE": "extractive", "RAGFN_LLM_API_KEY": llm_key,
                              "PYTHONPATH": str(REPO)})
        retrieve_port = self.dev_port + 1 + list(FUNCTIONS).index("retrieve")
        self.slow(0.0)
        self._define("proxy", [python, str(REPO / "bench" / "delay_proxy.py"), "--port", str(self.proxy_port),
                               "--target", str(retrieve_port), "--delay-file", str(self._delay_file)], quiet)
        for name in ("redis", "chroma", "predictor", "proxy"):
            self.start(name)
        env = dict(os.environ, RAGFN_HOME=str(self.home), RAGFN_EMBED_MODEL=OFFLINE_MODEL,
                   RAGFN_EMBED_MODEL_PATH=str(self.model_dir or offline_model_dir(REPO / ".ragfn")),
                   RAGFN_REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
                   RAGFN_CHROMA_URL=f"http://127.0.0.1:{self.chroma_port}",
                   RAGFN_LLM_URL=f"http://127.0.0.1:{self.llm_port}/v1", RAGFN_LLM_API_KEY=llm_key,
                   RAGFN_API_KEYS_FILE=str(keys_file), RAGFN_RETRIEVE_URL=f"http://127.0.0.1:{self.proxy_port}",
                   RAGFN_RATE_LIMIT="100000", RAGFN_READ_RATE_LIMIT="100000",
                   RAGFN_FILE_ROOTS=str(self.home / "docs"), **self.extra_env)
        for key in ("K_SINK", "RAGFN_SINK", "RAGFN_CACHE_URL", "RAGFN_JWT_SECRET", "RAGFN_TRACE_FILE"):
            env.pop(key, None)
        (self.home / "docs").mkdir(exist_ok=True)
        self._define("dev", [python, "-m", "ragfn", "dev", "--port", str(self.dev_port), "--chroma-port",
                             str(self.chroma_port), "--no-ui"], env)
        self.start("dev")
        state_file = self.home / "dev.json"
        deadline = time.monotonic() + 240
        while not state_file.exists():  # written whole (renamed into place)
            if self.children["dev"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ragfn dev did not start; see {self.logs / 'dev.log'}")
            time.sleep(0.3)
        self.state = json.loads(state_file.read_text())

    def _define(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self._argv[name] = (argv, env)

    def start(self, name: str) -> float:
        """Start a part (again); the seconds until it answers."""
        argv, env = self._argv[name]
        with (self.logs / f"{name}.log").open("ab") as out:  # the child keeps its own copy
            self.children[name] = subprocess.Popen(argv, env=env, cwd=str(REPO), start_new_session=True,
                                                   stdout=out, stderr=subprocess.STDOUT)
        if name in ("redis", "proxy"):
            port = self.redis_port if name == "redis" else self.proxy_port
            return self._wait(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close())
        if name == "chroma":
            return wait_http(f"http://127.0.0.1:{self.chroma_port}/api/v2/heartbeat", ok=lambda r: r.is_success)
        if name == "predictor":
            return wait_http(f"http://127.0.0.1:{self.llm_port}/v2/health/live", ok=lambda r: r.is_success)
        return 0.0

    @staticmethod
    def _wait(probe, timeout: float = 30.0) -> float:
        started = time.monotonic()
        while True:
            try:
                probe()
                return time.monotonic() - started
            except OSError:
                if time.monotonic() - started > timeout:
                    raise
                time.sleep(0.05)

    def stop(self, name: str, *, kill: bool = False) -> None:
        """Stop a part this module started: SIGTERM (or SIGKILL), its whole process group."""
        process = self.children.get(name)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def kill_function(self, name: str) -> int:
        """`kill -9` a function `ragfn dev` runs, as an out-of-memory kill ends a pod: the process dev started
        (gunicorn's master) and its workers, all at once, so nothing of it is left to fork a new worker; dev starts
        it again. The pid dev had started."""
        import psutil

        port = self.dev_port + 1 + list(FUNCTIONS).index(name)
        dev = self.children["dev"].pid
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                process = psutil.Process(conn.pid)
                while process.ppid() not in (dev, 0, 1):  # up from the listening worker to dev's own child
                    process = process.parent()
                if process.ppid() != dev:
                    raise RuntimeError(f"{name}'s port {port} is held by pid {conn.pid}, not a child of ragfn dev")
                for member in [process, *process.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        member.send_signal(signal.SIGKILL)
                return process.pid
        raise RuntimeError(f"no process listens on {name}'s port {port}")

    @property
    def _delay_file(self) -> Path:
        return self.home / "bench-retrieve-delay"

    def slow(self, seconds: float) -> None:
        """Make the proxy in front of retrieve hold each request `seconds` (0: pass it straight on)."""
        partial = self._delay_file.with_suffix(".tmp")
        partial.write_text(str(seconds))
        partial.replace(self._delay_file)

    def function_url(self, name: str) -> str:
        return self.state["functions"][f"ragfn-{name}"]

    def close(self) -> None:
        """Stop every part, each whatever happened stopping the others."""
        for name in ["dev", *[n for n in self.children if n != "dev"]]:
            try:
                self.stop(name)
            except Exception as exc:  # noqa: BLE001 - the rest must still be stopped
                print(f"stopping {name} failed: {exc!r}", file=sys.stderr)

    # -- using it -------------------------------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """The environment `ragfn dev` runs with: what a `ragfn` command against this stack needs."""
        return self._argv["dev"][1]

    @property
    def ask_url(self) -> str:
        return self.state["ask"]

    def ingest(self, tenant: str, path: Path, *, timeout: float = 900.0) -> dict:
        """`ragfn ingest --dev --tenant` (the broker, chunk, embed, index) of `path`, a folder or file under
        HOME/docs (the functions' file root), waiting until the broker is idle; RuntimeError when anything was
        dead-lettered."""
        before = self.broker_status()["dead_lettered"]
        result = subprocess.run([sys.executable, "-m", "ragfn", "ingest", "--dev", "--tenant", tenant, "--json",
                                 str(path)], cwd=str(REPO), env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"ingest failed: {result.stderr[-2000:]}")
        if (lost := self.broker_status()["dead_lettered"] - before) > 0:
            raise RuntimeError(f"ingest of {path} dead-lettered {lost} event(s); see `ragfn dlq list` and "
                               f"{self.home / 'logs'}")
        return json.loads(result.stdout)

    def add_docs(self, source: Path, name: str) -> Path:
        """A copy of `source` (a folder) under HOME/docs/`name`, where the functions may read it."""
        import shutil

        target = self.home / "docs" / name
        shutil.copytree(source, target, dirs_exist_ok=True)
        return target

    def headers(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TENANTS[tenant]}"}

    def broker_status(self) -> dict:
        return httpx.get(f"{self.state['broker']}/status", timeout=5).json()
