//! The checker is checked (issue 12, section 7): every metadata byte of
//! valid images is changed, and every field set to its boundary values.
//! For each changed image:
//!
//! * the checker never panics and always answers;
//! * a change inside a checksummed structure (either footer, the dynamic
//!   header) is always reported;
//! * the checker reports an error exactly when `open` refuses the image,
//!   and `open`'s rule is among the checker's;
//! * an image the checker calls clean (or only warns about) opens and
//!   reads exactly as the pure model (`vhdref::model`) says, read straight
//!   from the bytes.

mod builder;

use builder::{Bits, VhdBuilder, pattern};
use vhdref::check::{self, CheckOptions, Report, Verdict};
use vhdref::model;
use vhdref::storage::MemStorage;
use vhdref::{OpenOptions, Rule};

const KIB: u64 = 1024;
const SECTOR: usize = 512;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// What the disk in `bytes` reads as by the pure model, straight from the
/// bytes (trailing footer, header, BAT, bitmaps), for an image the
/// checker called usable: fixed or dynamic.
fn model_contents(bytes: &[u8]) -> Vec<u8> {
    // The trailing footer if it is valid, else the copy at offset 0.
    let valid = |f: &[u8]| &f[..8] == b"conectix" && model::checksum(f, 64) == be32(f, 64);
    let trailing = &bytes[bytes.len() - SECTOR..];
    let footer = if valid(trailing) {
        trailing
    } else {
        &bytes[..SECTOR]
    };
    let size = be64(footer, 48) as usize;
    if be32(footer, 60) == 2 {
        return bytes[..size].to_vec();
    }
    let header = be64(footer, 16) as usize;
    let table = be64(bytes, header + 16) as usize;
    let block_size = u64::from(be32(bytes, header + 32));
    let mut out = vec![0u8; size];
    for (s, sector) in out.chunks_mut(SECTOR).enumerate() {
        let loc = model::locate(s as u64 * SECTOR as u64, block_size);
        let entry = be32(bytes, table + 4 * loc.block as usize);
        if entry == u32::MAX {
            continue;
        }
        let bitmap = &bytes[entry as usize * SECTOR..];
        if model::bitmap_bit(bitmap, loc.sector_in_block) {
            let at = model::file_offset(entry, block_size, loc) as usize;
            sector.copy_from_slice(&bytes[at..at + sector.len()]);
        }
    }
    out
}

/// Judges one changed image; returns a problem, if any.
fn judge(bytes: &[u8], checksummed: bool, what: &str) -> Option<String> {
    let report: Report = check::check_storage(
        &MemStorage::from_bytes(bytes.to_vec()),
        "x.vhd",
        &CheckOptions::new(),
    );
    let opened = OpenOptions::new()
        .resolver(vhdref::image::ParentResolver::deny_all())
        .open_storage(Box::new(MemStorage::from_bytes(bytes.to_vec())), "x.vhd");
    let rules: Vec<Rule> = report.findings.iter().map(|f| f.finding.rule).collect();
    if checksummed && report.verdict() == Verdict::Clean {
        return Some(format!(
            "{what}: a change in a checksummed structure passed as clean"
        ));
    }
    let refused = matches!(report.verdict(), Verdict::Errors | Verdict::NotChecked);
    match (&opened, refused) {
        (Ok(_), true) => {
            return Some(format!(
                "{what}: the checker found errors {rules:?} but open accepts it"
            ));
        }
        (Err(e), false) => {
            return Some(format!(
                "{what}: open refuses it ({e}) but the checker found {rules:?}"
            ));
        }
        (Err(e), true) => {
            if let Some(r) = e.rule().filter(|r| !rules.contains(r)) {
                return Some(format!(
                    "{what}: open refuses it with {r}, the checker found {rules:?}"
                ));
            }
        }
        (Ok(_), false) => {}
    }
    if let Ok(mut img) = opened {
        let mut got = vec![0u8; img.size() as usize];
        if let Err(e) = img.read_at(0, &mut got) {
            return Some(format!("{what}: opens but does not read: {e}"));
        }
        if got != model_contents(bytes) {
            return Some(format!(
                "{what}: reads other than the model says (checker: {rules:?})"
            ));
        }
    }
    None
}

/// Changes of one byte: a bit flip, and the byte set to 0x00 and 0xFF.
fn changes(byte: u8) -> [u8; 3] {
    [byte ^ 0x01, 0x00, 0xFF]
}

/// Every byte of `range` changed in every way, judged.
fn every_byte(
    bytes: &[u8],
    range: std::ops::Range<usize>,
    checksummed: bool,
    name: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    for at in range {
        for value in changes(bytes[at]) {
            if value == bytes[at] {
                continue;
            }
            let mut changed = bytes.to_vec();
            changed[at] = value;
            if let Some(p) = judge(
                &changed,
                checksummed,
                &format!("{name}: byte {at:#x} = {value:#04x}"),
            ) {
                problems.push(p);
            }
        }
    }
    problems
}

