//! Strange but valid images cost bounded memory and time (issue 11, item
//! 4; the limits are in spec/limits.md). Each shape is built as a sparse
//! file and every command runs in a child process under an address-space
//! limit (`ulimit -v`), so running out is a failed assertion, not a
//! crashed test run.

mod builder;

use std::fs::OpenOptions as FileOptions;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use builder::VhdBuilder;
use vhdref::storage::{FileStorage, Storage};

const MIB: u64 = 1 << 20;

/// Runs `vhd` in `dir` under an address-space limit of `limit_mib` MiB;
/// stdout goes to /dev/null (some outputs are large) unless `keep`.
fn vhd_limited(dir: &Path, limit_mib: u64, args: &[&str]) -> Output {
    let script = format!(
        "ulimit -v {} && exec \"$0\" \"$@\" >/dev/null",
        limit_mib * 1024
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_vhd"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("sh runs");
    assert_ne!(out.status.code(), Some(101), "vhd {args:?} panicked");
    out
}

fn assert_ok(out: &Output, codes: &[i32], what: &str) {
    assert!(
        out.status.code().is_some_and(|c| codes.contains(&c)),
        "{what}: exit {:?} (a signal means it ran out of memory): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A dynamic image of `blocks` blocks of `block_size` bytes whose BAT is
/// written in 64 KiB pieces: allocated entries point at consecutive
/// blocks after the BAT (their bitmaps and data are holes of the file,
/// except `bitmap`, written into every allocated block's bitmap when
/// given). The file is sparse.
fn sparse_dynamic(
    path: &Path,
    blocks: u64,
    block_size: u32,
    allocated: bool,
    bitmap: Option<&[u8]>,
) -> io::Result<()> {
    let size = blocks * u64::from(block_size);
    // The builder lays out footer, header and an empty BAT; the blocks are
    // added by hand below (the builder would hold them all in memory).
    let (bytes, layout) = VhdBuilder::dynamic(size)
        .block_size(block_size)
        .build_with_layout();
    let meta_end = layout.footer_offset;
    let footer = bytes[bytes.len() - 512..].to_vec();
    let mut file = FileOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(&bytes[..meta_end as usize])?;
    let span = builder::bitmap_bytes(block_size) + u64::from(block_size);
    let first = meta_end / 512;
    if allocated {
        let mut chunk = Vec::with_capacity(64 * 1024);
        for i in 0..blocks {
            let sector = u32::try_from(first + i * span / 512).expect("fits a BAT entry");
            chunk.extend_from_slice(&sector.to_be_bytes());
            if chunk.len() == 64 * 1024 || i + 1 == blocks {
                let at = layout.bat_offset + (i + 1) * 4 - chunk.len() as u64;
                file.write_all_at(&chunk, at)?;
                chunk.clear();
            }
        }
        if let Some(bits) = bitmap {
            for i in 0..blocks {
                file.write_all_at(bits, meta_end + i * span)?;
            }
        }
    }
    let end = if allocated {
        meta_end + blocks * span
    } else {
        meta_end
    };
    file.set_len(end)?;
    file.write_all_at(&footer, end)?;
    Ok(())
}

#[test]
fn a_disk_of_2_to_the_26_allocated_blocks_opens_in_bounded_memory() {
    // 2^26 blocks of 512 bytes: a 256 MiB BAT, a 64 GiB sparse file. The
    // BAT must be in memory; nothing else as large may be.
    let dir = tempfile::tempdir().unwrap();
    sparse_dynamic(&dir.path().join("a.vhd"), 1 << 26, 512, true, None).unwrap();
    for args in [
        &["info", "a.vhd"][..],
        &["info", "a.vhd", "--output", "json"][..],
        &["check", "a.vhd", "--metadata-only"][..],
        &["read", "a.vhd", "--offset", "33554431K", "--length", "1K"][..],
    ] {
        let out = vhd_limited(dir.path(), 400, args);
        assert_ok(&out, &[0], &format!("{args:?}"));
    }
}

#[test]
fn a_disk_of_2_to_the_26_unallocated_blocks_opens_and_maps_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    sparse_dynamic(&dir.path().join("b.vhd"), 1 << 26, 512, false, None).unwrap();
    for args in [
        &["info", "b.vhd"][..],
        &["check", "b.vhd"][..],
        &["map", "b.vhd", "--output", "json"][..],
    ] {
        let out = vhd_limited(dir.path(), 400, args);
        assert_ok(&out, &[0], &format!("{args:?}"));
    }
}

#[test]
fn a_block_whose_bitmap_alternates_maps_and_converts_in_bounded_memory() {
    // One 256 MiB block, every other sector set: half a million runs.
    let dir = tempfile::tempdir().unwrap();
    let bits = vec![0xAAu8; (256 * MIB / 512 / 8) as usize];
    sparse_dynamic(&dir.path().join("c.vhd"), 1, 256 << 20, true, Some(&bits)).unwrap();
    for args in [
        &["map", "c.vhd"][..],
        &["map", "c.vhd", "--output", "json"][..],
        &["convert", "c.vhd", "c.raw", "--to", "raw"][..],
        &["convert", "c.vhd", "c2.vhd"][..],
        &["check", "c.vhd"][..],
    ] {
        let out = vhd_limited(dir.path(), 160, args);
        assert_ok(&out, &[0], &format!("{args:?}"));
    }
    let out = vhd_limited(dir.path(), 160, &["compare", "c.vhd", "c.raw"]);
    assert_ok(&out, &[0], "compare");
    // And what it maps is exactly the alternation.
    let out = Command::new(env!("CARGO_BIN_EXE_vhd"))
        .args(["map", "c.vhd", "--output", "json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let extents = json["extents"].as_array().unwrap();
    assert_eq!(extents.len(), 256 * 2048);
    assert!(extents.iter().all(|e| e["length"] == 512));
    assert_eq!(extents[0]["data"], true);
    assert_eq!(extents[1]["data"], false);
}

/// A storage that counts the bytes read through it.
struct Counted {
    inner: FileStorage,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Storage for Counted {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
}

#[test]
fn a_table_of_2_to_the_32_entries_costs_open_only_the_disks_own_entries() {
    // An 8 MiB disk of 2 MiB blocks (4 entries) whose max_table_entries is
    // 2^32 - 1: the table fills a sparse 16 GiB file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.vhd");
    let (mut bytes, layout) = VhdBuilder::dynamic(8 * MIB)
        .block_size(2 << 20)
        .max_table_entries(u32::MAX)
        .build_with_layout();
    let footer = bytes[bytes.len() - 512..].to_vec();
    bytes.truncate(layout.footer_offset as usize);
    std::fs::write(&path, &bytes).unwrap();
    let file = FileOptions::new().write(true).open(&path).unwrap();
    let end = layout.bat_offset + u64::from(u32::MAX) * 4;
    let end = end.div_ceil(512) * 512;
    file.set_len(end).unwrap();
    file.write_all_at(&footer, end).unwrap();
    drop(file);
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let storage = Counted {
        inner: FileStorage::open(&path, false).unwrap(),
        read: read.clone(),
    };
    let img = vhdref::OpenOptions::new()
        .open_storage(Box::new(storage), "d.vhd")
        .unwrap();
    assert_eq!(img.size(), 8 * MIB);
    let bytes_read = read.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        bytes_read < 64 * 1024,
        "open read {bytes_read} bytes for a disk of 4 blocks"
    );
    // The checker counts the entries past the disk (the holes of the
    // table read as allocated entries) without reading the holes.
    for args in [&["info", "d.vhd"][..], &["check", "d.vhd"][..]] {
        let out = vhd_limited(dir.path(), 256, args);
        assert_ok(&out, &[0, 3], &format!("{args:?}"));
    }
}
