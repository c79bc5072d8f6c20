//! Snapshots of the metadata each maintenance operation writes, on images
//! made with a fixed unique ID and clock so every byte is fixed: the
//! footers, the dynamic header and the BAT after a resize, a compact and a
//! rebase, and the JSON a repair and the Azure profile report. The
//! snapshots live in `tests/snapshots/`; to accept a deliberate change:
//! `INSTA_UPDATE=always cargo test --test ops_snapshots`, then review the
//! diff of the `.snap` files.

mod builder;
mod support;

use std::fmt::Write as _;

use builder::hexdump;
use support::{MIB, pattern};
use uuid::Uuid;
use vhdref::ops::compact::compact_image;
use vhdref::ops::rebase::{ParentRef, RebaseMode, rebase_image};
use vhdref::ops::resize::{ResizeOptions, resize_image};
use vhdref::storage::MemStorage;
use vhdref::{CreateOptions, DiskType, Image, OpenOptions, Timestamp};

/// 2024-12-30T00:00:00Z.
const CREATED: Timestamp = Timestamp(788_832_000);

fn options(disk_type: DiskType, size: u64, id: u128) -> CreateOptions {
    CreateOptions::new(disk_type, size)
        .unique_id(Uuid::from_u128(id))
        .time_stamp(CREATED)
}

fn made(options: &CreateOptions, writes: &[(u64, Vec<u8>)]) -> MemStorage {
    let mem = MemStorage::new();
    let mut img = options
        .create_in(Box::new(mem.clone()), "image.vhd", None)
        .unwrap();
    for (offset, data) in writes {
        img.write_at(*offset, data).unwrap();
    }
    img.close().unwrap();
    mem
}

fn open_rw(mem: &MemStorage) -> Image {
    OpenOptions::new()
        .write(true)
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap()
}

/// The metadata of a dynamic or differencing image: footer copy, header,
/// BAT (its sectors), the trailing footer, and the first bytes of every
/// block (where it lies).
fn metadata(bytes: &[u8]) -> String {
    let header = &bytes[512..1536];
    let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().unwrap());
    let table = u64::from_be_bytes(header[16..24].try_into().unwrap()) as usize;
    let entries = be32(28) as usize;
    let bat_end = table + (entries * 4).div_ceil(512) * 512;
    let mut out = String::new();
    let _ = writeln!(out, "file length {}", bytes.len());
    out.push_str("footer copy\n");
    out.push_str(&hexdump(&bytes[..512], 0));
    out.push_str("dynamic header\n");
    out.push_str(&hexdump(header, 512));
    out.push_str("BAT\n");
    out.push_str(&hexdump(&bytes[table..bat_end], table as u64));
    out.push_str("trailing footer\n");
    out.push_str(&hexdump(
        &bytes[bytes.len() - 512..],
        bytes.len() as u64 - 512,
    ));
    out
}

#[test]
fn a_dynamic_image_grown_past_its_table_sector_has_this_metadata() {
    let b = 512 * 1024;
    let mem = made(
        &options(DiskType::Dynamic, 4 * MIB, 0x11).block_size(b as u32),
        &[
            (0, pattern(4096, 1)),
            (b, pattern(4096, 2)),
            (3 * b, pattern(100, 3)),
        ],
    );
    let mut img = open_rw(&mem);
    resize_image(&mut img, &ResizeOptions::new(80 * MIB)).unwrap();
    img.close().unwrap();
    insta::assert_snapshot!("resize_dynamic_grow", metadata(&mem.to_vec()));
}

#[test]
fn a_dynamic_image_shrunk_has_this_metadata() {
    let mem = made(
        &options(DiskType::Dynamic, 12 * MIB, 0x12),
        &[(0, pattern(4096, 1))],
    );
    let mut img = open_rw(&mem);
    resize_image(&mut img, &ResizeOptions::new(3 * MIB).shrink(true)).unwrap();
    img.close().unwrap();
    insta::assert_snapshot!("resize_dynamic_shrink", metadata(&mem.to_vec()));
}

