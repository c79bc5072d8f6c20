//! Tests that kill mutants cargo-mutants found alive, and the ones the key
//! mutants (`scripts/key-mutants.txt`) are checked against: each pins a
//! limit or a decision at its exact boundary, where a changed constant or
//! comparison would otherwise go unnoticed (see `spec/mutants.md`).

mod builder;

use std::collections::BTreeMap;

use builder::VhdBuilder;
use vhdref::storage::{MemStorage, Storage};
use vhdref::{CreateOptions, DiskType, ErrorKind, OpenOptions};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// A file of any length in memory that holds only what was written to it
/// (in pieces) and reads zeros elsewhere: images whose footer lies near
/// 2 TiB, without 2 TiB of memory.
#[derive(Default)]
struct SparseFile {
    len: u64,
    pieces: BTreeMap<u64, Vec<u8>>,
}

impl SparseFile {
    fn with(len: u64, pieces: Vec<(u64, Vec<u8>)>) -> Self {
        SparseFile {
            len,
            pieces: pieces.into_iter().collect(),
        }
    }
}

impl Storage for SparseFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.fill(0);
        // Later pieces overwrite earlier ones where they overlap.
        for (&at, bytes) in &self.pieces {
            let (from, to) = (offset.max(at), end.min(at + bytes.len() as u64));
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
            }
        }
        Ok(())
    }

    fn write_all_at(&mut self, data: &[u8], offset: u64) -> std::io::Result<()> {
        // Keep pieces disjoint: cut what the new one covers out of the old.
        let end = offset + data.len() as u64;
        let old: Vec<(u64, Vec<u8>)> = self
            .pieces
            .range(..end)
            .filter(|(at, bytes)| **at + bytes.len() as u64 > offset)
            .map(|(at, bytes)| (*at, bytes.clone()))
            .collect();
        for (at, bytes) in old {
            self.pieces.remove(&at);
            if at < offset {
                self.pieces
                    .insert(at, bytes[..(offset - at) as usize].to_vec());
            }
            let tail = at + bytes.len() as u64;
            if tail > end {
                self.pieces
                    .insert(end, bytes[(end - at) as usize..].to_vec());
            }
        }
        self.pieces.insert(offset, data.to_vec());
        self.len = self.len.max(end);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.len = len;
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_disk_of_one_block_more_than_the_bound_is_refused_for_the_bound() {
    // 512-byte blocks (in the header) and a one-entry table: the open
    // refuses the disk either for its size or for its short table, and
    // says which.
    let refusal = |blocks: u64| {
        let bytes = VhdBuilder::dynamic(4 * MIB)
            .header_block_size(512)
            .current_size(blocks * 512)
            .max_table_entries(1)
            .build();
        let err = OpenOptions::new()
            .open_storage(Box::new(MemStorage::from_bytes(bytes)), "huge.vhd")
            .expect_err("a one-entry table is too short for either disk");
        assert_eq!(
            err.rule().map(vhdref::Rule::id),
            Some("HDR-MAX-TABLE-ENTRIES")
        );
        err.to_string()
    };
    let over = refusal((1 << 26) + 1);
    assert!(
        over.contains("more than the bound of 67108864"),
        "2^26 + 1 blocks: {over}"
    );
    let at = refusal(1 << 26);
    assert!(
        !at.contains("bound") && at.contains("67108864 blocks"),
        "2^26 blocks are within the bound, only the table is short: {at}"
    );
}

#[test]
fn create_accepts_2040_gib_and_refuses_one_sector_more() {
    let size = |bytes: u64| CreateOptions::new(DiskType::Dynamic, bytes).effective_size();
    assert_eq!(size(2040 * GIB).expect("2040 GiB is the limit"), 2040 * GIB);
    let err = size(2040 * GIB + 512).expect_err("one sector over the limit");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("2040 GiB"), "{err}");
    let fixed = CreateOptions::new(DiskType::Fixed, 2040 * GIB + 512).effective_size();
    assert!(fixed.is_err(), "the limit holds for fixed images too");
}

/// An empty dynamic image (4 MiB disk, 512 KiB blocks) whose trailing
/// footer lies at sector `footer_sector` of a file that is otherwise holes.
fn image_with_footer_at(footer_sector: u64) -> SparseFile {
    let bytes = VhdBuilder::dynamic(4 * MIB).block_size(512 * 1024).build();
    let footer = bytes[bytes.len() - 512..].to_vec();
    let metadata = bytes[..bytes.len() - 512].to_vec();
    let at = footer_sector * 512;
    SparseFile::with(at + 512, vec![(0, metadata), (at, footer)])
}

