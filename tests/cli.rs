//! The `vhd` tool, run as a process on images in temporary directories.
//!
//! Exit statuses checked here: 0 ok, 1 error, 2 clap usage errors (and
//! `check` errors, `compare` failures), 3 `check` warnings; 101 never.

mod cli_support;
#[path = "common/skip.rs"]
mod skip;

use cli_support::{code, stderr, stdout, vhd, vhd_ok, vhd_with_stdin};

use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

const MIB: u64 = 1024 * 1024;

fn info_json(dir: &Path, image: &str) -> Value {
    let out = vhd_ok(dir, &["info", image, "--output", "json"]);
    serde_json::from_slice(&out.stdout).expect("info prints JSON")
}

/// Deterministic pseudo-random bytes (xorshift), never all zeros.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8 | 1
        })
        .collect()
}

/// An 8 MiB raw disk with noise in a few places, zeros elsewhere.
fn raw_disk(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; (8 * MIB) as usize];
    for (i, (at, len)) in [
        (0usize, 4096usize),
        (3 * MIB as usize - 100, 70_000),
        (8 * MIB as usize - 512, 512),
    ]
    .into_iter()
    .enumerate()
    {
        bytes[at..at + len].copy_from_slice(&noise(i as u64 + 7, len));
    }
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("write the raw disk");
    (path, bytes)
}

fn tmp() -> TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

#[test]
fn create_then_info_json_reports_type_size_and_blocks() {
    let d = tmp();
    let out = vhd_ok(d.path(), &["create", "disk.vhd", "10M"]);
    assert!(stdout(&out).contains("dynamic"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("10.0 MiB (10485760 bytes)"),
        "{}",
        stdout(&out)
    );
    let info = info_json(d.path(), "disk.vhd");
    assert_eq!(info["schema_version"], 1);
    assert_eq!(info["type"], "dynamic");
    assert_eq!(info["current_size"], 10 * MIB);
    assert_eq!(info["original_size"], 10 * MIB);
    assert_eq!(info["sparse"]["block_size"], 2 * MIB);
    assert_eq!(info["sparse"]["bat_entries"], 5);
    assert_eq!(info["sparse"]["allocated_blocks"], 0);
    assert_eq!(info["sparse"]["header_offset"], 512);
    assert_eq!(info["creator"]["host_os"], "Wi2k");
    assert_eq!(info["warnings"], Value::Array(vec![]));
    assert_eq!(info["chain"].as_array().map(Vec::len), Some(1));
    assert!(
        info["time_stamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
}

#[test]
fn create_fixed_with_chs_rule_rounds_up_to_a_whole_geometry() {
    let d = tmp();
    vhd_ok(
        d.path(),
        &[
            "create",
            "f.vhd",
            "10M",
            "--type",
            "fixed",
            "--size-rule",
            "chs",
        ],
    );
    let info = info_json(d.path(), "f.vhd");
    assert_eq!(info["type"], "fixed");
    assert_eq!(info["sparse"], Value::Null);
    let size = info["current_size"].as_u64().expect("a size");
    assert!(size >= 10 * MIB);
    assert_eq!(info["geometry"]["capacity"].as_u64(), Some(size));
}

#[test]
fn info_human_output_humanizes_sizes() {
    let d = tmp();
    vhd_ok(
        d.path(),
        &["create", "disk.vhd", "10M", "--block-size", "512K"],
    );
    let text = stdout(&vhd_ok(d.path(), &["info", "disk.vhd"]));
    assert!(text.contains("current size:"), "{text}");
    assert!(text.contains("10.0 MiB (10485760 bytes)"), "{text}");
    assert!(text.contains("512.0 KiB (524288 bytes)"), "{text}");
    assert!(text.contains("(C/H/S)"), "{text}");
}

#[test]
fn create_refuses_an_existing_file_and_leaves_it_alone() {
    let d = tmp();
    std::fs::write(d.path().join("precious"), b"keep me").expect("write");
    let out = vhd(d.path(), &["create", "precious", "1M"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stderr(&out).starts_with("vhd: precious: "),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(d.path().join("precious")).expect("read"),
        b"keep me"
    );
}

#[test]
fn sizes_take_suffixes_in_any_case_and_spelling() {
    let d = tmp();
    for (i, size) in ["8388608", "8M", "8m", "8MiB", "8mib", "8192K", "8192kib"]
        .iter()
        .enumerate()
    {
        let name = format!("s{i}.vhd");
        vhd_ok(d.path(), &["create", &name, size]);
        assert_eq!(
            info_json(d.path(), &name)["current_size"],
            8 * MIB,
            "size {size}"
        );
    }
}

#[test]
fn bad_arguments_are_usage_errors_with_status_2() {
    let d = tmp();
    for args in [
        &["create", "x.vhd", "10X"][..],
        &["create", "x.vhd", "1M", "--type", "sparse"],
        &["nonsense"],
        &["info"],
        &["read", "x.vhd", "--offset", "-1"],
    ] {
        let out = vhd(d.path(), args);
        assert_eq!(code(&out), Some(2), "vhd {args:?}: {}", stderr(&out));
    }
    assert!(!d.path().join("x.vhd").exists());
}

#[test]
fn a_size_the_library_refuses_is_a_one_line_error() {
    let d = tmp();
    let out = vhd(d.path(), &["create", "x.vhd", "1000"]);
    assert_eq!(code(&out), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("vhd: x.vhd: ") && err.contains("512"),
        "{err}"
    );
    assert!(!d.path().join("x.vhd").exists());
}

#[test]
fn write_from_stdin_then_read_back() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "disk.vhd", "8M"]);
    let data = noise(1, 3 * MIB as usize + 1234);
    let out = vhd_with_stdin(d.path(), &["write", "disk.vhd", "--offset", "1000"], &data);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let len = data.len().to_string();
    let back = vhd_ok(
        d.path(),
        &["read", "disk.vhd", "--offset", "1000", "--length", &len],
    );
    assert!(back.stdout == data, "read back differs");
    // Unaligned neighbours are untouched zeros.
    let before = vhd_ok(
        d.path(),
        &["read", "disk.vhd", "--offset", "0", "--length", "1000"],
    );
    assert_eq!(before.stdout, vec![0u8; 1000]);
}

#[test]
fn read_without_length_reads_to_the_end_of_the_disk() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "disk.vhd", "2M"]);
    let out = vhd_ok(d.path(), &["read", "disk.vhd", "--offset", "1M"]);
    assert_eq!(out.stdout.len() as u64, MIB);
}

