#!/usr/bin/env bash
# Builds every image the compose stack needs on this machine, with no image registry:
#   1. a Debian bookworm base (debootstrap --variant=minbase, then `docker import`) holding
#      python3 + venv, haproxy (the balancer) and influxdb 1.x (the test store);
#   2. the harness image (Dockerfile) from that base and a folder of wheels downloaded on the host
#      (`pip download --only-binary=:all: --python-version 3.11 ...`), installed with no network;
#   3. a small InfluxDB 1.x image (deploy/influxdb-v1) for tests: no InfluxDB 2 image exists here.
# Each image is tagged with a hash of its inputs and reused while those inputs are unchanged.
# The Debian mirror is read at run time from this machine's apt sources (or MIRROR=...).
# Prints KEY=VALUE lines (HARNESS_IMAGE=..., ...) and writes them to $BUILD/images.env.
# Needs root (debootstrap) and a running Docker engine. Usage: scripts/build-images.sh [--force]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${STACK_BUILD_DIR:-$ROOT/.stack-build}
PY=${PYTHON:-python3}
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates,haproxy,influxdb
PY_VERSION=3.11
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1
mkdir -p "$BUILD"
log() { echo "build-images: $*" >&2; }

sha() { sha256sum | cut -c1-12; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# The first Debian mirror in this machine's apt sources that serves $SUITE (not -security).
apt_mirror() {
  if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return; fi
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 stanzas: take URIs of a stanza whose Suites name the plain suite
    uri=$(awk -v s="$SUITE" '
      /^[[:space:]]*$/ { if (u != "" && ok) { print u; exit } u=""; ok=0; next }
      /^URIs:/ { u=$2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok=1 }
      END { if (u != "" && ok) print u }' "$f" | head -n1)
    if [ -n "$uri" ]; then echo "$uri"; return; fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk -v s="$SUITE" '$1 == "deb" && $0 !~ /\[/ && $3 == s { print $2; exit }
                             $1 == "deb" && $0 ~ /\[/ { for (i = 2; i <= NF; i++) if ($i == s) { print $(i-1); exit } }' "$f")
    if [ -n "$uri" ]; then echo "$uri"; return; fi
  done
  log "no Debian mirror for $SUITE in /etc/apt sources; set MIRROR=http://your-mirror/debian"
  exit 2
}

# ---------------------------------------------------------------------------------------------
# 1. base image
# ---------------------------------------------------------------------------------------------
base_key=$(printf '%s\n' "v1" "$SUITE" "$BASE_PACKAGES" | sha)
BASE_IMAGE="slm-harness-base:$base_key"
if [ $FORCE = 1 ] || ! image_exists "$BASE_IMAGE"; then
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || { log "debootstrap missing"; exit 2; }
  mirror=$(apt_mirror)
  rootfs="$BUILD/rootfs"
  rm -rf "$rootfs"
  log "debootstrap $SUITE minbase (+$BASE_PACKAGES) ..."
  t0=$(date +%s)
  PATH=$PATH:/usr/sbin /usr/sbin/debootstrap --variant=minbase --include="$BASE_PACKAGES" \
    "$SUITE" "$rootfs" "$mirror" >"$BUILD/debootstrap.log" 2>&1 \
    || { tail -n 30 "$BUILD/debootstrap.log" >&2; exit 3; }
  # the mirror the tree was built from must not travel inside the image
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/etc/apt/sources.list "$rootfs"/etc/apt/sources.list.d/* \
         "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL org.slm-harness.inputs=$base_key" \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  log "base image $BASE_IMAGE in $(( $(date +%s) - t0 )) s"
else
  log "base image $BASE_IMAGE reused"
fi

# ---------------------------------------------------------------------------------------------
# 2. wheels for the harness image (Python 3.11, manylinux x86_64), downloaded on the host
# ---------------------------------------------------------------------------------------------
WHEELS="$BUILD/wheels"
reqs=$("$PY" - "$ROOT/pyproject.toml" <<'EOF'
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join(deps + ["setuptools>=68", "wheel"]))
EOF
)
wheels_key=$(printf '%s\n' "$reqs" "$PY_VERSION" | sha)
if [ $FORCE = 1 ] || [ "$(cat "$WHEELS/.key" 2>/dev/null)" != "$wheels_key" ]; then
  rm -rf "$WHEELS"; mkdir -p "$WHEELS"
  log "pip download wheels for Python $PY_VERSION ..."
  printf '%s\n' "$reqs" >"$BUILD/requirements.txt"
  "$PY" -m pip download -q --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    --abi "cp${PY_VERSION/./}" --abi abi3 --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any \
    -d "$WHEELS" -r "$BUILD/requirements.txt" 2>&1 | grep -v ' is ignored: ' >&2 || true
  [ "${PIPESTATUS[0]}" = 0 ] || { log "pip download failed"; exit 3; }
  echo "$wheels_key" >"$WHEELS/.key"
else
  log "wheels reused ($(ls "$WHEELS" | wc -l) files)"
fi

# ---------------------------------------------------------------------------------------------
# 3. the harness image and the InfluxDB 1.x test image
# ---------------------------------------------------------------------------------------------
# The C helpers (the stream reader's read pass, the emulator's token writer), built here with the
# host's compiler (the image has none); their names are keyed by their sources, which the image
# key below already covers.
NATIVE="$BUILD/native"
rm -rf "$NATIVE"; mkdir -p "$NATIVE"
if why=$(cd "$ROOT" && "$PY" -c 'import sys; from harness.cbuild import build_into; print(build_into(sys.argv[1]) or "")' "$NATIVE") && [ -z "$why" ]; then
  log "C helpers built: $(ls "$NATIVE")"
else
  log "C helpers not built (${why:-python failed}); the image's stream reader and emulator run in Python"
fi
# Inputs of the harness image: the base, the wheels, the Dockerfile and the files it copies.
harness_key=$(cd "$ROOT" && {
  echo "$BASE_IMAGE"; cat "$WHEELS/.key"; cat Dockerfile .dockerignore
  for d in harness locustfiles scenarios pyproject.toml README.md; do
    [ -e "$d" ] && find "$d" -type f ! -name '*.pyc' ! -path '*/__pycache__/*'
  done | LC_ALL=C sort | xargs sha256sum
} | sha)
HARNESS_IMAGE="slm-harness:$harness_key"
if [ $FORCE = 1 ] || ! image_exists "$HARNESS_IMAGE"; then
  log "docker build $HARNESS_IMAGE (offline, local wheels) ..."
  rel_wheels=${WHEELS#"$ROOT"/}
  [ "$rel_wheels" != "$WHEELS" ] || { log "STACK_BUILD_DIR must be inside the repository"; exit 2; }
  DOCKER_BUILDKIT=0 docker build -q --network none \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg WHEELS="$rel_wheels" \
    --build-arg NATIVE="${NATIVE#"$ROOT"/}" \
    --build-arg PIP_INSTALL_ARGS="--no-index --find-links /wheels" \
    --label org.slm-harness.inputs="$harness_key" \
    -t "$HARNESS_IMAGE" -t slm-harness:local "$ROOT" >/dev/null 2>"$BUILD/docker-build.log" \
    || { cat "$BUILD/docker-build.log" >&2; exit 3; }
else
  log "harness image $HARNESS_IMAGE reused"
fi

influx_key=$(cd "$ROOT" && { echo "$BASE_IMAGE"; find deploy/influxdb-v1 -type f | LC_ALL=C sort | xargs sha256sum; } | sha)
INFLUXDB_V1_IMAGE="slm-harness-influxdb1:$influx_key"
if [ $FORCE = 1 ] || ! image_exists "$INFLUXDB_V1_IMAGE"; then
  log "docker build $INFLUXDB_V1_IMAGE ..."
  DOCKER_BUILDKIT=0 docker build -q --network none --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --label org.slm-harness.inputs="$influx_key" \
    -t "$INFLUXDB_V1_IMAGE" "$ROOT/deploy/influxdb-v1" >/dev/null 2>"$BUILD/docker-build.log" \
    || { cat "$BUILD/docker-build.log" >&2; exit 3; }
else
  log "InfluxDB 1.x image $INFLUXDB_V1_IMAGE reused"
fi

# Builds of these images from other inputs, more than 2 hours old (a younger one may belong to
# a checkout beside this one, about to be used), and the dangling build stages left behind.
cutoff=$(( $(date +%s) - 7200 ))
for repo in slm-harness slm-harness-influxdb1 slm-harness-base; do
  docker image ls "$repo" --format '{{.Repository}}:{{.Tag}}' | while read -r ref; do
    case "$ref" in
      "$HARNESS_IMAGE"|"$INFLUXDB_V1_IMAGE"|"$BASE_IMAGE"|slm-harness:local) continue ;;
    esac
    created=$(date -d "$(docker image inspect -f '{{.Created}}' "$ref")" +%s 2>/dev/null || echo "$cutoff")
    if [ "$created" -lt "$cutoff" ]; then
      docker image rm "$ref" >/dev/null 2>&1 && log "removed old image $ref" || true
    fi
  done
done
docker image prune -f --filter until=2h >/dev/null 2>&1 || true

{
  echo "BASE_IMAGE=$BASE_IMAGE"
  echo "HARNESS_IMAGE=$HARNESS_IMAGE"
  echo "BALANCER_IMAGE=$BASE_IMAGE"
  echo "INFLUXDB_V1_IMAGE=$INFLUXDB_V1_IMAGE"
} | tee "$BUILD/images.env"
