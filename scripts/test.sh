#!/usr/bin/env bash
# Run the vhdref test suite: the lints first (formatting, clippy with
# warnings as errors, rustdoc with warnings as errors), then unit,
# integration and peer-oracle tests, then a compile check of the fuzz
# targets.
#
# Peer tests look for the PyPI peers (libvhdi-python, dissect.hypervisor,
# pyvhd) in the venv named by VHDREF_VENV. A test whose peer is missing
# prints `SKIP: <test>: <why>` and returns; they are listed again at the
# end. With VHDREF_REQUIRE_PEERS=1 (set by .ci/run) such a test fails
# instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export VHDREF_VENV="${VHDREF_VENV:-/opt/vhdref-venv}"

cargo fmt --check
cargo clippy --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

# Every skipped test appends its SKIP line here (tests/common/skip.rs);
# the summary prints whether the tests passed or not.
VHDREF_SKIP_LOG="$(mktemp)"
export VHDREF_SKIP_LOG
summary() {
  if [ -s "$VHDREF_SKIP_LOG" ]; then
    echo
    echo "test.sh: $(wc -l <"$VHDREF_SKIP_LOG") test(s) did not run here (they report ok):"
    sort "$VHDREF_SKIP_LOG"
  fi
  rm -f "$VHDREF_SKIP_LOG"
}
trap summary EXIT

cargo test --all-targets
cargo test --doc
# The fuzz targets live in their own workspace (fuzz/); make sure they
# still compile against the library (running them needs nightly and
# cargo-fuzz: see fuzz/README.md).
cargo check --manifest-path fuzz/Cargo.toml --bins --examples

# The gates on the tests themselves: every rule's cited tests fail with
# that rule switched off, and every key mutant (write order, bit order,
# checksum, BAT mapping, parent ID, lock mode, limits) is caught by its
# named test. Both work on a copy or a feature build, never on this tree.
bash scripts/rule-mutants.sh
bash scripts/key-mutants.sh
