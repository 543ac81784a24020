#!/usr/bin/env bash
# Installs what the test suite runs for real: InfluxDB 1.x and VictoriaMetrics servers, Chromium
# for the web UI and report checks, Docker engine + docker-compose + debootstrap for the stack test,
# and a C compiler: the load generator's C read pass (harness/loadgen/fastread.c) is tested for real.
# Idempotent: does nothing for packages already present. Needs root (or sudo) for apt-get.
set -euo pipefail
need=()
for pair in influxd:influxdb victoria-metrics:victoria-metrics chromium:chromium \
            chromedriver:chromium-driver dockerd:docker.io docker-compose:docker-compose \
            debootstrap:debootstrap cc:gcc; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's packages may start their services; the tests start their own on free ports.
for svc in influxdb victoria-metrics; do
  (command -v service >/dev/null && service "$svc" stop >/dev/null 2>&1) || true
done
echo "test dependencies present"
