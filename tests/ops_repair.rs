//! `vhdref::ops::repair`: each repairable rule is fixed (and only with
//! `--fix-checksums` for checksums), the rest refused with the rule and
//! nothing written; a dry run writes nothing; every fix survives a cut,
//! tear, power loss or I/O fault at each of its writes (`tests/support`),
//! and never adds an error on the way.

mod builder;
mod support;

use builder::{Bits, VhdBuilder, edit_footer, pattern, set_footer_checksum};
use support::{Contents, Parents, prove, read_disk, rules_of};
use vhdref::Rule;
use vhdref::ops::repair::{RepairOptions, repair_storage};
use vhdref::storage::{FaultStorage, MemStorage};

const BS: u32 = 4096;

/// A dynamic image of 8 blocks of 4 KiB with data in blocks 0, 3 and 7.
fn dynamic() -> VhdBuilder {
    VhdBuilder::dynamic(8 * u64::from(BS))
        .block_size(BS)
        .block(0, Bits::All, &pattern(4096, 1))
        .block(
            3,
            Bits::Sectors(vec![1, 2]),
            &[vec![0u8; 512], pattern(1024, 2)].concat(),
        )
        .block(7, Bits::All, &pattern(4096, 3))
}

fn repair_bytes(bytes: &[u8], options: RepairOptions) -> (vhdref::ops::RepairReport, Vec<u8>) {
    let mem = MemStorage::from_bytes(bytes.to_vec());
    let (report, _) = repair_storage(Box::new(mem.clone()), "image.vhd", &options).unwrap();
    (report, mem.to_vec())
}

fn repair_op(options: RepairOptions) -> impl Fn(&FaultStorage, &Parents) -> bool {
    move |storage, _| {
        repair_storage(Box::new(storage.clone()), "image.vhd", &options)
            .is_ok_and(|(r, _)| r.written && r.refused.is_empty())
    }
}

/// Repairs `broken` (which breaks `rule`), checks the result is clean and
/// reads `disk`, and proves the repair under faults.
fn repairs(what: &str, broken: &[u8], rule: Rule, options: RepairOptions, disk: &[u8]) {
    assert!(
        rules_of(broken.to_vec()).contains(&rule.id()),
        "{what}: the fixture does not break {rule}: {:?}",
        rules_of(broken.to_vec())
    );
    let (report, after) = repair_bytes(broken, options);
    assert!(report.written, "{what}: {report:?}");
    assert!(
        report.fixes.iter().any(|f| f.rule == rule),
        "{what}: no fix for {rule}: {:?}",
        report.fixes
    );
    assert!(
        rules_of(after.clone()).is_empty(),
        "{what}: {:?}",
        rules_of(after.clone())
    );
    assert!(report.after.findings.is_empty(), "{what}");
    assert!(
        read_disk(after, &Parents::none()) == disk,
        "{what}: contents changed"
    );
    let covered = prove(
        what,
        broken,
        &Parents::none(),
        &Contents::unchanged(disk.to_vec()),
        &repair_op(options),
    );
    assert!(covered.syncs >= 1, "{what}: {covered:?}");
}

#[test]
fn a_damaged_trailing_footer_is_restored_from_the_copy_in_place() {
    let b = dynamic();
    let broken = dynamic()
        .corrupt(|bytes| {
            let n = bytes.len();
            bytes[n - 512 + 20] ^= 0xFF; // checksum now wrong, cookie intact
        })
        .build();
    repairs(
        "damaged trailing footer",
        &broken,
        Rule::FtrTrailing,
        RepairOptions::new(),
        &b.expected(&[]),
    );
}

#[test]
fn a_lost_trailing_footer_is_restored_after_the_end() {
    // A power loss kept the data of a new block but not the footer after
    // it: the file ends inside the block.
    let b = dynamic();
    let mut broken = b.build();
    let n = broken.len();
    broken.truncate(n - 512);
    broken.extend(vec![0x5A; 700]);
    repairs(
        "lost trailing footer",
        &broken,
        Rule::FtrTrailing,
        RepairOptions::new(),
        &b.expected(&[]),
    );
}

