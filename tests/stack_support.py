"""Helpers for the stack test: the Docker engine, local images, headless Chromium via WebDriver.

Kept apart from the test so that each piece has one job; nothing here skips: a missing engine or
image build is a failure with the reason, since `make test` installs what these need.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness.launch.health import free_port_block

ROOT = Path(__file__).resolve().parents[1]


def docker_ok() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


class DockerEngine:
    """A running Docker engine: the one present, or ``dockerd`` started here (and stopped here)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "DockerEngine":
        assert shutil.which("docker"), "docker is installed by scripts/install-test-deps.sh"
        if docker_ok():
            return self
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        assert os.path.exists(dockerd), "dockerd missing (apt-get install docker.io)"
        assert os.geteuid() == 0, "the stack test starts dockerd and needs root"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / "dockerd.log", "ab")
        self.proc = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 60
        while not docker_ok():
            assert self.proc.poll() is None, f"dockerd exited; see {self.log_dir / 'dockerd.log'}"
            assert time.monotonic() < deadline, "dockerd did not come up within 60 s"
            time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def build_images(log_path: Path) -> dict[str, str]:
    """Run scripts/build-images.sh (reusing unchanged images); its KEY=VALUE lines as a dict."""
    env = {**os.environ, "PYTHON": sys.executable}
    with open(log_path, "w") as log:
        r = subprocess.run(["bash", str(ROOT / "scripts" / "build-images.sh")], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=log, text=True, timeout=900)
    assert r.returncode == 0, f"image build failed:\n{log_path.read_text()[-3000:]}"
    out = dict(line.split("=", 1) for line in r.stdout.split() if "=" in line)
    for k in ("HARNESS_IMAGE", "BALANCER_IMAGE", "INFLUXDB_V1_IMAGE"):
        assert k in out, f"build-images.sh printed no {k}"
    return out


def free_ports(n: int) -> list[int]:
    """``n`` free ports for the stack's published services (see ``free_port_block``)."""
    base = free_port_block(n)
    return list(range(base, base + n))


def http_json(url: str, data: bytes | None = None, method: str | None = None,
              timeout: float = 10.0):
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body else None


def tokens_per_s(urls: list[str], busy: list[str], seconds: float = 3.0,
                 per_replica: int = 16) -> dict[str, float]:
    """Closed loop: ``per_replica`` concurrent /generate requests on each of ``busy``; every
    replica's tokens/s from its own ``/emulator/ground_truth`` counter over ``seconds``, taken
    once every loop is running."""
    stop = threading.Event()
    body = json.dumps({"inputs": "word " * 32, "parameters": {"max_new_tokens": 32}}).encode()

    def loop(url):
        while not stop.is_set():
            http_json(url + "/generate", body, timeout=60)

    threads = [threading.Thread(target=loop, args=(u,), daemon=True)
               for u in busy for _ in range(per_replica)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)   # past the first prefills
        sent = lambda u: http_json(u + "/emulator/ground_truth")["total"]["tokens_sent"]  # noqa: E731
        before = {u: sent(u) for u in urls}
        t0 = time.monotonic()
        time.sleep(seconds)
        after = {u: sent(u) for u in urls}
        dt = time.monotonic() - t0
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    return {u: (after[u] - before[u]) / dt for u in urls}


class Chromium:
    """Headless Chromium driven through chromedriver's W3C WebDriver HTTP API (no selenium)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.base = ""
        self.session = ""

    def __enter__(self) -> "Chromium":
        driver = shutil.which("chromedriver")
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        assert driver and browser, "chromium + chromium-driver come from install-test-deps.sh"
        (port,) = free_ports(1)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([driver, f"--port={port}", "--allowed-ips=127.0.0.1",
                                      f"--log-path={self.log_dir / 'chromedriver.log'}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if http_json(self.base + "/status", timeout=2)["value"]["ready"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.2)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": browser,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"]}}}}
        self.session = http_json(self.base + "/session", json.dumps(caps).encode(),
                                 timeout=60)["value"]["sessionId"]
        return self

    def get(self, url: str) -> None:
        http_json(f"{self.base}/session/{self.session}/url", json.dumps({"url": url}).encode(),
                  timeout=60)

    def script(self, js: str, *args):
        body = json.dumps({"script": js, "args": list(args)}).encode()
        return http_json(f"{self.base}/session/{self.session}/execute/sync", body,
                         timeout=30)["value"]

    def text(self) -> str:
        return self.script("return document.body ? document.body.innerText : '';")

    def __exit__(self, *exc) -> None:
        """Idempotent: the session is deleted and chromedriver stopped once."""
        try:
            if self.session:
                http_json(f"{self.base}/session/{self.session}", method="DELETE", timeout=20)
        except (OSError, ValueError):
            pass
        self.session = ""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
