#!/usr/bin/env bash
# scripts/bench.sh — the standard orch-bench scenarios, unattended, on loopback.
#
#   scripts/bench.sh                      # every standard scenario (make bench)
#   scripts/bench.sh a-unpaced-c512 nginx-a-unpaced-c512   # (make bench-peers)
#
# For each scenario it starts a fresh llama.cpp fake engine (paced as the
# scenario says) and a fresh orchd in front of it (config written to a temp
# dir), runs `orch-bench run` (a direct phase against the fake, then a gateway
# phase through orchd, both against the same fake), writes
# bench/results/<scenario>/report.{json,md,svg}, and stops what it started.
# Finally it writes bench/results/summary.md over every report there.
#
# Scenarios (SPEC §12, issue 7; PERFORMANCE.md):
#   a-unpaced-c64         64-token unpaced streams, c=64
#   a-unpaced-c512        64-token unpaced streams, c=512
#   b-paced20ms-c1000     128 tokens paced 20 ms, c=1000
#   c-paced200ms-c5000    128 tokens paced 200 ms, 5,000 concurrent streams
#   nginx-a-unpaced-c512  reference: nginx (proxy_buffering off) in front of
#                         the same fake, driven with the engine's own API
#
# Environment: BIN (binaries, default bin), OUT (default bench/results),
# ORCHD_LOG_LEVEL (default warn: no per-task info lines, like nginx with its
# access log off), D_SCALE (multiplies every phase duration, default 1).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
OUT=${OUT:-bench/results}
GO=${GO:-go}
ORCHD_LOG_LEVEL=${ORCHD_LOG_LEVEL:-warn}
D_SCALE=${D_SCALE:-1}
KEY=sk-bench
MODEL=tiny-llama
ENGINE=llamacpp

STANDARD=(a-unpaced-c64 a-unpaced-c512 b-paced20ms-c1000 c-paced200ms-c5000)
if [ $# -gt 0 ]; then SCENARIOS=("$@"); else SCENARIOS=("${STANDARD[@]}"); fi

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench.sh: %s\n' "$*" >&2; exit 1; }

# ensure_nginx installs Debian's nginx-light when a reference scenario needs
# it, without letting the package start its own service on port 80.
ensure_nginx() {
	command -v nginx >/dev/null && return
	[ "$(id -u)" = 0 ] || die "nginx is missing; install it (apt-get install nginx-light) or run as root"
	log "installing nginx-light from Debian"
	local guard=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		guard=1
	fi
	local rc=0
	{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light ||
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light; }; } >"${TMPDIR:-/tmp}/orch-bench-apt.log" 2>&1 || rc=$?
	[ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
	[ $rc = 0 ] && command -v nginx >/dev/null || die "cannot install nginx-light (see ${TMPDIR:-/tmp}/orch-bench-apt.log)"
}
for s in "${SCENARIOS[@]}"; do
	case $s in nginx-*) ensure_nginx ;; esac
done

# 5,000 streams need ~5k sockets in orch-bench and the fake and ~10k in orchd.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 12000 ] ||
	log "warning: open-file limit $(ulimit -n) is low for the 5,000-stream scenario"

log "building orchd, orch-fake-engine, orch-bench into $BIN/"
mkdir -p "$BIN"
$GO build -o "$BIN/" ./cmd/orchd ./cmd/orch-fake-engine ./cmd/orch-bench

