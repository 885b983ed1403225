# syntax=docker/dockerfile:1
# Airflow image: the official Airflow 3.3.2 image (Python 3.11) plus parking-ml, CPU-only torch and the DAGs.
# Build from the repository root:
#   docker build -f docker/airflow.Dockerfile -t parking-ml-airflow .
# Every versioned package comes from requirements/lock.txt (the same pins the tests ran with).

FROM apache/airflow:3.3.2-python3.11
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    PARKING_HOME=/opt/airflow/parking
COPY --chown=airflow:0 requirements/lock.txt /tmp/lock.txt
# CPU wheels first: the lock's torch from PyPI is the CUDA build (gigabytes of nvidia-* wheels this image never uses)
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        "torch==2.14.1" "torchvision==0.29.1"
# sources under /tmp: the airflow user may delete them there once installed (it cannot write to /opt)
COPY --chown=airflow:0 pyproject.toml README.md LICENSE /tmp/parking-ml/
COPY --chown=airflow:0 parking_ml /tmp/parking-ml/parking_ml
COPY --chown=airflow:0 serving /tmp/parking-ml/serving
COPY --chown=airflow:0 monitoring /tmp/parking-ml/monitoring
RUN pip install --no-cache-dir -c /tmp/lock.txt /tmp/parking-ml \
    && rm -rf /tmp/parking-ml /tmp/lock.txt
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
# the official image runs as uid 50000 with the root group (OpenShift-style arbitrary uids need group 0)
USER 50000:0
