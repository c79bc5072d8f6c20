//! Every image of the conformance corpus that opens (real writers: Hyper-V
//! and Windows, Virtual PC, Virtual Server, disk2vhd, `VirtualBox`, QEMU,
//! Xen's blktap, Azure tooling, pyvhd; and the generator's variants) goes
//! through each operation on a private copy, and keeps reading as its
//! manifest's SHA-256 says (the expected contents come from the writer's
//! input, never from vhdref):
//!
//! * compact: the contents stay; no error, no new warning, no leak left
//!   (except beside Xen's batmap, which keeps its blocks);
//! * repair: the contents stay; every repairable warning is gone and no
//!   other finding appears;
//! * resize: grown by 1 MiB, the old contents then zeros (differencing
//!   images are refused, and then unchanged).
//!
//! Images readable only through their footer copy (FTR-TRAILING) are
//! refused by compact and resize, which open for writing: repair first.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::{contents_sha256, corpora, corpus_copy};
use vhdref::check::{CheckOptions, check};
use vhdref::ops::{RepairOptions, ResizeOptions};
use vhdref::{DiskType, ErrorKind, Image, OpenOptions, Rule};

fn open_cases() -> Vec<Value> {
    let text = std::fs::read_to_string(corpora().join("manifest.json")).expect("the manifest");
    let manifest: Value = serde_json::from_str(&text).expect("JSON");
    manifest["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["open"] == true)
        .cloned()
        .collect()
}

/// The rules the checker finds in the image alone (depth 0).
fn own_rules(path: &std::path::Path) -> BTreeSet<Rule> {
    check(path, &CheckOptions::new())
        .findings
        .iter()
        .filter(|f| f.depth == 0)
        .map(|f| f.finding.rule)
        .collect()
}

fn sha(path: &std::path::Path) -> String {
    contents_sha256(&mut Image::open(path).expect("opens"))
}

/// Looks at the result of an operation on a case (given the rules its
/// image broke before): `Some` says what is wrong.
type Judge = dyn Fn(&Value, &std::path::Path, BTreeSet<Rule>, vhdref::Result<()>) -> Option<String>;

/// Runs `op` on a copy of every case; `judge` looks at the result.
fn each_case(op: &dyn Fn(&std::path::Path) -> vhdref::Result<()>, judge: &Judge) -> usize {
    let mut failures = Vec::new();
    let mut done = 0;
    for case in open_cases() {
        let (_dir, path) = corpus_copy(case["file"].as_str().expect("file"));
        let before = own_rules(&path);
        let result = op(&path);
        if let Some(f) = judge(&case, &path, before, result) {
            failures.push(format!("{}: {f}", case["name"]));
        }
        done += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    done
}

#[test]
fn compact_keeps_every_corpus_image_and_leaves_no_leak() {
    let n = each_case(
        &|path| vhdref::ops::compact(path, OpenOptions::new()).map(drop),
        &|case, path, before, result| {
            let disk_type = Image::open(path).expect("opens").disk_type();
            match (disk_type, result) {
                (DiskType::Fixed, Err(e)) if e.kind() == ErrorKind::InvalidArgument => return None,
                // Only the footer copy is valid: repair first, it says.
                (_, Err(e))
                    if e.kind() == ErrorKind::ReadOnly && before.contains(&Rule::FtrTrailing) =>
                {
                    return None;
                }
                (_, Err(e)) => return Some(format!("compact failed: {e}")),
                (_, Ok(())) => {}
            }
            if sha(path) != case["sha256"].as_str().unwrap_or_default() {
                return Some("the contents changed".into());
            }
            let after = own_rules(path);
            let batmap = case["family"] == "tap";
            let mut allowed = before.clone();
            allowed.remove(&Rule::FileTail);
            if !batmap {
                allowed.remove(&Rule::FileLeak);
                allowed.remove(&Rule::BatEntryUnused);
            }
            (!after.is_subset(&allowed))
                .then(|| format!("rules before {before:?}, after {after:?}"))
        },
    );
    assert!(n > 100, "{n} cases");
}

#[test]
fn repair_keeps_every_corpus_image_and_fixes_what_it_can() {
    const REPAIRABLE: [Rule; 6] = [
        Rule::Ftr511,
        Rule::FtrTrailing,
        Rule::FtrCopyMismatch,
        Rule::FileTail,
        Rule::FtrFixedSlack,
        Rule::BmpPastEnd,
    ];
    each_case(
        &|path| vhdref::ops::repair(path, &RepairOptions::new()).map(drop),
        &|case, path, before, result| {
            if let Err(e) = result {
                return Some(format!("repair failed: {e}"));
            }
            if sha(path) != case["sha256"].as_str().unwrap_or_default() {
                return Some("the contents changed".into());
            }
            let after = own_rules(path);
            let left: Vec<&Rule> = after.iter().filter(|r| REPAIRABLE.contains(r)).collect();
            if !left.is_empty() {
                return Some(format!("still breaks {left:?}"));
            }
            (!after.is_subset(&before)).then(|| format!("rules before {before:?}, after {after:?}"))
        },
    );
}

#[test]
fn a_grown_corpus_image_reads_its_old_contents_then_zeros() {
    each_case(
        &|path| {
            let size = Image::open(path)?.size();
            let grown = (size + (1 << 20)).div_ceil(512) * 512;
            vhdref::ops::resize(path, OpenOptions::new(), &ResizeOptions::new(grown)).map(drop)
        },
        &|case, path, before, result| {
            let size = case["current_size"].as_u64().unwrap_or_default();
            let mut img = Image::open(path).expect("opens");
            match result {
                Err(e) if e.kind() == ErrorKind::InvalidArgument => {
                    let refused = img.disk_type() == DiskType::Differencing;
                    return (!refused || img.size() != size).then(|| format!("refused: {e}"));
                }
                Err(e)
                    if e.kind() == ErrorKind::ReadOnly && before.contains(&Rule::FtrTrailing) =>
                {
                    return None;
                }
                Err(e) => return Some(format!("resize failed: {e}")),
                Ok(()) => {}
            }
            if img.size() < size + (1 << 20) {
                return Some(format!("size {}", img.size()));
            }
            let mut tail = vec![0u8; (img.size() - size) as usize];
            img.read_at(size, &mut tail).expect("read the new space");
            if tail.iter().any(|&b| b != 0) {
                return Some("the new space is not zeros".into());
            }
            let report = check(path, &CheckOptions::new());
            if report.errors() > 0 {
                return Some(format!("errors after: {:?}", report.findings));
            }
            let after = own_rules(path);
            let mut allowed = before.clone();
            allowed.insert(Rule::FileLeak); // a stale entry released past the old end
            allowed.remove(&Rule::BmpPastEnd);
            let _ = case;
            (!after.is_subset(&allowed))
                .then(|| format!("rules before {before:?}, after {after:?}"))
        },
    );
}

#[test]
fn every_corpus_child_rebases_onto_its_own_parent_and_reads_the_same() {
    // Safe and unsafe, onto the parent it already has: the header is
    // rewritten (new locators, through a copy switched by the footer) on
    // children from every writer, and the chain still reads as it did.
    let mut done = 0;
    for case in open_cases() {
        for mode in [
            vhdref::ops::RebaseMode::Safe,
            vhdref::ops::RebaseMode::Unsafe,
        ] {
            let (_dir, path) = corpus_copy(case["file"].as_str().expect("file"));
            let Ok(img) = Image::open(&path) else {
                continue;
            };
            let Some(parent) = img
                .parent()
                .and_then(Image::path)
                .map(std::path::Path::to_path_buf)
            else {
                continue;
            };
            drop(img);
            let before = own_rules(&path);
            match vhdref::ops::rebase(&path, &parent, mode, OpenOptions::new()) {
                // Only the footer copy is valid: repair first, it says.
                Err(e)
                    if e.kind() == ErrorKind::ReadOnly && before.contains(&Rule::FtrTrailing) =>
                {
                    continue;
                }
                Err(e) => panic!("{}: {mode:?}: {e}", case["name"]),
                Ok(_) => {}
            }
            assert_eq!(
                sha(&path),
                case["sha256"].as_str().unwrap_or_default(),
                "{}: {mode:?}: the contents changed",
                case["name"]
            );
            let report = check(&path, &CheckOptions::new());
            assert_eq!(
                report.errors(),
                0,
                "{}: {:?}",
                case["name"],
                report.findings
            );
            let after = own_rules(&path);
            assert!(
                after.is_subset(&before),
                "{}: {mode:?}: rules before {before:?}, after {after:?}",
                case["name"]
            );
            done += 1;
        }
    }
    assert!(done >= 20, "{done} children rebased");
}
