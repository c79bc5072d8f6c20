//! The checker (`vhdref::check`): each rule only it can see, and how it
//! goes on past errors, judges every layer, and stays bounded.

mod builder;

use std::path::Path;

use builder::{Bits, DataSpace, Platform, VhdBuilder, pattern};
use uuid::Uuid;
use vhdref::check::{self, CheckOptions, Report, Verdict};
use vhdref::storage::{FaultStorage, MemStorage};
use vhdref::{CreateOptions, DiskType, Image, Rule, Severity};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const BLOCK: u32 = 4096;

fn judge(bytes: Vec<u8>) -> Report {
    check::check_storage(
        &MemStorage::from_bytes(bytes),
        "img.vhd",
        &CheckOptions::new(),
    )
}

fn rules(report: &Report) -> Vec<Rule> {
    let mut r: Vec<Rule> = report.findings.iter().map(|f| f.finding.rule).collect();
    r.sort();
    r.dedup();
    r
}

/// A small clean dynamic image with two full blocks.
fn dynamic() -> VhdBuilder {
    VhdBuilder::dynamic(64 * KIB)
        .block_size(BLOCK)
        .block(0, Bits::All, &pattern(BLOCK as usize, 1))
        .block(3, Bits::All, &pattern(BLOCK as usize, 2))
}

#[test]
fn a_clean_image_has_no_finding() {
    let report = judge(dynamic().build());
    assert_eq!(report.verdict(), Verdict::Clean, "{:?}", report.findings);
}

#[test]
fn reserved_footer_bytes_that_are_not_zero_are_ftr_reserved() {
    // Both footers alike, checksums right: only the reserved byte differs.
    let b = dynamic().corrupt(|bytes| {
        let len = bytes.len();
        for at in [500, len - 12] {
            bytes[at] = 7;
            builder::set_footer_checksum(&mut bytes[at - 500..at + 12]);
        }
    });
    let (bytes, layout) = b.build_with_layout();
    let report = judge(bytes);
    assert_eq!(rules(&report), [Rule::FtrReserved]);
    // The finding names the reserved bytes of the trailing footer.
    let f = &report.findings[0].finding;
    assert_eq!(
        (f.offset, f.length),
        (Some(layout.footer_offset + 85), Some(427)),
        "{f:?}"
    );
}

#[test]
fn reserved_header_fields_that_are_not_zero_are_hdr_reserved() {
    let b = dynamic().corrupt(|bytes| {
        bytes[512 + 1020] = 1;
        builder::set_header_checksum(&mut bytes[512..1536]);
    });
    assert_eq!(rules(&judge(b.build())), [Rule::HdrReserved]);
}

#[test]
fn data_under_clear_bits_of_a_dynamic_image_is_bmp_clear_data() {
    let b = VhdBuilder::dynamic(64 * KIB).block_size(BLOCK).block(
        1,
        Bits::Sectors(vec![0, 1]),
        &pattern(BLOCK as usize, 3),
    );
    let (bytes, layout) = b.build_with_layout();
    let report = judge(bytes);
    assert_eq!(rules(&report), [Rule::BmpClearData]);
    let f = &report.findings[0].finding;
    assert!(f.message.contains("sector 2"));
    // It points at that sector of the file: after the block's bitmap.
    let sector_2 = layout.blocks[&1] + layout.bitmap_size + 2 * 512;
    assert_eq!((f.offset, f.length), (Some(sector_2), Some(512)), "{f:?}");
    // The same with zeros under the clear bits is clean.
    let mut data = pattern(BLOCK as usize, 3);
    data[1024..].fill(0);
    let b =
        VhdBuilder::dynamic(64 * KIB)
            .block_size(BLOCK)
            .block(1, Bits::Sectors(vec![0, 1]), &data);
    assert_eq!(judge(b.build()).verdict(), Verdict::Clean);
    // Without data checks, not looked at.
    let b = VhdBuilder::dynamic(64 * KIB).block_size(BLOCK).block(
        1,
        Bits::Sectors(vec![0, 1]),
        &pattern(BLOCK as usize, 3),
    );
    let options = CheckOptions::new().data_checks(false);
    let report = check::check_storage(&MemStorage::from_bytes(b.build()), "x", &options);
    assert_eq!(report.verdict(), Verdict::Clean);
}