#[test]
fn read_of_an_unallocated_range_gives_zeros() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "disk.vhd", "8M"]);
    let out = vhd_with_stdin(
        d.path(),
        &["write", "disk.vhd", "--offset", "0"],
        &noise(2, 4096),
    );
    assert_eq!(code(&out), Some(0));
    let out = vhd_ok(
        d.path(),
        &["read", "disk.vhd", "--offset", "4M", "--length", "2M"],
    );
    assert_eq!(out.stdout.len() as u64, 2 * MIB);
    assert!(out.stdout.iter().all(|&b| b == 0));
    assert_eq!(
        info_json(d.path(), "disk.vhd")["sparse"]["allocated_blocks"],
        1
    );
}

#[test]
fn read_past_the_end_is_an_error() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "disk.vhd", "1M"]);
    let out = vhd(
        d.path(),
        &["read", "disk.vhd", "--offset", "1M", "--length", "1"],
    );
    assert_eq!(code(&out), Some(1));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("past the end"), "{}", stderr(&out));
}

#[test]
fn write_past_the_end_of_the_disk_is_refused_before_writing() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "disk.vhd", "1M"]);
    // Through a pipe: the chunk that would cross the end is refused whole.
    let out = vhd_with_stdin(
        d.path(),
        &["write", "disk.vhd", "--offset", "1020K"],
        &noise(3, 8192),
    );
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("past the end"), "{}", stderr(&out));
    let back = vhd_ok(d.path(), &["read", "disk.vhd", "--offset", "1020K"]);
    assert!(back.stdout.iter().all(|&b| b == 0), "something was written");
    assert_eq!(
        info_json(d.path(), "disk.vhd")["sparse"]["allocated_blocks"],
        0
    );
}

