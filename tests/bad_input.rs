//! Hostile input: images built by the independent test writer and then
//! damaged, each expected to fail with exactly one rule (or open with
//! exactly one warning), fast and without a panic; and a proptest that
//! mutates valid images at random.

#[path = "builder/mod.rs"]
mod builder;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use builder::{Bits, DataSpace, Platform, VhdBuilder, edit_footer, edit_footers, pattern};
use proptest::prelude::*;
use uuid::Uuid;
use vhdref::storage::MemStorage;
use vhdref::{ErrorKind, Image, OpenOptions};

const KIB: u64 = 1024;
const BLOCK: u32 = 64 * 1024;

/// What opening a case must do.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Fail with this rule.
    Error(&'static str),
    /// Open, with exactly this one warning, and read what was written.
    Warning(&'static str),
    /// Fail with an error of this kind and no rule.
    Kind(ErrorKind),
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    write: bool,
    expect: Expect,
    /// Guest contents, for cases that open.
    contents: Vec<u8>,
}

/// A fixed image of 64 KiB holding a pattern.
fn fixed() -> VhdBuilder {
    VhdBuilder::fixed(64 * KIB).data(&pattern(64 * 1024, 3))
}

/// A dynamic image of 1 MiB, 64 KiB blocks, two blocks allocated (one
/// full, one with three sectors).
fn dynamic() -> VhdBuilder {
    VhdBuilder::dynamic(1024 * KIB)
        .block_size(BLOCK)
        .block(1, Bits::All, &pattern(BLOCK as usize, 1))
        .block(
            5,
            Bits::Sectors(vec![0, 3, 127]),
            &pattern(BLOCK as usize, 2),
        )
}

#[allow(clippy::needless_pass_by_value)] // reads better at the call sites
fn error(name: &'static str, b: VhdBuilder, rule: &'static str) -> Case {
    Case {
        name,
        bytes: b.build(),
        write: false,
        expect: Expect::Error(rule),
        contents: Vec::new(),
    }
}

fn raw(name: &'static str, bytes: Vec<u8>, rule: &'static str) -> Case {
    Case {
        name,
        bytes,
        write: false,
        expect: Expect::Error(rule),
        contents: Vec::new(),
    }
}

#[allow(clippy::needless_pass_by_value)] // reads better at the call sites
fn warning(name: &'static str, b: VhdBuilder, rule: &'static str) -> Case {
    Case {
        name,
        contents: b.expected(&[]),
        bytes: b.build(),
        write: false,
        expect: Expect::Warning(rule),
    }
}

/// Sector of block `i` as laid out by the builder.
fn block_sector(b: &VhdBuilder, i: u32) -> u32 {
    (b.build_with_layout().1.blocks[&i] / 512) as u32
}

fn set_bat(bytes: &mut [u8], index: usize, entry: u32) {
    let at = builder::BAT_OFFSET as usize + index * 4;
    bytes[at..at + 4].copy_from_slice(&entry.to_be_bytes());
}

#[allow(clippy::too_many_lines)] // one table
fn cases() -> Vec<Case> {
    let mut v = vec![
        raw("empty file", Vec::new(), "FTR-SIZE"),
        raw("100 bytes", vec![0x5a; 100], "FTR-SIZE"),
        raw("511 zero bytes", vec![0; 511], "FTR-SIZE"),
        raw("1024 zero bytes", vec![0; 1024], "FTR-COOKIE"),
        raw(
            "a text file",
            b"not a disk image\n".repeat(300),
            "FTR-COOKIE",
        ),
        error(
            "fixed image with a wrong cookie",
            fixed().corrupt(|b| {
                let end = b.len();
                b[end - 512..end - 504].copy_from_slice(b"conectiX");
            }),
            "FTR-COOKIE",
        ),
        error(
            "dynamic image with a wrong cookie in both footers",
            dynamic().corrupt(|b| {
                let end = b.len();
                b[0] = b'C';
                b[end - 512] = b'C';
            }),
            "FTR-COOKIE",
        ),
        error(
            "fixed image with a bad footer checksum",
            fixed().corrupt(|b| {
                let end = b.len();
                b[end - 100] ^= 0x40;
            }),
            "FTR-CHECKSUM",
        ),
        error(
            "dynamic image with both footer checksums bad",
            dynamic().corrupt(|b| {
                let end = b.len();
                b[100] ^= 1;
                b[end - 100] ^= 1;
            }),
            "FTR-CHECKSUM",
        ),
        error(
            "fixed image of version 2.0",
            fixed().version(0x0002_0000),
            "FTR-VERSION",
        ),
        error(
            "dynamic image of version 2.0",
            dynamic().version(0x0002_0000),
            "FTR-VERSION",
        ),
        error("disk type 0", fixed().disk_type(0), "FTR-DISK-TYPE"),
        error("disk type 1", fixed().disk_type(1), "FTR-DISK-TYPE"),
        error("disk type 5", dynamic().disk_type(5), "FTR-DISK-TYPE"),
        error("disk type 6", fixed().disk_type(6), "FTR-DISK-TYPE"),
        error(
            "disk type 0xFFFFFFFF",
            dynamic().disk_type(u32::MAX),
            "FTR-DISK-TYPE",
        ),
        {
            // The data area gets the 100 extra (zero) bytes the size claims,
            // and the disk reads as exactly that many bytes.
            let mut case = warning(
                "current size not a multiple of 512",
                fixed().current_size(64 * KIB + 100).corrupt(|b| {
                    let footer_at = b.len() - 512;
                    b.splice(footer_at..footer_at, [0u8; 100]);
                }),
                "FTR-CURRENT-SIZE",
            );
            case.contents.resize(64 * KIB as usize + 100, 0);
            case
        },
        error(
            "current size u64::MAX",
            fixed().current_size(u64::MAX),
            "FTR-FIXED-LENGTH",
        ),
        error(
            "fixed image shorter than its current size",
            fixed().corrupt(|b| {
                b.drain(0..4096);
            }),
            "FTR-FIXED-LENGTH",
        ),
        error(
            "fixed image claiming 1 TiB",
            fixed().current_size(1 << 40),
            "FTR-FIXED-LENGTH",
        ),
        warning(
            "fixed image with slack before the footer",
            fixed().fixed_slack(1024),
            "FTR-FIXED-SLACK",
        ),
        warning(
            "fixed image with a 511-byte footer",
            fixed().corrupt(|b| {
                b.pop();
            }),
            "FTR-511",
        ),
        warning(
            "fixed image with a data offset",
            fixed().footer_data_offset(512),
            "FTR-FIXED-DATA-OFFSET",
        ),
        error(
            "dynamic data offset 0",
            dynamic().footer_data_offset(0),
            "FTR-DATA-OFFSET",
        ),
        error(
            "dynamic data offset beyond the end of the file",
            dynamic().footer_data_offset(1 << 40),
            "FTR-DATA-OFFSET",
        ),
        error(
            "dynamic data offset u64::MAX",
            dynamic().footer_data_offset(u64::MAX),
            "FTR-DATA-OFFSET",
        ),
        error(
            "dynamic data offset overlapping the trailing footer",
            dynamic().corrupt(|b| {
                let at = (b.len() - 1024) as u64;
                edit_footers(b, |f| f[16..24].copy_from_slice(&at.to_be_bytes()));
            }),
            "FTR-DATA-OFFSET",
        ),
        error(
            "dynamic header with a wrong cookie",
            dynamic().corrupt(|b| b[512..520].copy_from_slice(b"cxsparsX")),
            "HDR-COOKIE",
        ),
        error(
            "dynamic header with a bad checksum",
            dynamic().corrupt(|b| b[512 + 200] ^= 0x10),
            "HDR-CHECKSUM",
        ),
        error(
            "dynamic header version 2",
            dynamic().header_version(0x0002_0000),
            "HDR-VERSION",
        ),
        error(
            "block size 0",
            dynamic().header_block_size(0),
            "HDR-BLOCK-SIZE",
        ),
        error(
            "block size 3 MiB",
            dynamic().header_block_size(3 << 20),
            "HDR-BLOCK-SIZE",
        ),
        error(
            "block size 256 bytes",
            dynamic().header_block_size(256),
            "HDR-BLOCK-SIZE",
        ),
        error(
            "block size 2 GiB",
            dynamic().header_block_size(1 << 31),
            "HDR-BLOCK-SIZE",
        ),
        error(
            "block size u32::MAX",
            dynamic().header_block_size(u32::MAX),
            "HDR-BLOCK-SIZE",
        ),
        error(
            "max table entries too small for the current size",
            dynamic().max_table_entries(15),
            "HDR-MAX-TABLE-ENTRIES",
        ),
        error(
            "max table entries u32::MAX in a small file",
            dynamic().max_table_entries(u32::MAX),
            "HDR-TABLE-OFFSET",
        ),
        error(
            "more than 2^26 blocks",
            dynamic()
                .header_block_size(512)
                .current_size(((1 << 26) + 1) * 512)
                .max_table_entries(u32::MAX),
            "HDR-MAX-TABLE-ENTRIES",
        ),
        // A current size near u64::MAX (2^48 blocks) is in
        // `a_huge_max_table_entries_is_refused_by_its_rule_without_allocating_the_table`:
        // an open that allocated its table would abort this process.
        error(
            "table offset beyond the end of the file",
            dynamic().table_offset(1 << 40),
            "HDR-TABLE-OFFSET",
        ),
        error(
            "table offset u64::MAX",
            dynamic().table_offset(u64::MAX),
            "HDR-TABLE-OFFSET",
        ),
        error(
            "table offset overlapping the header",
            dynamic().table_offset(1024),
            "HDR-TABLE-OFFSET",
        ),
        error(
            "table offset overlapping the footer copy",
            dynamic().table_offset(0),
            "HDR-TABLE-OFFSET",
        ),
        error(
            "table offset not sector aligned",
            dynamic().table_offset(1536 + 4),
            "HDR-TABLE-OFFSET",
        ),
        error(
            "BAT entry beyond the end of the file",
            dynamic().bat_entry(0, 0x0010_0000),
            "BAT-ENTRY-BEYOND-EOF",
        ),
        error(
            "BAT entry 0xFFFFFFFE",
            dynamic().bat_entry(0, 0xFFFF_FFFE),
            "BAT-ENTRY-BEYOND-EOF",
        ),
        error(
            "BAT entry pointing at the header",
            dynamic().bat_entry(0, 1),
            "BAT-ENTRY-OVERLAP",
        ),
        error(
            "BAT entry pointing at the BAT",
            dynamic().bat_entry(0, 3),
            "BAT-ENTRY-OVERLAP",
        ),
        error(
            "BAT entry pointing at the footer copy",
            dynamic().bat_entry(0, 0),
            "BAT-ENTRY-OVERLAP",
        ),
        error(
            "block partially past the end of the file",
            dynamic().corrupt(|b| {
                let footer = b[b.len() - 512..].to_vec();
                let keep = b.len() - 512 - 32 * 1024;
                b.truncate(keep);
                b.extend_from_slice(&footer);
            }),
            "BAT-ENTRY-BEYOND-EOF",
        ),
        error(
            "block overlapping the trailing footer",
            dynamic().corrupt(|b| {
                let footer = b[b.len() - 512..].to_vec();
                let keep = b.len() - 1024;
                b.truncate(keep);
                b.extend_from_slice(&footer);
            }),
            "BAT-ENTRY-BEYOND-EOF",
        ),
    ];
    let d = dynamic();
    let s1 = block_sector(&d, 1);
    v.push(error(
        "two BAT entries pointing at the same block",
        dynamic().corrupt(move |b| set_bat(b, 2, s1)),
        "BAT-ENTRY-OVERLAP",
    ));
    v.push(error(
        "a block overlapping half of another",
        dynamic().corrupt(move |b| set_bat(b, 2, s1 + 64)),
        "BAT-ENTRY-OVERLAP",
    ));
    let zero_trailing = |b: &mut Vec<u8>| {
        let end = b.len();
        b[end - 512..].fill(0);
    };
    v.push(warning(
        "trailing footer zeroed, copy good",
        dynamic().corrupt(zero_trailing),
        "FTR-TRAILING",
    ));
    v.push(Case {
        name: "trailing footer zeroed, copy good, opened for writing",
        bytes: dynamic().corrupt(zero_trailing).build(),
        write: true,
        expect: Expect::Kind(ErrorKind::ReadOnly),
        contents: Vec::new(),
    });
    v.push(warning(
        "footer copy differs from the trailing footer",
        dynamic().corrupt(|b| edit_footer(b, 0, |f| f[24] ^= 0x01)),
        "FTR-COPY-MISMATCH",
    ));
    v.push(warning(
        "footer copy with a bad checksum",
        dynamic().corrupt(|b| b[300] ^= 0x01),
        "FTR-COPY-MISMATCH",
    ));
    v.push(warning(
        "saved state set",
        dynamic().saved_state(true),
        "FTR-SAVED-STATE",
    ));
    v.push(warning(
        "zero unique ID",
        fixed().unique_id(Uuid::nil()),
        "FTR-UNIQUE-ID",
    ));
    v.push(warning(
        "geometry not the algorithm's",
        fixed().geometry(1, 1, 1),
        "GEO-ALGORITHM",
    ));
    v.push(warning(
        "dynamic header data offset not all ones",
        dynamic().header_data_offset(0),
        "HDR-DATA-OFFSET",
    ));
    v.push(warning(
        "features without the reserved bit",
        dynamic().features(0),
        "FTR-FEATURES",
    ));
    v.push(warning(
        "features with an unknown bit",
        fixed().features(0x102),
        "FTR-FEATURES",
    ));
    v
}

/// Runs one case; `Err` says how it went wrong.
fn run(case: &Case) -> Result<(), String> {
    let storage = MemStorage::from_bytes(case.bytes.clone());
    let opened = OpenOptions::new()
        .write(case.write)
        .open_storage(Box::new(storage), "x.vhd");
    match (case.expect, opened) {
        (Expect::Error(rule), Err(e)) => {
            let got = e.rule().map(vhdref::Rule::id);
            if got != Some(rule) {
                return Err(format!("expected {rule}, got {got:?}: {e}"));
            }
            if !e.to_string().ends_with(&format!("({rule})")) {
                return Err(format!("message does not end with the rule ID: {e}"));
            }
            Ok(())
        }
        (Expect::Kind(kind), Err(e)) => {
            if e.kind() != kind || e.rule().is_some() {
                return Err(format!(
                    "expected kind {kind:?} without a rule, got {:?}/{:?}: {e}",
                    e.kind(),
                    e.rule()
                ));
            }
            Ok(())
        }
        (Expect::Warning(rule), Ok(mut img)) => {
            let ids: Vec<&str> = img.findings().iter().map(|f| f.rule.id()).collect();
            if ids != [rule] {
                return Err(format!("expected exactly the warning {rule}, got {ids:?}"));
            }
            if rule == "FTR-TRAILING" && img.is_writable() {
                return Err("an image with only a footer copy opened writable".into());
            }
            let mut buf = vec![0u8; img.size() as usize];
            img.read_at(0, &mut buf)
                .map_err(|e| format!("reading: {e}"))?;
            if buf != case.contents {
                let at = buf.iter().zip(&case.contents).position(|(a, b)| a != b);
                return Err(format!("contents differ (first at {at:?})"));
            }
            Ok(())
        }
        (expect, Ok(img)) => Err(format!(
            "expected {expect:?}, but it opened with findings {:?}",
            img.findings()
                .iter()
                .map(|f| f.rule.id())
                .collect::<Vec<_>>()
        )),
        (expect, Err(e)) => Err(format!(
            "expected {expect:?}, got {:?}/{:?}: {e}",
            e.kind(),
            e.rule()
        )),
    }
}

#[test]
fn every_damaged_image_fails_with_exactly_its_rule() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| run(case)));
        let took = start.elapsed();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(why)) => failures.push(format!("{}: {why}", case.name)),
            Err(_) => failures.push(format!("{}: PANICKED", case.name)),
        }
        if took > Duration::from_secs(2) {
            failures.push(format!("{}: took {took:?}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn undamaged_builder_images_open_without_findings() {
    let parent = VhdBuilder::dynamic(1024 * KIB).block_size(BLOCK).block(
        0,
        Bits::All,
        &pattern(BLOCK as usize, 7),
    );
    let child = child_of(&parent);
    for (name, b) in [("fixed", fixed()), ("dynamic", dynamic())] {
        let mut img = OpenOptions::new()
            .open_storage(Box::new(MemStorage::from_bytes(b.build())), name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(img.findings().is_empty(), "{name}: {:?}", img.findings());
        let mut buf = vec![0u8; img.size() as usize];
        img.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, b.expected(&[]), "{name}");
    }
    let p = open_mem(&parent.build()).unwrap();
    let mut img = OpenOptions::new()
        .parent_image(p)
        .open_storage(Box::new(MemStorage::from_bytes(child.build())), "child")
        .unwrap();
    assert!(img.findings().is_empty(), "{:?}", img.findings());
    let mut buf = vec![0u8; img.size() as usize];
    img.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, child.expected(&parent.expected(&[])));
}

#[test]
fn opening_for_writing_an_image_with_only_a_footer_copy_names_the_image() {
    let bytes = dynamic()
        .corrupt(|b| {
            let end = b.len();
            b[end - 512..].fill(0);
        })
        .build();
    let err = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(MemStorage::from_bytes(bytes)), "damaged.vhd")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly);
    assert!(err.to_string().contains("damaged.vhd"), "{err}");
    assert!(err.to_string().contains("(FTR-TRAILING)"), "{err}");
}

