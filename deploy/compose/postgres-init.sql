-- Dagster's database is POSTGRES_DB; MLflow and Superset get their own on the same server.
CREATE DATABASE mlflow;
CREATE DATABASE superset;
