//! Where the driver puts new blocks: data on 4 KiB boundaries for blocks
//! of 512 KiB or more (as Windows lays blocks out), zeros in the padding
//! before each block (no stale footer left there), and packed blocks
//! below 512 KiB. Judged from the raw bytes, by hand.

mod builder;

use builder::VhdBuilder;
use proptest::prelude::*;
use vhdref::check::{self, CheckOptions, Verdict};
use vhdref::model::Disk;
use vhdref::storage::MemStorage;
use vhdref::{CreateOptions, DiskType, OpenOptions};

const KIB: u64 = 1024;
const SECTOR: u64 = 512;

fn be32(bytes: &[u8], at: u64) -> u32 {
    let at = usize::try_from(at).unwrap();
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn be64(bytes: &[u8], at: u64) -> u64 {
    let at = usize::try_from(at).unwrap();
    u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// The layout of a dynamic image, read from its bytes (the header at the
/// footer's data offset): the BAT's place and length, the block size,
/// and the allocated entries in file order.
struct Layout {
    table_offset: u64,
    table_bytes: u64,
    block_size: u64,
    bitmap: u64,
    entries: Vec<u64>,
}

fn layout(bytes: &[u8]) -> Layout {
    let header = be64(bytes, 16);
    let table_offset = be64(bytes, header + 16);
    let max_entries = u64::from(be32(bytes, header + 28));
    let block_size = u64::from(be32(bytes, header + 32));
    // One bit per sector, whole sectors.
    let bitmap = (block_size / SECTOR).div_ceil(8).div_ceil(SECTOR) * SECTOR;
    let mut entries: Vec<u64> = (0..max_entries)
        .map(|i| be32(bytes, table_offset + 4 * i))
        .filter(|&e| e != u32::MAX)
        .map(u64::from)
        .collect();
    entries.sort_unstable();
    Layout {
        table_offset,
        table_bytes: (max_entries * 4).div_ceil(SECTOR) * SECTOR,
        block_size,
        bitmap,
        entries,
    }
}

/// The first byte that is not zero outside every structure: the footer
/// copy, the header, the BAT, each block and the trailing footer.
fn data_outside_structures(bytes: &[u8], l: &Layout) -> Option<u64> {
    let mut used = vec![(0, 1536), (l.table_offset, l.table_offset + l.table_bytes)];
    used.extend(
        l.entries
            .iter()
            .map(|&e| (e * SECTOR, e * SECTOR + l.bitmap + l.block_size)),
    );
    used.push((bytes.len() as u64 - SECTOR, bytes.len() as u64));
    used.sort_unstable();
    let mut covered = 0u64;
    for (start, end) in used {
        if start > covered {
            let gap = &bytes[usize::try_from(covered).unwrap()..usize::try_from(start).unwrap()];
            if let Some(k) = gap.iter().position(|&b| b != 0) {
                return Some(covered + k as u64);
            }
        }
        covered = covered.max(end);
    }
    None
}

fn check_clean(bytes: Vec<u8>) {
    let report = check::check_storage(
        &MemStorage::from_bytes(bytes),
        "img.vhd",
        &CheckOptions::new(),
    );
    assert_eq!(report.verdict(), Verdict::Clean, "{:?}", report.findings);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Written in random order, across a close and a reopen (which finds
    /// the end of the used space from the file), with tables of every
    /// length (where the first block can go depends on it).
    #[test]
    fn every_new_block_has_its_data_on_a_4_kib_boundary_and_only_zeros_before_it(
        block_kib in prop::sample::select(vec![512u64, 1024, 2048, 4096, 8192, 16384]),
        blocks in 1u64..900,
        writes in prop::collection::vec((0u64..900, 0u64..4096, 1usize..40, 1u8..=255), 1..5),
        reopen_after in 0usize..5,
    ) {
        let block = block_kib * KIB;
        let size = blocks * block;
        let mem = MemStorage::new();
        let mut img = CreateOptions::new(DiskType::Dynamic, size)
            .block_size(u32::try_from(block).unwrap())
            .create_in(Box::new(mem.clone()), "img.vhd", None)
            .unwrap();
        let mut model = Disk::new(size);
        for (i, &(index, sector, sectors, byte)) in writes.iter().enumerate() {
            if i == reopen_after {
                img.close().unwrap();
                img = OpenOptions::new()
                    .write(true)
                    .open_storage(Box::new(mem.clone()), "img.vhd")
                    .unwrap();
            }
            let offset = (index % blocks) * block + (sector % (block / SECTOR)) * SECTOR;
            let len = (sectors as u64 * SECTOR).min(size - offset);
            let data = vec![byte; usize::try_from(len).unwrap()];
            img.write_at(offset, &data).unwrap();
            model.write(offset, &data);
        }
        img.close().unwrap();
        let bytes = mem.to_vec();
        let l = layout(&bytes);
        for &e in &l.entries {
            prop_assert_eq!((e * SECTOR + l.bitmap) % 4096, 0, "block at sector {}", e);
        }
        prop_assert_eq!(data_outside_structures(&bytes, &l), None);
        check_clean(bytes.clone());
        let mut back = OpenOptions::new()
            .open_storage(Box::new(MemStorage::from_bytes(bytes)), "img.vhd")
            .unwrap();
        // Around each write, 64 sectors either side within its block (the
        // disk may be many GiB, and the model reads sector by sector).
        for &(index, sector, sectors, _) in &writes {
            let base = (index % blocks) * block;
            let first = (sector % (block / SECTOR)).saturating_sub(64);
            let start = base + first * SECTOR;
            let len = ((sectors as u64 + 128) * SECTOR).min(block - first * SECTOR).min(size - start);
            let mut got = vec![0u8; usize::try_from(len).unwrap()];
            back.read_at(start, &mut got).unwrap();
            prop_assert!(got == model.read(start, len), "at {}", start);
        }
    }
}

#[test]
fn blocks_smaller_than_512_kib_stay_packed() {
    // A foreign image with 4 KiB blocks (bitmap one sector): each new
    // block starts where the one before it ends, padding would cost more
    // than the block.
    let bytes = VhdBuilder::dynamic(64 * KIB).block_size(4096).build();
    let mem = MemStorage::from_bytes(bytes);
    let mut img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(mem.clone()), "img.vhd")
        .unwrap();
    for block in [3u64, 0, 9, 5] {
        img.write_at(block * 4096 + 512, &[0x5A; 1024]).unwrap();
    }
    img.close().unwrap();
    let bytes = mem.to_vec();
    let l = layout(&bytes);
    assert_eq!(l.entries.len(), 4);
    let span_sectors = (4096 + 512) / SECTOR;
    for pair in l.entries.windows(2) {
        assert_eq!(pair[1] - pair[0], span_sectors, "{:?}", l.entries);
    }
    assert_eq!(l.entries[0] * SECTOR, l.table_offset + l.table_bytes);
    check_clean(bytes);
}