TMP=$(mktemp -d -t orch-bench.XXXXXX)
PIDS=()
cleanup() {
	local rc=$?
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	PIDS=()
	if [ $rc -ne 0 ] && [ -d "$TMP" ]; then
		for f in "$TMP"/*.log; do
			[ -s "$f" ] || continue
			printf -- '--- last lines of %s\n' "$f" >&2
			tail -n 20 "$f" >&2
		done
	fi
	rm -rf "$TMP"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop_all ends the processes started for the current scenario.
stop_all() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	PIDS=()
}

# free_port prints a loopback TCP port nothing listens on, below the
# ephemeral range so client sockets never take it.
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 12000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

# wait_http URL: until it answers 200 (bounded: 15 s).
wait_http() {
	for _ in $(seq 150); do
		if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" || true)" = 200 ]; then
			return
		fi
		sleep 0.1
	done
	die "$1 did not answer 200 within 15 s"
}

# start_fake PORT SLOTS ITL_MS
start_fake() {
	"$BIN/orch-fake-engine" --engine "$ENGINE" --listen "127.0.0.1:$1" --slots "$2" --itl-ms "$3" \
		>"$TMP/fake.log" 2>&1 &
	FAKE_PID=$!
	PIDS+=("$FAKE_PID")
	wait_http "http://127.0.0.1:$1/health"
}

# start_orchd PORT FAKE_PORT SLOTS QUEUE → sets ORCHD_PID
start_orchd() {
	cat >"$TMP/orchd.yaml" <<EOF
listen: 127.0.0.1:$1
shutdown_grace_ms: 2000
log: { level: $ORCHD_LOG_LEVEL }
auth:
  keys:
    - { key: $KEY, tenant: bench, roles: [data, control] }
pools:
  - id: bench
    engine: $ENGINE
    model: $MODEL
    queue: { capacity: $4, full_policy: reject }
    replicas:
      - { id: r0, url: "http://127.0.0.1:$2", slots: $3 }
EOF
	"$BIN/orchd" --config "$TMP/orchd.yaml" >"$TMP/orchd.log" 2>&1 &
	ORCHD_PID=$!
	PIDS+=("$ORCHD_PID")
	wait_http "http://127.0.0.1:$1/readyz"
}

# start_nginx PORT FAKE_PORT → sets NGINX_PIDS (master,workers)
start_nginx() {
	command -v nginx >/dev/null || die "nginx is not installed (make bench-peers installs it)"
	mkdir -p "$TMP/nginx"
	cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
user root;
worker_processes auto;
worker_rlimit_nofile 65536;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  upstream fake {
    server 127.0.0.1:$2;
    keepalive 1024;
  }
  server {
    listen 127.0.0.1:$1 backlog=4096;
    location / {
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
	nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" >>"$TMP/nginx.log" 2>&1 &
	local master=$!
	PIDS+=("$master")
	wait_http "http://127.0.0.1:$1/health"
	NGINX_PIDS=$master
	for w in $(pgrep -P "$master"); do NGINX_PIDS+=",$w"; done
}

dur() { awk -v s="$1" -v k="$D_SCALE" 'BEGIN { printf "%gs", s * k }'; }

# scenario NAME → C TOKENS ITL_MS DURATION_S RAMP RELAY
scenario_params() {
	case $1 in
	a-unpaced-c64) echo "64 64 0 10 0s orchd" ;;
	a-unpaced-c512) echo "512 64 0 15 0s orchd" ;;
	b-paced20ms-c1000) echo "1000 128 20 15 1s orchd" ;;
	# 128 × 200 ms = 25.6 s per stream: every client runs one stream; the
	# ramp spreads 5,000 connects over 2 s.
	c-paced200ms-c5000) echo "5000 128 200 3 2s orchd" ;;
	nginx-a-unpaced-c512) echo "512 64 0 15 0s nginx" ;;
	*) die "unknown scenario $1 (know: ${STANDARD[*]} nginx-a-unpaced-c512)" ;;
	esac
}

run_scenario() {
	local name=$1 c tokens itl d ramp relay
	read -r c tokens itl d ramp relay <<<"$(scenario_params "$name")"
	local fport gport slots=$((c + 64)) queue=$((2 * c + 64))
	fport=$(free_port)
	start_fake "$fport" "$slots" "$itl"
	gport=$(free_port)
	local relay_args=()
	if [ "$relay" = nginx ]; then
		start_nginx "$gport" "$fport"
		relay_args=(--gateway-api engine --gateway-pid "$NGINX_PIDS")
	else
		start_orchd "$gport" "$fport" "$slots" "$queue"
		relay_args=(--gateway-pid "$ORCHD_PID")
	fi
	log "$name: c=$c tokens=$tokens paced=${itl}ms, $(dur "$d") per phase ($relay on :$gport, fake on :$fport)"
	rm -rf "${OUT:?}/$name"
	"$BIN/orch-bench" run --scenario "$name" \
		--gateway "http://127.0.0.1:$gport" --direct "http://127.0.0.1:$fport" \
		--key "$KEY" --model "$MODEL" --engine "$ENGINE" --engine-pid "$FAKE_PID" \
		-c "$c" -d "$(dur "$d")" --ramp "$ramp" --tokens "$tokens" --paced "${itl}ms" \
		"${relay_args[@]}" --out "$OUT/$name"
	stop_all
}

for s in "${SCENARIOS[@]}"; do scenario_params "$s" >/dev/null; done
mkdir -p "$OUT"
start=$SECONDS
for s in "${SCENARIOS[@]}"; do
	run_scenario "$s"
done

# The summary covers every report present: orchd scenarios, then references.
reports=() peers=()
for s in "${STANDARD[@]}"; do
	[ -f "$OUT/$s/report.json" ] && reports+=("$OUT/$s/report.json")
done
for f in "$OUT"/nginx-*/report.json; do
	[ -f "$f" ] && peers+=("$f")
done
if [ ${#reports[@]} -gt 0 ]; then
	peer_list=$(IFS=,; echo "${peers[*]:-}")
	"$BIN/orch-bench" summary --out "$OUT/summary.md" ${peer_list:+--peers "$peer_list"} "${reports[@]}"
	log "summary: $OUT/summary.md"
	cat "$OUT/summary.md"
fi
log "done in $((SECONDS - start)) s"
