#!/usr/bin/env bash
# Runs a local ImapProxy cluster on 127.0.0.1: a Consul dev agent, two throwaway Dovecot backends registered
# in it, and the proxy in front, which reads its backends, their health and the user placements from Consul.
#
#   deploy/local/cluster.sh                  start, print how to connect, stay in the foreground (Ctrl-C stops all)
#   deploy/local/cluster.sh --background     start, print, return (stop later with `down`)
#   deploy/local/cluster.sh --backends-only  Consul and the two backends, no proxy (e.g. to run it from an IDE)
#   deploy/local/cluster.sh down             stop everything a previous run started
#
# Besides the human text it prints machine-readable lines, each alone on its line:
#   IMAP=127.0.0.1:<port>  IMAPS=127.0.0.1:<port>  ADMIN=http://127.0.0.1:<port>  CONSUL=http://127.0.0.1:<port>
#   USER=<name>:<password>  (and BACKEND=<id>:127.0.0.1:<port> per backend)
# Environment: RUN_DIR (default <repo>/.run/local), IMAP_PORT (1143), IMAPS_PORT (1993), ADMIN_PORT (18080),
# BACKEND1_PORT (10143), BACKEND2_PORT (10144), CONSUL_HTTP_PORT (18500), CONSUL_SERVER_PORT,
# CONSUL_SERF_LAN_PORT, CONSUL_SERF_WAN_PORT (free ports picked at run time), PROXY_START_TIMEOUT (60 s),
# CONSUL_START_TIMEOUT (30 s).
#
# Consul (dev mode: everything in memory, gone when it stops) holds, under the prefix imapproxy/:
#   service imap-backend      dovecot-1 and dovecot-2, meta weight=100, TCP health check every 2 s
#   imapproxy/users/<user>    the backend id of a pinned user: alice -> dovecot-2, bob -> dovecot-1
#                             (carol and dave are placed by hashing)
#   imapproxy/backends/<id>   {"state":"active","weight":100}
# The demo users get fresh random passwords on every run (RUN_DIR/users.txt). Needs root (Dovecot).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly REPO_ROOT
readonly DOVECOT_INSTANCE="$REPO_ROOT/scripts/dovecot-instance.sh"
readonly PROXY_PROJECT="$REPO_ROOT/src/ImapProxy/ImapProxy.csproj"
readonly PROXY_DLL="$REPO_ROOT/src/ImapProxy/bin/Release/net10.0/ImapProxy.dll"
readonly DEMO_USERS=(alice bob carol dave)
readonly HOST=127.0.0.1
readonly CONSUL_SERVICE=imap-backend
readonly CONSUL_PREFIX=imapproxy
# Pinned demo users (user:backend id); the others are placed by rendezvous hashing.
readonly PINNED_USERS=(alice:dovecot-2 bob:dovecot-1)

RUN_DIR="${RUN_DIR:-$REPO_ROOT/.run/local}"
IMAP_PORT="${IMAP_PORT:-1143}"
IMAPS_PORT="${IMAPS_PORT:-1993}"
ADMIN_PORT="${ADMIN_PORT:-18080}"
BACKEND1_PORT="${BACKEND1_PORT:-10143}"
BACKEND2_PORT="${BACKEND2_PORT:-10144}"
CONSUL_HTTP_PORT="${CONSUL_HTTP_PORT:-18500}"
CONSUL_SERVER_PORT="${CONSUL_SERVER_PORT:-}"
CONSUL_SERF_LAN_PORT="${CONSUL_SERF_LAN_PORT:-}"
CONSUL_SERF_WAN_PORT="${CONSUL_SERF_WAN_PORT:-}"
PROXY_START_TIMEOUT="${PROXY_START_TIMEOUT:-60}"
CONSUL_START_TIMEOUT="${CONSUL_START_TIMEOUT:-30}"
PROXY_PID=""

die()
{
  echo "cluster.sh: $*" >&2
  exit 1
}

usage()
{
  echo "usage: deploy/local/cluster.sh [up] [--background] [--backends-only] | down" >&2
  exit 2
}

