#!/usr/bin/env bash
# Side-by-side benchmark of ImapProxy against a direct Dovecot backend and three other IMAP proxies (nginx mail
# proxy, Dovecot as a proxy, HAProxy in TCP mode), all on loopback, one target at a time.
#
#   bench/run.sh [--quick] [--only TARGET,...] [--rounds N] [--smoke]
#
#   --quick         ~2 s per figure, 100 users, 500 idle sessions: a few minutes in all (CI runs this)
#   --only T,...    measure only these targets: direct, imapproxy, nginx, dovecot-proxy, haproxy
#                   (the backend always runs; ratios need `direct`)
#   --rounds N      measure every target N times (1-9, default 1), in reversed order every other round so
#                   that a drift of the machine's speed does not favour one target; each cell is the median
#   --smoke         no load generator: start each target, log in through it with curl (plain and TLS),
#                   check the INBOX, stop it (checks the set-up in seconds)
#
# Environment (all optional):
#   BENCH_RUN_DIR        run directory, wiped at start (default .run/bench in the repository)
#   BENCH_USERS          users on the backend (full 1000, quick 100)
#   BENCH_DURATION       seconds measured per figure (full 10, quick 1.5)
#   BENCH_WARMUP         seconds of warm-up per figure (full 2, quick 0.5)
#   BENCH_IDLE_SESSIONS  idle IDLE sessions for the memory figure (full 9000, quick 500)
#   BENCH_IDLE_HOLD      seconds the idle sessions are held while CPU is measured (full 5, quick 1)
#   BENCH_COOLDOWN       longest wait for the previous target's TIME_WAIT connections to expire, and again for
#                        the backend to settle, before a target starts (full 75, quick 0)
#   BENCH_TARGET_WARMUP  seconds of each of six unrecorded warm-up loads a target serves before its first
#                        figure (full 2, quick 0: none)
#   BENCH_START_TIMEOUT  seconds a target may take to greet (default 90)
#   BENCH_CERT_KEY       openssl -newkey argument for the self-signed certificate (default rsa:2048)
#   BENCH_REF_DLL        another build's ImapProxy.dll (e.g. of an earlier commit): measured as one more target,
#                        imapproxy-ref, right after imapproxy, with the same configuration (before/after in one run)
#   BENCH_REF_LABEL      what to call that build in the report (default: its path)
#   IMAPPROXY_ENV        extra VAR=VALUE words for ImapProxy's environment, after DOTNET_gcServer=0
#                        (e.g. IMAPPROXY_ENV="DOTNET_gcServer=1 DOTNET_GCHeapCount=2")
#
# Output: one markdown table on stdout (also RUN_DIR/results.md), the generator's raw JSON lines in
# RUN_DIR/results.jsonl, logs in RUN_DIR/log. Exit status 1 if a target failed to start or a scenario failed
# (what was measured is still printed), 2 on bad usage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly PEERS="$ROOT/bench/peers"
readonly ALL_TARGETS=(direct imapproxy imapproxy-ref nginx dovecot-proxy haproxy)
REF_DLL="${BENCH_REF_DLL:-}"
readonly MAIL_USER=imapproxy-mail
readonly PROXY_DLL="$ROOT/src/ImapProxy/bin/Release/net10.0/ImapProxy.dll"
readonly BENCH_PROJECT="$ROOT/bench/ImapProxy.Bench/ImapProxy.Bench.csproj"
readonly BENCH_DLL="$ROOT/bench/ImapProxy.Bench/bin/Release/net10.0/ImapProxy.Bench.dll"

log()
{
  local line
  printf -v line '[%s] %s' "$(date -u +%H:%M:%S)" "$*"
  printf '%s\n' "$line" >&2
  # Also kept with the run's other logs once the run directory exists.
  [[ -n "${RUN_LOG:-}" ]] && printf '%s\n' "$line" >>"$RUN_LOG"
  return 0
}

die()
{
  log "error: $*"
  exit 1
}

usage()
{
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------------------------------------------- options

mode=full
only=""
smoke=0
rounds=1
while (($#)); do
  case "$1" in
    --quick) mode=quick ;;
    --only) (($# >= 2)) || usage; only="$2"; shift ;;
    --only=*) only="${1#--only=}" ;;
    --rounds) (($# >= 2)) || usage; rounds="$2"; shift ;;
    --rounds=*) rounds="${1#--rounds=}" ;;
    --smoke) smoke=1 ;;
    -h | --help) usage ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage ;;
  esac
  shift
done

targets=()
if [[ -n "$only" ]]; then
  IFS=',' read -r -a wanted <<<"$only"
  for w in "${wanted[@]}"; do
    case " ${ALL_TARGETS[*]} " in
      *" $w "*) ;;
      *) echo "run.sh: unknown target '$w' (known: ${ALL_TARGETS[*]})" >&2; exit 2 ;;
    esac
  done
  # Keep the canonical order (direct first) whatever order --only gave.
  for t in "${ALL_TARGETS[@]}"; do
    case ",$only," in *",$t,"*) targets+=("$t") ;; esac
  done
