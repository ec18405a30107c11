#!/usr/bin/env bash
# Runs the bundled example through the dtx binary and checks it from outside:
#  1. with failures off and one transaction at a time, the output must equal
#     examples/requests.expected (sorted);
#  2. with the default failure rates, every transaction printed COMMITTED must
#     appear exactly three times in `dtx state` (reservation, charge, order),
#     every ROLLED_BACK one nowhere, and `dtx recover` must find the
#     invariants intact.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/dtx" ./cmd/dtx

echo "-- deterministic run"
"$tmp/dtx" run --input examples/requests.jsonl --data-dir "$tmp/d1" \
  --fail-rate 0 --slow-rate 0 --crash-rate 0 --concurrency 1 >"$tmp/out1" 2>"$tmp/err1"
cat "$tmp/out1"; cat "$tmp/err1"
if ! diff <(sort "$tmp/out1") <(sort examples/requests.expected); then
  echo "FAIL: output differs from examples/requests.expected"; exit 1
fi

check_state() { # dir out
  "$tmp/dtx" state --data-dir "$1" >"$tmp/state.json"
  grep -q '"in_doubt": \[\]' "$tmp/state.json" || { echo "FAIL: something in doubt"; cat "$tmp/state.json"; exit 1; }
  local n=0
  while read -r tx status _; do
    [ "$tx" = "line" ] && continue
    c=$(grep -cF "\"$tx\": {" "$tmp/state.json" || true)
    case "$status" in
      COMMITTED) want=3 ;;
      ROLLED_BACK) want=0 ;;
      *) echo "FAIL: bad output line: $tx $status"; exit 1 ;;
    esac
    # A duplicate of a committed transaction is reported but not re-run.
    if [ "$c" != "$want" ]; then echo "FAIL: $tx $status appears $c times in state, want $want"; exit 1; fi
    n=$((n+1))
  done <"$2"
  echo "checked $n outcomes against dtx state"
}

check_state "$tmp/d1" "$tmp/out1"

echo "-- run with the default failure rates, 2000 generated requests"
"$tmp/dtx" gen --count 2000 --seed 7 --make-world "$tmp/world.json" --items 20 --buyers 50 --skew 1.2 >"$tmp/gen.jsonl"
"$tmp/dtx" run --input "$tmp/gen.jsonl" --world "$tmp/world.json" --data-dir "$tmp/d2" --concurrency 32 --seed 7 \
  --fail-rate 0.05 --slow-rate 0.01 --crash-rate 0.01 --prepare-timeout 200ms >"$tmp/out2" 2>"$tmp/err2"
cat "$tmp/err2"
lines=$(wc -l <"$tmp/out2")
[ "$lines" = 2000 ] || { echo "FAIL: $lines output lines for 2000 requests"; exit 1; }
"$tmp/dtx" recover --data-dir "$tmp/d2"
check_state "$tmp/d2" "$tmp/out2"
echo "example check passed"