absolute_path()
{
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
  esac
}

# Dovecot's mail and auth users must traverse every directory down to their files; a checkout under a
# 700 home directory would not allow that, so the backends live under /tmp, one place per run dir.
backends_dir()
{
  if [[ -r "$RUN_DIR/backends-dir" ]]; then
    cat "$RUN_DIR/backends-dir"
  else
    printf '/tmp/imapproxy-local-%s\n' "$(printf '%s' "$RUN_DIR" | cksum | cut -d' ' -f1)"
  fi
}

port_in_use()
{
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# True if any TCP or UDP socket on this machine uses the port (either end; conservative). Serf needs the
# same port free for TCP and UDP, which a connect probe cannot tell.
port_taken_anywhere()
{
  local hex
  hex="$(printf '%04X' "$1")"
  grep -qs ":$hex " /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6
}

# A port in 20000-32767 (below Linux's ephemeral range) that no socket uses and that is not in "$@".
pick_free_port()
{
  local port i
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + RANDOM % 12768))
    if ! port_taken_anywhere "$port" && [[ " $* " != *" $port "* ]]; then
      printf '%s\n' "$port"
      return 0
    fi
  done
  die "no free port found in 20000-32767"
}

greets_ok()
{
  local line=""
  (
    exec 3<>"/dev/tcp/$HOST/$1" || exit 1
    IFS= read -r -t 2 line <&3 || exit 1
    [[ "$line" == "* OK"* ]]
  ) 2>/dev/null
}

# The live proxy pid from the pid file, if it still is our proxy (pids get reused).
proxy_pid()
{
  local pid_file="$RUN_DIR/proxy.pid" pid
  [[ -r "$pid_file" ]] || return 1
  pid="$(<"$pid_file")"
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$RUN_DIR/imapproxy.json" || return 1
  printf '%s\n' "$pid"
}

# The live Consul pid from the pid file, if it still is our agent.
consul_pid()
{
  local pid_file="$RUN_DIR/consul.pid" pid
  [[ -r "$pid_file" ]] || return 1
  pid="$(<"$pid_file")"
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$RUN_DIR/consul-data" || return 1
  printf '%s\n' "$pid"
}