else
  for t in "${ALL_TARGETS[@]}"; do
    [[ "$t" == imapproxy-ref && -z "$REF_DLL" ]] || targets+=("$t")
  done
fi
if [[ " ${targets[*]} " == *" imapproxy-ref "* ]] && [[ -z "$REF_DLL" || ! -f "$REF_DLL" ]]; then
  echo "run.sh: imapproxy-ref needs BENCH_REF_DLL, the path of another build's ImapProxy.dll (got '$REF_DLL')" >&2
  exit 2
fi

if [[ "$mode" == quick ]]; then
  # 5 targets x 12 figures must fit in a few minutes on a CI machine: 2 s per figure, warm-up included.
  USERS="${BENCH_USERS:-100}" DURATION="${BENCH_DURATION:-1.5}" WARMUP="${BENCH_WARMUP:-0.5}"
  IDLE_SESSIONS="${BENCH_IDLE_SESSIONS:-500}" IDLE_HOLD="${BENCH_IDLE_HOLD:-1}" IDLE_SETTLE=0.5
  COOLDOWN="${BENCH_COOLDOWN:-0}"
  TARGET_WARMUP="${BENCH_TARGET_WARMUP:-0}"
else
  USERS="${BENCH_USERS:-1000}" DURATION="${BENCH_DURATION:-10}" WARMUP="${BENCH_WARMUP:-2}"
  IDLE_SESSIONS="${BENCH_IDLE_SESSIONS:-9000}" IDLE_HOLD="${BENCH_IDLE_HOLD:-5}" IDLE_SETTLE=2
  COOLDOWN="${BENCH_COOLDOWN:-75}"
  TARGET_WARMUP="${BENCH_TARGET_WARMUP:-2}"