#[test]
fn write_while_another_process_holds_the_image_for_writing_fails_as_in_use() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "disk.vhd", "1M"]);
    let held = vhdref::Image::open_rw(d.path().join("disk.vhd")).expect("open for writing");
    let out = vhd_with_stdin(d.path(), &["write", "disk.vhd"], b"data");
    assert_eq!(code(&out), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("vhd: disk.vhd: in use"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    drop(held);
    let out = vhd_with_stdin(d.path(), &["write", "disk.vhd"], b"data");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
}

#[test]
fn convert_round_trip_raw_dynamic_fixed_raw_is_byte_identical() {
    let d = tmp();
    let (_, bytes) = raw_disk(d.path(), "in.img");
    vhd_ok(d.path(), &["convert", "in.img", "dyn.vhd"]);
    assert_eq!(info_json(d.path(), "dyn.vhd")["type"], "dynamic");
    vhd_ok(
        d.path(),
        &["convert", "dyn.vhd", "fixed.vhd", "--to", "fixed"],
    );
    assert_eq!(info_json(d.path(), "fixed.vhd")["type"], "fixed");
    vhd_ok(
        d.path(),
        &["convert", "fixed.vhd", "out.img", "--to", "raw"],
    );
    let back = std::fs::read(d.path().join("out.img")).expect("read");
    assert!(back == bytes, "round trip changed the bytes");
}

#[test]
fn convert_quiet_prints_nothing_but_errors_and_still_converts() {
    let d = tmp();
    let (_, bytes) = raw_disk(d.path(), "in.img");
    // 1000 bytes more than a multiple of 512: without -q a note says the
    // VHD is padded.
    let mut odd = bytes.clone();
    odd.extend_from_slice(&[7u8; 1000]);
    std::fs::write(d.path().join("odd.img"), &odd).expect("write");
    let loud = vhd_ok(d.path(), &["convert", "odd.img", "loud.vhd"]);
    assert!(!stdout(&loud).is_empty() && !stderr(&loud).is_empty());
    for args in [
        &["convert", "-q", "in.img", "q.vhd"][..],
        &["convert", "--quiet", "odd.img", "odd.vhd"][..],
        &["convert", "-q", "q.vhd", "q.img", "--to", "raw"][..],
    ] {
        let out = vhd_ok(d.path(), args);
        assert_eq!(stdout(&out), "", "{args:?}");
        assert_eq!(stderr(&out), "", "{args:?}");
    }
    assert!(std::fs::read(d.path().join("q.img")).expect("read") == bytes);
    let odd_back = vhd_ok(d.path(), &["compare", "odd.vhd", "loud.vhd"]);
    assert_eq!(code(&odd_back), Some(0));
    // An error is still reported.
    let out = vhd(d.path(), &["convert", "-q", "in.img", "q.vhd"]);
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

#[test]
fn convert_leaves_unallocated_blocks_unallocated() {
    let d = tmp();
    // Data in blocks 0, 1 and 3 of 4 (2 MiB blocks); block 2 is zeros.
    raw_disk(d.path(), "in.img");
    vhd_ok(d.path(), &["convert", "in.img", "a.vhd"]);
    let info = info_json(d.path(), "a.vhd");
    assert_eq!(info["sparse"]["bat_entries"], 4);
    assert_eq!(info["sparse"]["allocated_blocks"], 3);
    // From a dynamic image to another with 512 KiB blocks: only the four
    // that hold data (0, 5, 6 and 15: the middle run crosses a boundary).
    vhd_ok(
        d.path(),
        &["convert", "a.vhd", "b.vhd", "--block-size", "512K"],
    );
    let info = info_json(d.path(), "b.vhd");
    assert_eq!(info["sparse"]["bat_entries"], 16);
    assert_eq!(info["sparse"]["allocated_blocks"], 4);
    vhd_ok(d.path(), &["compare", "a.vhd", "b.vhd"]);
    vhd_ok(d.path(), &["compare", "in.img", "b.vhd"]);
}

#[test]
fn convert_pads_a_raw_input_that_is_not_whole_sectors() {
    let d = tmp();
    std::fs::write(d.path().join("odd.img"), noise(4, 3000)).expect("write");
    let out = vhd_ok(d.path(), &["convert", "odd.img", "odd.vhd"]);
    assert!(stderr(&out).contains("padded"), "{}", stderr(&out));
    assert_eq!(info_json(d.path(), "odd.vhd")["current_size"], 3072);
    let back = vhd_ok(d.path(), &["read", "odd.vhd"]).stdout;
    assert_eq!(&back[..3000], &noise(4, 3000)[..]);
    assert_eq!(&back[3000..], &[0u8; 72][..]);
}

#[test]
fn convert_refuses_to_overwrite_unless_forced_and_never_the_input() {
    let d = tmp();
    raw_disk(d.path(), "in.img");
    std::fs::write(d.path().join("out.vhd"), b"old").expect("write");
    let out = vhd(d.path(), &["convert", "in.img", "out.vhd"]);
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(d.path().join("out.vhd")).expect("read"),
        b"old"
    );
    vhd_ok(d.path(), &["convert", "in.img", "out.vhd", "--force"]);
    vhd_ok(d.path(), &["compare", "in.img", "out.vhd"]);
    let out = vhd(d.path(), &["convert", "out.vhd", "out.vhd", "--force"]);
    assert_eq!(code(&out), Some(1));
    vhd_ok(d.path(), &["compare", "in.img", "out.vhd"]);
}

#[test]
fn convert_of_a_differencing_image_flattens_the_chain() {
    let d = tmp();
    raw_disk(d.path(), "in.img");
    vhd_ok(d.path(), &["convert", "in.img", "base.vhd"]);
    vhd_ok(d.path(), &["create", "child.vhd", "--parent", "base.vhd"]);
    let out = vhd_with_stdin(
        d.path(),
        &["write", "child.vhd", "--offset", "5M"],
        &noise(5, 5000),
    );
    assert_eq!(code(&out), Some(0));
    vhd_ok(
        d.path(),
        &["convert", "child.vhd", "flat.img", "--to", "raw"],
    );
    let mut expected = std::fs::read(d.path().join("in.img")).expect("read");
    expected[5 * MIB as usize..5 * MIB as usize + 5000].copy_from_slice(&noise(5, 5000));
    assert!(std::fs::read(d.path().join("flat.img")).expect("read") == expected);
}

#[test]
fn compare_exits_0_when_same_and_1_with_the_first_differing_offset() {
    let d = tmp();
    let (_, mut bytes) = raw_disk(d.path(), "a.img");
    vhd_ok(d.path(), &["convert", "a.img", "a.vhd"]);
    let out = vhd_ok(d.path(), &["compare", "a.vhd", "a.img"]);
    assert!(stdout(&out).contains("identical"), "{}", stdout(&out));
    bytes[6 * MIB as usize + 17] ^= 0x40;
    std::fs::write(d.path().join("b.img"), &bytes).expect("write");
    let out = vhd(d.path(), &["compare", "a.vhd", "b.img"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stdout(&out).contains(&(6 * MIB + 17).to_string()),
        "{}",
        stdout(&out)
    );
}

#[test]
fn compare_of_different_sizes_differs_and_of_missing_files_is_status_2() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "a.vhd", "1M"]);
    vhd_ok(d.path(), &["create", "b.vhd", "2M"]);
    let out = vhd(d.path(), &["compare", "a.vhd", "b.vhd"]);
    assert_eq!(code(&out), Some(1));
    assert!(stdout(&out).contains("sizes differ"), "{}", stdout(&out));
    let out = vhd(d.path(), &["compare", "a.vhd", "missing.vhd"]);
    assert_eq!(code(&out), Some(2));
    assert!(
        stderr(&out).starts_with("vhd: missing.vhd: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn map_json_lists_the_data_extents() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "disk.vhd", "8M"]);
    let out = vhd_with_stdin(
        d.path(),
        &["write", "disk.vhd", "--offset", "3M"],
        &noise(6, 1024),
    );
    assert_eq!(code(&out), Some(0));
    let out = vhd_ok(d.path(), &["map", "disk.vhd", "--output", "json"]);
    let map: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(map["schema_version"], 1);
    let extents = map["extents"].as_array().expect("extents");
    let data: Vec<&Value> = extents.iter().filter(|e| e["data"] == true).collect();
    assert_eq!(data.len(), 1, "{extents:?}");
    assert_eq!(data[0]["offset"], 3 * MIB);
    assert_eq!(data[0]["length"], 1024);
    assert_eq!(data[0]["depth"], 0);
    assert_eq!(data[0]["path"], "disk.vhd");
    assert!(data[0]["file_offset"].as_u64().is_some());
    let total: u64 = extents.iter().filter_map(|e| e["length"].as_u64()).sum();
    assert_eq!(total, 8 * MIB);
}

#[test]
fn check_of_a_clean_image_exits_0() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "disk.vhd", "8M"]);
    let out = vhd_ok(d.path(), &["check", "disk.vhd"]);
    assert!(stdout(&out).contains("clean"), "{}", stdout(&out));
    let out = vhd_ok(d.path(), &["check", "disk.vhd", "--output", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["verdict"], "clean");
    assert_eq!(report["schema_version"], 1);
}

