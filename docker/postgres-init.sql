-- MLflow's tracking store and model registry, beside Dagster's database on the same server.
CREATE DATABASE mlflow OWNER finpipe;
