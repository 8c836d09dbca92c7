#!/usr/bin/env python3
"""Turns one bench/run.sh run into a markdown report: report.py RUN_DIR > RUN_DIR/results.md

Reads RUN_DIR/out/TARGET--FIGURE--rROUND.json (one generator JSON line each; TARGET--FIGURE.json from older
runs), RUN_DIR/versions.txt (key=value), RUN_DIR/failures.txt (one failure per line) and, from the environment,
MODE ROUNDS TARGETS USERS DURATION WARMUP TARGET_WARMUP IDLE_SESSIONS IDLE_HOLD IMAPPROXY_ENV CERT_KEY ELAPSED.
With several rounds, each cell is the median of the rounds that measured it.
"""
import datetime
import json
import os
import platform
import statistics
import sys

ALL_TARGETS = ["direct", "imapproxy", "imapproxy-ref", "nginx", "dovecot-proxy", "haproxy"]

# Not a JSON field: the target's CPU per operation over the generator's, per round, then the median. The generator does
# the same work per login against every target, so this ratio holds still while the shared machine speeds up or slows
# down between targets, which moves logins/s and CPU per login by ±15%.
CPU_OVER_GENERATOR = "target_cpu_over_generator_cpu"

# (row title, figure file, JSON field, number format, compare with direct?)
ROWS = [
    ("Logins/s, plain, 50 clients", "logins-plain", "ops_per_sec", "int", True),
    ("Logins/s, TLS, 50 clients", "logins-tls", "ops_per_sec", "int", True),
    ("Target CPU µs per login, plain", "logins-plain", "target_cpu_us_per_op", "int", False),
    ("Target CPU µs per login, TLS", "logins-tls", "target_cpu_us_per_op", "int", False),
    ("Target CPU per login ÷ the generator's, plain", "logins-plain", CPU_OVER_GENERATOR, "dec2", False),
    ("Target CPU per login ÷ the generator's, TLS", "logins-tls", CPU_OVER_GENERATOR, "dec2", False),
    ("NOOP cmds/s, 50 sessions", "noop-50", "ops_per_sec", "int", True),
    ("NOOP p50 µs, 50 sessions", "noop-50", "p50_us", "int", True),
    ("NOOP p99 µs, 50 sessions", "noop-50", "p99_us", "int", True),
    ("NOOP p50 µs, 1 session, plain", "noop-1-plain", "p50_us", "int", True),
    ("NOOP p50 µs, 1 session, TLS", "noop-1-tls", "p50_us", "int", True),
    ("Target CPU µs per NOOP (50 sessions)", "noop-50", "target_cpu_us_per_op", "dec1", False),
    ("SELECT+FETCH cmds/s, 50 sessions", "select-fetch-50", "ops_per_sec", "int", True),
    ("FETCH 5 MB MB/s, 1 session, plain", "fetch-big-1-plain", "mb_per_sec", "dec1", True),
    ("FETCH 5 MB MB/s, 8 sessions, plain", "fetch-big-8-plain", "mb_per_sec", "dec1", True),
    ("FETCH 5 MB MB/s, 1 session, TLS", "fetch-big-1-tls", "mb_per_sec", "dec1", True),
    ("FETCH 5 MB MB/s, 8 sessions, TLS", "fetch-big-8-tls", "mb_per_sec", "dec1", True),
    ("KB per idle IDLE session, plain ({S} sessions)", "idle-plain", "kb_per_session", "dec1", False),
    ("KB per idle IDLE session, TLS ({S} sessions)", "idle-tls", "kb_per_session", "dec1", False),
    ("KB per idle IDLE session, plain, marginal (second half)", "idle-plain", "kb_per_session_marginal", "dec1", False),
    ("KB per idle IDLE session, TLS, marginal (second half)", "idle-tls", "kb_per_session_marginal", "dec1", False),
    ("Target CPU % while idle, plain", "idle-plain", "target_cpu_percent_idle", "dec2", False),
    ("Target CPU % while idle, TLS", "idle-tls", "target_cpu_percent_idle", "dec2", False),
]


def fmt(value, kind):
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "dec1":
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def field_of(record, field):
    if field == CPU_OVER_GENERATOR:
        target, generator = record.get("target_cpu_us_per_op"), record.get("generator_cpu_us_per_op")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (target, generator))
        return target / generator if numbers and generator > 0 else None
    return record.get(field)


