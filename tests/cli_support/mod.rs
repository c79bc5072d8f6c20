//! Running the `vhd` binary from tests: a process in a directory, its exit
//! status and output, and a few images made with the tool itself.

#![allow(dead_code)] // each test binary uses a different part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs `vhd` in `dir` with `args`, feeding `stdin`. Never accepts a
/// panic (exit status 101).
pub fn vhd_with_stdin(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vhd"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the vhd binary runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_vec();
    // Feed from a thread: the tool may stop reading early (and close stdin).
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("vhd finishes");
    let _ = feeder.join();
    assert_ne!(
        out.status.code(),
        Some(101),
        "vhd {args:?} panicked: {}",
        stderr(&out)
    );
    out
}

/// Runs `vhd` in `dir` with `args` and empty stdin.
pub fn vhd(dir: &Path, args: &[&str]) -> Output {
    vhd_with_stdin(dir, args, b"")
}

/// Runs `vhd` and insists that it succeeds.
pub fn vhd_ok(dir: &Path, args: &[&str]) -> Output {
    let out = vhd(dir, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "vhd {args:?} failed: {}",
        stderr(&out)
    );
    out
}

/// The exit status.
pub fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A dynamic base image of `size` bytes made by the tool in `dir`, with
/// `data` written at offset 0 (never all zeros, so a wrong source shows).
pub fn base_with_data(dir: &Path, name: &str, size: &str, data: &[u8]) -> PathBuf {
    vhd_ok(dir, &["create", name, size]);
    let out = vhd_with_stdin(dir, &["write", name, "--offset", "0"], data);
    assert_eq!(code(&out), Some(0), "write: {}", stderr(&out));
    dir.join(name)
}

/// A differencing child of `parent` made by the tool in `dir`.
pub fn child_of(dir: &Path, name: &str, parent: &str) -> PathBuf {
    vhd_ok(dir, &["create", name, "--parent", parent]);
    dir.join(name)
}

/// Bytes that are not zeros: a repeating ramp offset by `seed`.
pub fn ramp(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) | 1)
        .collect()
}