stop_consul()
{
  local pid i
  pid="$(consul_pid)" || { rm -f "$RUN_DIR/consul.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "consul (pid $pid) ignored SIGTERM for 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/consul.pid"
  echo "stopped consul (pid $pid)"
}

stop_proxy()
{
  local pid i
  pid="$(proxy_pid)" || { rm -f "$RUN_DIR/proxy.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  # The host's shutdown has a grace period for open sessions; allow a little more, then kill.
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "proxy (pid $pid) ignored SIGTERM for 20 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/proxy.pid"
  echo "stopped proxy (pid $pid)"
}

cmd_down()
{
  local dir
  stop_proxy
  stop_consul
  dir="$(backends_dir)"
  for name in dovecot-1 dovecot-2; do
    if [[ -d "$dir/$name" ]]; then
      "$DOVECOT_INSTANCE" stop "$dir/$name"
    fi
  done
}

print_log_tail()
{
  local log="${1:-$RUN_DIR/proxy.log}"
  if [[ -r "$log" ]]; then
    echo "---- last lines of $log ----" >&2
    tail -n 40 "$log" >&2
    echo "----" >&2
  fi
}

generate_certificate()
{
  [[ -s "$RUN_DIR/cert.pem" && -s "$RUN_DIR/key.pem" ]] &&
    openssl x509 -checkend 86400 -noout -in "$RUN_DIR/cert.pem" >/dev/null 2>&1 && return 0
  local output
  if ! output="$(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -days 30 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$RUN_DIR/key.pem" -out "$RUN_DIR/cert.pem" 2>&1)"; then
    echo "$output" >&2
    die "openssl could not create the certificate"
  fi
  chmod 600 "$RUN_DIR/key.pem"
  chmod 644 "$RUN_DIR/cert.pem"
}

# Fresh throwaway passwords per run: RUN_DIR/users.txt (name:password) and the backends' passwd-file.
generate_users()
{
  local user password
  : >"$RUN_DIR/users.txt"
  : >"$RUN_DIR/users.passwd"
  chmod 600 "$RUN_DIR/users.txt" "$RUN_DIR/users.passwd"
  for user in "${DEMO_USERS[@]}"; do
    password="$user-$(openssl rand -hex 6)"
    printf '%s:%s\n' "$user" "$password" >>"$RUN_DIR/users.txt"
    printf '%s:{PLAIN}%s\n' "$user" "$password" >>"$RUN_DIR/users.passwd"
  done
}

# The backends come from Consul; placements are re-read every few seconds so a demo move shows quickly.
write_proxy_config()
{
  cat >"$RUN_DIR/imapproxy.json" <<EOF
{
  "ImapProxy": {
    "Listeners": [
      { "Name": "imap", "Address": "$HOST", "Port": $IMAP_PORT, "Tls": "StartTls" },
      { "Name": "imaps", "Address": "$HOST", "Port": $IMAPS_PORT, "Tls": "Implicit" }
    ],
    "Tls": { "CertificateFile": "$RUN_DIR/cert.pem", "KeyFile": "$RUN_DIR/key.pem" },
    "Admin": { "Address": "$HOST", "Port": $ADMIN_PORT },
    "Directory": { "PlacementCacheTtl": "00:00:05", "PlacementRefreshInterval": "00:00:02" },
    "Consul": { "Enabled": true, "Addresses": [ "$(consul_url)" ], "ServiceName": "$CONSUL_SERVICE", "KeyPrefix": "$CONSUL_PREFIX" }
  }
}
EOF
}

consul_url()
{
  printf 'http://%s:%s\n' "$HOST" "$CONSUL_HTTP_PORT"
}

# curl against the local agent; fails (with Consul's answer on stderr) on any non-2xx.
consul_api()
{
  local method="$1" path="$2" output
  shift 2
  if ! output="$(curl -sS --max-time 10 --fail-with-body -X "$method" "$@" "$(consul_url)$path" 2>&1)"; then
    echo "Consul $method $path failed: $output" >&2
    return 1
  fi
  printf '%s' "$output"
}

start_consul()
{
  command -v consul >/dev/null 2>&1 || { echo "consul not found (scripts/install-deps.sh installs it)" >&2; return 1; }
  # Dev mode keeps KV and catalog in memory, but the agent persists its own service registrations in the
  # data dir: start from an empty one so that every run has exactly the state this script writes.
  rm -rf "$RUN_DIR/consul-data"
  mkdir -p "$RUN_DIR/consul-data" || return 1
  # Its own session, like the proxy: Ctrl-C reaches it only through our trap, after the proxy has stopped.
  setsid consul agent -dev -node imapproxy-local \
    -bind "$HOST" -client "$HOST" \
    -http-port "$CONSUL_HTTP_PORT" -dns-port -1 -grpc-port -1 \
    -server-port "$CONSUL_SERVER_PORT" -serf-lan-port "$CONSUL_SERF_LAN_PORT" -serf-wan-port "$CONSUL_SERF_WAN_PORT" \
    -data-dir "$RUN_DIR/consul-data" -log-level info -hcl 'disable_update_check = true' \
    </dev/null >"$RUN_DIR/consul.log" 2>&1 &
  local pid=$! leader=""
  printf '%s\n' "$pid" >"$RUN_DIR/consul.pid"

  local deadline=$((SECONDS + CONSUL_START_TIMEOUT))
  # /v1/status/leader answers "" until the dev server has elected itself.
  until leader="$(curl -sf --max-time 2 "$(consul_url)/v1/status/leader" 2>/dev/null)" && [[ "$leader" == '"'?*'"' ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "consul exited during start-up" >&2
      print_log_tail "$RUN_DIR/consul.log"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "consul had no leader on $(consul_url) within ${CONSUL_START_TIMEOUT}s" >&2
      print_log_tail "$RUN_DIR/consul.log"
      return 1
    fi
    sleep 0.2
  done
}

# Registers the backends with TCP health checks and writes the demo placements and backend states.
seed_consul()
{
  local id port pinned
  for id in dovecot-1 dovecot-2; do
    if [[ "$id" == dovecot-1 ]]; then port="$BACKEND1_PORT"; else port="$BACKEND2_PORT"; fi
    consul_api PUT /v1/agent/service/register --data-binary @- >/dev/null <<EOF || return 1
{
  "ID": "$id", "Name": "$CONSUL_SERVICE", "Address": "$HOST", "Port": $port, "Meta": { "weight": "100" },
  "Check": { "Name": "IMAP port of $id", "TCP": "$HOST:$port", "Interval": "2s", "Timeout": "1s" }
}
EOF
    consul_api PUT "/v1/kv/$CONSUL_PREFIX/backends/$id" --data-binary '{"state":"active","weight":100}' >/dev/null || return 1
  done
  for pinned in "${PINNED_USERS[@]}"; do
    consul_api PUT "/v1/kv/$CONSUL_PREFIX/users/${pinned%%:*}" --data-binary "${pinned#*:}" >/dev/null || return 1
  done
}

# Waits (bounded) until Consul's TCP checks see both backends: a new check is critical until it first runs.
wait_backends_passing()
{
  local deadline=$((SECONDS + 20)) id status
  for id in dovecot-1 dovecot-2; do
    until status="$(curl -s --max-time 2 "$(consul_url)/v1/agent/health/service/id/$id?format=text")" && [[ "$status" == passing ]]; do
      if ((SECONDS >= deadline)); then
        echo "Consul's health check of $id is '$status', not passing, after 20 s" >&2
        return 1
      fi
      sleep 0.2
    done
  done
}

start_backends()
{
  local dir="$1"
  mkdir -p "$dir" && chmod 755 "$dir" || return 1
  printf '%s\n' "$dir" >"$RUN_DIR/backends-dir" || return 1
  # Called as `start_backends || die`, where set -e does not apply: check each step.
  SEED_MESSAGES=3 "$DOVECOT_INSTANCE" start "$dir/dovecot-1" "$BACKEND1_PORT" imapproxy-local-1 "$RUN_DIR/users.passwd" >/dev/null || return 1
  SEED_MESSAGES=3 "$DOVECOT_INSTANCE" start "$dir/dovecot-2" "$BACKEND2_PORT" imapproxy-local-2 "$RUN_DIR/users.passwd" >/dev/null || return 1
}

build_proxy()
{
  command -v dotnet >/dev/null 2>&1 || die "dotnet not found: install the .NET 10 SDK"
  echo "building the proxy (Release)..."
  if ! DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 \
    dotnet build -c Release --nologo -v quiet "$PROXY_PROJECT" >"$RUN_DIR/build.log" 2>&1; then
    grep -E "error|Error" "$RUN_DIR/build.log" | sort -u | tail -n 30 >&2 || tail -n 30 "$RUN_DIR/build.log" >&2
    return 1
  fi
  [[ -f "$PROXY_DLL" ]] || { echo "build produced no $PROXY_DLL" >&2; return 1; }
}

start_proxy()
{
  # Its own session: a Ctrl-C in this terminal reaches the proxy only through our trap, in order.
  setsid dotnet "$PROXY_DLL" --config "$RUN_DIR/imapproxy.json" </dev/null >"$RUN_DIR/proxy.log" 2>&1 &
  local pid=$!
  PROXY_PID="$pid"
  printf '%s\n' "$pid" >"$RUN_DIR/proxy.pid"

  local deadline=$((SECONDS + PROXY_START_TIMEOUT))
  until greets_ok "$IMAP_PORT"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the proxy exited during start-up" >&2
      print_log_tail
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "the proxy did not answer '* OK' on $HOST:$IMAP_PORT within ${PROXY_START_TIMEOUT}s" >&2
      print_log_tail
      return 1
    fi
    sleep 0.2
  done
}

print_connection_info()
{
  local backends_only="$1" first_user first_password
  IFS=: read -r first_user first_password <"$RUN_DIR/users.txt"
  echo
  if [[ "$backends_only" == 0 ]]; then
    cat <<EOF
ImapProxy local cluster is up (run dir: $RUN_DIR).
  IMAP (STARTTLS) $HOST:$IMAP_PORT   IMAPS $HOST:$IMAPS_PORT   admin http://$HOST:$ADMIN_PORT
  Backends: dovecot-1 $HOST:$BACKEND1_PORT, dovecot-2 $HOST:$BACKEND2_PORT   Proxy log: $RUN_DIR/proxy.log
  Consul: $(consul_url) (UI at $(consul_url)/ui/)   log: $RUN_DIR/consul.log

Try it (self-signed certificate, hence -k):
  curl -v --url imap://$HOST:$IMAP_PORT/ --ssl-reqd -k -u $first_user:$first_password
  curl -v --url 'imaps://$HOST:$IMAPS_PORT/INBOX;UID=1' -k -u $first_user:$first_password
  openssl s_client -connect $HOST:$IMAPS_PORT -quiet
  openssl s_client -connect $HOST:$IMAP_PORT -starttls imap -quiet
    then: a LOGIN $first_user $first_password / b SELECT INBOX / c LOGOUT

EOF
  else
    cat <<EOF
Consul and the Dovecot backends are up (run dir: $RUN_DIR; no proxy started).
  dovecot-1 $HOST:$BACKEND1_PORT   dovecot-2 $HOST:$BACKEND2_PORT   proxy config: $RUN_DIR/imapproxy.json
  Consul: $(consul_url) (UI at $(consul_url)/ui/)   log: $RUN_DIR/consul.log
  curl -v --url imap://$HOST:$BACKEND1_PORT/ -u $first_user:$first_password

EOF
  fi
  cat <<EOF
Consul holds the directory (prefix $CONSUL_PREFIX/): alice is pinned to dovecot-2, bob to dovecot-1, carol and
dave are placed by hashing over the healthy, active backends.
  move a user:      curl -X PUT --data dovecot-1 $(consul_url)/v1/kv/$CONSUL_PREFIX/users/alice
  unpin a user:     curl -X DELETE $(consul_url)/v1/kv/$CONSUL_PREFIX/users/alice
  drain a backend:  curl -X PUT --data '{"state":"draining","weight":100}' $(consul_url)/v1/kv/$CONSUL_PREFIX/backends/dovecot-2
  backend health:   curl '$(consul_url)/v1/health/service/$CONSUL_SERVICE?pretty'

EOF
  echo "Demo users (fresh passwords every run):"
  if [[ "$backends_only" == 0 ]]; then
    echo "IMAP=$HOST:$IMAP_PORT"
    echo "IMAPS=$HOST:$IMAPS_PORT"
    echo "ADMIN=http://$HOST:$ADMIN_PORT"
  fi
  echo "CONSUL=$(consul_url)"
  echo "BACKEND=dovecot-1:$HOST:$BACKEND1_PORT"
  echo "BACKEND=dovecot-2:$HOST:$BACKEND2_PORT"
  local user password
  while IFS=: read -r user password; do
    echo "USER=$user:$password"
  done <"$RUN_DIR/users.txt"
}

# EXIT trap while starting (and while in the foreground): never leave half a cluster behind.
on_startup_exit()
{
  local rc=$?
  trap - EXIT
  cmd_down >/dev/null 2>&1 || true
  exit "$rc"
}

cmd_up()
{
  local background="$1" backends_only="$2" port
  ((EUID == 0)) || die "must run as root (Dovecot switches mail processes to a dedicated user)"
  local fixed=("$IMAP_PORT" "$IMAPS_PORT" "$ADMIN_PORT" "$BACKEND1_PORT" "$BACKEND2_PORT" "$CONSUL_HTTP_PORT")
  for port in "$CONSUL_SERVER_PORT" "$CONSUL_SERF_LAN_PORT" "$CONSUL_SERF_WAN_PORT"; do
    [[ -z "$port" ]] || fixed+=("$port")
  done
  for port in "${fixed[@]}"; do
    if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port == 0 || port > 65535)); then
      die "invalid port: $port"
    fi
  done

  if [[ "$(printf '%s\n' "${fixed[@]}" | sort | uniq -d)" ]]; then
    die "IMAP_PORT, IMAPS_PORT, ADMIN_PORT, BACKEND1_PORT, BACKEND2_PORT and the CONSUL_*_PORT settings must all differ"
  fi

  mkdir -p "$RUN_DIR"
  if proxy_pid >/dev/null || consul_pid >/dev/null || { [[ -r "$RUN_DIR/backends-dir" ]] &&
    "$DOVECOT_INSTANCE" status "$(backends_dir)/dovecot-1" >/dev/null 2>&1; }; then
    die "a cluster from $RUN_DIR is already running: run 'deploy/local/cluster.sh down' first"
  fi
  local ports=("$BACKEND1_PORT" "$BACKEND2_PORT" "${fixed[@]:5}")
  [[ "$backends_only" == 1 ]] || ports+=("$IMAP_PORT" "$IMAPS_PORT" "$ADMIN_PORT")
  for port in "${ports[@]}"; do
    port_in_use "$port" && die "port $HOST:$port is already in use (override it with the environment, see the header)"
  done
  # Consul's internal ports (Raft, Serf LAN and WAN over TCP and UDP): free ones unless given.
  [[ -n "$CONSUL_SERVER_PORT" ]] || CONSUL_SERVER_PORT="$(pick_free_port "${fixed[@]}")"
  [[ -n "$CONSUL_SERF_LAN_PORT" ]] || CONSUL_SERF_LAN_PORT="$(pick_free_port "${fixed[@]}" "$CONSUL_SERVER_PORT")"
  [[ -n "$CONSUL_SERF_WAN_PORT" ]] || CONSUL_SERF_WAN_PORT="$(pick_free_port "${fixed[@]}" "$CONSUL_SERVER_PORT" "$CONSUL_SERF_LAN_PORT")"

  bash "$REPO_ROOT/scripts/install-deps.sh"
  generate_certificate
  generate_users
  write_proxy_config

  # From here on, a failure must not leave half a cluster behind.
  trap on_startup_exit EXIT
  start_consul || die "Consul did not start (log: $RUN_DIR/consul.log)"
  start_backends "$(backends_dir)" || die "the Dovecot backends did not start"
  seed_consul || die "could not register the backends and demo data in Consul"
  wait_backends_passing || die "Consul does not see the backends as healthy (log: $RUN_DIR/consul.log)"
  if [[ "$backends_only" == 0 ]]; then
    build_proxy || die "the proxy did not build (log: $RUN_DIR/build.log)"
    start_proxy || die "the proxy did not start"
  fi

  print_connection_info "$backends_only"

  if [[ "$background" == 1 ]]; then
    trap - EXIT
    echo "Running in the background; stop it with: deploy/local/cluster.sh down"
    return 0
  fi

  echo "Press Ctrl-C to stop."
  trap 'trap - EXIT INT TERM; echo; cmd_down; exit 0' INT TERM
  if [[ "$backends_only" == 1 ]]; then
    while "$DOVECOT_INSTANCE" status "$(backends_dir)/dovecot-1" >/dev/null 2>&1; do
      consul_pid >/dev/null || die "consul stopped unexpectedly (log: $RUN_DIR/consul.log)"
      sleep 1 &
      wait $! || true
    done
    die "dovecot-1 stopped unexpectedly"
  fi
  # `wait` returns early when a trapped signal arrives, so Ctrl-C is handled at once.
  wait "$PROXY_PID" || true
  echo "the proxy exited unexpectedly" >&2
  print_log_tail
  exit 1
}

background=0
backends_only=0
command=up
for argument in "$@"; do
  case "$argument" in
    up) command=up ;;
    down) command=down ;;
    --background) background=1 ;;
    --backends-only) backends_only=1 ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
done

RUN_DIR="$(absolute_path "$RUN_DIR")"
case "$command" in
  up) cmd_up "$background" "$backends_only" ;;
  down) cmd_down ;;
esac
