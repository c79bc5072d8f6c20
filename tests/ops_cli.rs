//! The command line of the maintenance operations: `vhd repair`, `vhd
//! resize`, `vhd compact`, `vhd rebase`, `vhd check --profile azure` and
//! `--align` for `create` and `convert`. Exit statuses, the one error line
//! naming the file, human and JSON output; never a panic.

mod cli_support;

use cli_support::{
    base_with_data, child_of, code, ramp, stderr, stdout, vhd, vhd_ok, vhd_with_stdin,
};
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

#[test]
fn resize_grows_and_refuses_a_shrink_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    base_with_data(dir.path(), "d.vhd", "8M", &ramp(5000, 1));
    let out = vhd_ok(dir.path(), &["resize", "d.vhd", "20M"]);
    let text = stdout(&out);
    assert!(
        text.contains("8.0 MiB (8388608 bytes) -> 20.0 MiB (20971520 bytes)"),
        "{text}"
    );
    assert!(text.contains("size rule:"), "{text}");
    let out = vhd(dir.path(), &["resize", "d.vhd", "4M"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stderr(&out).starts_with("vhd: d.vhd: resize refused:")
            && stderr(&out).contains("--shrink"),
        "{}",
        stderr(&out)
    );
    let out = vhd_ok(
        dir.path(),
        &["resize", "d.vhd", "4M", "--shrink", "--output", "json"],
    );
    let v = json(&out);
    assert_eq!(v["schema_version"], 1);
    assert_eq!(
        (v["old_size"].as_u64(), v["new_size"].as_u64()),
        (Some(20 << 20), Some(4 << 20))
    );
    let out = vhd_ok(
        dir.path(),
        &["read", "d.vhd", "--offset", "0", "--length", "5000"],
    );
    assert_eq!(out.stdout, ramp(5000, 1));
    vhd_ok(dir.path(), &["check", "d.vhd"]);
}