fn child_of(parent: &VhdBuilder) -> VhdBuilder {
    VhdBuilder::differencing(1024 * KIB)
        .block_size(BLOCK)
        .parent_id(parent.id())
        .parent_time_stamp(parent.stamp())
        .parent_name("parent.vhd")
        .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes)
        .block(
            0,
            Bits::Sectors(vec![1, 2, 3, 64]),
            &pattern(BLOCK as usize, 8),
        )
        .block(3, Bits::All, &pattern(BLOCK as usize, 9))
}

fn open_mem(bytes: &[u8]) -> vhdref::Result<Image> {
    OpenOptions::new().open_storage(Box::new(MemStorage::from_bytes(bytes.to_vec())), "mem.vhd")
}

/// Reads a bounded part of the disk: up to 2 MiB from the start and 64 KiB
/// at the end.
fn read_some(img: &mut Image) -> vhdref::Result<()> {
    let size = img.size();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0;
    while pos < size.min(2 << 20) {
        let n = (size - pos).min(buf.len() as u64) as usize;
        img.read_at(pos, &mut buf[..n])?;
        pos += n as u64;
    }
    if size > pos {
        let n = (size - pos).min(buf.len() as u64);
        img.read_at(size - n, &mut buf[..n as usize])?;
    }
    Ok(())
}

