"""The `ragfn` command line: ingest, stats, dev and the dead-letter store."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ragfn.cli import query as query_cli
from ragfn.core.config import Settings, load_settings
from ragfn.core.errors import RagfnError
from ragfn.core.profile import PROFILE_ENV

app = typer.Typer(help="ragfn: retrieval-augmented generation as small CloudEvents functions.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
dlq = typer.Typer(help="Inspect, replay and drop dead letters (`ragfn dev`'s, and a cluster's in Redis).",
                  no_args_is_help=True)
app.add_typer(dlq, name="dlq")
err = Console(stderr=True, soft_wrap=True)


@app.callback()
def main(profile: Annotated[Optional[Path], typer.Option(
        "--profile", help="a TOML file of tuned settings (the notebooks write them); RAGFN_* variables still win",
        dir_okay=False)] = None) -> None:
    if profile is not None:
        os.environ[PROFILE_ENV] = str(profile.resolve())  # `ragfn dev`'s servers inherit it too


def _settings(**overrides) -> Settings:
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _fail(exc: Exception) -> None:
    err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2 if isinstance(exc, RagfnError) and exc.status == 400 else 1)


def _runtime(settings: Settings, *, dev: bool = False):
    from ragfn.cli.dev import read_dev_state, running_dev_state
    from ragfn.core.telemetry import configure_tracing
    from ragfn.serve.runtime import Runtime

    configure_tracing(settings, "ragfn-cli")
    running = running_dev_state(settings)
    if dev or (running and not settings.chroma_url):
        # A running `ragfn dev` serves RAGFN_HOME's Chroma folder; opening it embedded as well could corrupt it.
        settings = settings.model_copy(update={"chroma_url": (running or read_dev_state(settings))["chroma_url"]})
    if running and running.get("predictor") and not settings.llm_url:  # answer with the dev stack's predictor,
        from ragfn.cli.dev_chat import ensure_llm_key  # behind the key dev gave it

        settings = settings.model_copy(update={"llm_url": running["predictor"],
                                               "llm_api_key": settings.llm_api_key or ensure_llm_key(settings)})
    return Runtime(settings)


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="files, folders, file://, s3:// or gs:// URIs")],
    collection: Annotated[str, typer.Option(help="collection to index into")] = "default",
    tenant: Annotated[Optional[str], typer.Option(help="tenant that owns the documents")] = None,
    groups: Annotated[str, typer.Option(help="comma-separated ACL groups allowed to read them")] = "",
    prune: Annotated[bool, typer.Option(help="delete indexed documents under these roots whose files are gone")] = False,
    dev: Annotated[bool, typer.Option("--dev", help="send events to a running `ragfn dev` instead of in-process")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Upsert new and changed documents; unchanged ones are skipped."""
    from ragfn.core.uris import to_uri
    from ragfn.ingest.walk import ingest as run_ingest
    from ragfn.ingest.walk import ingest_via_broker

    try:
        # Paths named on the command line are trusted roots for file:// reads.
        roots = [Path(to_uri(p)[len("file://"):]) for p in paths if "://" not in p or p.startswith("file://")]
        settings = _settings()
        settings = settings.model_copy(update={"file_roots": [*settings.file_roots, *roots] or settings.file_roots})
        runtime = _runtime(settings, dev=dev)
        group_list = tuple(g.strip() for g in groups.split(",") if g.strip())
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True, disable=not err.is_terminal and as_json) as progress:
            task = progress.add_task("ingesting", total=None)

            def show(current: str, done: int, total: int) -> None:
                progress.update(task, completed=done, total=total or None, description=current[-60:] or "done")

            if dev:
                from ragfn.cli.dev import read_dev_state

                state = read_dev_state(settings)
                result = ingest_via_broker(paths, runtime, state["broker"], collection=collection, tenant=tenant,
                                           groups=group_list, prune=prune, on_progress=show,
                                           token_file=_sink_token_file(state, settings))
            else:
                report = run_ingest(paths, runtime, collection=collection, tenant=tenant, groups=group_list,
                                    prune=prune, on_progress=show)
                result = {"documents": report.counts(), "chunks_embedded": report.chunks_embedded,
                          "chunks_reused": report.chunks_reused, "removed": report.removed, "errors": report.errors}
        result["stats"] = runtime.index.stats()
    except (RagfnError, TimeoutError) as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        _print_report(result)
    if result.get("errors"):
        raise typer.Exit(1)  # scripts notice; everything else was still ingested


