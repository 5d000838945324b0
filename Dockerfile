# syntax=docker/dockerfile:1
# One image for every KFP component, every Ray node (head and workers) and the MLflow server.
#
#   CPU (default):  docker build -t ghcr.io/orthoseg/orthoseg:0.1.0 .
#   CUDA:           docker build --build-arg RAY_VARIANT=-gpu -t ghcr.io/orthoseg/orthoseg:0.1.0-gpu .
#
# Ray Client (ray://) needs the same Ray and Python versions on the KFP pod and the cluster, so Ray is
# pinned to the base image's version and every pod runs this image.
ARG RAY_VERSION=2.60.0
# py311 or newer (the dependency step reads pyproject.toml with tomllib).
ARG PYTHON_TAG=py311
# "" for CPU, "-gpu" for the CUDA base image.
ARG RAY_VARIANT=""
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}${RAY_VARIANT}

ARG RAY_VERSION
ARG RAY_VARIANT
ARG TORCH_SPEC="torch>=2.8"
# Empty: the CPU wheel index for the CPU image, PyPI (CUDA wheels) for the -gpu image.
ARG TORCH_INDEX_URL=""

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The base image's non-root user `ray` (uid 1000, group users 100) owns its Python environment; named by
# number so that Kubernetes can check runAsNonRoot (infra/ pins the same ids).
USER 1000:100
WORKDIR /home/ray/orthoseg

# 1. torch (largest layer, changes least), then pinned so later steps cannot swap the build.
RUN echo "ray==${RAY_VERSION}" > /home/ray/constraints.txt \
 && if [ -n "${TORCH_INDEX_URL}" ]; then index="--index-url ${TORCH_INDEX_URL}"; \
    elif [ -z "${RAY_VARIANT}" ]; then index="--index-url https://download.pytorch.org/whl/cpu"; \
    else index=""; fi \
 && pip install ${index} -c /home/ray/constraints.txt "${TORCH_SPEC}" \
 && python -c "import torch; print('torch==' + torch.__version__)" >> /home/ray/constraints.txt

# 2. The project's dependencies, read from pyproject.toml alone so that source edits reuse this layer, at
#    the exact versions the tests ran with (requirements.lock, as `make venv` installs them).
#    psycopg2-binary is for the MLflow server's PostgreSQL backend store (infra/base/mlflow.yaml).
COPY --chown=ray:users pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /home/ray/requirements.txt \
 && pip install -c /home/ray/constraints.txt -c requirements.lock -r /home/ray/requirements.txt "${TORCH_SPEC}" \
        psycopg2-binary

# 3. The project itself (no dependency resolution left to do).
COPY --chown=ray:users README.md ./
COPY --chown=ray:users src/ src/
COPY --chown=ray:users components/ components/
COPY --chown=ray:users pipelines/ pipelines/
RUN pip install --no-deps . \
 && cd / && python -c "import orthoseg, components, pipelines, ray, torch; assert ray.__version__ == '${RAY_VERSION}'"

COPY --chown=ray:users --chmod=0755 mlflow/server.sh /home/ray/orthoseg/mlflow/server.sh
# The promotion policy the promote step judges by (its sha256 goes into every decision record).
COPY --chown=ray:users mlflow/promotion.yaml /home/ray/orthoseg/mlflow/promotion.yaml
ENV ORTHOSEG_PROMOTION__POLICY_PATH=/home/ray/orthoseg/mlflow/promotion.yaml

# Commands come from KFP (component executor), KubeRay (ray start) and the manifests in infra/.
WORKDIR /home/ray
ENTRYPOINT []
CMD ["bash"]
