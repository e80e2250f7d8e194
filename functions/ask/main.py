"""ask: the query gateway. POST /v1/ask with an API key; JSON, or server-sent events with "stream": true."""

import functions_framework

from ragfn.ask_http import ask_view

handle = functions_framework.http(ask_view())
