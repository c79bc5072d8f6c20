//! `vhd bench` makes the same requests as `qemu-img bench` (qemu 10.0):
//! the same command line run by both tools on two copies of one empty
//! image leaves images that `qemu-img compare` finds identical, including
//! runs whose unaligned step wraps several times past the end of the disk.

mod common;

use std::path::Path;

use common::{MIB, Peer, cmd, peer_available, run, run_ok, temp_dir};

const VHD: &str = env!("CARGO_BIN_EXE_vhd");

/// Two identical empty 64 MiB dynamic images, one per tool.
fn twin_images(dir: &Path, block_size: &str) {
    run_ok(
        cmd(
            VHD,
            ["create", "ours.vhd", "64M", "--block-size", block_size],
        )
        .current_dir(dir),
    );
    std::fs::copy(dir.join("ours.vhd"), dir.join("qemu.vhd")).unwrap();
}

/// Offsets qemu-img 10.0 requests: the first as given, then each `step`
/// after the last, modulo the disk size (an independent statement of the
/// rule, to choose runs that stay inside the disk).
fn qemu_offsets(offset: u64, step: u64, size: u64, count: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = offset;
    for _ in 0..count {
        out.push(at);
        at = (at + step) % size;
    }
    out
}

/// Runs `args` through `vhd bench` on ours.vhd and `qemu-img bench -f vpc`
/// on qemu.vhd, then asserts the images are identical.
fn same_run_same_image(dir: &Path, args: &[&str]) {
    let mut ours = vec!["bench", "ours.vhd"];
    ours.extend_from_slice(args);
    run_ok(cmd(VHD, &ours).current_dir(dir));
    let mut theirs = vec!["bench", "-f", "vpc", "qemu.vhd"];
    theirs.extend_from_slice(args);
    run_ok(cmd("qemu-img", &theirs).current_dir(dir));
    let out = run(cmd(
        "qemu-img",
        ["compare", "-f", "vpc", "-F", "vpc", "ours.vhd", "qemu.vhd"],
    )
    .current_dir(dir));
    assert!(
        out.status.success(),
        "after `bench {}` the images differ: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    // And vhd reads the same (it also checks qemu's image opens here).
    let ours = run_ok(cmd(VHD, ["compare", "ours.vhd", "qemu.vhd"]).current_dir(dir));
    assert!(ours.status.success());
}

#[test]
fn an_unaligned_step_that_wraps_several_times_writes_what_qemu_img_writes() {
    if !peer_available(Peer::QemuImg) {
        return;
    }
    let dir = temp_dir();
    twin_images(dir.path(), "2M");
    // A step of 1 MiB + 3 bytes from an unaligned offset: 300 requests
    // wrap a 64 MiB disk four times and land at different, unaligned
    // places each lap (and across block boundaries).
    let (offset, step, count) = (5u64, 1_048_579u64, 300u64);
    let offsets = qemu_offsets(offset, step, 64 * MIB, count);
    let laps = offsets.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(laps >= 3, "the run wraps {laps} times");
    assert!(
        offsets.iter().all(|&o| o + 4096 <= 64 * MIB),
        "the run stays inside the disk (qemu-img 10.0 fails a request past the end)"
    );
    assert!(offsets.iter().any(|o| o % 512 != 0));
    same_run_same_image(
        dir.path(),
        &[
            "-w",
            "-c",
            "300",
            "-s",
            "4096",
            "-o",
            "5",
            "-S",
            "1048579",
            "--pattern",
            "171",
            "--flush-interval",
            "64",
        ],
    );
}

#[test]
fn odd_request_sizes_with_flushes_and_a_depth_write_what_qemu_img_writes() {
    if !peer_available(Peer::QemuImg) {
        return;
    }
    let dir = temp_dir();
    twin_images(dir.path(), "512K");
    // 1000-byte requests every 333 333 bytes, flushing every 7 at depth 7.
    let offsets = qemu_offsets(777, 333_333, 64 * MIB, 500);
    assert!(offsets.windows(2).any(|w| w[1] < w[0]), "the run wraps");
    assert!(offsets.iter().all(|&o| o + 1000 <= 64 * MIB));
    same_run_same_image(
        dir.path(),
        &[
            "-w",
            "-c",
            "500",
            "-s",
            "1000",
            "-o",
            "777",
            "-S",
            "333333",
            "--pattern",
            "90",
            "--flush-interval",
            "7",
            "-d",
            "7",
        ],
    );
}

#[test]
fn a_wrapped_request_past_the_end_fails_in_both_tools() {
    if !peer_available(Peer::QemuImg) {
        return;
    }
    let dir = temp_dir();
    twin_images(dir.path(), "2M");
    // The 65th request is at 64 * 1048573 = 64 MiB - 192: past the end
    // for 4 KiB (qemu 10.0 wraps modulo the size, not size - 4 KiB).
    let offsets = qemu_offsets(0, 1_048_573, 64 * MIB, 65);
    assert!(offsets[64] + 4096 > 64 * MIB);
    let args = ["-w", "-c", "65", "-S", "1048573", "--pattern", "1"];
    let mut ours = vec!["bench", "ours.vhd"];
    ours.extend_from_slice(&args);
    let out = run(cmd(VHD, &ours).current_dir(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("request 65") && err.contains(&format!("offset {}", offsets[64])),
        "{err}"
    );
    let mut theirs = vec!["bench", "-f", "vpc", "qemu.vhd"];
    theirs.extend_from_slice(&args);
    let out = run(cmd("qemu-img", &theirs).current_dir(dir.path()));
    assert_eq!(out.status.code(), Some(1), "qemu-img fails the same run");
}

#[test]
fn options_qemu_img_refuses_are_refused() {
    let dir = temp_dir();
    let d = dir.path();
    run_ok(cmd(VHD, ["create", "b.vhd", "8M"]).current_dir(d));
    for (args, says) in [
        (
            &["-c", "10", "--flush-interval", "100"][..],
            "only available in write tests",
        ),
        (
            &["-w", "-c", "10", "--flush-interval", "10"][..],
            "can't be smaller than depth 64",
        ),
        (&["-c", "0"][..], "request count"),
        (&["-d", "0"][..], "depth"),
    ] {
        let mut full = vec!["bench", "b.vhd"];
        full.extend_from_slice(args);
        let out = run(cmd(VHD, &full).current_dir(d));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // -d 1 allows any interval; -f vpc is accepted as qemu-img spells it.
    run_ok(
        cmd(
            VHD,
            [
                "bench",
                "-f",
                "vpc",
                "b.vhd",
                "-w",
                "-c",
                "10",
                "--flush-interval",
                "3",
                "-d",
                "1",
            ],
        )
        .current_dir(d),
    );
}
