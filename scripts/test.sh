#!/usr/bin/env bash
# Run the vhdref test suite (unit, integration and peer-oracle tests).
# Peer tests look for the PyPI peers (libvhdi-python, dissect.hypervisor, pyvhd)
# in the venv named by VHDREF_VENV and skip peers that are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export VHDREF_VENV="${VHDREF_VENV:-/opt/vhdref-venv}"
cargo test --all-targets
cargo test --doc
# The fuzz targets live in their own workspace (fuzz/); make sure they
# still compile against the library (running them needs nightly and
# cargo-fuzz: see fuzz/README.md).
cargo check --manifest-path fuzz/Cargo.toml --bins --examples
