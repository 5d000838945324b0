#!/usr/bin/env bash
# Launch the MLflow tracking server and model registry of the cluster deployment
# (infra/base/mlflow.yaml runs this in the project image). Configuration comes from the environment:
#   MLFLOW_BACKEND_STORE_URI      required, e.g. postgresql://mlflow:PASSWORD@postgres.orthoseg.svc:5432/mlflow
#   MLFLOW_ARTIFACTS_DESTINATION  required, e.g. s3://orthoseg-mlflow/ (with MLFLOW_S3_ENDPOINT_URL and AWS_* for MinIO)
#   MLFLOW_HOST (0.0.0.0), MLFLOW_PORT (5000), MLFLOW_WORKERS (2)
#   MLFLOW_DB_UPGRADE=1           migrate the database schema first (needed after an MLflow upgrade)
#   MLFLOW_SERVER_ALLOWED_HOSTS   Host headers to accept (read by MLflow itself)
# Extra arguments are passed on to `mlflow server`.
# The embedded deployment needs no server: `mlflow ui --backend-store-uri sqlite:///.orthoseg/mlflow.db`.
set -euo pipefail

missing=()
[[ -n "${MLFLOW_BACKEND_STORE_URI:-}" ]] || missing+=("MLFLOW_BACKEND_STORE_URI (e.g. postgresql://USER:PASSWORD@HOST:5432/DB)")
[[ -n "${MLFLOW_ARTIFACTS_DESTINATION:-}" ]] || missing+=("MLFLOW_ARTIFACTS_DESTINATION (e.g. s3://orthoseg-mlflow/)")
if ((${#missing[@]})); then
    echo "mlflow/server.sh: set these environment variables first:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 2
fi

if [[ "${MLFLOW_DB_UPGRADE:-0}" == "1" ]]; then
    mlflow db upgrade "${MLFLOW_BACKEND_STORE_URI}"
fi

# The backend URI holds the database password: it is passed on, never printed.
exec mlflow server \
    --backend-store-uri "${MLFLOW_BACKEND_STORE_URI}" \
    --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION}" \
    --serve-artifacts \
    --host "${MLFLOW_HOST:-0.0.0.0}" \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-2}" \
    "$@"
