"""ask: the query gateway, a Flask app (ragfn.serve.gateway_app) rather than one function; `python functions/ask/main.py
--port 8080` (or `python -m ragfn.serve.gateway_app`) serves it on gunicorn. POST /v1/ask with an API key."""

from ragfn.serve.gateway_app import create_app, main

app = create_app()

if __name__ == "__main__":
    main(app=app)
