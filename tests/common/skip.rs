//! Skipping a test that cannot run on this machine, where a person sees
//! it, and failing instead where every test must run.
//!
//! A skipped test returns early and the harness reports it as `ok`, so a
//! skip must never pass silently:
//! - `SKIP: <test>: <why>` goes straight to the process's stderr. The
//!   harness captures and hides what `eprintln!` prints in a passing test,
//!   but not a direct write, so the line shows in a plain `cargo test`.
//! - With `VHDREF_SKIP_LOG=FILE` the line is also appended to FILE, which
//!   `scripts/test.sh` prints as a summary after the run.
//! - With `VHDREF_REQUIRE_PEERS=1` (`.ci/run` sets it) the test panics
//!   with the reason instead: CI installs every peer, so a missing one is a
//!   broken machine, not a pass.
//!
//! Used by `tests/common/mod.rs` and, through `#[path]`, by test binaries
//! that do not load the whole common module.
#![allow(dead_code)]

use std::io::Write as _;

/// Whether every test must run (`VHDREF_REQUIRE_PEERS=1`).
pub fn required() -> bool {
    std::env::var_os("VHDREF_REQUIRE_PEERS").is_some_and(|v| v == "1")
}

/// Reports that the running test cannot run here because `why`; the
/// caller then returns without asserting anything. Panics with the reason
/// under `VHDREF_REQUIRE_PEERS=1`.
#[track_caller]
pub fn skip(why: &str) {
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    assert!(
        !required(),
        "{test} cannot run: {why} (VHDREF_REQUIRE_PEERS=1: a test that cannot run fails)"
    );
    let line = format!("SKIP: {test}: {why}\n");
    // Not eprintln!: the test harness would capture it and hide it.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    if let Some(log) = std::env::var_os("VHDREF_SKIP_LOG") {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            let _ = writeln!(
                std::io::stderr(),
                "SKIP: could not append to VHDREF_SKIP_LOG {}: {e}",
                std::path::Path::new(&log).display()
            );
        }
    }
}
