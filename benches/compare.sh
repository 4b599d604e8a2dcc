#!/usr/bin/env bash
# Side-by-side comparison, in one run on one machine (issue 7):
#   (a) the upstream directly (nginx returning a small JSON body, worker_processes 1)
#   (b) nginx as a plain reverse proxy, no auth (the floor any proxy sits above)
#   (c) HAProxy 2.6 with jwt_verify checking the same HS256 token and its exp
#   (d) this gateway, release build, server.workers: 1, verifying the token and forwarding
# Each system under test is pinned to CPU 0; wrk and the upstream share CPU 1. Rounds
# alternate between systems; the table shows the median of the rounds.
#
#   bash benches/compare.sh [seconds per run, default 10] [rounds, default 3]
#
# Needs (Debian): nginx haproxy wrk openssl python3 (+ matplotlib from PyPI for the plot).
# It installs the missing Debian packages with apt-get when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
ROUNDS="${2:-3}"
CONNS=64
OUT_DIR="${OUT_DIR:-docs}"

need=()
for bin in nginx:nginx haproxy:haproxy wrk:wrk openssl:openssl; do
  command -v "${bin%%:*}" >/dev/null || need+=("${bin##*:}")
done
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]]; then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  else echo "install: ${need[*]}" >&2; exit 1; fi
fi
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib || true

cargo build --release --bin gateway --quiet
GW=./target/release/gateway

tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SECRET="compare-secret-compare-secret-0123456789"
UP=19000; NGX=19001; HAP=19002; HAPS=19003; GWP=19004; GWS=19005

# TLS material (the same P-256 certificate for HAProxy and the gateway), and RS256/ES256 keys.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/haproxy.pem"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/rs.key" 2>/dev/null
openssl pkey -in "$tmp/rs.key" -pubout -out "$tmp/rs.pub"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/es.key" 2>/dev/null
openssl pkey -in "$tmp/es.key" -pubout -out "$tmp/es.pub"

# (a) the upstream: nginx answering a small JSON body.
cat >"$tmp/upstream.conf" <<CONF
worker_processes 1; daemon off; pid $tmp/upstream.pid; error_log $tmp/upstream.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { default_type application/json;
    return 200 '{"id":1,"title":"Sunny flat","city":"London","price":450000}'; } } }
CONF
# (b) nginx reverse proxy, no auth.
cat >"$tmp/proxy.conf" <<CONF
worker_processes 1; daemon off; pid $tmp/proxy.pid; error_log $tmp/proxy.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NGX; location / { proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection ""; } } }
CONF
# (c) HAProxy with jwt_verify (HS256) and an exp check.
cat >"$tmp/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4000
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$HAP
  bind 127.0.0.1:$HAPS ssl crt $tmp/haproxy.pem alpn http/1.1
  http-request deny deny_status 401 unless { req.hdr(authorization) -m found }
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request deny deny_status 422 unless { var(txn.alg) -m str HS256 }
  http-request deny deny_status 422 unless { var(txn.bearer),jwt_verify(txn.alg,"$SECRET") -m int 1 }
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:$UP maxconn 1000
CONF
# (d) the gateway: one worker; plain and TLS listeners; HS256, RS256 and ES256 keys.
HASH='$argon2id$v=19$m=19456,t=2,p=1$Ps4Uxv+gTwrI54Rt5O6Jsg$w0FdW+8A7fB8Zfmx1p/KmcssOGVhUP7lZf0I7hBLRN0'
gateway_config() { # $1 = key block
  cat <<YAML
server: { workers: 1, max_connections: 60000, max_connections_per_ip: 60000, reload_interval: 0s }
admin: { enabled: false }
listeners:
  - { name: plain, address: "127.0.0.1:$GWP", plaintext: true }
  - { name: tls, address: "127.0.0.1:$GWS", tls: { cert_file: $tmp/cert.pem, key_file: $tmp/key.pem } }
upstreams: { up: { url: "http://127.0.0.1:$UP" } }
auth:
  login_limits: { enabled: false }
  users: [{ email: bench@example.com, password_hash: "$HASH" }]
  keys:
$1
routes:
  - { name: all, path: /, upstream: up }
YAML
}
gateway_config "    - { kid: hs, algorithm: HS256, secret: \"$SECRET\" }" >"$tmp/gw-hs.yaml"
gateway_config "    - { kid: rs, algorithm: RS256, private_key_file: $tmp/rs.key, public_key_file: $tmp/rs.pub }" >"$tmp/gw-rs.yaml"
gateway_config "    - { kid: es, algorithm: ES256, private_key_file: $tmp/es.key, public_key_file: $tmp/es.pub }" >"$tmp/gw-es.yaml"
TOKEN_HS="$($GW token --config "$tmp/gw-hs.yaml" --sub bench@example.com --ttl 2h)"
TOKEN_RS="$($GW token --config "$tmp/gw-rs.yaml" --sub bench@example.com --ttl 2h)"
TOKEN_ES="$($GW token --config "$tmp/gw-es.yaml" --sub bench@example.com --ttl 2h)"

