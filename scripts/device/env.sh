# Sourced by the device scripts, from the repository root: $OUT, unbuffered Python, and the
# wheels carried in .whl/ (and py-spy in .prof/, when there) installed into /tmp/site.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
wheels=$(ls .whl/*.whl .prof/*.whl 2>/dev/null)
if [ -n "$wheels" ]; then
  # once per machine: a second script sourcing this beside a running one must not reinstall under it
  if [ ! -f /tmp/site/.installed ]; then
    # shellcheck disable=SC2086
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $wheels || exit 1
    touch /tmp/site/.installed
  fi
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
else
  export PYTHONPATH=$PWD
fi