#[test]
fn resize_of_a_child_is_refused_naming_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    base_with_data(dir.path(), "base.vhd", "4M", &ramp(100, 1));
    child_of(dir.path(), "child.vhd", "base.vhd");
    let out = vhd(dir.path(), &["resize", "child.vhd", "8M"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stderr(&out).contains("size of its parent"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn compact_reports_what_it_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    base_with_data(dir.path(), "d.vhd", "8M", &ramp(5000, 1));
    let out = vhd_with_stdin(
        dir.path(),
        &["write", "d.vhd", "--offset", "4M"],
        &[0u8; 4096],
    );
    assert_eq!(code(&out), Some(0));
    let out = vhd_ok(dir.path(), &["compact", "d.vhd", "--output", "json"]);
    let v = json(&out);
    assert_eq!(v["blocks_released"], 1);
    assert!(v["bytes_reclaimed"].as_u64().unwrap() > 2 << 20);
    let out = vhd_ok(dir.path(), &["compact", "d.vhd"]);
    assert!(
        stdout(&out).contains("reclaimed:            0 bytes"),
        "{}",
        stdout(&out)
    );
    let out = vhd(dir.path(), &["compact", "missing.vhd"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stderr(&out).starts_with("vhd: missing.vhd: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rebase_switches_the_parent_and_keeps_what_the_child_reads() {
    let dir = tempfile::tempdir().unwrap();
    base_with_data(dir.path(), "a.vhd", "4M", &ramp(10_000, 1));
    base_with_data(dir.path(), "b.vhd", "4M", &ramp(3_000, 9));
    child_of(dir.path(), "child.vhd", "a.vhd");
    let out = vhd_with_stdin(
        dir.path(),
        &["write", "child.vhd", "--offset", "1M"],
        b"own",
    );
    assert_eq!(code(&out), Some(0));
    let before = vhd_ok(
        dir.path(),
        &["read", "child.vhd", "--offset", "0", "--length", "4194304"],
    )
    .stdout;
    let out = vhd_ok(dir.path(), &["rebase", "child.vhd", "b.vhd"]);
    let text = stdout(&out);
    assert!(
        text.contains("new parent:") && text.contains("locator W2ru:") && text.contains("b.vhd"),
        "{text}"
    );
    std::fs::remove_file(dir.path().join("a.vhd")).unwrap();
    let after = vhd_ok(
        dir.path(),
        &["read", "child.vhd", "--offset", "0", "--length", "4194304"],
    )
    .stdout;
    assert!(after == before, "the child reads differently");
    let info = json(&vhd_ok(
        dir.path(),
        &["info", "child.vhd", "--output", "json"],
    ));
    assert!(info.to_string().contains("b.vhd"), "{info}");
    vhd_ok(dir.path(), &["check", "child.vhd"]);
    // Unsafe, onto a copy of b elsewhere: only the names change.
    std::fs::create_dir(dir.path().join("moved")).unwrap();
    std::fs::copy(dir.path().join("b.vhd"), dir.path().join("moved/b.vhd")).unwrap();
    let out = vhd_ok(
        dir.path(),
        &[
            "rebase",
            "child.vhd",
            "moved/b.vhd",
            "--unsafe",
            "--output",
            "json",
        ],
    );
    let v = json(&out);
    assert_eq!(v["mode"], "unsafe");
    assert_eq!(v["bytes_copied"], 0);
    std::fs::remove_file(dir.path().join("b.vhd")).unwrap();
    let moved = vhd_ok(
        dir.path(),
        &["read", "child.vhd", "--offset", "0", "--length", "4194304"],
    )
    .stdout;
    assert!(moved == before);
    // Another size: refused with the rule.
    vhd_ok(dir.path(), &["create", "big.vhd", "8M"]);
    let out = vhd(dir.path(), &["rebase", "child.vhd", "big.vhd"]);
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).ends_with("(PAR-SIZE)\n"), "{}", stderr(&out));
}

#[test]
fn repair_lists_before_fixes_and_after_with_its_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    base_with_data(dir.path(), "d.vhd", "4M", &ramp(5000, 1));
    let path = dir.path().join("d.vhd");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..512].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let out = vhd_ok(dir.path(), &["repair", "d.vhd", "--dry-run"]);
    let text = stdout(&out);
    assert!(text.contains("would repair  FTR-COPY-MISMATCH"), "{text}");
    assert!(text.contains("dry run: nothing written"), "{text}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let out = vhd_ok(dir.path(), &["repair", "d.vhd"]);
    let text = stdout(&out);
    assert!(
        text.contains("repaired  FTR-COPY-MISMATCH") && text.contains("after: clean"),
        "{text}"
    );
    vhd_ok(dir.path(), &["check", "d.vhd"]);
    // A checksum: refused (2) without the flag, repaired with it.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[512 + 36] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let out = vhd(dir.path(), &["repair", "d.vhd", "--output", "json"]);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["refused"][0]["rule"], "HDR-CHECKSUM");
    assert_eq!(v["written"], false);
    let out = vhd_ok(dir.path(), &["repair", "d.vhd", "--fix-checksums"]);
    assert!(
        stdout(&out).contains("repaired  HDR-CHECKSUM"),
        "{}",
        stdout(&out)
    );
    vhd_ok(dir.path(), &["check", "d.vhd"]);
    // Not a VHD at all: could not repair (1).
    std::fs::write(dir.path().join("junk.vhd"), vec![7u8; 4096]).unwrap();
    let out = vhd(dir.path(), &["repair", "junk.vhd"]);
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("FTR-COOKIE"), "{}", stderr(&out));
}

#[test]
fn check_with_the_azure_profile_says_what_azure_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    vhd_ok(dir.path(), &["create", "dyn.vhd", "30000128"]);
    let out = vhd(dir.path(), &["check", "dyn.vhd", "--profile", "azure"]);
    assert_eq!(code(&out), Some(2));
    let text = stdout(&out);
    assert!(
        text.contains("AZURE-FIXED") && text.contains("AZURE-SIZE-MIB"),
        "{text}"
    );
    let out = vhd(
        dir.path(),
        &["check", "dyn.vhd", "--profile", "azure", "--output", "json"],
    );
    let v = json(&out);
    let rules: Vec<&str> = v["profile"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["AZURE-FIXED", "AZURE-SIZE-MIB"]);
    assert_eq!(v["exit_code"], 2);
    let out = vhd(
        dir.path(),
        &[
            "check",
            "dyn.vhd",
            "--profile",
            "azure",
            "--output",
            "junit",
        ],
    );
    let xml = stdout(&out);
    assert!(
        xml.contains("classname=\"vhd.check.profile\" name=\"AZURE-FIXED\">"),
        "{xml}"
    );
    assert!(xml.contains("name=\"AZURE-SIZE-RANGE\"/>"), "{xml}");
    // Without the profile the image is clean.
    vhd_ok(dir.path(), &["check", "dyn.vhd"]);
    // Made for Azure: nothing to refuse.
    let out = vhd_ok(
        dir.path(),
        &[
            "create", "up.vhd", "30000000", "--type", "fixed", "--align", "1M",
        ],
    );
    assert!(
        stdout(&out).contains("29.0 MiB (30408704 bytes)"),
        "{}",
        stdout(&out)
    );
    let out = vhd_ok(dir.path(), &["check", "up.vhd", "--profile", "azure"]);
    assert!(
        stdout(&out).contains("nothing the service would refuse"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("up.vhd")).unwrap().len(),
        30_408_704 + 512
    );
}