/// Flips a byte of the footer at `footer_start` (outside the checksum field).
fn corrupt_footer(path: &Path, footer_start: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[(footer_start + 70) as usize] ^= 0xFF;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn check_of_a_fixed_image_with_a_bad_footer_checksum_exits_2_naming_the_rule() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "f.vhd", "1M", "--type", "fixed"]);
    corrupt_footer(&d.path().join("f.vhd"), MIB);
    let out = vhd(d.path(), &["check", "f.vhd"]);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).contains("FTR-CHECKSUM"), "{}", stdout(&out));
    // Other commands refuse it with the rule ID in one line.
    let out = vhd(d.path(), &["info", "f.vhd"]);
    assert_eq!(code(&out), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("vhd: f.vhd: footer checksum mismatch"),
        "{err}"
    );
    assert!(err.trim_end().ends_with("(FTR-CHECKSUM)"), "{err}");
}

#[test]
fn check_of_a_dynamic_image_with_only_a_good_footer_copy_exits_3() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "d.vhd", "1M"]);
    let path = d.path().join("d.vhd");
    let len = std::fs::metadata(&path).expect("stat").len();
    corrupt_footer(&path, len - 512);
    let out = vhd(d.path(), &["check", "d.vhd"]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert!(stdout(&out).contains("FTR-TRAILING"), "{}", stdout(&out));
    let out = vhd(d.path(), &["check", "d.vhd", "--strict"]);
    assert_eq!(code(&out), Some(2));
    // It still reads, but cannot be written.
    vhd_ok(d.path(), &["read", "d.vhd", "--length", "512"]);
    let out = vhd_with_stdin(d.path(), &["write", "d.vhd"], b"x");
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("FTR-TRAILING"), "{}", stderr(&out));
}

