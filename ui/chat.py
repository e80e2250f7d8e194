"""The chat page: sign-in, collection picker, conversation with streamed answers, feedback, uploads with progress."""

from __future__ import annotations

import time

import streamlit as st

from ui.client import GatewayClient, GatewayDown, GatewayError, RateLimited, SignInRefused, UploadStatus
from ui.safe_markdown import SafeMarkdown
from ui.settings import UISettings
from ui.views import plain, render_badges, render_citations, render_markdown

EMPTY = ("No documents in **{collection}** yet. Add some with the upload box in the sidebar, or from a terminal "
         "with `ragfn ingest --collection {collection} PATH`.")


def state():
    return st.session_state


def settings() -> UISettings:
    if "settings" not in state():
        state().settings = UISettings()
    return state().settings


def safe() -> SafeMarkdown:
    """How this session renders untrusted text (ui/safe_markdown.py)."""
    if "safe" not in state():
        state().safe = SafeMarkdown(settings().link_hosts)
    return state().safe


def client() -> GatewayClient:
    """One HTTP client per browser session, re-made when the key changes."""
    current = state().get("client")
    if current is None or current.api_key != state().get("api_key"):
        state().client = GatewayClient(settings().gateway_url, api_key=state().get("api_key"),
                                       timeout=settings().timeout_seconds)
    return state().client


def show_error(exc: GatewayError) -> None:
    hint = f"  \n{exc.hint}" if exc.hint else ""
    if isinstance(exc, RateLimited):
        st.warning(f"**Rate limit reached.** {exc.message}. Try again in {exc.retry_after:.0f} s.{hint}", icon="⏳")
    elif isinstance(exc, GatewayDown):
        st.error(f"**The gateway is down.** {exc.message}{hint}", icon="🔌")
    elif isinstance(exc, SignInRefused):
        st.error(f"**Sign-in refused.** {exc.message}{hint}", icon="🔑")
    else:
        st.error(f"{exc.message}{hint}")


def sign_in() -> None:
    with st.form("sign-in"):
        key = st.text_input("API key", type="password", help="`ragfn dev` prints a key for local use")
        submitted = st.form_submit_button("Sign in")
    if submitted and key.strip():
        try:
            me = GatewayClient(settings().gateway_url, api_key=key.strip()).me()
        except GatewayError as exc:
            show_error(exc)
            return
        state().api_key, state().me = key.strip(), me
        st.rerun()


def sign_out() -> None:
    for name in ("api_key", "me", "client", "history", "uploads", "sent_files", "new_collections", "collection"):
        state().pop(name, None)


def refresh_me() -> None:
    try:
        state().me = client().me()
    except SignInRefused as exc:  # the key was revoked meanwhile
        sign_out()
        show_error(exc)
    except GatewayError as exc:
        show_error(exc)


def sidebar() -> str | None:
    """The signed-in collection, or None before sign-in."""
    with st.sidebar:
        st.header("ragfn")
        if "me" not in state():
            sign_in()
            return None
        me = state().me
        st.caption(f"Signed in as **{plain(me.subject)}** · tenant {plain(me.tenant) if me.tenant else '(untenanted)'}"
                   f" · groups {plain(', '.join(me.groups)) if me.groups else '(none)'}")
        names = sorted({"default", *me.collections, *state().setdefault("new_collections", set())})
        collection = st.selectbox("Collection", names, key="collection")
        st.text_input("New collection", key="new_collection", on_change=add_collection,
                      placeholder="a name, then Enter", help="start one with an upload into it")
        if state().get("collection_error"):
            st.error(state().pop("collection_error"))
        if st.button("Sign out"):
            sign_out()
            st.rerun()
        upload_box(collection)
        return collection


def add_collection() -> None:
    from ragfn.core.errors import BadEvent
    from ragfn.store.base import check_collection_name  # the index's own rule for names

    name = state().new_collection.strip()
    state().new_collection = ""
    try:
        check_collection_name(name)
    except BadEvent as exc:
        state().collection_error = str(exc)
        return
    state().new_collections.add(name)
    state().collection = name


def upload_box(collection: str) -> None:
    files = st.file_uploader("Add documents", accept_multiple_files=True, key="uploader",
                             help="indexed through the same events as bucket objects")
    sent, uploads = state().setdefault("sent_files", set()), state().setdefault("uploads", [])
    for file in files or []:
        if file.file_id in sent:  # the widget hands the same files over on every rerun
            continue
        sent.add(file.file_id)
        item = {"name": file.name, "since": time.monotonic()}
        try:
            item["upload"] = client().upload(file.name, file.getvalue(), collection=collection)
            item["status"] = UploadStatus("queued")
        except GatewayError as exc:
            item["error"] = exc
        uploads.append(item)
    if uploads:
        watching = any("status" in item and not item["status"].finished for item in uploads)
        st.fragment(run_every=settings().poll_seconds if watching else None)(upload_progress)()