#[test]
fn a_block_is_never_allocated_where_a_bat_entry_cannot_point() {
    // The next block would start at sector 0xFFFFFFFF, the value that
    // means "unallocated": the write is refused and names the limit.
    let mut img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(image_with_footer_at(0xFFFF_FFFF)), "edge.vhd")
        .expect("an image ending at 2 TiB opens");
    let err = img
        .write_at(0, &[1; 512])
        .expect_err("no block can start at sector 0xFFFFFFFF");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("2 TiB"), "{err}");
    // One sector lower the block fits, and reads back.
    let mut img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(image_with_footer_at(0xFFFF_FFFE)), "edge.vhd")
        .expect("opens");
    img.write_at(0, &[7; 512])
        .expect("a block at sector 0xFFFFFFFE is addressable");
    let mut back = [0u8; 512];
    img.read_at(0, &mut back).expect("reads");
    assert_eq!(back, [7; 512]);
    assert_eq!(img.bat().expect("dynamic")[0], 0xFFFF_FFFE);
}

#[test]
fn the_model_never_drops_its_base_layer() {
    let mut disk = vhdref::model::Disk::new(4096);
    disk.write(512, &[9; 512]);
    disk.pop_child();
    assert_eq!(disk.depth(), 1, "a disk always has its base");
    assert_eq!(disk.read(512, 512), vec![9; 512]);
    // With a child, dropping it keeps what the base reads as.
    disk.push_child();
    disk.write(0, &[3; 512]);
    disk.pop_child();
    assert_eq!(disk.depth(), 1);
    assert_eq!(disk.read(0, 1024), [vec![0; 512], vec![9; 512]].concat());
}

/// The first byte of the bitmap of block 0 of a dynamic or differencing
/// image held in `bytes`.
fn first_bitmap_byte(bytes: &[u8]) -> u8 {
    let be64 = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
    let header = usize::try_from(be64(bytes.len() - 512 + 16)).unwrap();
    let table = usize::try_from(be64(header + 16)).unwrap();
    let entry = u32::from_be_bytes(bytes[table..table + 4].try_into().unwrap());
    bytes[usize::try_from(u64::from(entry) * 512).unwrap()]
}

#[test]
fn a_childs_write_that_ends_on_a_group_boundary_still_copies_up_its_first_group() {
    // Sectors 3 to 7 written: the group of sectors 0 to 7 is completed
    // from the parent, so the bitmap holds whole 4 KiB groups (what
    // libvhdi needs); the copied sectors read as the parent's.
    for (offset, len) in [(3 * 512, 5 * 512), (3 * 512, 13 * 512), (0, 8 * 512)] {
        let parent_mem = MemStorage::new();
        let mut parent = CreateOptions::new(DiskType::Fixed, MIB)
            .create_in(Box::new(parent_mem.clone()), "parent.vhd", None)
            .unwrap();
        let old: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 + 1).collect();
        parent.write_at(0, &old).unwrap();
        parent.close().unwrap();
        let parent = OpenOptions::new()
            .open_storage(Box::new(parent_mem), "parent.vhd")
            .unwrap();
        let child_mem = MemStorage::new();
        let mut child = CreateOptions::new(DiskType::Differencing, 0)
            .create_in(
                Box::new(child_mem.clone()),
                "child.vhd",
                Some((parent, "parent.vhd")),
            )
            .unwrap();
        child.write_at(offset, &vec![0xEE; len]).unwrap();
        let mut back = vec![0u8; 16 * 512];
        child.read_at(0, &mut back).unwrap();
        child.close().unwrap();
        let mut expected = old[..16 * 512].to_vec();
        expected[offset as usize..offset as usize + len].fill(0xEE);
        assert!(back == expected, "write of {len} at {offset} reads back");
        assert_eq!(
            first_bitmap_byte(&child_mem.to_vec()),
            0xFF,
            "write of {len} at {offset}: sectors 0 to 7 are the child's"
        );
    }
}

/// A dynamic image in memory, 8 blocks of 512 KiB, with data written in
/// blocks 2 and 3 (in that order, so they lie next to each other in the
/// file) and in block 6.
fn three_blocks_written() -> vhdref::Image {
    let bs = 512 * KIB;
    let mut img = CreateOptions::new(DiskType::Dynamic, 8 * bs)
        .block_size(512 * 1024)
        .create_in(Box::new(MemStorage::new()), "d.vhd", None)
        .unwrap();
    img.write_at(2 * bs, &vec![1; usize::try_from(2 * bs).unwrap()])
        .unwrap();
    img.write_at(6 * bs, &[2; 512]).unwrap();
    img
}