fi
START_TIMEOUT="${BENCH_START_TIMEOUT:-90}"
CERT_KEY="${BENCH_CERT_KEY:-rsa:2048}"
IMAPPROXY_ENV="${IMAPPROXY_ENV:-}"
for v in USERS IDLE_SESSIONS START_TIMEOUT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "run.sh: $v must be a whole number (got '${!v}')" >&2; exit 2; }
done
for v in DURATION WARMUP IDLE_HOLD TARGET_WARMUP; do
  [[ "${!v}" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "run.sh: $v must be a number of seconds (got '${!v}')" >&2; exit 2; }
done
((USERS >= 1 && USERS <= 9999)) || { echo "run.sh: BENCH_USERS must be 1..9999" >&2; exit 2; }
[[ "$rounds" =~ ^[1-9]$ ]] || { echo "run.sh: --rounds must be 1..9 (got '$rounds')" >&2; exit 2; }
ROUNDS=$rounds
ROUND=1
# A single-process proxy holds 2 descriptors per session (client and backend side) under the hard open-files
# limit, which cannot be raised here (20000); haproxy.cfg has maxconn 9000 for the same reason.
fd_limit="$(ulimit -Hn)"
if ((IDLE_SESSIONS > 9000)) || { [[ "$fd_limit" =~ ^[0-9]+$ ]] && ((IDLE_SESSIONS * 2 + 1000 > fd_limit)); }; then
  echo "run.sh: BENCH_IDLE_SESSIONS=$IDLE_SESSIONS is too many: at most 9000, and 2 per session + 1000 must fit the hard open-files limit ($fd_limit)" >&2
  exit 2
fi

RUN_DIR="${BENCH_RUN_DIR:-$ROOT/.run/bench}"
[[ "$RUN_DIR" == /* ]] || RUN_DIR="$PWD/$RUN_DIR"
RUN_DIR="${RUN_DIR%/}"
# It is wiped with rm -rf: refuse anything that is obviously not a scratch directory.
case "$RUN_DIR" in
  "" | / | /root | /home | /tmp | /work | "$ROOT" | "$HOME") die "refusing to use $RUN_DIR as the run directory" ;;
esac

# -------------------------------------------------------------------------------------- process bookkeeping

# Every process this script starts is recorded as RUN_DIR/pids/NAME.pid (in start order in STARTED) and is
# stopped by stop_process / the EXIT trap, whatever happens.
STARTED=()
GEN_PID=""
FAILURES=()
TARGET_DIED=""

proc_alive()
{
  local pid="$1" stat
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}

descendants()
{
  local child
  for child in $(pgrep -P "$1" 2>/dev/null || true); do
    descendants "$child"
    echo "$child"
  done
}

pid_of()
{
  local file="$RUN_DIR/pids/$1.pid"
  [[ -r "$file" ]] && cat "$file"
}

start_process()
{
  local name="$1"
  shift
  "$@" </dev/null >>"$RUN_DIR/log/$name.out" 2>&1 &
  echo $! >"$RUN_DIR/pids/$name.pid"
  STARTED+=("$name")
}

stop_process()
{
  local name="$1" pid i tree
  pid="$(pid_of "$name")" || return 0
  if proc_alive "$pid"; then
    tree="$(descendants "$pid")"
    kill -TERM "$pid" 2>/dev/null || true
    # Graceful first (Dovecot's master stops its children, ImapProxy has a 5 s grace), then the whole tree.
    for ((i = 0; i < 200; i++)); do
      proc_alive "$pid" || break
      sleep 0.1
    done
    if proc_alive "$pid"; then
      log "$name (pid $pid) ignored SIGTERM for 20 s: killing it"
      # shellcheck disable=SC2086
      kill -KILL "$pid" $tree 2>/dev/null || true
    fi
    # Children a master left behind (none expected).
    for i in $tree; do
      if proc_alive "$i"; then
        kill -KILL "$i" 2>/dev/null || true
      fi
    done
  fi
  wait "$pid" 2>/dev/null || true
  rm -f "$RUN_DIR/pids/$name.pid"
}

cleanup()
{
  local rc=$? i
  # Bounded (20 s per process at most) and not to be interrupted half-way by a second Ctrl-C.
  trap '' INT TERM
  trap - EXIT
  if [[ -n "$GEN_PID" ]] && proc_alive "$GEN_PID"; then
    pkill -KILL -P "$GEN_PID" 2>/dev/null || true
    kill -KILL "$GEN_PID" 2>/dev/null || true
    wait "$GEN_PID" 2>/dev/null || true
  fi
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    stop_process "${STARTED[i]}"
  done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Processes of an earlier run that was killed without its trap (kill -9): only those whose command line
# names this run directory, so nothing else on the machine is touched.
stop_stale()
{
  local file pid
  for file in "$RUN_DIR"/pids/*.pid; do
    [[ -r "$file" ]] || continue
    pid="$(<"$file")"
    if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! proc_alive "$pid"; then
      continue
    fi
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$RUN_DIR"; then
      log "stopping $(basename "$file" .pid) (pid $pid) left over from an earlier run"
      # shellcheck disable=SC2046
      kill -KILL $(descendants "$pid") "$pid" 2>/dev/null || true
    fi
  done
}

# ------------------------------------------------------------------------------------------------- helpers

# Fills a template's @NAME@ placeholders from the shell variables of the same name; fails on any left over.
render()
{
  local template="$1" out="$2" text name
  text="$(<"$template")"
  for name in RUN_DIR MAIL_UID MAIL_GID BACKEND_PORT BACKEND_TLS_PORT IMAPPROXY_PORT IMAPPROXY_TLS_PORT \
    NGINX_PORT NGINX_TLS_PORT NGINX_AUTH_PORT DPROXY_PORT DPROXY_TLS_PORT HAPROXY_PORT HAPROXY_TLS_PORT; do
    text="${text//@${name}@/${!name}}"
  done
  if grep -qE '@[A-Z_]+@' <<<"$text"; then
    die "unfilled placeholder in $template: $(grep -oE '@[A-Z_]+@' <<<"$text" | sort -u | tr '\n' ' ')"
  fi
  printf '%s\n' "$text" >"$out"
}

# N distinct free TCP ports on 127.0.0.1, below the kernel's ephemeral range: the tens of thousands of outgoing
# connections of a run (and port-0 listeners of anything else on the machine) never take them in the meantime.
free_ports()
{
  python3 - "$1" <<'EOF'
import random, socket, sys
with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
    low = int(f.read().split()[0])
candidates = list(range(10000, low)) if low > 11000 else list(range(1024, 65536))
random.shuffle(candidates)
socks = []
for port in candidates:
    if len(socks) == int(sys.argv[1]):
        break
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# True once every port answers with an untagged OK greeting; "tls:PORT" does the TLS handshake first.
greets_ok()
{
  python3 - "$@" <<'EOF' 2>/dev/null
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
for arg in sys.argv[1:]:
    tls = arg.startswith("tls:")
    with socket.create_connection(("127.0.0.1", int(arg.split(":")[-1])), timeout=5) as raw:
        sock = ctx.wrap_socket(raw) if tls else raw
        if not sock.makefile("rb").readline(4096).startswith(b"* OK"):
            sys.exit(1)
EOF
}

# Polls until the process is greeting on every port, at most START_TIMEOUT seconds; fails early if it died.
wait_greeting()
{
  local name="$1" pid
  shift
  pid="$(pid_of "$name")"
  local deadline=$((SECONDS + START_TIMEOUT))
  until greets_ok "$@"; do
    if ! proc_alive "$pid"; then
      log "$name exited during start-up; last lines of its output:"
      tail -n 20 "$RUN_DIR/log/$name.out" >&2 || true
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name did not greet on $* within ${START_TIMEOUT}s; last lines of its output:"
      tail -n 20 "$RUN_DIR/log/$name.out" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# Polls until something accepts TCP connections on the port (for the HTTP auth helper).
wait_port()
{
  local name="$1" port="$2" pid deadline=$((SECONDS + START_TIMEOUT))
  pid="$(pid_of "$name")"
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! proc_alive "$pid" || ((SECONDS >= deadline)); then
      log "$name is not listening on $port"
      tail -n 20 "$RUN_DIR/log/$name.out" >&2 || true
      return 1
    fi
    sleep 0.1
  done
}

is_installed()
{
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# ------------------------------------------------------------------------------------------------- phases

install_deps()
{
  local updated=0 out missing=() p policy_rc=/usr/sbin/policy-rc.d own_policy_rc=0 apt_log
  ((EUID == 0)) || die "must run as root (Dovecot's master switches to the mail user; packages are installed)"
  # Dovecot, openssl, curl. It runs apt-get update itself, and says so, only when it installs something.
  out="$("$ROOT/scripts/install-deps.sh")" || die "scripts/install-deps.sh failed"
  [[ -z "$out" ]] || { printf '%s\n' "$out" >&2; updated=1; }

  for p in nginx-light libnginx-mod-mail haproxy; do
    is_installed "$p" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  # 101 = "action forbidden": the packages' maintainer scripts must not start nginx or HAProxy as services.
  if [[ ! -e "$policy_rc" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
    chmod 755 "$policy_rc"
    own_policy_rc=1
  fi
  apt_log="$(mktemp)"
  local ok=1
  if ((updated == 0)); then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >"$apt_log" 2>&1 || ok=0
  fi
  if ((ok)); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      "${missing[@]}" >"$apt_log" 2>&1 || ok=0
  fi
  ((own_policy_rc)) && rm -f "$policy_rc"
  if ((ok == 0)); then
    tail -n 40 "$apt_log" >&2
    rm -f "$apt_log"
    die "could not install ${missing[*]}"
  fi
  rm -f "$apt_log"
  for p in "${missing[@]}"; do
    is_installed "$p" || die "$p is still not installed"
  done
}

build()
{
  export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
  local project
  for project in "$ROOT/src/ImapProxy/ImapProxy.csproj" "$BENCH_PROJECT"; do
    if [[ "$project" == "$BENCH_PROJECT" ]] && ((smoke)); then
      continue
    fi
    [[ -f "$project" ]] || die "${project#"$ROOT"/} does not exist"
    log "building ${project#"$ROOT"/}"
    # No build servers: nothing of ours may outlive the run.
    if ! dotnet build -c Release -nologo -v quiet --disable-build-servers "$project" >"$RUN_DIR/log/build-$(basename "$project" .csproj).log" 2>&1; then
      grep -E 'error|Error' "$RUN_DIR/log/build-$(basename "$project" .csproj).log" | sort -u | tail -n 30 >&2 || true
      die "build failed: ${project#"$ROOT"/} (log: $RUN_DIR/log/build-$(basename "$project" .csproj).log)"
    fi
  done
}

prepare_run_dir()
{
  # Only a directory this script made (it holds the marker) or an empty one is wiped.
  if [[ -d "$RUN_DIR" && ! -e "$RUN_DIR/.imapproxy-bench" ]] && [[ -n "$(ls -A "$RUN_DIR")" ]]; then
    die "$RUN_DIR is not empty and was not made by run.sh; refusing to wipe it"
  fi
  stop_stale
  rm -rf "$RUN_DIR"
  # The mail user must traverse the path to the mail store: open up the directories made here (only those).
  local dir="$RUN_DIR" created=()
  while [[ ! -d "$dir" ]]; do
    created+=("$dir")
    dir="$(dirname "$dir")"
  done
  mkdir -p "$RUN_DIR"/{pids,log,out,certs,backend,dproxy,nginx,haproxy,imapproxy}
  chmod 755 "${created[@]}"
  : >"$RUN_DIR/.imapproxy-bench"
  RUN_LOG="$RUN_DIR/log/run.log"
}

make_certificate()
{
  openssl req -x509 -newkey "$CERT_KEY" -nodes -days 7 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$RUN_DIR/certs/key.pem" -out "$RUN_DIR/certs/cert.pem" >"$RUN_DIR/log/openssl.log" 2>&1 ||
    die "openssl could not make the certificate (see $RUN_DIR/log/openssl.log)"
  cat "$RUN_DIR/certs/cert.pem" "$RUN_DIR/certs/key.pem" >"$RUN_DIR/certs/server.pem"
  chmod 600 "$RUN_DIR/certs/key.pem" "$RUN_DIR/certs/server.pem"
}

ensure_mail_user()
{
  getent passwd "$MAIL_USER" >/dev/null ||
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$MAIL_USER" \
      >/dev/null 2>&1 || true
  getent passwd "$MAIL_USER" >/dev/null || die "could not create the mail user $MAIL_USER"
  MAIL_UID="$(id -u "$MAIL_USER")"
  MAIL_GID="$(id -g "$MAIL_USER")"
}

start_backend()
{
  log "writing mail for $USERS users (20 small messages + one 5 MB hard link each)"
  python3 "$PEERS/gen_mail.py" --root "$RUN_DIR/mail" --users "$USERS" --uid "$MAIL_UID" --gid "$MAIL_GID" \
    --passwd "$RUN_DIR/backend/users.passwd" --userlist "$RUN_DIR/backend/users.list" ||
    die "gen_mail.py failed"
  chown root:dovecot "$RUN_DIR/backend/users.passwd"
  chmod 640 "$RUN_DIR/backend/users.passwd"
  if ! setpriv --reuid "$MAIL_UID" --regid "$MAIL_GID" --clear-groups test -x "$RUN_DIR/mail/user0001/Maildir/cur"; then
    die "the mail user $MAIL_USER cannot reach $RUN_DIR/mail: a directory above it is not searchable by others" \
      "(chmod o+x it, or set BENCH_RUN_DIR to a directory under /tmp)"
  fi
  render "$PEERS/dovecot-backend.conf" "$RUN_DIR/backend/dovecot.conf"
  start_process backend dovecot -F -c "$RUN_DIR/backend/dovecot.conf"
  wait_greeting backend "$BACKEND_PORT" "tls:$BACKEND_TLS_PORT" || die "the Dovecot backend did not start"
  # Let Dovecot build every INBOX's uidlist and index now rather than inside the first target's figures.
  # (doveadm -F makes the auth process log one harmless "userdbs don't support" iterating error: static userdb.)
  log "indexing the mailboxes"
  doveadm -c "$RUN_DIR/backend/dovecot.conf" mailbox status -F "$RUN_DIR/backend/users.list" 'messages' INBOX \
    >"$RUN_DIR/log/doveadm-index.log" 2>&1 || die "doveadm could not open the mailboxes (see $RUN_DIR/log/doveadm-index.log)"
  log "backend ready: imap 127.0.0.1:$BACKEND_PORT, imaps 127.0.0.1:$BACKEND_TLS_PORT (pid $(pid_of backend))"
}

# Sets PLAIN_PORT, TLS_PORT and PID_TREE (the target's own processes, never the backend's) for a target.
start_target()
{
  local target="$1"
  case "$target" in
    direct)
      PLAIN_PORT=$BACKEND_PORT TLS_PORT=$BACKEND_TLS_PORT PID_TREE="$(pid_of backend)"
      ;;
    imapproxy | imapproxy-ref)
      local dll="$PROXY_DLL"
      PLAIN_PORT=$IMAPPROXY_PORT TLS_PORT=$IMAPPROXY_TLS_PORT
      if [[ "$target" == imapproxy-ref ]]; then
        dll="$REF_DLL" PLAIN_PORT=$REF_PORT TLS_PORT=$REF_TLS_PORT
      fi
      IMAPPROXY_PORT=$PLAIN_PORT IMAPPROXY_TLS_PORT=$TLS_PORT render "$PEERS/imapproxy.json" "$RUN_DIR/imapproxy/$target.json"
      # shellcheck disable=SC2086  # IMAPPROXY_ENV is a list of VAR=VALUE words on purpose
      start_process "$target" env DOTNET_gcServer=0 $IMAPPROXY_ENV \
        dotnet "$dll" --config "$RUN_DIR/imapproxy/$target.json"
      PID_TREE="$(pid_of "$target")"
      wait_greeting "$target" "$PLAIN_PORT" "tls:$TLS_PORT"
      ;;
    nginx)
      PLAIN_PORT=$NGINX_PORT TLS_PORT=$NGINX_TLS_PORT
      render "$PEERS/nginx.conf" "$RUN_DIR/nginx/nginx.conf"
      start_process nginx-auth python3 "$PEERS/nginx_auth.py" --port "$NGINX_AUTH_PORT" --backend-port "$BACKEND_PORT"
      wait_port nginx-auth "$NGINX_AUTH_PORT" || return 1
      start_process nginx nginx -c "$RUN_DIR/nginx/nginx.conf" -p "$RUN_DIR/nginx/" \
        -e "$RUN_DIR/log/nginx-error.log" -g 'daemon off;'
      PID_TREE="$(pid_of nginx),$(pid_of nginx-auth)"
      wait_greeting nginx "$PLAIN_PORT" "tls:$TLS_PORT"
      ;;
    dovecot-proxy)
      PLAIN_PORT=$DPROXY_PORT TLS_PORT=$DPROXY_TLS_PORT
      render "$PEERS/dovecot-proxy.conf" "$RUN_DIR/dproxy/dovecot.conf"
      start_process dovecot-proxy dovecot -F -c "$RUN_DIR/dproxy/dovecot.conf"
      PID_TREE="$(pid_of dovecot-proxy)"
      wait_greeting dovecot-proxy "$PLAIN_PORT" "tls:$TLS_PORT"
      ;;
    haproxy)
      PLAIN_PORT=$HAPROXY_PORT TLS_PORT=$HAPROXY_TLS_PORT
      render "$PEERS/haproxy.cfg" "$RUN_DIR/haproxy/haproxy.cfg"
      start_process haproxy haproxy -f "$RUN_DIR/haproxy/haproxy.cfg" -db
      PID_TREE="$(pid_of haproxy)"
      wait_greeting haproxy "$PLAIN_PORT" "tls:$TLS_PORT"
      ;;
  esac
}

stop_target()
{
  case "$1" in
    direct) ;;
    nginx) stop_process nginx; stop_process nginx-auth ;;
    *) stop_process "$1" ;;
  esac
}

# One generator run: run_figure TARGET FIGURE SCENARIO plain|tls [generator options...]
# Its JSON line goes to RUN_DIR/out/TARGET--FIGURE--rROUND.json; a failure is remembered and the run goes on.
run_figure()
{
  local target="$1" figure="$2" scenario="$3" security="$4" port rc=0 limit root
  shift 4
  # A target that died takes no more figures (each would only wait for its timeouts).
  root="${PID_TREE%%,*}"
  if ! proc_alive "$root"; then
    if [[ "$TARGET_DIED" != "$target" ]]; then
      log "  $target: its process $root is gone; skipping its remaining figures"
      FAILURES+=("$target: exited during the run (before $figure)")
      TARGET_DIED="$target"
    fi
    return 0
  fi
  port=$PLAIN_PORT
  local args=(dotnet "$BENCH_DLL" "$scenario" --host 127.0.0.1)
  if [[ "$security" == tls ]]; then
    port=$TLS_PORT
    args+=(--port "$port" --tls)
  else
    args+=(--port "$port")
  fi
  args+=(--duration "$DURATION" --warmup "$WARMUP" --users "$USERS"
    --user-format 'user{0:D4}' --password-format 'pass{0:D4}'
    --pid-tree "$PID_TREE" --label "$target/$figure/r$ROUND" "$@")
  # Bounded: the measured time plus generous room for connecting thousands of sessions on a busy machine.
  limit=$((${WARMUP%.*} + ${DURATION%.*} + ${IDLE_HOLD%.*} + 243))
  local out="$RUN_DIR/out/$target--$figure--r$ROUND.json" err="$RUN_DIR/log/bench-$target--$figure--r$ROUND.err"
  log "  $target: $figure ($scenario, $security, ${*})$( ((ROUNDS > 1)) && printf ', round %s of %s' "$ROUND" "$ROUNDS")"
  # In the background and waited for, so that Ctrl-C reaches the trap at once.
  timeout --kill-after=10 "$limit" "${args[@]}" >"$out.stdout" 2>"$err" &
  GEN_PID=$!
  wait "$GEN_PID" || rc=$?
  GEN_PID=""
  grep -E '^\{' "$out.stdout" | tail -n 1 >"$out" || true
  rm -f "$out.stdout"
  if ((rc != 0)) || [[ ! -s "$out" ]]; then
    ((rc == 124)) && log "  $target: $figure timed out after ${limit}s"
    log "  $target: $figure FAILED (exit $rc); stderr:"
    tail -n 15 "$err" >&2 || true
    local why
    why="$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read()).get("failure") or "")' <"$out" 2>/dev/null || true)"
    FAILURES+=("$target/$figure: generator exit $rc${why:+ ($why)}")
  fi
  if [[ -s "$out" ]]; then
    cat "$out" >>"$RUN_DIR/results.jsonl"
  else
    rm -f "$out"
  fi
}

# Each target starts on a quiet loopback: tens of thousands of connections of the previous target's login
# figures sit in TIME_WAIT for 60 s, and every proxy connects to the same backend address, so the next target
# would pay for the port search in connect(). Wait (bounded by COOLDOWN seconds) until few are left.
cooldown()
{
  local waited=0 count
  while ((waited < COOLDOWN)); do
    count=$( (ss -Htan state time-wait 2>/dev/null || true) | wc -l)
    ((count < 1000)) && return 0
    ((waited == 0)) && log "waiting for $count TIME_WAIT connections to expire (at most ${COOLDOWN} s)"
    sleep 5
    waited=$((waited + 5))
  done
}

# The backend's CPU ticks (utime + stime) per process: "PID TICKS" lines for the master and its children.
backend_ticks()
{
  local master pid
  master="$(pid_of backend)"
  for pid in "$master" $(ps -o pid= --ppid "$master" 2>/dev/null); do
    awk -v pid="$pid" '{print pid, $14 + $15}' "/proc/$pid/stat" 2>/dev/null || true
  done
}

# Each target also starts on a quiet backend: the previous target's 9,000 idle sessions end when its idle figure
# does, and Dovecot takes a while to wind them down (seen: the target that follows `direct` measured its logins and
# NOOPs while the backend was still closing 9,000 imap sessions). Wait (bounded by COOLDOWN seconds) until the
# backend's processes used under 5% of a core over one second; processes that came and went do not count.
backend_quiet()
{
  local waited=0 busy before after
  while ((waited < COOLDOWN)); do
    before="$(backend_ticks)"
    sleep 1
    after="$(backend_ticks)"
    busy="$(awk 'NR == FNR { seen[$1] = $2; next } ($1 in seen) { used += $2 - seen[$1] } END { print used + 0 }' \
      <(printf '%s\n' "$before") <(printf '%s\n' "$after"))"
    ((busy <= 5)) && return 0
    ((waited == 0)) && log "waiting for the backend to settle (it used $busy ticks in a second; at most ${COOLDOWN} s)"
    waited=$((waited + 1))
  done
}

# Before its first figure, every target serves the same short, unrecorded load of each kind, with one or two
# clients (few TIME_WAIT connections): a proxy in production has been running for a while. It matters for a
# JIT-compiled target: ImapProxy spends its first seconds under load compiling its hot paths again, optimised
# (measured: a fifth of its CPU in the JIT and the runtime three seconds into a login load, none after eight);
# nginx, HAProxy and Dovecot have nothing to warm. Each figure still has its own warm-up on top of this.
warm_target()
{
  local target="$1" step scenario security rc
  [[ "$TARGET_WARMUP" =~ ^0*(\.0*)?$ ]] && return 0
  log "  $target: warm-up, unrecorded (6 x ${TARGET_WARMUP} s)"
  for step in "logins plain 1" "logins tls 1" "noop plain 2" "select-fetch plain 2" "fetch-big plain 1" "fetch-big tls 1"; do
    read -r scenario security clients <<<"$step"
    local args=(dotnet "$BENCH_DLL" "$scenario" --host 127.0.0.1 --port "$PLAIN_PORT")
    [[ "$security" == tls ]] && args=(dotnet "$BENCH_DLL" "$scenario" --host 127.0.0.1 --port "$TLS_PORT" --tls)
    args+=(--clients "$clients" --duration "$TARGET_WARMUP" --warmup 0 --users "$USERS"
      --user-format 'user{0:D4}' --password-format 'pass{0:D4}' --label "$target/warmup")
    rc=0
    timeout --kill-after=10 $((${TARGET_WARMUP%.*} + 120)) "${args[@]}" >/dev/null 2>>"$RUN_DIR/log/warmup-$target.err" &
    GEN_PID=$!
    wait "$GEN_PID" || rc=$?
    GEN_PID=""
    ((rc == 0)) || log "  $target: warm-up $scenario ($security) failed (exit $rc), see log/warmup-$target.err"
  done
  cooldown
}

run_target()
{
  local t="$1" s=$IDLE_SESSIONS h=$IDLE_HOLD
  run_figure "$t" logins-plain logins plain --clients 50
  run_figure "$t" logins-tls logins tls --clients 50
  run_figure "$t" noop-50 noop plain --clients 50
  run_figure "$t" noop-1-plain noop plain --clients 1
  run_figure "$t" noop-1-tls noop tls --clients 1
  run_figure "$t" select-fetch-50 select-fetch plain --clients 50
  run_figure "$t" fetch-big-1-plain fetch-big plain --clients 1
  run_figure "$t" fetch-big-8-plain fetch-big plain --clients 8
  run_figure "$t" fetch-big-1-tls fetch-big tls --clients 1
  run_figure "$t" fetch-big-8-tls fetch-big tls --clients 8
  run_figure "$t" idle-plain idle plain --sessions "$s" --hold "$h" --settle "$IDLE_SETTLE"
  run_figure "$t" idle-tls idle tls --sessions "$s" --hold "$h" --settle "$IDLE_SETTLE"
}

# A real login and EXAMINE through the target with curl, plain and TLS, as a random user.
smoke_target()
{
  local target="$1" n user pass security port out
  for security in plain tls; do
    n=$((RANDOM % USERS + 1))
    printf -v user 'user%04d' "$n"
    printf -v pass 'pass%04d' "$n"
    if [[ "$security" == tls ]]; then
      out="$(curl -sS -k --max-time 20 "imaps://127.0.0.1:$TLS_PORT/INBOX" -u "$user:$pass" -X 'EXAMINE INBOX' 2>&1)" || true
    else
      out="$(curl -sS --max-time 20 "imap://127.0.0.1:$PLAIN_PORT/INBOX" -u "$user:$pass" -X 'EXAMINE INBOX' 2>&1)" || true
    fi
    if grep -q '^\* 21 EXISTS' <<<"$out"; then
      log "  $target: $security login as $user and EXAMINE INBOX: 21 messages"
    else
      log "  $target: $security login as $user failed: $(tr '\r\n' '  ' <<<"$out" | cut -c1-300)"
      FAILURES+=("$target/smoke-$security: curl login failed")
    fi
  done
}

versions()
{
  local commit
  commit="$(git -C "$ROOT" describe --always --tags --dirty 2>/dev/null || echo unknown)"
  printf 'dovecot=%s\n' "$(dovecot --version 2>/dev/null | head -n 1)"
  printf 'nginx=%s\n' "$(nginx -v 2>&1 | head -n 1 | sed 's/^nginx version: nginx\///')"
  printf 'haproxy=%s\n' "$(haproxy -v 2>/dev/null | head -n 1 | sed -e 's/ - https:.*//' -e 's/^HAProxy version //')"
  printf 'imapproxy=%s\n' "$commit"
  if [[ -n "$REF_DLL" ]]; then
    printf 'imapproxy_ref=%s\n' "${BENCH_REF_LABEL:-$REF_DLL}"
  fi
  printf 'dotnet=%s\n' "$(dotnet --version 2>/dev/null)"
  printf 'runtime=%s\n' "$(dotnet --list-runtimes 2>/dev/null | awk '/Microsoft.NETCore.App/ {v=$2} END {print v}')"
  printf 'nproc=%s\n' "$(nproc)"
  printf 'kernel=%s\n' "$(uname -sr)"
  printf 'cpu=%s\n' "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
}

# ---------------------------------------------------------------------------------------------------- main

started_at=$SECONDS
log "mode: $mode; targets: ${targets[*]}; run dir: $RUN_DIR"
install_deps
prepare_run_dir
build
make_certificate
ensure_mail_user

read -r BACKEND_PORT BACKEND_TLS_PORT IMAPPROXY_PORT IMAPPROXY_TLS_PORT NGINX_PORT NGINX_TLS_PORT \
  NGINX_AUTH_PORT DPROXY_PORT DPROXY_TLS_PORT HAPROXY_PORT HAPROXY_TLS_PORT REF_PORT REF_TLS_PORT <<<"$(free_ports 13)"

start_backend
if ((smoke)); then
  for target in "${targets[@]}"; do
    if start_target "$target"; then
      smoke_target "$target"
    else
      FAILURES+=("$target: did not start")
    fi
    stop_target "$target"
  done
  if ((${#FAILURES[@]})); then
    printf '  %s\n' "${FAILURES[@]}" >&2
    die "smoke test failed"
  fi
  log "smoke test passed in $((SECONDS - started_at)) s"
  exit 0
fi

: >"$RUN_DIR/results.jsonl"
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  order=("${targets[@]}")
  if ((ROUND % 2 == 0)); then
    order=()
    for ((i = ${#targets[@]} - 1; i >= 0; i--)); do order+=("${targets[i]}"); done
  fi
  ((ROUNDS > 1)) && log "round $ROUND of $ROUNDS: ${order[*]}"
  for target in "${order[@]}"; do
    cooldown
    backend_quiet
    log "target $target"
    target_started=$SECONDS
    TARGET_DIED=""
    if start_target "$target"; then
      warm_target "$target"
      run_target "$target"
    else
      FAILURES+=("$target: did not start")
    fi
    stop_target "$target"
    log "target $target done in $((SECONDS - target_started)) s"
  done
done

if ((${#FAILURES[@]})); then
  printf '%s\n' "${FAILURES[@]}" >"$RUN_DIR/failures.txt"
else
  : >"$RUN_DIR/failures.txt"
fi
versions >"$RUN_DIR/versions.txt"
MODE="$mode" ROUNDS="$ROUNDS" TARGETS="${targets[*]}" USERS="$USERS" DURATION="$DURATION" WARMUP="$WARMUP" TARGET_WARMUP="$TARGET_WARMUP" \
  IDLE_SESSIONS="$IDLE_SESSIONS" IDLE_HOLD="$IDLE_HOLD" IMAPPROXY_ENV="DOTNET_gcServer=0 $IMAPPROXY_ENV" \
  CERT_KEY="$CERT_KEY" ELAPSED="$((SECONDS - started_at))" \
  python3 "$PEERS/report.py" "$RUN_DIR" >"$RUN_DIR/results.md" || die "report.py failed"
cat "$RUN_DIR/results.md"
log "results: $RUN_DIR/results.md, raw: $RUN_DIR/results.jsonl; total $((SECONDS - started_at)) s"

if ((${#FAILURES[@]})); then
  log "${#FAILURES[@]} failure(s):"
  printf '  %s\n' "${FAILURES[@]}" >&2
  exit 1
fi
