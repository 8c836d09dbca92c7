#!/usr/bin/env bash
# Installs the system packages the tests and the local cluster need, if they are missing:
# Dovecot (imapd + pop3d), openssl, curl, Prometheus (the server the telemetry tests scrape with, and
# promtool, which checks deploy/prometheus/*.yml) and the Consul agent. Idempotent: does nothing (and prints
# nothing) when all are present; runs `apt-get update` at most once, and only when something must be
# installed. Never starts a service: a temporary policy-rc.d denies service starts during the install.
#
# Consul is not in Debian 12 (bookworm), but Debian 11 (bullseye) has the real agent (1.8.7), which
# installs cleanly on bookworm. For it this script adds a bullseye source on the same mirror as the
# machine's own Debian source (keeping its snapshot comment, if it has one) and pins bullseye at priority
# 100, below bookworm's 500, so that an upgrade never takes anything else from it; consul itself is
# installed as consul/bullseye. Both files are written only if absent, so an administrator's edits survive.
set -euo pipefail

readonly PACKAGES=(dovecot-imapd dovecot-pop3d openssl curl prometheus)
readonly CONSUL_PACKAGE=consul
readonly CONSUL_RELEASE=bullseye
readonly CONSUL_SOURCE=/etc/apt/sources.list.d/imapproxy-bullseye.sources
readonly CONSUL_PIN=/etc/apt/preferences.d/imapproxy-bullseye.pref

die()
{
  echo "install-deps: $*" >&2
  exit 1
}

is_installed()
{
  local status
  status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
  [[ "$status" == "install ok installed" ]]
}

# Prints "URI<TAB>Signed-By<TAB>snapshot comment" of the machine's main Debian source: the first deb
# entry for this release's codename whose URI is not the security archive. Reads deb822 .sources files
# first, then one-line .list files. Fields after the URI may be empty.
debian_source()
{
  local codename="$1" file
  for file in /etc/apt/sources.list.d/*.sources; do
    [[ -r "$file" ]] || continue
    awk -v codename="$codename" '
      function flush()
      {
        if (!found && deb && !disabled && suite && uri != "" && uri !~ /security/)
        {
          printf "%s\t%s\t%s\n", uri, signed, snapshot
          found = 1
        }
        deb = 0; disabled = 0; suite = 0; uri = ""; signed = ""; snapshot = ""; field = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^#/ {
        # Snapshot-pinned images keep the snapshot URL as a comment next to the live mirror.
        if (match($0, /https?:\/\/snapshot\.debian\.org\/archive\/debian\/[^ \t]*/)) { snapshot = "# " substr($0, RSTART, RLENGTH) }
        next
      }
      /^[ \t]/ { next }
      {
        field = tolower($1)
        sub(/:$/, "", field)
        if (field == "types") { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
        else if (field == "suites") { for (i = 2; i <= NF; i++) if ($i == codename) suite = 1 }
        else if (field == "uris") { uri = $2 }
        else if (field == "signed-by" && NF == 2) { signed = $2 }
        else if (field == "enabled" && tolower($2) == "no") { disabled = 1 }
      }
      END { flush() }
    ' "$file" | head -n 1 | grep . && return 0
  done

  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "$file" ]] || continue
    awk -v codename="$codename" '
      /^#/ {
        if (match($0, /https?:\/\/snapshot\.debian\.org\/archive\/debian\/[^ \t]*/)) { snapshot = "# " substr($0, RSTART, RLENGTH) }
        next
      }
      $1 == "deb" {
        i = 2; signed = ""
        if ($2 ~ /^\[/)
        {
          for (; i <= NF; i++)
          {
            if ($i ~ /^\[?signed-by=/) { signed = $i; sub(/^\[?signed-by=/, "", signed); sub(/\]$/, "", signed) }
            if ($i ~ /\]$/) { i++; break }
          }
        }
        if ($(i + 1) == codename && $i !~ /security/) { printf "%s\t%s\t%s\n", $i, signed, snapshot; exit }
      }
    ' "$file" | grep . && return 0
  done
  return 1
}

