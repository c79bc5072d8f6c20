//! What the tool leaves behind and what it prints, when an image is hostile
//! or the tool is killed (issue 11, items 6, 7 and 8).

mod builder;
mod cli_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use builder::{DataSpace, Platform, VhdBuilder};
use cli_support::{code, ramp, stderr, stdout, vhd, vhd_ok, vhd_with_stdin};
use tempfile::TempDir;

const MIB: u64 = 1 << 20;

/// Locator text that would forge a second error line and, on a terminal,
/// set the window title and clear the screen.
const HOSTILE: &str =
    "/nowhere/p.vhd\nvhd: fake.vhd: all good (FAKE-RULE)\x1b]0;owned\x07\x1b[2J\u{202e}gpj.exe";

/// A differencing child whose only locators hold `HOSTILE`.
fn hostile_child(dir: &Path) {
    let b = VhdBuilder::differencing(4 * MIB)
        .block_size(1 << 20)
        .locator(Platform::W2ku, HOSTILE, DataSpace::Bytes)
        .locator(
            Platform::MacX,
            &format!("file://{HOSTILE}"),
            DataSpace::Bytes,
        )
        .parent_name("evil\x1b[2Jname.vhd");
    std::fs::write(dir.join("child.vhd"), b.build()).unwrap();
}

/// No byte of the output is a control character other than newline and
/// tab, and no line is forged.
fn assert_clean(text: &str, what: &str) {
    assert!(
        !text
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}'),
        "{what}: raw control characters in {text:?}"
    );
    assert!(
        !text.contains("\nvhd: fake.vhd"),
        "{what}: a forged line in {text:?}"
    );
}

#[test]
fn strings_from_an_image_are_escaped_in_every_output() {
    let dir = TempDir::new().unwrap();
    hostile_child(dir.path());
    for args in [
        &["info", "child.vhd"][..],
        &["check", "child.vhd"][..],
        &["check", "child.vhd", "--output", "junit"][..],
        &["read", "child.vhd", "--length", "1"][..],
        &["map", "child.vhd"][..],
        &["convert", "child.vhd", "out.raw", "--to", "raw"][..],
    ] {
        let out = vhd(dir.path(), args);
        assert_clean(&stdout(&out), &format!("stdout of {args:?}"));
        let err = stderr(&out);
        assert_clean(&err, &format!("stderr of {args:?}"));
        assert!(
            err.lines().count() <= 1,
            "{args:?}: the error is more than one line: {err:?}"
        );
    }
    // The locator text is still shown, escaped, so a person can see it.
    let err = stderr(&vhd(dir.path(), &["info", "child.vhd"]));
    assert!(
        err.contains("\\x0avhd: fake.vhd") && err.contains("\\x1b"),
        "{err}"
    );
}

#[test]
fn the_json_of_info_keeps_image_strings_exact() {
    let dir = TempDir::new().unwrap();
    let b = VhdBuilder::dynamic(4 * MIB).creator(*b"\x1b[2J");
    std::fs::write(dir.path().join("d.vhd"), b.build()).unwrap();
    let out = vhd_ok(dir.path(), &["info", "d.vhd", "--output", "json"]);
    assert_clean(&stdout(&out), "info json");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["creator"]["application"]
            .as_str()
            .unwrap()
            .contains("\\x1b")
    );
    let human = stdout(&vhd_ok(dir.path(), &["info", "d.vhd"]));
    assert_clean(&human, "info human");
}

/// Entries of `dir` other than `keep`.
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[test]
fn a_killed_convert_leaves_no_file_behind() {
    let dir = TempDir::new().unwrap();
    let input = ramp(64 * MIB as usize, 9);
    std::fs::write(dir.path().join("in.raw"), &input).unwrap();
    let mut seed = 0x00C0_FFEE_u64;
    for round in 0..12 {
        for name in leftovers(dir.path(), &["in.raw"]) {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let to = ["dynamic", "fixed", "raw"][round % 3];
        let mut child = Command::new(env!("CARGO_BIN_EXE_vhd"))
            .args(["convert", "in.raw", "out.img", "--to", to])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + seed % 150));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let left = leftovers(dir.path(), &["in.raw", "out.img"]);
        assert!(
            left.is_empty(),
            "round {round} ({to}): left behind {left:?}"
        );
        // If the convert finished before the kill, its output is complete.
        if dir.path().join("out.img").exists() {
            let out = vhd(dir.path(), &["compare", "in.raw", "out.img"]);
            assert_eq!(
                code(&out),
                Some(0),
                "round {round} ({to}, {status}): {}",
                stdout(&out)
            );
        }
    }
}