#[test]
fn bitmap_bits_past_the_end_of_the_disk_are_bmp_past_end() {
    // 10 KiB disk, 4 KiB blocks: the last block has 4 sectors of disk.
    let b =
        VhdBuilder::dynamic(10 * KIB)
            .block_size(BLOCK)
            .block(2, Bits::Sectors(vec![0, 5]), &[]);
    assert_eq!(rules(&judge(b.build())), [Rule::BmpPastEnd]);
    let b =
        VhdBuilder::dynamic(10 * KIB)
            .block_size(BLOCK)
            .block(2, Bits::Sectors(vec![0, 3]), &[]);
    assert_eq!(judge(b.build()).verdict(), Verdict::Clean);
}

#[test]
fn a_block_appended_by_a_killed_writer_is_file_leak() {
    // A writer allocates a block (its data and the footer after it reach
    // the file) and is killed before the flush that writes the BAT.
    let storage = FaultStorage::new();
    let mut img = CreateOptions::new(DiskType::Dynamic, 8 * MIB)
        .block_size(1 << 20)
        .create_in(Box::new(storage.clone()), "img.vhd", None)
        .unwrap();
    img.write_at(3 * MIB, &pattern(8192, 4)).unwrap();
    std::mem::forget(img); // killed: no flush, no close
    let report = judge(storage.bytes());
    assert_eq!(rules(&report), [Rule::FileLeak]);
    // From the end of the BAT (0x800) to the footer: the padding that
    // puts the block's data on 4 KiB (0x800 to 0xe00), the bitmap (a
    // sector) and the data.
    let f = &report.findings[0].finding;
    assert_eq!(f.offset, Some(0x800), "{f:?}");
    assert_eq!(f.length, Some(0x600 + 512 + (1 << 20)), "{f:?}");
    // The image still opens and reads what it did before.
    let mut back = vhdref::OpenOptions::new()
        .open_storage(Box::new(MemStorage::from_bytes(storage.bytes())), "img.vhd")
        .unwrap();
    let mut buf = vec![1u8; 8192];
    back.read_at(3 * MIB, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn bytes_before_the_footer_are_file_tail_only_when_they_are_not_zeros() {
    // Two sectors between the last block and the footer.
    let with_tail = |fill: u8| {
        dynamic().corrupt(move |bytes| {
            let len = bytes.len();
            let footer = bytes[len - 512..].to_vec();
            bytes.truncate(len - 512);
            bytes.extend(std::iter::repeat_n(fill, 1024));
            bytes.extend(footer);
        })
    };
    assert_eq!(rules(&judge(with_tail(0x5A).build())), [Rule::FileTail]);
    assert_eq!(judge(with_tail(0).build()).verdict(), Verdict::Clean);
}

#[test]
fn a_block_before_the_bat_is_file_order() {
    // The BAT moved behind the blocks (and the header told so).
    let b = dynamic().corrupt_at(|bytes, layout| {
        let bat_len = 512;
        let at = layout.footer_offset;
        let bat =
            bytes[layout.bat_offset as usize..(layout.bat_offset + bat_len) as usize].to_vec();
        let footer = bytes[at as usize..at as usize + 512].to_vec();
        bytes.truncate(at as usize);
        bytes.extend(&bat);
        bytes.extend(&footer);
        bytes[512 + 16..512 + 24].copy_from_slice(&at.to_be_bytes());
        builder::set_header_checksum(&mut bytes[512..1536]);
        // The old BAT place is now a gap smaller than a block span.
    });
    assert_eq!(rules(&judge(b.build())), [Rule::FileOrder]);
}

/// A differencing child with the given locators, judged on its own.
fn child_with(locators: &[(Platform, &str)]) -> VhdBuilder {
    let mut b = VhdBuilder::differencing(64 * KIB)
        .block_size(BLOCK)
        .parent_id(Uuid::from_u128(9))
        .parent_name("base.vhd");
    for (p, text) in locators {
        b = b.locator(*p, text, DataSpace::Bytes);
    }
    b.block(2, Bits::Sectors(vec![1]), &pattern(BLOCK as usize, 5))
}

/// The file offset of parent locator entry `i` of a child built by
/// [`child_with`]: the header at 512, its locator table at 576, 24 bytes
/// an entry (data space at +4, data length at +8, data offset at +16).
fn locator_entry(i: usize) -> usize {
    512 + 576 + 24 * i
}

fn judge_alone(b: &VhdBuilder) -> Report {
    let options = CheckOptions::new().follow_parents(false);
    check::check_storage(&MemStorage::from_bytes(b.build()), "child.vhd", &options)
}

#[test]
fn locator_data_over_another_locators_is_par_locator_overlap() {
    let b = child_with(&[
        (Platform::W2ru, ".\\base.vhd"),
        (Platform::W2ku, "/x/base.vhd"),
    ])
    .corrupt_at(|bytes, layout| {
        // Point locator 1 at locator 0's data.
        let entry = locator_entry(1);
        bytes[entry + 16..entry + 24].copy_from_slice(&layout.locators[0].to_be_bytes());
        builder::set_header_checksum(&mut bytes[512..1536]);
    });
    assert_eq!(rules(&judge_alone(&b)), [Rule::ParLocatorOverlap]);
}

#[test]
fn a_data_space_too_small_in_bytes_and_in_sectors_is_par_locator_space() {
    let b = child_with(&[(Platform::W2ru, ".\\base.vhd")]).corrupt(|bytes| {
        // Space 0 for 20 bytes of data: too small read either way.
        let entry = locator_entry(0);
        bytes[entry + 4..entry + 8].copy_from_slice(&0u32.to_be_bytes());
        builder::set_header_checksum(&mut bytes[512..1536]);
    });
    assert_eq!(rules(&judge_alone(&b)), [Rule::ParLocatorSpace]);
}

#[test]
fn a_child_without_a_path_locator_is_par_locator_missing() {
    let b = child_with(&[]);
    assert_eq!(rules(&judge_alone(&b)), [Rule::ParLocatorMissing]);
    assert_eq!(
        judge_alone(&child_with(&[(Platform::MacX, "file://./base.vhd")])).verdict(),
        Verdict::Clean
    );
}

/// A dynamic parent and a child of it in `dir`, the child naming its
/// parent `recorded`.
fn chain_in(dir: &Path, recorded: &str) -> VhdBuilder {
    let parent = VhdBuilder::dynamic(64 * KIB)
        .block_size(BLOCK)
        .unique_id(Uuid::from_u128(9))
        .time_stamp(1000)
        .block(0, Bits::All, &pattern(BLOCK as usize, 6));
    std::fs::write(dir.join("base.vhd"), parent.build()).unwrap();
    VhdBuilder::differencing(64 * KIB)
        .block_size(BLOCK)
        .parent_id(Uuid::from_u128(9))
        .parent_time_stamp(1000)
        .parent_name(recorded)
        .locator(Platform::W2ru, ".\\base.vhd", DataSpace::Bytes)
        .block(2, Bits::Sectors(vec![1]), &pattern(BLOCK as usize, 7))
}

#[test]
fn a_parent_found_under_another_name_is_par_name_mismatch_in_check_and_open() {
    let dir = tempfile::tempdir().unwrap();
    let child = chain_in(dir.path(), "C:\\VMs\\renamed.vhd");
    std::fs::write(dir.path().join("child.vhd"), child.build()).unwrap();
    let report = check::check(dir.path().join("child.vhd"), &CheckOptions::new());
    assert_eq!(rules(&report), [Rule::ParNameMismatch]);
    assert_eq!(report.findings[0].depth, 0);
    let img = Image::open(dir.path().join("child.vhd")).unwrap();
    assert_eq!(img.findings()[0].rule, Rule::ParNameMismatch);
    // The name compared without case, as Windows does.
    let child = chain_in(dir.path(), "C:\\VMs\\BASE.VHD");
    std::fs::write(dir.path().join("child2.vhd"), child.build()).unwrap();
    let report = check::check(dir.path().join("child2.vhd"), &CheckOptions::new());
    assert_eq!(report.verdict(), Verdict::Clean, "{:?}", report.findings);
}

#[test]
fn the_checker_goes_on_past_a_bad_header_checksum_to_judge_the_bat() {
    let b = dynamic().corrupt_at(|bytes, layout| {
        // One block beyond the end of the file, and a header whose stored
        // checksum is off by one.
        let at = layout.bat_offset as usize + 4;
        bytes[at..at + 4].copy_from_slice(&0x0010_0000u32.to_be_bytes());
        bytes[512 + 39] ^= 1;
    });
    let report = judge(b.build());
    assert_eq!(rules(&report), [Rule::HdrChecksum, Rule::BatEntryBeyondEof]);
    assert_eq!(report.verdict(), Verdict::Errors);
}

#[test]
fn one_bad_bat_entry_does_not_hide_the_next() {
    let b = dynamic().corrupt_at(|bytes, layout| {
        for (i, sector) in [(1usize, 0x0010_0000u32), (2, 0x0020_0000), (5, 1)] {
            let at = layout.bat_offset as usize + 4 * i;
            bytes[at..at + 4].copy_from_slice(&sector.to_be_bytes());
        }
    });
    let report = judge(b.build());
    let blocks: Vec<&str> = report
        .findings
        .iter()
        .map(|f| f.finding.message.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(blocks, ["1", "2", "5"], "{:?}", report.findings);
    assert_eq!(
        rules(&report),
        [Rule::BatEntryBeyondEof, Rule::BatEntryOverlap]
    );
    // Each finding says where in the file it is.
    assert!(report.findings.iter().all(|f| f.finding.offset.is_some()));
}

#[test]
fn findings_of_one_rule_are_capped_and_the_rest_counted() {
    let b = VhdBuilder::dynamic(MIB)
        .block_size(BLOCK)
        .corrupt_at(|bytes, layout| {
            for i in 0..200usize {
                let at = layout.bat_offset as usize + 4 * i;
                bytes[at..at + 4].copy_from_slice(&(0x0100_0000 + i as u32).to_be_bytes());
            }
        });
    let options = CheckOptions::new().max_findings_per_rule(10);
    let report = check::check_storage(&MemStorage::from_bytes(b.build()), "x", &options);
    assert_eq!(report.findings.len(), 11);
    assert!(
        report.findings[10]
            .finding
            .message
            .contains("190 more findings"),
        "{:?}",
        report.findings[10]
    );
}

#[test]
fn every_layer_of_a_chain_is_judged_and_each_finding_names_its_image() {
    let dir = tempfile::tempdir().unwrap();
    // A parent with a reserved byte set (a warning of its own).
    let child = chain_in(dir.path(), "base.vhd");
    let mut parent = std::fs::read(dir.path().join("base.vhd")).unwrap();
    let len = parent.len();
    parent[len - 12] = 1;
    builder::set_footer_checksum(&mut parent[len - 512..]);
    std::fs::write(dir.path().join("base.vhd"), parent).unwrap();
    std::fs::write(dir.path().join("child.vhd"), child.build()).unwrap();
    let report = check::check(dir.path().join("child.vhd"), &CheckOptions::new());
    assert_eq!(report.layers.len(), 2);
    let f = &report.findings;
    assert!(
        f.iter().any(|f| f.finding.rule == Rule::FtrReserved
            && f.depth == 1
            && f.image.ends_with("base.vhd")),
        "{f:?}"
    );
    assert_eq!(report.verdict(), Verdict::Warnings);
}

#[test]
fn an_ignored_parent_id_is_one_warning_with_its_rule_once() {
    let dir = tempfile::tempdir().unwrap();
    let child = chain_in(dir.path(), "base.vhd").parent_id(Uuid::from_u128(77));
    std::fs::write(dir.path().join("child.vhd"), child.build()).unwrap();
    let strict = check::check(dir.path().join("child.vhd"), &CheckOptions::new());
    assert_eq!(rules(&strict), [Rule::ParUniqueId]);
    assert_eq!(strict.verdict(), Verdict::Errors);
    let lenient = check::check(
        dir.path().join("child.vhd"),
        &CheckOptions::new().ignore_parent_id(true),
    );
    assert_eq!(rules(&lenient), [Rule::ParUniqueId]);
    let f = &lenient.findings[0].finding;
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(
        f.message.matches("PAR-UNIQUE-ID").count(),
        0,
        "{}",
        f.message
    );
    assert_eq!(f.to_string().matches("PAR-UNIQUE-ID").count(), 1);
    // open says the same.
    let img = vhdref::OpenOptions::new()
        .ignore_parent_id(true)
        .open(dir.path().join("child.vhd"))
        .unwrap();
    let found = &img.findings()[0];
    assert_eq!(
        (found.rule, found.severity),
        (Rule::ParUniqueId, Severity::Warning)
    );
}

#[test]
fn a_file_that_is_not_a_vhd_is_not_checked_and_says_why() {
    let report = judge(vec![7u8; 4096]);
    assert_eq!(report.verdict(), Verdict::NotChecked);
    assert_eq!(report.exit_code(false), 1);
    let why = report.not_checked.as_ref().unwrap();
    assert_eq!(why.rule, Some(Rule::FtrCookie));
}

#[test]
fn overlapping_blocks_out_of_index_order_are_each_named() {
    // Blocks 0 and 3 lie one after the other; block 5 is put half way
    // between them, so it overlaps both, and the BAT is not in file order.
    let b = dynamic().corrupt_at(|bytes, layout| {
        let first = layout.blocks[&0] / 512;
        let half = u64::midpoint(layout.bitmap_size, u64::from(BLOCK)) / 512;
        let at = layout.bat_offset as usize + 4 * 5;
        bytes[at..at + 4].copy_from_slice(&u32::try_from(first + half).unwrap().to_be_bytes());
    });
    let bytes = b.build();
    let report = judge(bytes.clone());
    let messages: Vec<&str> = report
        .findings
        .iter()
        .map(|f| f.finding.message.as_str())
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("block 5 ") && messages[0].contains("block 0 "),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("block 5 ") && messages[1].contains("block 3 "),
        "{messages:?}"
    );
    // open refuses it with the same rule.
    let e = vhdref::OpenOptions::new()
        .open_storage(Box::new(MemStorage::from_bytes(bytes)), "img.vhd")
        .unwrap_err();
    assert_eq!(e.rule(), Some(Rule::BatEntryOverlap));
}

#[test]
fn the_chain_of_a_child_with_broken_blocks_is_still_judged() {
    let dir = tempfile::tempdir().unwrap();
    // A parent with a warning of its own, and a child whose block lies past
    // the end of its file: open refuses the child, the checker goes on to
    // its parent.
    let child = chain_in(dir.path(), "base.vhd").corrupt_at(|bytes, layout| {
        let at = layout.bat_offset as usize + 4 * 5;
        bytes[at..at + 4].copy_from_slice(&0x0010_0000u32.to_be_bytes());
    });
    let mut parent = std::fs::read(dir.path().join("base.vhd")).unwrap();
    let len = parent.len();
    parent[len - 12] = 1;
    builder::set_footer_checksum(&mut parent[len - 512..]);
    std::fs::write(dir.path().join("base.vhd"), parent).unwrap();
    std::fs::write(dir.path().join("child.vhd"), child.build()).unwrap();
    let report = check::check(dir.path().join("child.vhd"), &CheckOptions::new());
    assert_eq!(report.layers.len(), 2, "{:?}", report.findings);
    let at = |depth: usize| -> Vec<Rule> {
        report
            .findings
            .iter()
            .filter(|f| f.depth == depth)
            .map(|f| f.finding.rule)
            .collect()
    };
    assert_eq!(at(0), [Rule::BatEntryBeyondEof]);
    assert_eq!(at(1), [Rule::FtrReserved]);
    // And a broken child whose parent is missing says both.
    std::fs::remove_file(dir.path().join("base.vhd")).unwrap();
    let report = check::check(dir.path().join("child.vhd"), &CheckOptions::new());
    assert_eq!(rules(&report), [Rule::BatEntryBeyondEof, Rule::ParNotFound]);
}

#[test]
fn a_gap_is_file_leak_when_one_more_block_fits_in_it_as_the_image_lays_out_its_blocks() {
    // Two blocks, then zeros before the trailing footer: a block span and
    // `extra` bytes.
    let image = |align: u64, extra: usize| {
        let gap = BLOCK as usize + 512 + extra;
        VhdBuilder::dynamic(64 * KIB)
            .block_size(BLOCK)
            .data_alignment(align)
            .block(0, Bits::All, &pattern(BLOCK as usize, 1))
            .block(1, Bits::All, &pattern(BLOCK as usize, 2))
            .corrupt(move |bytes| {
                let at = bytes.len() - 512;
                bytes.splice(at..at, std::iter::repeat_n(0u8, gap));
            })
            .build()
    };
    // Every block's data on 4 KiB: one more fits only with its data on
    // the next 4 KiB boundary, so 3.5 KiB more than a span are needed.
    assert_eq!(judge(image(4096, 1024)).verdict(), Verdict::Clean);
    assert_eq!(judge(image(4096, 3072)).verdict(), Verdict::Clean);
    assert_eq!(rules(&judge(image(4096, 3584))), [Rule::FileLeak]);
    // Packed blocks: any gap of a span holds one.
    assert_eq!(rules(&judge(image(0, 0))), [Rule::FileLeak]);
    assert_eq!(rules(&judge(image(0, 1024))), [Rule::FileLeak]);
}

#[test]
fn blocks_of_entries_past_the_disk_are_not_leaks_but_other_unreferenced_blocks_are() {
    // 16 blocks of disk, a BAT of 32 entries: entry 20 (past the disk) is
    // BAT-ENTRY-UNUSED, and the block it points at is referenced, not
    // leaked; block 3, whose entry was cleared, is FILE-LEAK.
    let b = dynamic()
        .max_table_entries(32)
        .block(20, Bits::All, &pattern(BLOCK as usize, 3))
        .block(5, Bits::All, &pattern(BLOCK as usize, 4))
        .corrupt_at(|bytes, layout| {
            let bat = usize::try_from(layout.bat_offset).unwrap();
            // The builder lays out the disk's 16 entries; entry 20 lies in
            // the BAT's padding, written here by hand.
            let sector = u32::try_from(layout.blocks[&20] / 512).unwrap();
            bytes[bat + 20 * 4..bat + 21 * 4].copy_from_slice(&sector.to_be_bytes());
            bytes[bat + 3 * 4..bat + 4 * 4].copy_from_slice(&u32::MAX.to_be_bytes());
        });
    let (bytes, layout) = b.build_with_layout();
    let report = judge(bytes);
    assert_eq!(
        rules(&report),
        [Rule::BatEntryUnused, Rule::FileLeak],
        "{:?}",
        report.findings
    );
    let leaks: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.finding.rule == Rule::FileLeak)
        .map(|f| f.finding.offset)
        .collect();
    assert_eq!(leaks, [Some(layout.blocks[&3])], "only block 3 is leaked");
}

#[test]
fn a_parent_given_to_the_checker_is_judged_in_place_of_the_locators() {
    // The child's locator names base.vhd, which is gone; the parent was
    // moved to moved.vhd. Without `parent` the child's parent is not
    // found; with it the chain is judged whole, the parent as layer 1.
    let dir = tempfile::tempdir().unwrap();
    let child = chain_in(dir.path(), "base.vhd");
    std::fs::rename(dir.path().join("base.vhd"), dir.path().join("moved.vhd")).unwrap();
    std::fs::write(dir.path().join("child.vhd"), child.build()).unwrap();
    let lost = check::check(dir.path().join("child.vhd"), &CheckOptions::new());
    assert_eq!(rules(&lost), [Rule::ParNotFound], "{:?}", lost.findings);
    let given = check::check(
        dir.path().join("child.vhd"),
        &CheckOptions::new().parent(dir.path().join("moved.vhd")),
    );
    assert_eq!(given.layers.len(), 2, "{:?}", given.findings);
    assert_eq!(
        rules(&given),
        [Rule::ParNameMismatch],
        "{:?}",
        given.findings
    );
}

#[test]
fn a_locator_without_data_overlaps_nothing() {
    // Locator 1 keeps its place (at locator 0's data) but holds 0 bytes:
    // empty data shares no byte with anything, so no PAR-LOCATOR-OVERLAP.
    let b = child_with(&[
        (Platform::W2ru, ".\\base.vhd"),
        (Platform::W2ku, "/x/base.vhd"),
    ])
    .corrupt_at(|bytes, layout| {
        let entry = locator_entry(1);
        bytes[entry + 8..entry + 12].copy_from_slice(&0u32.to_be_bytes());
        bytes[entry + 16..entry + 24].copy_from_slice(&(layout.locators[0] + 4).to_be_bytes());
        builder::set_header_checksum(&mut bytes[512..1536]);
    });
    let report = judge_alone(&b);
    // Empty data is PAR-LOCATOR-BOUNDS (a locator must hold its path), and
    // only that.
    assert_eq!(
        rules(&report),
        [Rule::ParLocatorBounds],
        "{:?}",
        report.findings
    );
}