def _print_report(result: dict) -> None:
    for uri, why in result.get("errors", {}).items():
        err.print(f"[yellow]rejected[/yellow] {uri}: {why}")
    if "documents" in result:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(result["documents"].items())) or "nothing to do"
        print(f"documents: {counts}; chunks embedded: {result['chunks_embedded']}, reused: {result['chunks_reused']}")
    else:
        print(f"sent {result['sent']} document events to the dev broker; {result['broker']}")
    for uri in result.get("removed") or result.get("deleted") or []:
        print(f"removed {uri}")
    for name, numbers in result["stats"].items():
        print(f"collection {name}: {numbers['documents']} documents, {numbers['chunks']} chunks")


def _query_runtime():
    return _runtime(_settings())


query_cli.register(app, _query_runtime, _fail)


@app.command()
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    dev: Annotated[bool, typer.Option("--dev", help="read the index of a running `ragfn dev`")] = False,
) -> None:
    """Documents and chunks per collection; answer feedback (thumbs up/down) when RAGFN_REDIS_URL is set."""
    try:
        runtime = _runtime(_settings(), dev=dev)
        collections = runtime.index.stats()
    except RagfnError as exc:
        _fail(exc)
    report: dict = {"collections": collections}
    if runtime.feedback is not None:
        try:
            report["feedback"] = runtime.feedback.counts()
        except RagfnError as exc:  # the index figures stand on their own
            err.print(f"[yellow]feedback unavailable:[/yellow] {exc}")
    if as_json:
        print(json.dumps(report))
        return
    for name, numbers in collections.items():
        print(f"{name}: {numbers['documents']} documents, {numbers['chunks']} chunks")
    if not collections:
        print("no collections yet: run `ragfn ingest PATH`")
    if "feedback" in report:
        print(f"feedback: {report['feedback']['up']} up, {report['feedback']['down']} down")


@app.command()
def maintain(dev: Annotated[bool, typer.Option("--dev", help="the index of a running `ragfn dev`")] = False) -> None:
    """One pass of index maintenance (what functions/maintain runs on its PingSource): LanceDB's compaction,
    indexes and old versions; on both stores, rows from before the table-per-tenant layout moved to their tables."""
    try:
        report = _runtime(_settings(), dev=dev).maintenance.run()
    except RagfnError as exc:
        _fail(exc)
    print(json.dumps(report))
    if report.get("outcome") == "failed":
        raise typer.Exit(1)


@app.command("dev")
def dev_command(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="broker port; the functions, the predictor, the ask gateway and the chat "
                                           "UI take the 12 after it")] = 8080,
    chroma_port: Annotated[int, typer.Option(help="port for `chroma run` when RAGFN_CHROMA_URL is unset")] = 8000,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="start the chat UI (when ragfn[ui] is installed)")] = True,
) -> None:
    """Run the functions behind the local broker, the predictor, the ask gateway and the chat UI, until Ctrl-C."""
    from ragfn.cli.dev import DevPorts, run

    def ready(state: dict) -> None:
        err.print(f"ragfn dev ready: broker {state['broker']}, chroma {state['chroma_url']}")
        for name, url in state["functions"].items():
            err.print(f"  {name}: {url}")
        if state.get("predictor"):
            err.print(f"  predictor ({state['predictor_engine']}): {state['predictor']}")
        err.print(f"  ask gateway: {state['ask']}")
        if state.get("ui"):
            err.print(f"[bold]chat: {state['ui']}[/bold]")
        if state.get("dev_key_file"):
            err.print(f"  sign in with the key in {state['dev_key_file']}: "
                      f"{Path(state['dev_key_file']).read_text().strip()}")
        sys.stderr.flush()

    try:
        run(_settings(), host=host, ports=DevPorts(broker=port, chroma=chroma_port), on_ready=ready, ui=ui)
    except RagfnError as exc:
        _fail(exc)


