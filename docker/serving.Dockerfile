# syntax=docker/dockerfile:1
# Inference API image: onnxruntime only (no torch, no Airflow). Build from the repository root:
#   docker build -f docker/serving.Dockerfile -t parking-ml-serving .
# Serves models:/$PARKING_MODEL_NAME@$PARKING_MODEL_ALIAS from $MLFLOW_TRACKING_URI, or a mounted
# model package folder with PARKING_MODEL_DIR=/models/<dir>.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY docker/serving-requirements.txt /tmp/serving-requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/serving-requirements.txt
COPY pyproject.toml README.md* LICENSE* ./
COPY parking_ml ./parking_ml
COPY serving ./serving
COPY monitoring ./monitoring
# --no-deps: the project's full dependency list holds torch and Airflow, which this image leaves out
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PARKING_HOME=/var/lib/parking \
    PARKING_HOST=0.0.0.0 \
    PARKING_API_PORT=8000
RUN groupadd --system --gid 10001 parking \
    && useradd --system --uid 10001 --gid parking --home-dir /var/lib/parking --create-home parking
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/parking
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PARKING_API_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["python", "-m", "serving"]