#[test]
fn a_disk_of_zero_bytes_converts_to_an_empty_raw_file() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("empty.raw"), b"").unwrap();
    let zero = VhdBuilder::fixed(0);
    std::fs::write(dir.path().join("zero.vhd"), zero.build()).unwrap();
    for input in ["empty.raw", "zero.vhd"] {
        let out_name = format!("{input}.out");
        vhd_ok(dir.path(), &["convert", input, &out_name, "--to", "raw"]);
        assert_eq!(
            std::fs::metadata(dir.path().join(&out_name)).unwrap().len(),
            0
        );
        // A VHD cannot hold no sector at all: refused, with the way out.
        let out = vhd(dir.path(), &["convert", input, "x.vhd"]);
        assert_eq!(code(&out), Some(1));
        assert!(stderr(&out).contains("--to raw"), "{}", stderr(&out));
    }
}

#[test]
fn counts_of_one_are_singular() {
    let dir = TempDir::new().unwrap();
    // One allocated BAT entry past the end of the disk.
    let b = VhdBuilder::dynamic(2 * MIB)
        .block_size(1 << 20)
        .max_table_entries(3)
        .corrupt(|bytes| bytes[1536 + 8..1536 + 12].copy_from_slice(&0x100u32.to_be_bytes()));
    std::fs::write(dir.path().join("d.vhd"), b.build()).unwrap();
    let out = vhd(dir.path(), &["check", "d.vhd"]);
    let text = stdout(&out);
    assert!(text.contains("1 BAT entry is"), "{text}");
    assert!(!text.contains("1 BAT entries"), "{text}");
    // One byte of input past the end of the disk.
    vhd_ok(dir.path(), &["create", "small.vhd", "1M"]);
    let out = vhd_with_stdin(
        dir.path(),
        &["write", "small.vhd", "--offset", "1048575"],
        b"ab",
    );
    let err = stderr(&out);
    assert!(err.contains("2 bytes of input"), "{err}");
    let out = vhd_with_stdin(
        dir.path(),
        &["write", "small.vhd", "--offset", "1048575"],
        b"a",
    );
    assert!(stdout(&out).contains("wrote 1 byte "), "{}", stdout(&out));
}

#[test]
fn write_help_and_behaviour_agree_about_input_past_the_end() {
    let dir = TempDir::new().unwrap();
    let help = stdout(&vhd_ok(dir.path(), &["write", "--help"]));
    assert!(help.contains("From a pipe"), "{help}");
    vhd_ok(dir.path(), &["create", "d.vhd", "2M"]);
    // A regular file on stdin that does not fit: nothing is written.
    let data = ramp(3 * MIB as usize, 4);
    std::fs::write(dir.path().join("big.bin"), &data).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vhd"))
        .args(["write", "d.vhd"])
        .current_dir(dir.path())
        .stdin(std::fs::File::open(dir.path().join("big.bin")).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let map = stdout(&vhd_ok(dir.path(), &["map", "d.vhd"]));
    assert!(!map.contains("data"), "something was written: {map}");
    // The same from a pipe: what fits in whole pieces is written, and the
    // error says how much.
    let out = vhd_with_stdin(dir.path(), &["write", "d.vhd"], &data);
    let err = stderr(&out);
    assert_eq!(code(&out), Some(1), "{err}");
    assert!(err.contains("2097152 bytes written before it"), "{err}");
    let back = vhd_ok(dir.path(), &["read", "d.vhd"]);
    assert_eq!(back.stdout, data[..2 * MIB as usize]);
}