wait_port() { for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }
peak_rss_kib() { # sum of VmHWM of a pid and its children
  local total=0 p
  for p in "$@" $(pgrep -P "$1" 2>/dev/null); do
    total=$((total + $(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v+0 } else if (v ~ /s$/) { sub(/s$/, "", v); print v*1000 } else print v }'; }

taskset -c 1 nginx -c "$tmp/upstream.conf" & pids+=($!)
wait_port $UP

start_sut() { # $1 = system; sets SUT_PID
  case "$1" in
    direct) SUT_PID="" ;;
    nginx) taskset -c 0 nginx -c "$tmp/proxy.conf" & SUT_PID=$!; wait_port $NGX ;;
    haproxy|haproxy-tls) taskset -c 0 haproxy -f "$tmp/haproxy.cfg" & SUT_PID=$!; wait_port $HAP ;;
    gateway*-rs*) RUST_LOG=warn taskset -c 0 $GW run --config "$tmp/gw-rs.yaml" 2>>"$tmp/gw.log" & SUT_PID=$!; wait_port $GWP ;;
    gateway*-es*) RUST_LOG=warn taskset -c 0 $GW run --config "$tmp/gw-es.yaml" 2>>"$tmp/gw.log" & SUT_PID=$!; wait_port $GWP ;;
    gateway*) RUST_LOG=warn taskset -c 0 $GW run --config "$tmp/gw-hs.yaml" 2>>"$tmp/gw.log" & SUT_PID=$!; wait_port $GWP ;;
  esac
}
url_of() {
  case "$1" in
    direct) echo "http://127.0.0.1:$UP/properties/1" ;;
    nginx) echo "http://127.0.0.1:$NGX/properties/1" ;;
    haproxy) echo "http://127.0.0.1:$HAP/properties/1" ;;
    haproxy-tls) echo "https://127.0.0.1:$HAPS/properties/1" ;;
    gateway-tls*) echo "https://127.0.0.1:$GWS/properties/1" ;;
    gateway*) echo "http://127.0.0.1:$GWP/properties/1" ;;
  esac
}
token_of() { case "$1" in *-rs*) echo "$TOKEN_RS" ;; *-es*) echo "$TOKEN_ES" ;; *) echo "$TOKEN_HS" ;; esac; }