#[test]
fn a_fixed_image_resized_has_this_footer() {
    let mem = made(
        &options(DiskType::Fixed, 5 * MIB, 0x13),
        &[(0, pattern(512, 1))],
    );
    let mut img = open_rw(&mem);
    resize_image(&mut img, &ResizeOptions::new(9 * MIB)).unwrap();
    img.close().unwrap();
    let bytes = mem.to_vec();
    let mut text = format!("file length {}\n", bytes.len());
    text.push_str(&hexdump(
        &bytes[bytes.len() - 512..],
        bytes.len() as u64 - 512,
    ));
    insta::assert_snapshot!("resize_fixed_grow", text);
}

#[test]
fn a_compacted_image_has_this_metadata() {
    let b = 512 * 1024;
    let mem = made(
        &options(DiskType::Dynamic, 4 * MIB, 0x14).block_size(b as u32),
        &[
            (0, vec![0u8; 4096]),
            (b, pattern(4096, 2)),
            (2 * b, vec![0u8; 512]),
            (5 * b, pattern(4096, 3)),
        ],
    );
    let mut img = open_rw(&mem);
    compact_image(&mut img).unwrap();
    img.close().unwrap();
    insta::assert_snapshot!("compact", metadata(&mem.to_vec()));
}

#[test]
fn a_rebased_child_has_this_header_and_these_locators() {
    let parent = |id, seed| {
        let mem = made(
            &options(DiskType::Dynamic, 4 * MIB, id),
            &[(0, pattern(8192, seed))],
        );
        OpenOptions::new()
            .open_storage(Box::new(mem), "p.vhd")
            .unwrap()
    };
    let child = MemStorage::new();
    options(DiskType::Differencing, 0, 0x21)
        .create_in(
            Box::new(child.clone()),
            "child.vhd",
            Some((parent(0xA, 1), "a.vhd")),
        )
        .unwrap()
        .close()
        .unwrap();
    let mut img = OpenOptions::new()
        .write(true)
        .parent_image(parent(0xA, 1))
        .open_storage(Box::new(child.clone()), "child.vhd")
        .unwrap();
    let reference = ParentRef {
        name: "b.vhd".into(),
        relative: Some(".\\base\\b.vhd".into()),
        absolute: Some("/srv/images/base/b.vhd".into()),
    };
    rebase_image(&mut img, parent(0xB, 2), &reference, RebaseMode::Safe).unwrap();
    img.close().unwrap();
    let bytes = child.to_vec();
    let mut text = metadata(&bytes);
    let header = &bytes[512..1536];
    for slot in 0..2 {
        let e = &header[576 + slot * 24..576 + (slot + 1) * 24];
        let len = u32::from_be_bytes(e[8..12].try_into().unwrap()) as usize;
        let at = u64::from_be_bytes(e[16..24].try_into().unwrap()) as usize;
        let _ = writeln!(text, "locator {slot} data");
        text.push_str(&hexdump(&bytes[at..at + len], at as u64));
    }
    insta::assert_snapshot!("rebase", text);
}

#[test]
fn the_reports_of_repair_and_of_the_azure_profile_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.vhd");
    let mut img = options(DiskType::Dynamic, 4 * MIB, 0x31)
        .create(&path)
        .unwrap();
    img.write_at(0, &pattern(4096, 1)).unwrap();
    img.close().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..512].fill(0);
    let footer = bytes.split_off(bytes.len() - 512);
    bytes.extend(vec![0x4C; 100]);
    bytes.extend(vec![0; 412]);
    bytes.extend(footer);
    std::fs::write(&path, bytes).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vhd"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    insta::assert_snapshot!("repair_json", run(&["repair", "d.vhd", "--output", "json"]));
    insta::assert_snapshot!(
        "azure_profile_json",
        run(&["check", "d.vhd", "--profile", "azure", "--output", "json"])
    );
}
