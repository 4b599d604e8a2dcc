#!/usr/bin/env bash
# Start the example "properties" upstream and the gateway in front of it, from a fresh
# clone with only cargo installed. Ctrl-C stops both.
#
#   bash examples/demo.sh
#
# Then, in another terminal (the dev certificate is self-signed, hence -k):
#   curl -k -X POST -H 'Content-Type: application/json' \
#        -d '{"email": "test@example.com", "password": "password"}' https://localhost:8443/users/login
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${JWT_SECRET_KEY:-}" ]]; then
  # A fresh random key per run: tokens do not survive a restart of the demo.
  JWT_SECRET_KEY="$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
  export JWT_SECRET_KEY
  echo "demo: JWT_SECRET_KEY not set; generated a random one for this run" >&2
fi

cargo build --workspace --quiet
./target/debug/upstream-example --listen 127.0.0.1:5000 &
upstream_pid=$!
trap 'kill "$upstream_pid" 2>/dev/null || true' EXIT
export UPSTREAM_URL=http://127.0.0.1:5000
./target/debug/gateway run --config gateway.yaml
