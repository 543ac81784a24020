#!/bin/bash
# Runs once, after the influxdb:2.x image's first-start setup (DOCKER_INFLUXDB_INIT_MODE=setup):
# maps the InfluxQL database $INFLUXDB_DATABASE (retention policy autogen) onto the bucket, so that
# InfluxQL readers (Grafana's data source, `slm-harness` reads through /query) find the data.
# The token comes from the environment the image set up (never from this file).
set -euo pipefail
db=${INFLUXDB_DATABASE:-slm}
influx v1 dbrp create \
  --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --db "$db" --rp autogen --default
echo "dbrp: InfluxQL database '$db' (rp autogen) -> bucket '${DOCKER_INFLUXDB_INIT_BUCKET}'"
