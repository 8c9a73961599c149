# syntax=docker/dockerfile:1
# clipbot: CPU image by default. Build:  docker build -t clipbot .
# Run:    docker run --env-file .env -v clipbot-hf:/home/clipbot/.cache/huggingface -v ./stores:/app/stores clipbot

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CPU torch first, from PyTorch's CPU index: the default wheel would bring several GB of CUDA libraries.
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install "$TORCH" --index-url "$TORCH_INDEX"
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install ".[metrics]"

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/home/clipbot/.cache/huggingface \
    CLIPBOT_STORE=/app/stores/imagenette \
    CLIPBOT_HEALTH_PORT=8080
RUN useradd --create-home --uid 10001 clipbot \
    && mkdir -p /app/stores /home/clipbot/.cache/huggingface \
    && chown -R clipbot:clipbot /app /home/clipbot
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER clipbot
# The Hugging Face cache (model weights, datasets) and the stores live on volumes, so restarts skip downloads.
VOLUME ["/home/clipbot/.cache/huggingface", "/app/stores"]
# To bake a store into the image instead: COPY --chown=clipbot stores/imagenette /app/stores/imagenette
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"
# Builds the imagenette store on first start if the volume has none, then serves Discord.
CMD ["sh", "-c", "test -f \"$CLIPBOT_STORE/manifest.json\" || clipbot build --out \"$CLIPBOT_STORE\"; exec clipbot run"]