#[test]
fn a_damaged_footer_copy_is_restored_from_the_trailing_footer() {
    let b = dynamic();
    let mut broken = b.build();
    broken[..512].fill(0);
    repairs(
        "zeroed copy",
        &broken,
        Rule::FtrCopyMismatch,
        RepairOptions::new(),
        &b.expected(&[]),
    );
    let mut broken = b.build();
    edit_footer(&mut broken, 0, |f| f[48] ^= 1); // another original size
    repairs(
        "differing copy",
        &broken,
        Rule::FtrCopyMismatch,
        RepairOptions::new(),
        &b.expected(&[]),
    );
}

#[test]
fn a_511_byte_footer_is_made_512() {
    let b = VhdBuilder::fixed(64 * 1024).data(&pattern(64 * 1024, 4));
    let mut broken = b.build();
    broken.pop();
    repairs(
        "511-byte footer",
        &broken,
        Rule::Ftr511,
        RepairOptions::new(),
        &b.expected(&[]),
    );
}

#[test]
fn checksums_are_recomputed_only_when_asked_after_showing_the_fields() {
    let b = dynamic();
    // Both footers with a wrong checksum: no valid footer to restore from.
    let mut broken = b.build();
    let n = broken.len();
    broken[n - 512 + 64] ^= 1;
    broken[64] ^= 1;
    assert!(rules_of(broken.clone()).contains(&"FTR-CHECKSUM"));
    let (report, after) = repair_bytes(&broken, RepairOptions::new());
    assert!(
        !report.written && after == broken,
        "wrote without --fix-checksums"
    );
    let refused = report
        .refused
        .iter()
        .find(|r| r.rule == Rule::FtrChecksum)
        .expect("FTR-CHECKSUM refused");
    for field in [
        "type dynamic",
        "current size 32768",
        "data offset 0x200",
        "--fix-checksums",
    ] {
        assert!(
            refused.reason.contains(field),
            "{field}: {}",
            refused.reason
        );
    }
    repairs(
        "footer checksum",
        &broken,
        Rule::FtrChecksum,
        RepairOptions::new().fix_checksums(true),
        &b.expected(&[]),
    );
    let mut broken = b.build();
    broken[512 + 36] ^= 1;
    let (report, _) = repair_bytes(&broken, RepairOptions::new());
    let refused = report
        .refused
        .iter()
        .find(|r| r.rule == Rule::HdrChecksum)
        .expect("HDR-CHECKSUM refused");
    assert!(
        refused.reason.contains("block size 4096"),
        "{}",
        refused.reason
    );
    repairs(
        "header checksum",
        &broken,
        Rule::HdrChecksum,
        RepairOptions::new().fix_checksums(true),
        &b.expected(&[]),
    );
}

#[test]
fn leaked_space_at_the_end_is_cut_and_leaks_inside_are_left() {
    let b = dynamic();
    let (clean, layout) = b.build_with_layout();
    let footer = clean[layout.footer_offset as usize..].to_vec();
    // A whole block span of leaked space before the trailing footer.
    let mut broken = clean[..layout.footer_offset as usize].to_vec();
    broken.extend(vec![0x77; 4096 + 512]);
    broken.extend(&footer);
    repairs(
        "leak at the end",
        &broken,
        Rule::FileLeak,
        RepairOptions::new(),
        &b.expected(&[]),
    );
    // Non-zero bytes in a short tail.
    let mut broken = clean[..layout.footer_offset as usize].to_vec();
    broken.extend(vec![0x66; 700]);
    broken.extend(vec![0; 324]);
    broken.extend(&footer);
    repairs(
        "tail",
        &broken,
        Rule::FileTail,
        RepairOptions::new(),
        &b.expected(&[]),
    );
    // A leak between blocks: left for compact.
    let inner = dynamic()
        .bat_entry(5, u32::MAX)
        .block(5, Bits::All, &pattern(4096, 9));
    let leaky = inner.build();
    let found = rules_of(leaky.clone());
    if found == ["FILE-LEAK"] {
        let (report, after) = repair_bytes(&leaky, RepairOptions::new());
        assert!(report.fixes.is_empty() && after == leaky, "{report:?}");
        assert!(
            report
                .left
                .iter()
                .any(|l| l.rule == Rule::FileLeak && l.reason.contains("compact"))
        );
    } else {
        panic!("the fixture with an inner leak has {found:?}");
    }
}

