#!/usr/bin/env bash
# Keep-alive load, direct to the example upstream vs through the gateway (plain HTTP and
# TLS), with release builds. Needs wrk (Debian: apt-get install -y wrk).
#
#   bash benches/load.sh [seconds per run, default 10] [connections, default 64]
#
# Pinning on a 2-core machine: the system under test (upstream alone, or the gateway with
# one worker thread) runs on CPU 0; wrk and, behind the gateway, the upstream share CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNECTIONS="${2:-64}"

command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --workspace --bins --quiet

tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

start_upstream() { # $1 = cpu; sets $addr and $upstream_pid
  : >"$tmp/upstream.out"
  taskset -c "$1" ./target/release/upstream-example --listen 127.0.0.1:0 >"$tmp/upstream.out" &
  upstream_pid=$!
  pids+=("$upstream_pid")
  for _ in $(seq 100); do [[ -s "$tmp/upstream.out" ]] && break; sleep 0.05; done
  addr="$(sed -n 's#listening on http://##p' "$tmp/upstream.out")"
}

wait_port() { for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }

run_wrk() { # $1 = label, rest = wrk args
  local label="$1"; shift
  local out
  out="$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@")"
  local rps p50 p99 errors
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  errors="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  printf '| %-28s | %10s | %8s | %8s | %6s |\n' "$label" "$rps" "$p50" "$p99" "${errors:-0}"
}

echo "| path                         | requests/s |      p50 |      p99 | non-2xx |"
echo "|------------------------------|-----------:|---------:|---------:|-------:|"

# (a) direct to the upstream, upstream alone on CPU 0.
start_upstream 0
run_wrk "direct to upstream" "http://$addr/properties/1"
kill "$upstream_pid"; wait "$upstream_pid" 2>/dev/null || true

# (b) through the gateway: gateway on CPU 0 (1 worker), upstream on CPU 1.
start_upstream 1
cat >"$tmp/gateway.yaml" <<YAML
server: { workers: 1 }
listeners:
  - { name: tls, address: "127.0.0.1:18443", tls: { self_signed: true } }
  - { name: plain, address: "127.0.0.1:18080", plaintext: true }
upstreams: { properties: { url: "http://$addr" } }
auth:
  users: [{ email: bench@example.com, password_hash: "\$argon2id\$v=19\$m=19456,t=2,p=1\$Ps4Uxv+gTwrI54Rt5O6Jsg\$w0FdW+8A7fB8Zfmx1p/KmcssOGVhUP7lZf0I7hBLRN0" }]
  keys: [{ algorithm: HS256, secret: "load-test-secret-load-test-secret-0123" }]
routes:
  - { name: properties, path: /properties, upstream: properties }
YAML
RUST_LOG=warn taskset -c 0 ./target/release/gateway run --config "$tmp/gateway.yaml" &
pids+=($!)
wait_port 18080; wait_port 18443
token="$(./target/release/gateway token --config "$tmp/gateway.yaml" --sub bench@example.com --ttl 1h)"
run_wrk "gateway, HS256, plain HTTP" -H "Authorization: Bearer $token" "http://127.0.0.1:18080/properties/1"
run_wrk "gateway, HS256, TLS" -H "Authorization: Bearer $token" "https://127.0.0.1:18443/properties/1"

# (c) proxied requests while a login flood (200 connections of wrong-password logins)
#     keeps the password hashing pool saturated.
CONNECTIONS=16 run_wrk "gateway, HS256, TLS, 16 conns" -H "Authorization: Bearer $token" "https://127.0.0.1:18443/properties/1"
taskset -c 1 wrk -t1 -c200 -d"$((DURATION + 2))s" -s benches/login-flood.lua "https://127.0.0.1:18443/users/login" >"$tmp/flood.out" &
flood=$!
sleep 1
CONNECTIONS=16 run_wrk "  ... during a login flood" -H "Authorization: Bearer $token" "https://127.0.0.1:18443/properties/1"
wait "$flood" || true
printf '| %-28s | %10s | %8s | %8s | %6s |\n' "  (the flood: logins/s)" "$(awk '/Requests\/sec/ {print $2}' "$tmp/flood.out")" "" "" ""