fn fix_checksums(bytes: &mut [u8]) {
    let n = bytes.len();
    if n >= 512 {
        builder::set_footer_checksum(&mut bytes[n - 512..]);
    }
    if n >= 2048 && &bytes[512..520] == b"cxsparse" {
        builder::set_footer_checksum(&mut bytes[..512]);
        builder::set_header_checksum(&mut bytes[512..1536]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_images_never_panic(
        kind in 0u8..3,
        mutations in prop::collection::vec((0u8..4, any::<prop::sample::Index>(), any::<u8>()), 1..12),
        fix in any::<bool>(),
    ) {
        let parent = VhdBuilder::dynamic(1024 * KIB)
            .block_size(BLOCK)
            .block(0, Bits::All, &pattern(BLOCK as usize, 7));
        let mut bytes = match kind {
            0 => fixed().build(),
            1 => dynamic().build(),
            _ => child_of(&parent).build(),
        };
        let len = bytes.len();
        for (region, index, value) in mutations {
            // Aim most mutations at metadata: the first 2 KiB (footer copy,
            // header, BAT), the trailing footer, or anywhere.
            let at = match region {
                0 | 1 => index.index(len.min(2048 + 1024)),
                2 => len - 512 + index.index(512),
                _ => index.index(len),
            };
            bytes[at] = value;
        }
        if fix {
            fix_checksums(&mut bytes);
        }
        let start = Instant::now();
        let mut options = OpenOptions::new();
        if kind == 2 {
            options = options.parent_image(open_mem(&parent.build()).unwrap());
        }
        match options.open_storage(Box::new(MemStorage::from_bytes(bytes)), "x.vhd") {
            Ok(mut img) => {
                if let Err(e) = read_some(&mut img) {
                    prop_assert!(e.rule().is_some() || e.kind() == ErrorKind::Io, "read error without rule: {e}");
                }
            }
            Err(e) => {
                prop_assert!(e.rule().is_some() || e.kind() == ErrorKind::Io, "open error without rule: {:?} {e}", e.kind());
            }
        }
        prop_assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    }
}

// ------------------------------------------------------- limits held

/// The path `text` as `W2ru`/`W2ku` locator data (UTF-16LE), padded with
/// NULs (which readers drop) to `len` bytes.
fn utf16_padded(text: &str, len: usize) -> Vec<u8> {
    let mut data: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    assert!(data.len() <= len);
    data.resize(len, 0);
    data
}

#[test]
fn a_locator_of_64_kib_is_read_and_one_of_more_is_skipped_even_inside_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let parent = VhdBuilder::fixed(1024 * KIB).data(&pattern(1024 * 1024, 4));
    std::fs::write(dir.path().join("parent.vhd"), parent.build()).unwrap();
    // The long locator first, a good absolute one after it, no name.
    let child = |len: usize| {
        VhdBuilder::differencing(1024 * KIB)
            .block_size(BLOCK)
            .parent_id(parent.id())
            .parent_time_stamp(parent.stamp())
            .locator_bytes(
                Platform::W2ru,
                &utf16_padded(".\\parent.vhd", len),
                DataSpace::Bytes,
            )
            .locator(
                Platform::W2ku,
                &dir.path().join("parent.vhd").display().to_string(),
                DataSpace::Bytes,
            )
            .block(3, Bits::All, &pattern(BLOCK as usize, 9))
    };
    let limit = 64 * 1024;
    for (len, warnings, used) in [
        (limit, vec![], "W2ru"),
        (limit + 2, vec!["PAR-LOCATOR-BOUNDS"], "W2ku"),
    ] {
        let b = child(len);
        let (bytes, layout) = b.build_with_layout();
        // The long locator's data lies wholly inside the file: only its
        // length can make it out of bounds.
        assert!(layout.locators[0] + len as u64 <= layout.footer_offset);
        let path = dir.path().join(format!("child-{len}.vhd"));
        std::fs::write(&path, &bytes).unwrap();
        let mut img = Image::open(&path).unwrap_or_else(|e| panic!("{len}: {e}"));
        let found: Vec<&str> = img.findings().iter().map(|f| f.rule.id()).collect();
        assert_eq!(found, warnings, "a locator of {len} bytes");
        match img.parent_source() {
            Some(vhdref::image::ParentSource::Locator { platform, .. }) => {
                assert_eq!(platform, used, "a locator of {len} bytes");
            }
            other => panic!("a locator of {len} bytes: parent found through {other:?}"),
        }
        let mut buf = vec![0u8; img.size() as usize];
        img.read_at(0, &mut buf).unwrap();
        assert!(buf == b.expected(&parent.expected(&[])), "{len}");
    }
}

#[test]
fn a_parent_smaller_or_larger_than_the_child_is_refused() {
    let child_size = 1024 * KIB;
    for parent_size in [
        child_size / 2,
        child_size - 512,
        child_size + 512,
        child_size * 2,
    ] {
        let parent = VhdBuilder::fixed(parent_size).data(&pattern(parent_size as usize, 5));
        let child = VhdBuilder::differencing(child_size)
            .block_size(BLOCK)
            .parent_id(parent.id())
            .parent_time_stamp(parent.stamp())
            .block(0, Bits::All, &pattern(BLOCK as usize, 6));
        let err = OpenOptions::new()
            .parent_image(open_mem(&parent.build()).expect("the parent opens"))
            .open_storage(Box::new(MemStorage::from_bytes(child.build())), "child")
            .expect_err("a parent of another size");
        assert_eq!(
            err.rule().map(vhdref::Rule::id),
            Some("PAR-SIZE"),
            "a parent of {parent_size} bytes: {err}"
        );
    }
}

/// Set in the child process of
/// [`a_huge_max_table_entries_is_refused_by_its_rule_without_allocating_the_table`].
const UNDER_ADDRESS_LIMIT: &str = "VHDREF_TEST_UNDER_ADDRESS_LIMIT";

/// Address space of that child process: ample for the test, far too
/// little for a BAT of 2^32 entries (16 GiB) or of 2^48 (1 PiB).
const ADDRESS_LIMIT_KIB: u64 = 1 << 20;

/// A read-only file of `len` bytes holding `parts` and zeros elsewhere,
/// without the memory: room for a huge table costs nothing.
struct HoleyFile {
    len: u64,
    parts: Vec<(u64, Vec<u8>)>,
}

impl vhdref::storage::Storage for HoleyFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.fill(0);
        for (at, bytes) in &self.parts {
            let (from, to) = (offset.max(*at), end.min(at + bytes.len() as u64));
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
            }
        }
        Ok(())
    }

    fn write_all_at(&mut self, _: &[u8], _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::PermissionDenied.into())
    }

    fn set_len(&mut self, _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::PermissionDenied.into())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The checks, run in the child process under the address-space limit.