# SYSTEMS="nginx gateway" and EXTRAS=0 (no handshake, idle-memory or plot steps) make a
# quick partial run while working on one part; the recorded figures use the defaults.
read -r -a SYSTEMS <<<"${SYSTEMS:-direct nginx haproxy gateway haproxy-tls gateway-tls gateway-rs256 gateway-es256}"
declare -A RPS P50 P99 RSS
for round in $(seq "$ROUNDS"); do
  for sys in "${SYSTEMS[@]}"; do
    start_sut "$sys"
    out="$(taskset -c 1 wrk -t1 -c$CONNS -d"${DURATION}s" --latency -H "Authorization: Bearer $(token_of "$sys")" "$(url_of "$sys")")"
    if grep -q "Non-2xx" <<<"$out"; then echo "$sys: non-2xx responses:" >&2; echo "$out" >&2; exit 1; fi
    RPS[$sys]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    P50[$sys]+="$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")") "
    P99[$sys]+="$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")") "
    if [[ -n "$SUT_PID" ]]; then
      RSS[$sys]+="$(peak_rss_kib "$SUT_PID") "
      kill "$SUT_PID"; wait "$SUT_PID" 2>/dev/null || true
    else
      RSS[$sys]+="0 "
    fi
    echo "round $round: $sys $(awk '/Requests\/sec/ {print $2}' <<<"$out") req/s" >&2
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
results="$tmp/results.tsv"
printf 'system\trps\tp50_ms\tp99_ms\tpeak_rss_mib\n' >"$results"
echo
echo "| system (1 core) | requests/s | p50 ms | p99 ms | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|"
for sys in "${SYSTEMS[@]}"; do
  r=$(median <<<"${RPS[$sys]}"); a=$(median <<<"${P50[$sys]}"); b=$(median <<<"${P99[$sys]}")
  m=$(median <<<"${RSS[$sys]}"); m=$(awk -v k="$m" 'BEGIN {printf "%.1f", k/1024}')
  printf '%s\t%s\t%s\t%s\t%s\n' "$sys" "$r" "$a" "$b" "$m" >>"$results"
  printf '| %s | %.0f | %.2f | %.2f | %s |\n' "$sys" "$r" "$a" "$b" "$m"
done
ratio() { # $1 / $2 requests/s, or n/a when either was not run
  grep -q "^$1	" "$results" && grep -q "^$2	" "$results" || { echo n/a; return; }
  awk -v a="$(awk -v s="$1" '$1==s {print $2}' "$results")" -v b="$(awk -v s="$2" '$1==s {print $2}' "$results")" 'BEGIN {printf "%.2f", a/b}'; }
echo
echo "gateway / haproxy (HS256, plain): $(ratio gateway haproxy)x   (target >= 1.25)"
echo "gateway / nginx (no auth), plain: $(ratio gateway nginx)x   (target >= 0.9)"
echo "gateway-tls / haproxy-tls:        $(ratio gateway-tls haproxy-tls)x   (target >= 1.0)"
echo "p99 gateway vs haproxy:           $(awk -v s=gateway '$1==s {print $4}' "$results") ms vs $(awk -v s=haproxy '$1==s {print $4}' "$results") ms"

[[ "${EXTRAS:-1}" == 0 ]] && exit 0

# New TLS handshakes per second: every request on a new connection (Connection: close).
for sys in haproxy-tls gateway-tls; do
  start_sut "$sys"
  out="$(taskset -c 1 wrk -t1 -c16 -d"${DURATION}s" -H "Connection: close" -H "Authorization: Bearer $TOKEN_HS" "$(url_of "$sys")")"
  echo "new TLS connections/s, $sys: $(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  kill "$SUT_PID"; wait "$SUT_PID" 2>/dev/null || true
done

# Memory per idle keep-alive connection: 10,000 plain connections held open, each
# measurement on a fresh gateway; RSS is noisy (allocator page reuse), so three runs.
per_conn=()
for run in 1 2 3; do
  start_sut gateway
  read -r before after per < <(python3 benches/compare/idle_conns.py 127.0.0.1 $GWP "$SUT_PID" 10000 /properties/1 "$TOKEN_HS")
  echo "gateway RSS with 10,000 idle keep-alive connections (run $run): $((before / 1024)) MiB -> $((after / 1024)) MiB, $per bytes per connection"
  per_conn+=("$per")
  kill "$SUT_PID"; wait "$SUT_PID" 2>/dev/null || true
done
echo "bytes per idle connection, median of 3: $(printf '%s ' "${per_conn[@]}" | median)"

mkdir -p "$OUT_DIR"
cp "$results" "$OUT_DIR/compare-results.tsv"
python3 benches/compare/plot.py "$results" "$OUT_DIR/compare.png" && echo "plot: $OUT_DIR/compare.png"
