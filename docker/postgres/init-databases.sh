#!/usr/bin/env bash
# First start of the compose PostgreSQL only (docker-entrypoint-initdb.d): one application role owning the
# databases the stack keeps its state in: Airflow metadata, the MLflow backend store, Optuna studies.
set -euo pipefail
: "${PARKING_DB_USER:?PARKING_DB_USER is not set}"
: "${PARKING_DB_PASSWORD:?PARKING_DB_PASSWORD is not set}"
databases=${PARKING_DATABASES:-airflow mlflow optuna}

run_sql() {
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres --no-psqlrc --quiet \
    --set=app_user="$PARKING_DB_USER" --set=app_password="$PARKING_DB_PASSWORD" --set=db="${1:-}"
}

echo 'CREATE ROLE :"app_user" LOGIN PASSWORD :'"'app_password';" | run_sql
for db in $databases; do
  echo 'CREATE DATABASE :"db" OWNER :"app_user";' | run_sql "$db"
  echo "init-databases: created database $db owned by $PARKING_DB_USER"
done
