#!/usr/bin/env bash
# One-off probe of a GPU host: model build, transformers serve routes, NVML basics.
set -u
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,power.limit,memory.total --format=csv
python3 scripts/gpu/make_random_model.py /tmp/m || exit 1
which transformers; transformers serve --help 2>&1 | head -60
transformers serve /tmp/m --continuous-batching --host 127.0.0.1 --port 8101 > /tmp/serve.log 2>&1 &
PID=$!
for i in $(seq 1 90); do curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:8101/health 2>/dev/null | grep -q 200 && break; sleep 1; done
echo "health after ${i}s"; for p in /health /v1/models /info /metrics; do echo "== $p"; curl -s -m 5 127.0.0.1:8101$p | head -c 400; echo; done
echo "== stream"; curl -s -m 60 -N 127.0.0.1:8101/v1/completions -H 'content-type: application/json' -d '{"model":"/tmp/m","prompt":"w10 w11 w12 w13","max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}' | head -c 3000; echo
echo "== chat"; curl -s -m 60 -N 127.0.0.1:8101/v1/chat/completions -H 'content-type: application/json' -d '{"model":"/tmp/m","messages":[{"role":"user","content":"w10 w11"}],"max_tokens":4,"stream":true}' | head -c 2000; echo
echo "== ignore_eos"; curl -s -m 20 127.0.0.1:8101/v1/completions -H 'content-type: application/json' -d '{"model":"/tmp/m","prompt":"w10","max_tokens":3,"ignore_eos":true}' | head -c 500; echo
kill $PID; sleep 2; kill -9 $PID 2>/dev/null; tail -20 /tmp/serve.log
