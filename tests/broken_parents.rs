//! A child whose parent is broken, missing, not a file, or itself: every
//! command says so, naming the parent and the rule, and none takes the
//! child for a raw disk (issue 11, items 1 and 2).

mod cli_support;

use std::path::Path;

use cli_support::{base_with_data, child_of, code, ramp, stderr, stdout, vhd, vhd_ok};
use tempfile::TempDir;

/// A base with data, a child with its own data on top, and the bytes the
/// chain reads as; the child's file is much smaller than its disk.
fn chain(dir: &Path) -> Vec<u8> {
    let base_data = ramp(3 << 20, 5);
    base_with_data(dir, "base.vhd", "8M", &base_data);
    child_of(dir, "child.vhd", "base.vhd");
    let top = ramp(4096, 99);
    let out = cli_support::vhd_with_stdin(dir, &["write", "child.vhd", "--offset", "1M"], &top);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let mut disk = vec![0u8; 8 << 20];
    disk[..base_data.len()].copy_from_slice(&base_data);
    disk[1 << 20..(1 << 20) + top.len()].copy_from_slice(&top);
    disk
}

/// Ways to break the parent of `child.vhd` in place.
fn overwrite_with_zeros(dir: &Path) {
    let len = std::fs::metadata(dir.join("base.vhd")).unwrap().len();
    std::fs::write(dir.join("base.vhd"), vec![0u8; len as usize]).unwrap();
}

fn truncate_to_nothing(dir: &Path) {
    std::fs::write(dir.join("base.vhd"), b"").unwrap();
}

fn replace_with_text(dir: &Path) {
    std::fs::write(
        dir.join("base.vhd"),
        "this is a text file, not a disk\n".repeat(40),
    )
    .unwrap();
}

/// What a damage is called, how to do it, and the rule the parent breaks.
type Damage = (&'static str, fn(&Path), &'static str);

fn damages() -> [Damage; 3] {
    [
        ("zeros", overwrite_with_zeros, "FTR-COOKIE"),
        ("empty", truncate_to_nothing, "FTR-SIZE"),
        ("text", replace_with_text, "FTR-COOKIE"),
    ]
}

#[test]
fn converting_a_child_whose_parent_is_not_a_vhd_fails_naming_the_parent_and_writes_nothing() {
    for (what, damage, cause) in damages() {
        let dir = TempDir::new().unwrap();
        chain(dir.path());
        damage(dir.path());
        let out = vhd(
            dir.path(),
            &["convert", "child.vhd", "out.raw", "--to", "raw"],
        );
        let err = stderr(&out);
        assert_eq!(code(&out), Some(1), "{what}: {err}");
        assert!(err.contains("(PAR-INVALID)"), "{what}: {err}");
        assert!(
            err.contains("base.vhd") && err.contains(cause),
            "{what}: {err}"
        );
        assert!(
            !dir.path().join("out.raw").exists(),
            "{what}: an output was left"
        );
    }
}