#[test]
fn check_of_a_file_that_is_not_a_vhd_exits_1() {
    let d = tmp();
    std::fs::write(d.path().join("noise"), noise(8, 5000)).expect("write");
    let out = vhd(d.path(), &["check", "noise"]);
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("FTR-COOKIE"), "{}", stderr(&out));
    let out = vhd(d.path(), &["check", "noise", "--output", "json"]);
    assert_eq!(code(&out), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["verdict"], "not_checked");
    assert_eq!(report["rule"], "FTR-COOKIE");
}

#[test]
fn check_junit_has_a_test_case_per_rule_and_fails_the_broken_one() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "f.vhd", "1M", "--type", "fixed"]);
    corrupt_footer(&d.path().join("f.vhd"), MIB);
    let out = vhd(d.path(), &["check", "f.vhd", "--output", "junit"]);
    assert_eq!(code(&out), Some(2));
    let xml = stdout(&out);
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), vhdref::Rule::ALL.len());
    assert_eq!(xml.matches("<failure ").count(), 1);
    assert!(xml.contains("name=\"FTR-CHECKSUM\">"), "{xml}");
}

#[test]
fn differencing_child_write_then_commit_reaches_the_parent() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "base.vhd", "4M"]);
    let out = vhd_ok(d.path(), &["create", "child.vhd", "--parent", "base.vhd"]);
    assert!(stdout(&out).contains("differencing"), "{}", stdout(&out));
    let info = info_json(d.path(), "child.vhd");
    assert_eq!(info["type"], "differencing");
    assert_eq!(info["current_size"], 4 * MIB);
    assert_eq!(
        info["chain"][1]["path"]
            .as_str()
            .map(|p| p.ends_with("base.vhd")),
        Some(true)
    );
    assert_eq!(info["chain"][0]["parent_source"]["via"], "locator");
    let data = noise(9, 10_000);
    let out = vhd_with_stdin(d.path(), &["write", "child.vhd", "--offset", "1M"], &data);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let before = vhd_ok(
        d.path(),
        &["read", "base.vhd", "--offset", "1M", "--length", "10000"],
    );
    assert!(
        before.stdout.iter().all(|&b| b == 0),
        "the parent changed before commit"
    );
    let out = vhd_ok(d.path(), &["commit", "child.vhd"]);
    assert!(stdout(&out).contains("base.vhd"), "{}", stdout(&out));
    let after = vhd_ok(
        d.path(),
        &["read", "base.vhd", "--offset", "1M", "--length", "10000"],
    );
    assert!(after.stdout == data, "commit did not reach the parent");
    vhd_ok(d.path(), &["compare", "base.vhd", "child.vhd"]);
}

