"""`python -m inference --model_name ragfn --http_port 8080`: the predictor under KServe's ModelServer.

The engine comes from `RAGFN_LLM_ENGINE` / `RAGFN_LLM_MODEL` (see inference/settings.py). KServe parses its flags
when `kserve.model_server` is imported, so ours extend its parser rather than replace it.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    import kserve
    from kserve import model_server

    from inference.guard import bind_to, require_key
    from inference.model import RagfnModel
    from inference.openai_routes import OpenAIRoutes
    from inference.settings import PredictorSettings, build_engine
    from ragfn.core.errors import ConfigError

    parser = argparse.ArgumentParser(parents=[model_server.parser], conflict_handler="resolve",
                                     description="ragfn's KServe predictor")
    parser.add_argument("--host", default="0.0.0.0", help="the address to listen on (`ragfn dev`: 127.0.0.1)")
    parser.set_defaults(model_name="ragfn", workers=1, enable_grpc=False)
    args, _ = parser.parse_known_args(argv)
    if args.workers != 1:
        print("error: --workers must be 1: the engine lives in this process and cannot be forked into workers",
              file=sys.stderr)
        return 2
    try:
        settings = PredictorSettings()
        engine = build_engine(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = RagfnModel(args.model_name, engine, concurrency=settings.concurrency,
                       max_queue=settings.max_queue, queue_timeout=settings.queue_timeout_seconds)
    model.load()  # in the background: the server answers /v1/warmup and readiness ("loading") meanwhile
    OpenAIRoutes(model).install(model_server.app)
    if settings.api_key:
        require_key(model_server.app, settings.api_key.get_secret_value())
    if args.host != "0.0.0.0":
        bind_to(args.host)
    logging.getLogger("ragfn").setLevel(logging.INFO)
    kserve.ModelServer(http_port=args.http_port, workers=1, enable_grpc=False).start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