# Adds the bullseye source and its low pin, each only if absent.
add_consul_source()
{
  local codename source uri signed snapshot
  if [[ ! -e "$CONSUL_SOURCE" ]]; then
    # shellcheck source=/dev/null
    codename="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
    [[ -n "$codename" ]] || die "VERSION_CODENAME missing from /etc/os-release"
    source="$(debian_source "$codename")" ||
      die "no Debian source for $codename found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list: cannot derive the mirror for $CONSUL_RELEASE"
    IFS=$'\t' read -r uri signed snapshot <<<"$source"
    {
      echo "# Added by ImapProxy's scripts/install-deps.sh for the consul package only (pinned low in $CONSUL_PIN)."
      echo "Types: deb"
      [[ -z "$snapshot" ]] || printf '%s\n' "$snapshot"
      echo "URIs: $uri"
      echo "Suites: $CONSUL_RELEASE"
      echo "Components: main"
      [[ -z "$signed" ]] || echo "Signed-By: $signed"
    } | "${sudo_cmd[@]}" tee "$CONSUL_SOURCE" >/dev/null
  fi

  if [[ ! -e "$CONSUL_PIN" ]]; then
    cat <<PIN | "${sudo_cmd[@]}" tee "$CONSUL_PIN" >/dev/null
# Added by ImapProxy's scripts/install-deps.sh: $CONSUL_RELEASE is there for consul only. Below the default
# 500, so nothing installed from bookworm is ever upgraded or replaced from $CONSUL_RELEASE.
Package: *
Pin: release n=$CONSUL_RELEASE
Pin-Priority: 100
PIN
  fi
}

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script supports Debian/Ubuntu only"

missing=()
for package in "${PACKAGES[@]}"; do
  if ! is_installed "$package"; then
    missing+=("$package")
  fi
done

need_consul=0
is_installed "$CONSUL_PACKAGE" || need_consul=1

if ((${#missing[@]} == 0 && need_consul == 0)); then
  exit 0
fi

wanted=("${missing[@]}")
((need_consul == 0)) || wanted+=("$CONSUL_PACKAGE")

sudo_cmd=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1; then
    sudo_cmd=(sudo)
  else
    die "must run as root (or have sudo) to install: ${wanted[*]}"
  fi
fi

# A policy-rc.d that answers 101 ("action forbidden") keeps maintainer scripts from starting
# Dovecot's, Prometheus's (or Consul's) init service: their postinsts start them through invoke-rc.d, which
# asks policy-rc.d first (and deb-systemd-invoke only acts when systemd runs). Only install ours if the
# machine has none, and always remove it again.
policy_rc=/usr/sbin/policy-rc.d
own_policy_rc=0
apt_log="$(mktemp)"
cleanup()
{
  if ((own_policy_rc == 1)); then
    "${sudo_cmd[@]}" rm -f "$policy_rc"
  fi
  rm -f "$apt_log"
}
trap cleanup EXIT

if [[ ! -e "$policy_rc" ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy_rc" >/dev/null
  "${sudo_cmd[@]}" chmod 755 "$policy_rc"
  own_policy_rc=1
fi

if ((need_consul == 1)); then
  add_consul_source
fi

export DEBIAN_FRONTEND=noninteractive
if ! "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$apt_log" 2>&1; then
  cat "$apt_log" >&2
  die "apt-get update failed"
fi

apt_install()
{
  if ! "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "$@" >"$apt_log" 2>&1; then
    tail -n 40 "$apt_log" >&2
    die "apt-get install failed for: $*"
  fi
}

if ((${#missing[@]} > 0)); then
  apt_install "${missing[@]}"
fi

if ((need_consul == 1)); then
  # consul/bullseye takes consul alone from bullseye; its dependencies (pipexec, adduser, procps...) come
  # from bookworm as usual. `-t bullseye` would raise every bullseye package to 990 for this command and
  # pull the missing dependencies from bullseye too (older versions that the next upgrade replaces).
  apt_install "$CONSUL_PACKAGE/$CONSUL_RELEASE"
fi

for package in "${wanted[@]}"; do
  is_installed "$package" || die "$package is still not installed after apt-get install"
  echo "installed $package"
done

if ((need_consul == 1)); then
  consul version >/dev/null 2>&1 || die "consul is installed but 'consul version' fails"
fi