#[test]
fn commit_of_an_image_that_is_not_differencing_is_an_error() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "base.vhd", "1M"]);
    let out = vhd(d.path(), &["commit", "base.vhd"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stderr(&out).contains("not a differencing image"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_child_whose_parent_is_gone_names_the_rule() {
    let d = tmp();
    vhd_ok(d.path(), &["create", "base.vhd", "1M"]);
    vhd_ok(d.path(), &["create", "child.vhd", "--parent", "base.vhd"]);
    std::fs::rename(d.path().join("base.vhd"), d.path().join("moved.vhd")).expect("rename");
    let out = vhd(d.path(), &["info", "child.vhd"]);
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("(PAR-NOT-FOUND)"), "{}", stderr(&out));
    let info = vhd_ok(
        d.path(),
        &[
            "info",
            "child.vhd",
            "--parent",
            "moved.vhd",
            "--output",
            "json",
        ],
    );
    let info: Value = serde_json::from_slice(&info.stdout).expect("JSON");
    assert_eq!(info["chain"][0]["parent_source"]["via"], "caller");
    let out = vhd(d.path(), &["check", "child.vhd"]);
    assert_eq!(code(&out), Some(2));
    assert!(stdout(&out).contains("PAR-NOT-FOUND"), "{}", stdout(&out));
}

#[test]
fn no_command_exits_101_on_garbage_input_files() {
    let d = tmp();
    std::fs::write(d.path().join("noise"), noise(10, 70_000)).expect("write");
    std::fs::write(d.path().join("empty"), b"").expect("write");
    std::fs::write(d.path().join("tiny"), b"conectix").expect("write");
    std::fs::create_dir(d.path().join("dir")).expect("mkdir");
    vhd_ok(d.path(), &["create", "good.vhd", "1M"]);
    let good = std::fs::read(d.path().join("good.vhd")).expect("read");
    std::fs::write(d.path().join("truncated.vhd"), &good[..good.len() / 2]).expect("write");
    for file in ["noise", "empty", "tiny", "dir", "truncated.vhd", "missing"] {
        let out_name = format!("{file}.out");
        let runs: Vec<Vec<&str>> = vec![
            vec!["info", file],
            vec!["info", file, "--output", "json"],
            vec!["check", file],
            vec!["check", file, "--output", "junit"],
            vec!["map", file],
            vec!["read", file],
            vec!["write", file, "--offset", "0"],
            vec!["commit", file],
            vec!["compare", file, "good.vhd"],
            vec!["convert", file, &out_name],
            vec!["convert", file, "x.img", "--from", "vhd", "--to", "raw"],
            vec!["create", "child.vhd", "--parent", file],
        ];
        for args in runs {
            // vhd() itself fails the test on status 101.
            let out = vhd_with_stdin(d.path(), &args, b"some bytes");
            let err = stderr(&out);
            if code(&out) != Some(0) {
                assert!(
                    err.starts_with("vhd: ") || err.is_empty(),
                    "vhd {args:?}: {err}"
                );
            }
        }
    }
}

#[test]
fn every_command_explains_itself_with_an_example() {
    let d = tmp();
    for cmd in [
        "info", "check", "create", "convert", "read", "write", "map", "compare", "commit",
    ] {
        let out = vhd_ok(d.path(), &[cmd, "--help"]);
        let text = stdout(&out);
        assert!(text.contains("Example:"), "{cmd} --help: {text}");
        assert!(text.contains(&format!("vhd {cmd}")), "{cmd} --help: {text}");
    }
    let out = vhd_ok(d.path(), &["--version"]);
    assert!(stdout(&out).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn bench_writes_the_pattern_at_each_step_and_reads_back() {
    let dir = tmp();
    let d = dir.path();
    vhd_ok(d, &["create", "b.vhd", "8M", "--block-size", "512K"]);
    let out = vhd_ok(
        d,
        &[
            "bench",
            "b.vhd",
            "-w",
            "-c",
            "20",
            "-s",
            "4K",
            "-S",
            "1M",
            "--pattern",
            "171",
        ],
    );
    assert!(
        stdout(&out).contains("Run completed in"),
        "{}",
        stdout(&out)
    );
    // 20 requests, one every 1 MiB, wrap after 8: offsets 0..7 MiB written.
    for mib in 0..8u64 {
        let offset = (mib * MIB).to_string();
        let got = vhd_ok(
            d,
            &["read", "b.vhd", "--offset", &offset, "--length", "4097"],
        )
        .stdout;
        assert_eq!(&got[..4096], &[0xAB; 4096][..], "at {mib} MiB");
        assert_eq!(got[4096], 0, "past the request at {mib} MiB");
    }
    // Every other 512K block holds one request; the rest stay unallocated.
    let info = info_json(d, "b.vhd");
    assert_eq!(info["sparse"]["allocated_blocks"], 8);
    vhd_ok(d, &["bench", "b.vhd", "-c", "100", "-s", "64K"]);
}

#[test]
fn bench_refuses_a_request_larger_than_the_disk() {
    let dir = tmp();
    let d = dir.path();
    vhd_ok(d, &["create", "b.vhd", "1M"]);
    let out = vhd(d, &["bench", "b.vhd", "-s", "2M"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stderr(&out).starts_with("vhd: b.vhd: request size"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn convert_with_force_replaces_the_old_output_and_leaves_no_temporary_file() {
    let dir = tmp();
    let d = dir.path();
    let (_, data) = raw_disk(d, "in.raw");
    std::fs::write(d.join("out.raw"), b"old contents").unwrap();
    let out = vhd(d, &["convert", "in.raw", "out.raw", "--to", "raw"]);
    assert_eq!(code(&out), Some(1), "an existing output needs --force");
    assert_eq!(std::fs::read(d.join("out.raw")).unwrap(), b"old contents");
    vhd_ok(
        d,
        &["convert", "in.raw", "out.raw", "--to", "raw", "--force"],
    );
    assert_eq!(std::fs::read(d.join("out.raw")).unwrap(), data);
    let names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains("vhd-convert")),
        "temporary files left: {names:?}"
    );
}

#[test]
fn a_parent_outside_the_allowed_directory_is_not_followed_and_the_error_says_so() {
    let dir = tmp();
    let d = dir.path();
    std::fs::create_dir(d.join("base")).unwrap();
    std::fs::create_dir(d.join("work")).unwrap();
    vhd_ok(d, &["create", "base/p.vhd", "1M"]);
    vhd_ok(d, &["create", "work/c.vhd", "--parent", "base/p.vhd"]);
    let out = vhd(
        d,
        &[
            "read",
            "work/c.vhd",
            "--length",
            "512",
            "--allow-parent-dir",
            "work",
        ],
    );
    assert_eq!(code(&out), Some(1));
    let err = stderr(&out);
    assert!(err.contains("outside the allowed directories"), "{err}");
    assert!(err.contains("PAR-NOT-FOUND"), "{err}");
    vhd_ok(
        d,
        &[
            "read",
            "work/c.vhd",
            "--length",
            "512",
            "--allow-parent-dir",
            "base",
        ],
    );
}

#[test]
fn a_terabyte_disk_with_two_writes_converts_to_a_sparse_raw_and_compares_equal() {
    use std::os::unix::fs::MetadataExt;
    let dir = tmp();
    let d = dir.path();
    vhd_ok(d, &["create", "big.vhd", "1T"]);
    vhd_with_stdin(d, &["write", "big.vhd", "--offset", "3G"], b"first");
    vhd_with_stdin(d, &["write", "big.vhd", "--offset", "1023G"], b"last");
    vhd_ok(d, &["convert", "big.vhd", "big.raw", "--to", "raw"]);
    let meta = std::fs::metadata(d.join("big.raw")).unwrap();
    assert_eq!(meta.len(), 1 << 40);
    assert!(
        meta.blocks() * 512 < 4 * MIB,
        "the raw output is sparse: {} blocks",
        meta.blocks()
    );
    let out = vhd_ok(d, &["compare", "big.vhd", "big.raw"]);
    assert!(stdout(&out).contains("identical"), "{}", stdout(&out));
    vhd_with_stdin(d, &["write", "big.vhd", "--offset", "700G"], b"x");
    let out = vhd(d, &["compare", "big.vhd", "big.raw"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stdout(&out).contains(&(700u64 << 30).to_string()),
        "{}",
        stdout(&out)
    );
}

#[test]
fn map_of_a_sparse_fixed_image_shows_its_holes_as_zeros() {
    use std::os::unix::fs::MetadataExt;
    let dir = tmp();
    let d = dir.path();
    vhd_ok(d, &["create", "f.vhd", "64M", "--type", "fixed"]);
    vhd_with_stdin(d, &["write", "f.vhd", "--offset", "32M"], &[0xEE; 4096]);
    let meta = std::fs::metadata(d.join("f.vhd")).unwrap();
    if meta.blocks() * 512 >= 64 * MIB {
        skip::skip("this file system did not keep f.vhd sparse; no holes to map");
        return;
    }
    let out = vhd_ok(d, &["map", "f.vhd", "--output", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let extents = json["extents"].as_array().expect("extents");
    let data: Vec<(u64, u64)> = extents
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| (e["offset"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
        .collect();
    // The data extent covers the write (the file system may round it to
    // its own block size), and nothing near the start.
    assert_eq!(data.len(), 1, "{extents:?}");
    let (o, l) = data[0];
    assert!(
        o <= 32 * MIB && o + l >= 32 * MIB + 4096 && l <= MIB,
        "{extents:?}"
    );
    assert_eq!(extents[0]["data"], false, "{extents:?}");
}