def _dead_letters():
    from ragfn.eventing.dead_letters import open_dead_letters

    return open_dead_letters(_settings())


@dlq.command("list")
def dlq_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Dead letters, oldest first: `ragfn dev`'s, and the cluster's Redis stream when RAGFN_REDIS_URL is set."""
    try:
        letters = _dead_letters().list()
    except RagfnError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps([letter.__dict__ for letter in letters], indent=2))
        return
    for letter in letters:
        print(f"{letter.id}  {letter.failed_at}  {letter.event.get('type')}  -> {letter.trigger}  "
              f"[{letter.status}] {letter.error[:100]}")


@dlq.command("show")
def dlq_show(letter_id: str) -> None:
    """One dead letter in full, as JSON."""
    try:
        print(json.dumps(_dead_letters().get(letter_id).__dict__, indent=2))
    except RagfnError as exc:
        _fail(exc)


@dlq.command("replay")
def dlq_replay(letter_id: str, sink: Annotated[Optional[str], typer.Option(
        help="broker URL to send it to; default: the running `ragfn dev`, else K_SINK / RAGFN_SINK")] = None) -> None:
    """Send a dead letter back through a broker, then drop it."""
    import httpx

    from ragfn.cli.dev import running_dev_state
    from ragfn.core.errors import ConfigError
    from ragfn.eventing.dead_letters import DeadLetterStore, replay

    try:
        settings = _settings()
        store, letter = _dead_letters().holder(letter_id)
        running = running_dev_state(settings)
        if sink is None and running and isinstance(store, DeadLetterStore):
            # the dev broker replays its own letters: it routes them and drops them in one step
            token = _sink_token(running, settings)
            response = httpx.post(f"{running['broker']}/dead-letters/{letter_id}/replay", timeout=10,
                                  headers={"Authorization": f"Bearer {token}"} if token else {})
            print(response.text)
            if response.status_code >= 300:
                raise typer.Exit(1)
            return
        target = sink or (running or {}).get("broker") or settings.sink
        if not target:
            raise ConfigError("nowhere to replay to", hint="pass --sink BROKER_URL (e.g. after `kubectl port-forward`)"
                             " or set K_SINK / RAGFN_SINK")
        replay(letter, target, token=_sink_token(running or {}, settings))
        store.remove(letter_id)
    except (RagfnError, httpx.HTTPError) as exc:
        _fail(exc)
    print(json.dumps({"replayed": letter_id, "to": target}))


def _sink_token_file(dev_state: dict, settings) -> Path:
    """The token a running `ragfn dev` keeps for its broker, else RAGFN_SINK_TOKEN_FILE (e.g. the output of
    `kubectl create token ... --audience eventing.knative.dev/broker/NAMESPACE/ragfn`, docs/security.md)."""
    return Path(dev_state["sink_token_file"]) if dev_state.get("sink_token_file") else settings.sink_token_file


def _sink_token(dev_state: dict, settings) -> str | None:
    try:
        return _sink_token_file(dev_state, settings).read_text().strip() or None
    except FileNotFoundError:
        return None


@dlq.command("drop")
def dlq_drop(letter_id: str) -> None:
    """Delete a dead letter without replaying it."""
    try:
        _dead_letters().remove(letter_id)
    except RagfnError as exc:
        _fail(exc)
    print(json.dumps({"dropped": letter_id}))
