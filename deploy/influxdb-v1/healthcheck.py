"""Healthy once influxd answers /ping and the entrypoint created the database."""
import os
import sys
import urllib.request

try:
    urllib.request.urlopen("http://127.0.0.1:8086/ping", timeout=2)
except OSError:
    sys.exit(1)
sys.exit(0 if not os.environ.get("INFLUXDB_DB") or os.path.exists("/tmp/influxdb-ready") else 1)
