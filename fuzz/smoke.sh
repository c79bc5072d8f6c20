#!/usr/bin/env bash
# A short run of every fuzz target (FUZZ_SMOKE_SECONDS each, default 30)
# from its seeds, as `.ci/run` does: any crash, panic, leak of time or
# memory fails it, and the input is left in fuzz/artifacts/TARGET/. Needs
# a nightly toolchain and cargo-fuzz; without them it says so and does
# nothing. Prints one line per target: executions, coverage, peak RSS.
#
# Usage: fuzz/smoke.sh [TARGET...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SMOKE_SECONDS:-30}
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz smoke run skipped: no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz smoke run skipped: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)"
  exit 0
fi
# No sanitizer: the library forbids unsafe code, and AddressSanitizer
# costs several times the executions (see README.md).
cargo +nightly fuzz build -s none
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
work=$(mktemp -d "${TMPDIR:-/tmp}/vhdsmoke.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${targets[@]}"; do
  mkdir -p "$work/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds+=("seeds/$target")
  case $target in open_read | open_write | check) seeds+=(seeds/raw) ;; esac
  status=0
  cargo +nightly fuzz run -s none "$target" "$work/$target" "${seeds[@]}" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65537 -timeout=30 \
    -print_final_stats=1 >"$work/$target.log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target.log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$work/$target.log")
  cov=$(grep -E '^#[0-9]+\s+(DONE|pulse|NEW|REDUCE|INITED)' "$work/$target.log" | tail -1 |
    sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "fuzz smoke: $target FAILED (exit $status):"
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$work/$target.log" | head -20
  else
    echo "fuzz smoke: $target ok: ${runs:-?} runs in ${secs}s, cov ${cov:-?} edges, peak RSS ${rss:-?} MB"
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz smoke: failed: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