def number(records, field):
    """The field's median over the rounds' records that have it as a number (None if none has)."""
    values = [field_of(r, field) for r in records or []]
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.median(values) if values else None


def main():
    run_dir = sys.argv[1]
    env = os.environ.get
    targets = env("TARGETS", " ".join(ALL_TARGETS)).split()

    results = {}
    out_dir = os.path.join(run_dir, "out")
    for name in sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []:
        if not name.endswith(".json") or "--" not in name:
            continue
        parts = name[:-5].split("--")
        target, figure = parts[0], parts[1]
        try:
            with open(os.path.join(out_dir, name)) as f:
                results.setdefault((target, figure), []).append(json.loads(f.read()))
        except (OSError, ValueError, IndexError):
            pass

    versions = {}
    try:
        with open(os.path.join(run_dir, "versions.txt")) as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("=")
                versions[key] = value
    except OSError:
        pass
    failures = []
    try:
        with open(os.path.join(run_dir, "failures.txt")) as f:
            failures = [line.strip() for line in f if line.strip()]
    except OSError:
        pass

    failed_figures = {line.split(":", 1)[0] for line in failures}
    failed_targets = {line.split(":", 1)[0] for line in failures if line.endswith("did not start")}

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = env("MODE", "full")
    print(f"## ImapProxy benchmark ({mode} mode)")
    print()
    print(f"- Date: {now}; run took {env('ELAPSED', '?')} s")
    print(f"- Machine: {versions.get('nproc', '?')} cores (nproc), {versions.get('cpu') or 'unknown CPU'}, "
          f"kernel {versions.get('kernel') or platform.release()}")
    target_warmup = env('TARGET_WARMUP', '0')
    warmed = f"each target warmed up first with 6 unrecorded loads of {target_warmup} s; " if float(target_warmup or 0) > 0 else ""
    rounds = int(env("ROUNDS", "1") or 1)
    medians = f"; {rounds} rounds in alternating target order, each cell the median" if rounds > 1 else ""
    print(f"- Load: {env('USERS')} users; {warmed}{env('DURATION')} s per figure after {env('WARMUP')} s warm-up; "
          f"{env('IDLE_SESSIONS')} idle sessions held {env('IDLE_HOLD')} s; certificate {env('CERT_KEY')}{medians}")
    print(f"- Dovecot {versions.get('dovecot', '?')} (backend, `direct`, `dovecot-proxy`); "
          f"nginx {versions.get('nginx', '?')}; HAProxy {versions.get('haproxy', '?')}")
    reference = f"; `imapproxy-ref`: {versions['imapproxy_ref']}" if versions.get("imapproxy_ref") else ""
    print(f"- ImapProxy {versions.get('imapproxy', '?')}{reference}, .NET SDK {versions.get('dotnet', '?')} "
          f"(runtime {versions.get('runtime', '?')}), env `{env('IMAPPROXY_ENV', '').strip()}`")
    print()

    header = ["Figure"] + targets
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["--:"] * len(targets)) + "|")
    notes = []
    for title, figure, field, kind, compare in ROWS:
        cells = [title.replace("{S}", env("IDLE_SESSIONS", "?"))]
        base = number(results.get(("direct", figure)), field)
        for target in targets:
            records = results.get((target, figure))
            value = number(records, field)
            if target in failed_targets:
                cell = "not started"
            elif value is None:
                cell = "FAILED" if f"{target}/{figure}" in failed_figures else "n/a"
            else:
                cell = fmt(value, kind)
                if compare and target != "direct" and base:
                    cell += f" ({value / base:.2f}×)"
                if f"{target}/{figure}" in failed_figures:
                    cell += " FAILED"
                for record in records or []:
                    errors = number([record], "errors")
                    if errors:
                        notes.append(f"{target}, {figure}: {errors:.0f} errors"
                                     + (f" ({record['failure']})" if record.get("failure") else ""))
            cells.append(cell)
        print("| " + " | ".join(cells) + " |")
    print()
    print("Ratios in parentheses are target ÷ direct (for latencies, above 1 means slower). CPU and memory "
          "figures count the target's own processes only (for `direct`, the backend's).")
    for note in dict.fromkeys(notes):
        print(f"\n- errors reported: {note}")
    if failures:
        print()
        print("Failures:")
        for line in failures:
            print(f"- {line}")


if __name__ == "__main__":
    main()
