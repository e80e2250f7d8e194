"""`ragfn dev`: the functions as real functions-framework servers behind the local broker, the predictor, the ask
gateway and the chat UI."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ragfn.cli.dev_chat import (
    dev_key_path,
    ensure_llm_key,
    ensure_service_keys,
    gateway_env,
    ui_available,
    ui_command,
)
from ragfn.cli.dev_children import Children
from ragfn.cli.dev_events import SinkTokenWriter, delivery_env, dev_broker_audience, maintenance_timer
from ragfn.core.config import Settings
from ragfn.core.errors import ConfigError, Unavailable
from ragfn.eventing.broker import LocalBroker
from ragfn.eventing.dead_letters import DeadLetterStore
from ragfn.eventing.dev_issuer import DevIssuer
from ragfn.eventing.triggers import Trigger, load_triggers

# Service name (as Triggers name it, without "ragfn-") -> (folder under functions/, functions-framework target)
FUNCTIONS = {
    "chunk": ("chunk", "handle"),
    "embed": ("embed", "handle"),
    "index": ("index", "handle"),
    "retrieve": ("retrieve", "handle"),
    "cache-check": ("cache_check", "handle"),
    "cache-invalidate": ("cache_check", "invalidate"),
    "resync": ("resync", "handle"),
    "bucket-events": ("bucket_events", "handle"),
    "dead-letter": ("dead_letter", "handle"),
    "judge": ("judge", "handle"),  # idle unless RAGFN_JUDGE_URL is set: then the gateway samples answers to it
    "maintain": ("maintain", "handle"),  # pinged every RAGFN_MAINTENANCE_INTERVAL_SECONDS (see maintenance_timer)
}


@dataclass(frozen=True)
class DevPorts:
    broker: int
    chroma: int

    def function(self, name: str) -> int:
        return self.broker + 1 + list(FUNCTIONS).index(name)

    @property
    def predictor(self) -> int:
        return self.broker + 1 + len(FUNCTIONS)

    @property
    def ask(self) -> int:
        return self.predictor + 1

    @property
    def ui(self) -> int:
        return self.predictor + 2


def repo_root() -> Path:
    for candidate in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (candidate / "functions").is_dir() and (candidate / "eventing" / "triggers").is_dir():
            return candidate
    raise ConfigError("cannot find functions/ and eventing/triggers/", hint="run `ragfn dev` from the ragfn checkout")


def dev_state_path(settings: Settings) -> Path:
    return settings.home / "dev.json"


def read_dev_state(settings: Settings) -> dict:
    path = dev_state_path(settings)
    if not path.is_file():
        raise ConfigError(f"no running `ragfn dev` found ({path} is missing)", hint="start one with `ragfn dev`")
    return json.loads(path.read_text())


def running_dev_state(settings: Settings) -> dict | None:
    """The state of a `ragfn dev` that is still alive, or None."""
    try:
        state = read_dev_state(settings)
        os.kill(int(state["pid"]), 0)
    except (ConfigError, ProcessLookupError, KeyError, ValueError, json.JSONDecodeError):
        return None
    except PermissionError:  # alive, owned by someone else
        pass
    return state


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"{url} exited with code {process.returncode} before it was ready")
        try:
            response = httpx.get(url, timeout=1.0)
            if response.status_code < 500:
                return
            if _body(response).get("error") == "ConfigError":  # a setting that cannot work: waiting will not help
                raise ConfigError(f"{url} is not ready: {response.json()['message']}", hint=response.json().get("hint"))
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise Unavailable(f"{url} was not ready within {timeout:.0f}s")


def _body(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def check_ports_free(host: str, ports: list[int]) -> None:
    """Fail before starting anything when a port is taken, naming it, instead of a function dying half-way up."""
    busy = []
    for port in ports:
        with socket.socket() as sock:
            # as the servers bind: a port left in TIME_WAIT by the last `ragfn dev` is free, a listening one is not
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                busy.append(port)
    if busy:
        raise ConfigError(f"port{'s' if len(busy) > 1 else ''} {', '.join(map(str, busy))} on {host} already in use",
                          hint="choose others with --port (the functions, the predictor, the gateway and the UI "
                               f"take the next {len(FUNCTIONS) + 3}) and --chroma-port")


def start(settings: Settings, *, host: str, ports: DevPorts, log_dir: Path, triggers: list[Trigger],
          issuer: DevIssuer, ui: bool = True) -> tuple[Children, dict]:
    root = repo_root()
    check_ports_free(host, [ports.broker, *map(ports.function, FUNCTIONS), ports.ask]
                     + ([ports.predictor] if starts_predictor(settings) else [])
                     + ([ports.ui] if ui and ui_available() else [])
                     + ([] if settings.chroma_url or settings.store == "lancedb" else [ports.chroma]))
    log_dir.mkdir(parents=True, exist_ok=True)
    children = Children()
    try:
        return children, _launch(settings, root, host, ports, log_dir, children, triggers, issuer, ui)
    except BaseException:  # a service that failed to come up must not leave the others running
        children.stop_all()
        raise


def _launch(settings: Settings, root: Path, host: str, ports: DevPorts, log_dir: Path,
            children: Children, triggers: list[Trigger], issuer: DevIssuer, ui: bool) -> dict:
    broker_url = f"http://{host}:{ports.broker}"
    sink_token = SinkTokenWriter(issuer, settings.home.resolve() / "oidc" / "token")
    sink_token.write()
    env = dict(os.environ, RAGFN_HOME=str(settings.home.resolve()), K_SINK=broker_url,
               RAGFN_SINK_TOKEN_FILE=str(sink_token.path),
               PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    # the functions run in the checkout; `ragfn ingest --dev PATH` names files under the folder dev started in
    env.setdefault("RAGFN_FILE_ROOTS", str(Path.cwd()))
    env["RAGFN_SERVICE_KEYS_FILE"] = str(ensure_service_keys(settings).resolve())  # gateway -> retrieve, cache-check
    chroma_url = settings.chroma_url
    if settings.store == "lancedb":
        chroma_url = None  # every function opens the same LanceDB folder or bucket; no server to start
    elif not chroma_url:
        # Several processes must not open one embedded Chroma folder, so dev serves it with `chroma run`.
        chroma_url = f"http://{host}:{ports.chroma}"
        chroma = Path(sys.executable).with_name("chroma")
        process = children.spawn("chroma", [str(chroma), "run", "--path", str(settings.chroma_path.resolve()),
                                            "--host", host, "--port", str(ports.chroma)],
                                 env=dict(os.environ, ANONYMIZED_TELEMETRY="False"), log_path=log_dir / "chroma.log")
        wait_ready(f"{chroma_url}/api/v2/heartbeat", process)
    if chroma_url:
        env["RAGFN_CHROMA_URL"] = chroma_url
    urls, started = {}, []
    for name, (folder, target) in FUNCTIONS.items():
        port = ports.function(name)
        urls[f"ragfn-{name}"] = f"http://{host}:{port}"
        started.append(children.spawn(
            name, [sys.executable, "-m", "functions_framework", "--target", target, "--source",
                   str(root / "functions" / folder / "main.py"), "--host", host, "--port", str(port)],
            env=env | delivery_env(f"ragfn-{name}", triggers, f"{broker_url}/openid/v1/jwks"), cwd=str(root),
            log_path=log_dir / f"{name}.log"))
    for (name, url), process in zip(urls.items(), started, strict=True):
        try:
            wait_ready(url, process)
        except Unavailable as exc:
            log = log_dir / f"{name.removeprefix('ragfn-')}.log"
            raise Unavailable(f"{name}: {exc}", hint=f"its log is {log}") from exc
    state = {"broker": broker_url, "chroma_url": chroma_url, "functions": urls,
             "sink_token_file": str(sink_token.path)}
    if starts_predictor(settings):
        state |= _launch_predictor(settings, root, host, ports.predictor, env, log_dir, children)
    return state | _launch_chat(settings, root, host, ports, env, state, log_dir, children, ui)


def _spawn(name: str, argv: list[str], env: dict, root: Path, log_dir: Path, children: Children,
           ready_url: str) -> None:
    process = children.spawn(name, argv, env=env, cwd=str(root), log_path=log_dir / f"{name}.log")
    try:
        wait_ready(ready_url, process)
    except Unavailable as exc:
        raise Unavailable(f"{name}: {exc}", hint=f"its log is {log_dir / f'{name}.log'}") from exc


def _launch_chat(settings: Settings, root: Path, host: str, ports: DevPorts, env: dict, state: dict,
                 log_dir: Path, children: Children, ui: bool) -> dict:
    """The ask gateway over the dev functions and predictor, then the Streamlit chat over the gateway."""
    gateway, key = gateway_env(settings, state["functions"], state.get("predictor"))
    ask_url = f"http://{host}:{ports.ask}"
    _spawn("ask", [sys.executable, "-m", "ragfn.serve.gateway_app", "--host", host, "--port", str(ports.ask)],
           env | gateway, root, log_dir, children, ask_url)
    chat = {"ask": ask_url, "dev_key_file": str(dev_key_path(settings).resolve()) if key else None}
    if ui and ui_available():
        ui_url = f"http://{host}:{ports.ui}"
        _spawn("ui", ui_command(root, host, ports.ui), env | {"RAGFN_UI_GATEWAY_URL": ask_url}, root, log_dir,
               children, f"{ui_url}/_stcore/health")
        chat["ui"] = ui_url
    return chat


def predictor_available() -> bool:
    # ragfn[inference]; dev runs without it, answering extractively
    return importlib.util.find_spec("kserve") is not None


def starts_predictor(settings: Settings) -> bool:
    """Dev starts a predictor unless RAGFN_LLM_URL names one already (a model server of your own)."""
    return predictor_available() and not settings.llm_url


def predictor_engine(settings: Settings) -> dict[str, str]:
    """RAGFN_LLM_ENGINE/MODEL when set; else the first GGUF under $RAGFN_HOME/models (scripts/fetch_llm.py puts
    SmolLM2 there) on llama.cpp; else the model-free extractive engine."""
    if os.environ.get("RAGFN_LLM_ENGINE"):
        return {}
    ggufs = sorted((settings.home / "models").glob("*.gguf"))
    if ggufs:
        return {"RAGFN_LLM_ENGINE": "llamacpp", "RAGFN_LLM_MODEL": str(ggufs[0].resolve())}
    return {"RAGFN_LLM_ENGINE": "extractive"}


def _launch_predictor(settings: Settings, root: Path, host: str, port: int, env: dict, log_dir: Path,
                      children: Children) -> dict:
    engine = predictor_engine(settings)
    # listening is enough: the model loads in the background, and the gateway copes with a cold predictor
    # on `host` only (KServe listens on every address otherwise), behind the key the dev gateway sends
    _spawn("predictor", [sys.executable, "-m", "inference", "--http_port", str(port), "--host", host, "--model_name",
                         settings.llm_served_name], env | engine | {"RAGFN_LLM_API_KEY": ensure_llm_key(settings)},
           root, log_dir, children, f"http://{host}:{port}/v2/health/live")
    return {"predictor": f"http://{host}:{port}/v1",
            "predictor_engine": engine.get("RAGFN_LLM_ENGINE", os.environ.get("RAGFN_LLM_ENGINE", ""))}


def run(settings: Settings, *, host: str = "127.0.0.1", ports: DevPorts, on_ready=print, ui: bool = True) -> None:
    if running := running_dev_state(settings):
        raise ConfigError(f"`ragfn dev` already runs for {settings.home} (pid {running['pid']}, {running['broker']})",
                          hint="stop it first, or use another RAGFN_HOME")
    log_dir = settings.home / "logs"
    triggers = load_triggers(repo_root() / "eventing" / "triggers")
    issuer = DevIssuer(f"http://{host}:{ports.broker}")
    children, state = start(settings, host=host, ports=ports, log_dir=log_dir, triggers=triggers, issuer=issuer,
                            ui=ui)
    broker = LocalBroker(triggers, state["functions"], DeadLetterStore(settings.dead_letter_path), issuer=issuer,
                         audience=dev_broker_audience())
    try:
        server = broker.serve(host, ports.broker)
    except BaseException:
        children.stop_all()
        raise
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    threading.Thread(target=maintenance_timer, args=(state["functions"]["ragfn-maintain"],
                                                     settings.maintenance_interval_seconds, stop, issuer),
                     daemon=True, name="maintenance-timer").start()
    threading.Thread(target=SinkTokenWriter(issuer, Path(state["sink_token_file"])).run, args=(stop,), daemon=True,
                     name="sink-token").start()
    threading.Thread(target=children.run, args=(stop,), daemon=True, name="supervisor").start()
    partial = dev_state_path(settings).with_suffix(".tmp")  # readers poll for the file: it appears whole
    partial.write_text(json.dumps(state | {"pid": os.getpid(), "logs": str(log_dir)}, indent=2))
    partial.replace(dev_state_path(settings))
    on_ready(state)
    try:
        stop.wait()
    finally:
        dev_state_path(settings).unlink(missing_ok=True)
        server.shutdown()
        children.stop_all()
