-- Run once by the postgres image on an empty data volume: MLflow's backend store beside the prediction log's
-- database (POSTGRES_DB, housing).
CREATE DATABASE mlflow OWNER housing;
