"""Start influxd 1.x, create the database named by INFLUXDB_DB once it answers, then wait.

Like the official influxdb:1.x image's INFLUXDB_DB variable; SIGTERM is passed on to influxd.
"""
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

proc = subprocess.Popen(["influxd", "-config", "/etc/influxdb/influxdb.conf"])
signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
signal.signal(signal.SIGINT, lambda *_: proc.terminate())
db = os.environ.get("INFLUXDB_DB", "")
deadline = time.monotonic() + 60
while db and proc.poll() is None and time.monotonic() < deadline:
    try:
        urllib.request.urlopen("http://127.0.0.1:8086/ping", timeout=1)
        body = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'}).encode()
        urllib.request.urlopen("http://127.0.0.1:8086/query", data=body, timeout=5)
        open("/tmp/influxdb-ready", "w").write(db)
        print(f"influxdb-v1: database {db!r} ready", flush=True)
        break
    except OSError:
        time.sleep(0.2)
sys.exit(proc.wait())