#[test]
fn slack_after_a_fixed_images_data_is_cut() {
    let b = VhdBuilder::fixed(64 * 1024)
        .data(&pattern(64 * 1024, 5))
        .fixed_slack(3000);
    repairs(
        "fixed slack",
        &b.build(),
        Rule::FtrFixedSlack,
        RepairOptions::new(),
        &b.expected(&[]),
    );
    let b = VhdBuilder::fixed(64 * 1024)
        .data(&pattern(64 * 1024, 6))
        .fixed_slack(100);
    repairs(
        "short fixed slack",
        &b.build(),
        Rule::FtrFixedSlack,
        RepairOptions::new(),
        &b.expected(&[]),
    );
}

#[test]
fn bitmap_bits_past_the_end_are_cleared() {
    let b = VhdBuilder::dynamic(5 * 1024 + 512)
        .block_size(BS)
        .block(0, Bits::All, &pattern(4096, 1))
        .block(1, Bits::All, &pattern(4096, 2));
    repairs(
        "bits past the end",
        &b.build(),
        Rule::BmpPastEnd,
        RepairOptions::new(),
        &b.expected(&[]),
    );
}

#[test]
fn several_problems_are_fixed_in_one_run_in_a_safe_order() {
    let b = dynamic();
    let (clean, layout) = b.build_with_layout();
    let mut broken = clean[..layout.footer_offset as usize].to_vec();
    broken.extend(vec![0x77; 6000]);
    let mut footer = clean[layout.footer_offset as usize..].to_vec();
    footer[30] ^= 0xFF;
    broken.extend(&footer); // a damaged trailing footer after a leak
    broken[..512].copy_from_slice(&clean[..512]);
    let (report, after) = repair_bytes(&broken, RepairOptions::new());
    let rules: Vec<Rule> = report.fixes.iter().map(|f| f.rule).collect();
    assert_eq!(
        rules,
        [Rule::FtrTrailing, Rule::FileLeak],
        "{:?}",
        report.fixes
    );
    assert!(rules_of(after.clone()).is_empty(), "{:?}", rules_of(after));
    prove(
        "two problems",
        &broken,
        &Parents::none(),
        &Contents::unchanged(b.expected(&[])),
        &repair_op(RepairOptions::new()),
    );
}

#[test]
fn what_cannot_be_fixed_safely_is_refused_and_nothing_is_written() {
    // Two blocks at the same place (BAT-ENTRY-OVERLAP), and a tail that
    // could be cut: with an error left, nothing is written at all.
    let b = dynamic();
    let (clean, layout) = b.build_with_layout();
    let entry0 = u32::try_from(layout.blocks[&0] / 512).unwrap();
    let mut broken = clean[..layout.footer_offset as usize].to_vec();
    broken.extend(vec![0x66; 100]);
    broken.extend(vec![0; 412]);
    broken.extend(&clean[layout.footer_offset as usize..]);
    broken[(layout.bat_offset + 4) as usize..][..4].copy_from_slice(&entry0.to_be_bytes());
    let (report, after) = repair_bytes(&broken, RepairOptions::new());
    assert!(after == broken, "something was written");
    assert!(!report.written);
    let refused = report
        .refused
        .iter()
        .find(|r| r.rule == Rule::BatEntryOverlap)
        .expect("BAT-ENTRY-OVERLAP refused");
    assert!(
        refused.reason.contains("no safe repair"),
        "{}",
        refused.reason
    );
}

