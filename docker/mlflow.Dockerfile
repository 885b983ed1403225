# syntax=docker/dockerfile:1
# MLflow tracking server and model registry: PostgreSQL backend store, S3 (MinIO) artifact store, proxied artifacts.
# Build from the repository root:
#   docker build -f docker/mlflow.Dockerfile -t parking-ml-mlflow .
# Configured only through MLflow's own variables (MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_DESTINATION,
# MLFLOW_SERVER_ALLOWED_HOSTS, MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/lock.txt /tmp/lock.txt
COPY docker/mlflow-requirements.txt /tmp/mlflow-requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/lock.txt -r /tmp/mlflow-requirements.txt

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=5000 \
    MLFLOW_WORKERS=2 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
RUN groupadd --system --gid 10002 mlflow \
    && useradd --system --uid 10002 --gid mlflow --home-dir /var/lib/mlflow --create-home mlflow
COPY --from=build /opt/venv /opt/venv
USER 10002:10002
WORKDIR /var/lib/mlflow
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MLFLOW_PORT', '5000'), timeout=2)"]
ENTRYPOINT ["mlflow", "server"]