def upload_progress() -> None:
    finished_now = False
    for item in state().uploads:
        status = item.get("status")
        if status is not None and not status.finished and not item.get("gave_up"):
            try:
                status = item["status"] = client().upload_status(item["upload"])
                finished_now |= status.finished
            except GatewayError as exc:
                item["error"] = exc
            if time.monotonic() - item["since"] > settings().upload_wait_seconds and not status.finished:
                item["gave_up"] = True
        show_upload(item)
    if finished_now:  # the collection's document count changed: the whole page may look different
        refresh_me()
        st.rerun(scope="app")


def show_upload(item: dict) -> None:
    name, status = item["name"], item.get("status")
    if "error" in item and (status is None or not status.finished):
        st.error(f"{name}: {item['error']}")
    elif item.get("gave_up"):
        st.warning(f"{name}: not indexed after {settings().upload_wait_seconds:.0f} s "
                   "(on a laptop, `ragfn dlq list` shows events that failed)")
    elif status.state == "indexed":
        st.progress(1.0, text=f"{name}: indexed, {status.chunks} chunk{'s' if status.chunks != 1 else ''}")
    elif status.state == "failed":
        st.error(f"{name}: indexing failed: {status.error}")
    elif status.state == "replaced":
        st.info(f"{name}: replaced by a newer upload of the same file")
    elif status.state == "indexing":
        st.progress(0.5, text=f"{name}: indexing, {status.chunks_written} chunks written")
    else:
        st.progress(0.05, text=f"{name}: queued for indexing")


def feedback(turn: dict) -> None:
    answer_id = turn["final"].get("answer_id")
    if not answer_id:
        return
    choice = st.feedback("thumbs", key=f"thumbs-{answer_id}")
    if choice is None:
        return
    rating = "up" if choice == 1 else "down"  # st.feedback's thumbs: 0 is down, 1 is up
    comment = st.text_input("Comment (optional, Enter to send)", key=f"comment-{answer_id}", max_chars=2000)
    if turn.get("rated") != (rating, comment):  # rating again replaces the earlier rating
        try:
            client().rate(answer_id, rating, comment)
            turn["rated"] = (rating, comment)
        except GatewayError as exc:
            show_error(exc)
            return
    st.caption("Thanks: your feedback was recorded." if not comment else "Thanks: rating and comment recorded.")


def show_turn(turn: dict) -> None:
    with st.chat_message("user"):
        st.text(turn["question"])
    with st.chat_message("assistant"):
        for status in turn["statuses"]:
            st.caption(f"⚠️ {status['message']}")
        if turn["text"]:
            render_markdown(turn["text"], safe())
        if turn.get("error"):
            show_error(turn["error"])
        render_citations(turn["citations"], safe())
        render_badges(turn["final"])
        feedback(turn)


def ask(question: str, collection: str) -> dict:
    """Stream one answer into the page; returns the turn to keep in the history."""
    turn = {"question": question, "text": "", "statuses": [], "citations": [], "final": {}, "error": None}
    with st.chat_message("user"):
        st.text(question)
    with st.chat_message("assistant"):
        notes = st.container()
        streamed = st.empty()  # one slot, so a `replace` event's text takes the place of the withdrawn tokens
        answer = client().ask(question, collection=collection)
        text, shown = "", 0.0
        try:
            # not st.write_stream: that renders the model's Markdown as it comes, images and all
            for token in answer.tokens(on_status=lambda status: notes.caption(f"⚠️ {status['message']}")):
                text += token
                if time.monotonic() - shown > 0.05:  # redraw at most 20 times a second
                    render_markdown(text, safe(), streamed)
                    shown = time.monotonic()
        except GatewayError as exc:
            answer.error = exc
        render_markdown(answer.text if answer.replaced else text, safe(), streamed)
        turn.update(text=answer.text, statuses=answer.statuses, citations=answer.citations, final=answer.final,
                    error=answer.error)
        if answer.error:
            show_error(answer.error)
        render_citations(turn["citations"], safe())
        render_badges(turn["final"])
        feedback(turn)
    return turn


def main() -> None:
    st.set_page_config(page_title="ragfn chat", page_icon="💬")
    collection = sidebar()
    if collection is None:
        st.title("Chat with your documents")
        st.info("Sign in with an API key in the sidebar. `ragfn dev` prints one for local use.")
        return
    if state().get("warmed") != state().get("api_key"):  # signed in: wake a scaled-to-zero model now, not at the
        client().warmup()                                 # first question
        state().warmed = state().get("api_key")
    if state().me.documents(collection) == 0:
        st.info(EMPTY.format(collection=collection), icon="📭")
    history = state().setdefault("history", {}).setdefault(collection, [])
    for turn in history:
        show_turn(turn)
    question = st.chat_input(f"Ask about the documents in {collection}")
    if question:
        history.append(ask(question, collection))