#[test]
fn the_map_merges_neighbours_alike_and_only_those() {
    // Holes next to each other merge across blocks; blocks 2 and 3 do not,
    // as a bitmap lies between their data in the file.
    let bs = 512 * KIB;
    let mut img = three_blocks_written();
    let map = img.map().unwrap();
    let shape: Vec<(u64, u64, bool, Option<u64>)> = map
        .iter()
        .map(|e| (e.offset, e.length, e.data, e.file_offset))
        .collect();
    // The n-th block allocated: its data on a 4 KiB boundary, the first
    // at 0x1000 (after the BAT ending at 0x800, padding and the bitmap
    // sector), then every block span rounded up to 4 KiB.
    let block = |n: u64| Some(4096 + n * (bs + 4096));
    assert_eq!(
        shape,
        [
            (0, 2 * bs, false, None),
            (2 * bs, bs, true, block(0)),
            (3 * bs, bs, true, block(1)),
            (4 * bs, 2 * bs, false, None),
            (6 * bs, 512, true, block(2)),
            (6 * bs + 512, 2 * bs - 512, false, None),
        ],
        "{map:?}"
    );
}

#[test]
fn next_data_jumps_to_the_first_allocated_block_and_says_none_past_the_last() {
    let bs = 512 * KIB;
    let mut img = three_blocks_written();
    assert_eq!(img.next_data(0).unwrap(), Some(2 * bs));
    assert_eq!(img.next_data(2 * bs + 7).unwrap(), Some(2 * bs + 7));
    assert_eq!(img.next_data(4 * bs).unwrap(), Some(6 * bs));
    assert_eq!(img.next_data(7 * bs).unwrap(), None);
}

#[test]
fn locator_data_space_is_bytes_when_it_holds_the_data_and_sectors_otherwise() {
    use vhdref::format::LocatorEntry;
    let entry = |space: u32, length: u32| LocatorEntry {
        platform_code: u32::from_be_bytes(*b"W2ru"),
        platform_data_space: space,
        platform_data_length: length,
        platform_data_offset: 1536,
    };
    // (space, length) -> bytes of room.
    for (space, length, room) in [
        (1, 20, 512),   // one sector, as the spec counts
        (20, 20, 20),   // bytes, as Hyper-V stores
        (512, 20, 512), // both readings fit: the smaller
        (0, 20, 0),
        (0, 0, 0),
        (3, 1000, 1536),
    ] {
        assert_eq!(
            entry(space, length).data_space_bytes(),
            room,
            "space {space}, length {length}"
        );
    }
}

#[test]
fn a_created_image_is_stamped_with_the_time_it_was_made() {
    let before = vhdref::Timestamp::now();
    let img = CreateOptions::new(DiskType::Dynamic, MIB)
        .create_in(Box::new(MemStorage::new()), "d.vhd", None)
        .unwrap();
    let stamp = img.footer().time_stamp;
    let after = vhdref::Timestamp::now();
    assert!(
        before <= stamp && stamp <= after,
        "{stamp:?} not between {before:?} and {after:?}"
    );
    // And now is now: after 2026-01-01 (820,540,800 s after 2000-01-01).
    assert!(stamp.0 > 820_540_800, "{stamp:?}");
}

#[test]
fn the_chs_size_rule_refuses_a_size_past_its_largest_geometry_and_names_that_size() {
    // 65535 x 16 x 255 sectors of 512 bytes: 136,899,993,600 bytes.
    let largest = 65535 * 16 * 255 * 512;
    for (size, fits) in [(largest, true), (largest + 1, false), (200 * GIB, false)] {
        let made = CreateOptions::new(DiskType::Dynamic, size)
            .size_rule(vhdref::SizeRule::Chs)
            .create_in(Box::new(MemStorage::new()), "d.vhd", None);
        match (made, fits) {
            (Ok(img), true) => assert_eq!(img.size(), largest),
            (Err(vhdref::Error::SizeLimit { limit, .. }), false) => {
                assert_eq!(limit, largest, "size {size}");
            }
            (other, _) => panic!("size {size}: {:?}", other.map(|i| i.size())),
        }
    }
}