#[test]
fn a_dry_run_says_what_it_would_do_and_writes_nothing() {
    let b = dynamic();
    let mut broken = b.build();
    broken[..512].fill(0);
    let (report, after) = repair_bytes(&broken, RepairOptions::new().dry_run(true));
    assert!(after == broken);
    assert!(report.dry_run && !report.written);
    assert_eq!(report.fixes.len(), 1);
    assert!(
        report.after.findings.is_empty(),
        "the predicted result is clean"
    );
    assert!(!report.before.findings.is_empty());
}

#[test]
fn an_image_in_use_is_only_looked_at() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.vhd");
    let mut broken = dynamic().build();
    broken[..512].fill(0);
    std::fs::write(&path, &broken).unwrap();
    let reader = vhdref::Image::open(&path).unwrap(); // a shared lock
    let report = vhdref::ops::repair(&path, &RepairOptions::new()).unwrap();
    assert!(report.in_use && report.dry_run && !report.written);
    assert_eq!(report.fixes.len(), 1);
    drop(reader);
    assert_eq!(std::fs::read(&path).unwrap(), broken);
    let report = vhdref::ops::repair(&path, &RepairOptions::new()).unwrap();
    assert!(report.written && !report.in_use);
    assert!(rules_of(std::fs::read(&path).unwrap()).is_empty());
}

#[test]
fn a_clean_image_needs_nothing() {
    let clean = dynamic().build();
    let (report, after) = repair_bytes(&clean, RepairOptions::new());
    assert!(report.fixes.is_empty() && !report.written && after == clean);
}

#[test]
fn the_checksum_fixes_only_touch_their_fields() {
    // With both checksums wrong, the fix rewrites exactly 4 + 4 + 4 bytes:
    // the trailing footer's and the header's checksum fields, and then the
    // copy (restored from the trailing footer, which it equalled).
    let b = dynamic();
    let clean = b.build();
    let mut broken = clean.clone();
    let n = broken.len();
    broken[n - 512 + 64] ^= 1;
    broken[64] ^= 1;
    broken[512 + 36] ^= 1;
    let (report, after) = repair_bytes(&broken, RepairOptions::new().fix_checksums(true));
    assert_eq!(after, clean, "{:?}", report.fixes);
    let mut footer = [0u8; 512];
    footer.copy_from_slice(&clean[n - 512..]);
    set_footer_checksum(&mut footer);
    assert_eq!(&footer[..], &clean[n - 512..]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 96, ..proptest::prelude::ProptestConfig::default() })]

    /// Damage anywhere in the metadata (the first 2 KiB and the last
    /// 512 bytes): repair never panics, writes nothing when it refuses
    /// (or in a dry run), and what it writes has no error left.
    #[test]
    fn repair_of_random_damage_never_makes_things_worse(
        flips in proptest::collection::vec((0usize..2560, 1u8..=255), 1..5),
        fix_checksums in proptest::prelude::any::<bool>(),
        dry_run in proptest::prelude::any::<bool>(),
    ) {
        let clean = dynamic().build();
        let mut broken = clean.clone();
        let n = broken.len();
        for (at, x) in flips {
            let at = if at < 2048 { at } else { n - 2560 + at };
            broken[at] ^= x;
        }
        let options = RepairOptions::new().fix_checksums(fix_checksums).dry_run(dry_run);
        let mem = MemStorage::from_bytes(broken.clone());
        if let Ok((report, _)) = repair_storage(Box::new(mem.clone()), "image.vhd", &options) {
            let after = mem.to_vec();
            if report.written {
                let report = vhdref::check::check_storage(&mem, "image.vhd", &vhdref::check::CheckOptions::new());
                proptest::prop_assert_eq!(report.errors(), 0, "{:?}", report.findings);
            } else {
                proptest::prop_assert!(after == broken, "wrote without reporting it");
            }
            proptest::prop_assert!(!(dry_run && report.written));
        }
    }
}