fn huge_tables_are_refused_by_their_rule() {
    // A disk of 2^32 - 1 blocks of 512 bytes with a table of as many
    // entries, in a file (of 16 GiB) that holds the whole table: only the
    // bound on blocks refuses it.
    let entries = u64::from(u32::MAX);
    let small = dynamic()
        .header_block_size(512)
        .current_size(entries * 512)
        .max_table_entries(u32::MAX)
        .build();
    let table_end = builder::BAT_OFFSET + entries * 4;
    let len = table_end.next_multiple_of(512) + 512;
    let file = HoleyFile {
        len,
        parts: vec![
            (0, small[..builder::BAT_OFFSET as usize].to_vec()),
            (len - 512, small[small.len() - 512..].to_vec()),
        ],
    };
    // A disk of 2^48 blocks whose header claims no entries at all.
    let near_max = dynamic().current_size(u64::MAX - 511).build();
    for (what, storage) in [
        (
            "2^32 - 1 blocks, all in the table",
            Box::new(file) as Box<dyn vhdref::storage::Storage>,
        ),
        (
            "2^48 blocks, none in the table",
            Box::new(MemStorage::from_bytes(near_max)),
        ),
    ] {
        let err = OpenOptions::new()
            .open_storage(storage, "huge.vhd")
            .expect_err(what);
        assert_eq!(
            err.rule().map(vhdref::Rule::id),
            Some("HDR-MAX-TABLE-ENTRIES"),
            "{what}: {err}"
        );
    }
}

#[test]
fn a_huge_max_table_entries_is_refused_by_its_rule_without_allocating_the_table() {
    const NAME: &str =
        "a_huge_max_table_entries_is_refused_by_its_rule_without_allocating_the_table";
    if std::env::var_os(UNDER_ADDRESS_LIMIT).is_some() {
        huge_tables_are_refused_by_their_rule();
        return;
    }
    // This test again, in a child process whose address space is limited:
    // an open that tried to allocate the table would abort there, and the
    // abort fails this assertion instead of taking the whole test binary
    // down (or, without the limit, swapping a machine to death).
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_LIMIT_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(&exe)
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(UNDER_ADDRESS_LIMIT, "1")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the checks under a {ADDRESS_LIMIT_KIB} KiB address-space limit ended with {}:\n{stdout}\n{stderr}",
        out.status
    );
}