#[test]
fn align_is_only_for_fixed_images() {
    let dir = tempfile::tempdir().unwrap();
    let out = vhd(dir.path(), &["create", "d.vhd", "3M", "--align", "1M"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stderr(&out).contains("--align is only for fixed images"),
        "{}",
        stderr(&out)
    );
    let out = vhd(
        dir.path(),
        &[
            "create", "f.vhd", "3M", "--type", "fixed", "--align", "3000",
        ],
    );
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("power of two"), "{}", stderr(&out));
    let out = vhd(
        dir.path(),
        &[
            "create",
            "f.vhd",
            "3M",
            "--type",
            "fixed",
            "--size-rule",
            "chs",
            "--align",
            "1M",
        ],
    );
    assert_eq!(code(&out), Some(1));
    base_with_data(dir.path(), "src.vhd", "21000K", &ramp(7000, 3));
    vhd_ok(
        dir.path(),
        &[
            "convert", "src.vhd", "up.vhd", "--to", "fixed", "--align", "1M",
        ],
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("up.vhd")).unwrap().len(),
        (21 << 20) + 512
    );
    let out = vhd_ok(
        dir.path(),
        &["read", "up.vhd", "--offset", "0", "--length", "7000"],
    );
    assert_eq!(out.stdout, ramp(7000, 3));
    vhd_ok(dir.path(), &["check", "up.vhd", "--profile", "azure"]);
    let out = vhd(
        dir.path(),
        &["convert", "src.vhd", "d2.vhd", "--align", "1M"],
    );
    assert_eq!(code(&out), Some(1));
    assert!(
        stderr(&out).contains("only for a fixed output"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_operation_documents_itself_with_an_example() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["repair", "resize", "compact", "rebase"] {
        let out = vhd_ok(dir.path(), &[cmd, "--help"]);
        assert!(stdout(&out).contains("Example:"), "{cmd}: {}", stdout(&out));
    }
    let out = vhd_ok(dir.path(), &["check", "--help"]);
    assert!(stdout(&out).contains("--profile"), "{}", stdout(&out));
}

#[test]
fn the_readme_shows_each_operation_with_an_example() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for example in [
        "vhd repair disk.vhd",
        "vhd resize disk.vhd 40G",
        "vhd compact disk.vhd",
        "vhd rebase child.vhd",
        "--align 1M",
        "--profile azure",
    ] {
        assert!(
            readme.contains(example),
            "README.md has no example {example:?}"
        );
    }
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/operations.md"))
        .unwrap();
    for cited in [
        "relocate_blocks",
        "write_bat_entries",
        "set_data_end",
        "cut_to",
        "make_room",
        "grow_table",
        "write_header",
        "write_footer",
        "rewrite_bitmap",
        "write_unreferenced",
        "prepare_maintenance",
    ] {
        let source = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/image/maintenance.rs"
        ))
        .unwrap();
        assert!(
            spec.contains(cited),
            "spec/operations.md does not cite {cited}"
        );
        assert!(
            source.contains(&format!("fn {cited}(")),
            "maintenance.rs has no fn {cited}"
        );
    }
    for test in [
        "a_dynamic_image_grows_by_moving_its_first_blocks_after_the_last",
        "a_fixed_image_grows_and_its_footer_moves",
        "a_safe_rebase_survives_a_fault_at_every_point",
    ] {
        assert!(
            spec.contains(test),
            "spec/operations.md does not cite {test}"
        );
        let found = ["ops_resize.rs", "ops_rebase.rs"].iter().any(|f| {
            std::fs::read_to_string(format!("{}/tests/{f}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
                .contains(&format!("fn {test}()"))
        });
        assert!(found, "no test {test}");
    }
}
