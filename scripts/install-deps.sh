#!/usr/bin/env bash
# Installs the system packages the tests and the local cluster need, if they are missing:
# Dovecot (imapd + pop3d), openssl and curl. Idempotent: does nothing (and prints nothing) when all
# are present; runs `apt-get update` at most once, and only when something must be installed.
# Never starts a service: a temporary policy-rc.d denies service starts during the install.
set -euo pipefail

readonly PACKAGES=(dovecot-imapd dovecot-pop3d openssl curl)

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

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script supports Debian/Ubuntu only"

missing=()
for package in "${PACKAGES[@]}"; do
  if ! is_installed "$package"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

sudo_cmd=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1; then
    sudo_cmd=(sudo)
  else
    die "must run as root (or have sudo) to install: ${missing[*]}"
  fi
fi

# A policy-rc.d that answers 101 ("action forbidden") keeps maintainer scripts from starting
# Dovecot's init service; only install ours if the machine has none, and always remove it again.
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

export DEBIAN_FRONTEND=noninteractive
if ! "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$apt_log" 2>&1; then
  cat "$apt_log" >&2
  die "apt-get update failed"
fi

if ! "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${missing[@]}" >"$apt_log" 2>&1; then
  tail -n 40 "$apt_log" >&2
  die "apt-get install failed for: ${missing[*]}"
fi

for package in "${missing[@]}"; do
  is_installed "$package" || die "$package is still not installed after apt-get install"
  echo "installed $package"
done