#[test]
fn comparing_a_child_whose_parent_is_not_a_vhd_is_an_error_not_a_raw_comparison() {
    for (what, damage, _) in damages() {
        let dir = TempDir::new().unwrap();
        chain(dir.path());
        // The child's own file bytes, as a raw disk, are what the old code compared.
        std::fs::copy(dir.path().join("child.vhd"), dir.path().join("same.raw")).unwrap();
        damage(dir.path());
        let out = vhd(dir.path(), &["compare", "child.vhd", "same.raw"]);
        assert_eq!(code(&out), Some(2), "{what}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("PAR-INVALID"),
            "{what}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_parent_given_on_the_command_line_that_is_not_a_vhd_is_refused_with_par_invalid() {
    let dir = TempDir::new().unwrap();
    chain(dir.path());
    std::fs::write(dir.path().join("notes.txt"), "not a disk".repeat(100)).unwrap();
    for args in [
        &[
            "convert",
            "child.vhd",
            "out.raw",
            "--to",
            "raw",
            "--parent",
            "notes.txt",
        ][..],
        &[
            "read",
            "child.vhd",
            "--length",
            "512",
            "--parent",
            "notes.txt",
        ][..],
        &["info", "child.vhd", "--parent", "notes.txt"][..],
    ] {
        let out = vhd(dir.path(), args);
        let err = stderr(&out);
        assert_eq!(code(&out), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("parent notes.txt breaks FTR-COOKIE") && err.ends_with("(PAR-INVALID)\n"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn check_judges_a_child_with_a_broken_parent_and_exits_2_with_par_invalid() {
    let dir = TempDir::new().unwrap();
    chain(dir.path());
    overwrite_with_zeros(dir.path());
    let out = vhd(dir.path(), &["check", "child.vhd", "--output", "json"]);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules: Vec<&str> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"PAR-INVALID"), "{json}");
}

#[test]
fn info_shows_the_child_and_says_what_is_wrong_with_its_parent() {
    let dir = TempDir::new().unwrap();
    chain(dir.path());
    truncate_to_nothing(dir.path());
    let out = vhd(dir.path(), &["info", "child.vhd"]);
    assert_eq!(code(&out), Some(1));
    assert!(stdout(&out).contains("differencing"), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("parent") && err.contains("base.vhd") && err.contains("FTR-SIZE"),
        "{err}"
    );
    assert!(err.contains("PAR-INVALID"), "{err}");
}

#[test]
fn compare_reads_a_file_as_the_format_given_with_from() {
    let dir = TempDir::new().unwrap();
    let data = chain(dir.path());
    std::fs::write(dir.path().join("disk.raw"), &data).unwrap();
    vhd_ok(dir.path(), &["compare", "child.vhd", "disk.raw"]);
    // Forced to raw, the child's file is not its disk.
    let out = vhd(
        dir.path(),
        &["compare", "child.vhd", "disk.raw", "--from", "raw"],
    );
    assert_eq!(code(&out), Some(1), "{}", stdout(&out));
    // Forced to vhd, a raw file is refused.
    let out = vhd(
        dir.path(),
        &["compare", "child.vhd", "disk.raw", "--from", "vhd"],
    );
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("disk.raw"), "{}", stderr(&out));
}

#[test]
fn a_device_or_fifo_given_as_parent_is_named_with_par_invalid() {
    let dir = TempDir::new().unwrap();
    chain(dir.path());
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let mut parents = vec!["/dev/zero".to_string()];
    if made.is_ok_and(|s| s.success()) {
        parents.push("pipe".into());
    } else {
        eprintln!("SKIP (part): mkfifo failed; testing /dev/zero only");
    }
    for parent in &parents {
        let out = vhd(
            dir.path(),
            &["read", "child.vhd", "--length", "512", "--parent", parent],
        );
        let err = stderr(&out);
        assert_eq!(code(&out), Some(1), "{parent}: {err}");
        assert!(
            err.contains(&format!("parent {parent} cannot be used"))
                && err.contains("not a regular file or block device")
                && err.ends_with("(PAR-INVALID)\n"),
            "{parent}: {err}"
        );
        let out = vhd(dir.path(), &["create", "c2.vhd", "--parent", parent]);
        let err = stderr(&out);
        assert_eq!(code(&out), Some(1), "{parent}: {err}");
        assert!(err.contains(&format!("parent {parent}")), "{parent}: {err}");
        assert!(!dir.path().join("c2.vhd").exists());
    }
}

/// A dynamic image whose trailing footer is zeroed (only the copy at
/// offset 0 is valid) and whose dynamic header checksum is broken too.
fn copy_only_with_bad_header(dir: &Path) {
    base_with_data(dir, "copy.vhd", "4M", &ramp(4096, 3));
    let path = dir.join("copy.vhd");
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    bytes[len - 512..].fill(0);
    bytes[512 + 100] ^= 0xFF; // inside the header (its checksum no longer matches)
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_write_to_a_copy_only_image_reports_the_error_that_stops_any_open_first() {
    let dir = TempDir::new().unwrap();
    copy_only_with_bad_header(dir.path());
    let read = vhd(dir.path(), &["read", "copy.vhd", "--length", "512"]);
    assert!(stderr(&read).contains("HDR-CHECKSUM"), "{}", stderr(&read));
    let out = cli_support::vhd_with_stdin(dir.path(), &["write", "copy.vhd"], b"x");
    let err = stderr(&out);
    assert_eq!(code(&out), Some(1));
    assert!(err.contains("HDR-CHECKSUM"), "{err}");
    assert!(!err.contains("read-only"), "{err}");
}

#[test]
fn a_file_without_a_trailing_footer_says_what_the_copy_at_offset_0_is() {
    let dir = TempDir::new().unwrap();
    // Raw data: no cookie anywhere.
    std::fs::write(dir.path().join("raw.img"), ramp(4096, 1)).unwrap();
    let out = vhd(dir.path(), &["info", "raw.img"]);
    assert!(
        stderr(&out).contains("in the last 512 bytes") && stderr(&out).contains("nor at offset 0"),
        "{}",
        stderr(&out)
    );
    // A copy at offset 0 with the cookie but a broken checksum.
    base_with_data(dir.path(), "d.vhd", "4M", &ramp(512, 2));
    let path = dir.path().join("d.vhd");
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    bytes[len - 512..].fill(0);
    bytes[100] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let out = vhd(dir.path(), &["info", "d.vhd"]);
    let err = stderr(&out);
    assert!(
        err.contains("the footer copy at offset 0 is not valid either")
            && err.contains("checksum")
            && !err.contains("nor at offset 0"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn a_locator_that_is_a_hard_link_to_the_child_is_a_loop_for_reads_and_writes() {
    let dir = TempDir::new().unwrap();
    chain(dir.path());
    // Replace the parent by a hard link to the child itself.
    std::fs::remove_file(dir.path().join("base.vhd")).unwrap();
    std::fs::hard_link(dir.path().join("child.vhd"), dir.path().join("base.vhd")).unwrap();
    let read = vhd(dir.path(), &["read", "child.vhd", "--length", "512"]);
    assert!(stderr(&read).contains("PAR-LOOP"), "{}", stderr(&read));
    let write = cli_support::vhd_with_stdin(dir.path(), &["write", "child.vhd"], b"x");
    assert!(stderr(&write).contains("PAR-LOOP"), "{}", stderr(&write));
    assert!(!stderr(&write).contains("in use"), "{}", stderr(&write));
}

#[test]
fn commit_into_a_parent_with_a_damaged_trailing_footer_names_the_parent_once() {
    let dir = TempDir::new().unwrap();
    chain(dir.path());
    let base = dir.path().join("base.vhd");
    let mut bytes = std::fs::read(&base).unwrap();
    let len = bytes.len();
    bytes[len - 512..].fill(0);
    std::fs::write(&base, bytes).unwrap();
    let out = vhd(dir.path(), &["commit", "child.vhd"]);
    let err = stderr(&out);
    assert_eq!(code(&out), Some(1), "{err}");
    assert!(err.contains("FTR-TRAILING"), "{err}");
    assert!(!err.contains("PAR-NOT-FOUND"), "{err}");
    assert_eq!(err.matches("base.vhd").count(), 1, "{err}");
}

#[test]
fn a_missing_parent_reached_by_three_references_is_listed_once() {
    let dir = TempDir::new().unwrap();
    chain(dir.path());
    std::fs::remove_file(dir.path().join("base.vhd")).unwrap();
    let out = vhd(dir.path(), &["read", "child.vhd", "--length", "512"]);
    let err = stderr(&out);
    assert!(err.contains("PAR-NOT-FOUND"), "{err}");
    // W2ru, W2ku and the parent name all lead to the same file.
    assert_eq!(err.matches("no such file").count(), 1, "{err}");
}
