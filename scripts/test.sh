#!/usr/bin/env bash
# The README's "run every test" command, and what CI runs (.ci/run calls exactly this).
# Installs what the tests need (idempotent), builds the solution, runs every test project against real
# Dovecot instances and Consul agents the fixtures start on loopback, runs the benchmark in quick mode, and
# ends with one summary line: "N passed, N failed".
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/install-deps.sh

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

dotnet build ImapProxy.sln -c Release --nologo -v quiet

results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT
status=0
# One project at a time: the functional tests start real Dovecot processes, and 2 cores are shared.
for project in tests/*.Tests/*.csproj tests/*.FunctionalTests/*.csproj; do
  name="$(basename "$project" .csproj)"
  echo "== $name"
  if ! dotnet test "$project" -c Release --no-build --nologo \
      --logger "trx;LogFileName=$name.trx" --results-directory "$results" \
      --blame-hang-timeout 5m 2>&1 | tee "$results/$name.log" | grep -E "^(Passed|Failed)!|^\s+Failed |error" ; then
    :
  fi
  if grep -q "^Failed!" "$results/$name.log" || ! grep -q "^Passed!" "$results/$name.log"; then
    status=1
    tail -n 60 "$results/$name.log"
  fi
done

passed=0
failed=0
for log in "$results"/*.log; do
  line="$(grep -E "^(Passed|Failed)!" "$log" | tail -n 1 || true)"
  p="$(sed -nE 's/.*Passed: +([0-9]+).*/\1/p' <<<"$line")"
  f="$(sed -nE 's/.*Failed: +([0-9]+),.*/\1/p' <<<"$line")"
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
done
if ((passed == 0)); then
  status=1
fi

# The benchmark in quick mode: a few seconds per figure against every peer, so it never rots (issue 5).
echo "== benchmark (bench/run.sh --quick)"
if ! bash bench/run.sh --quick; then
  echo "benchmark: FAILED (see the table above and .run/bench/log)"
  status=1
fi

echo "$passed passed, $failed failed"
exit "$status"