/// A clean dynamic image (no finding at all): full blocks, and one block
/// with two sectors set and zeros under its clear bits.
fn dynamic() -> (Vec<u8>, builder::Layout) {
    let mut partial = pattern(4096, 2);
    partial[512..3584].fill(0);
    VhdBuilder::dynamic(40 * KIB)
        .block_size(4096)
        .block(0, Bits::All, &pattern(4096, 1))
        .block(3, Bits::Sectors(vec![0, 7]), &partial)
        .block(9, Bits::All, &pattern(4096, 3))
        .build_with_layout()
}

fn verdict(bytes: &[u8]) -> Verdict {
    check::check_storage(
        &MemStorage::from_bytes(bytes.to_vec()),
        "x.vhd",
        &CheckOptions::new(),
    )
    .verdict()
}

#[test]
fn every_metadata_byte_of_a_dynamic_image_changed_is_judged_soundly() {
    let (bytes, layout) = dynamic();
    assert_eq!(verdict(&bytes), Verdict::Clean, "the unchanged image");
    assert!(judge(&bytes, false, "unchanged").is_none());
    let len = bytes.len();
    let mut problems = Vec::new();
    problems.extend(every_byte(&bytes, 0..512, true, "footer copy"));
    problems.extend(every_byte(&bytes, 512..1536, true, "header"));
    problems.extend(every_byte(&bytes, len - 512..len, true, "footer"));
    let bat = layout.bat_offset as usize;
    problems.extend(every_byte(&bytes, bat..bat + 512, false, "BAT"));
    for (&i, &at) in &layout.blocks {
        let at = at as usize;
        problems.extend(every_byte(
            &bytes,
            at..at + 512,
            false,
            &format!("bitmap {i}"),
        ));
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_footer_byte_of_a_fixed_image_changed_is_judged_soundly() {
    let bytes = VhdBuilder::fixed(16 * KIB)
        .data(&pattern(16 * 1024, 4))
        .build();
    assert_eq!(verdict(&bytes), Verdict::Clean, "the unchanged image");
    let len = bytes.len();
    let problems = every_byte(&bytes, len - 512..len, true, "fixed footer");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Boundary values of a big-endian field of `width` bytes.
fn boundaries(width: usize) -> Vec<u64> {
    let max = if width == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    };
    let mut v = vec![
        0,
        1,
        2,
        511,
        512,
        513,
        4096,
        max,
        max - 1,
        max / 2,
        max / 2 + 1,
    ];
    v.retain(|&x| x <= max);
    v.sort_unstable();
    v.dedup();
    v
}

fn put_field(bytes: &mut [u8], at: usize, width: usize, value: u64) {
    let be = value.to_be_bytes();
    bytes[at..at + width].copy_from_slice(&be[8 - width..]);
}

/// Recomputes both footer checksums and the header checksum.
fn fix_checksums(bytes: &mut [u8]) {
    let len = bytes.len();
    builder::set_footer_checksum(&mut bytes[len - 512..]);
    builder::set_footer_checksum(&mut bytes[..512]);
    builder::set_header_checksum(&mut bytes[512..1536]);
}

#[test]
fn every_field_at_its_boundary_values_is_judged_soundly() {
    let (bytes, _) = dynamic();
    // (where, width, name): footer fields (in both copies) and header fields.
    let footer_fields = [
        (8, 4, "features"),
        (12, 4, "file format version"),
        (16, 8, "data offset"),
        (24, 4, "time stamp"),
        (40, 8, "original size"),
        (48, 8, "current size"),
        (56, 2, "cylinders"),
        (58, 1, "heads"),
        (59, 1, "sectors per track"),
        (60, 4, "disk type"),
        (84, 1, "saved state"),
    ];
    let header_fields = [
        (8, 8, "header data offset"),
        (16, 8, "table offset"),
        (24, 4, "header version"),
        (28, 4, "max table entries"),
        (32, 4, "block size"),
        (40, 16, "parent unique id"),
    ];
    let mut problems = Vec::new();
    let len = bytes.len();
    for &(at, width, name) in &footer_fields {
        for value in boundaries(width.min(8)) {
            let mut changed = bytes.clone();
            put_field(&mut changed, len - 512 + at, width, value);
            put_field(&mut changed, at, width, value);
            fix_checksums(&mut changed);
            if let Some(p) = judge(&changed, false, &format!("footer {name} = {value}")) {
                problems.push(p);
            }
        }
    }
    for &(at, width, name) in &header_fields {
        for value in boundaries(width.min(8)) {
            let mut changed = bytes.clone();
            put_field(&mut changed, 512 + at, width.min(8), value);
            fix_checksums(&mut changed);
            if let Some(p) = judge(&changed, false, &format!("header {name} = {value}")) {
                problems.push(p);
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
