//! `vhdref::ops::compact`: zero blocks released (but not a child's zeros
//! over its parent's data), leaks dropped, blocks moved down, the file
//! cut; the contents never change, at any cut, tear, power loss or I/O
//! fault (`tests/support`).

mod builder;
mod support;

use builder::{Bits, VhdBuilder};
use support::{Contents, KIB, MIB, Parents, SECTOR, pattern, prove, read_disk, rules_of};
use vhdref::model::Disk;
use vhdref::ops::compact::compact_image;
use vhdref::storage::{FaultStorage, MemStorage};
use vhdref::{CreateOptions, DiskType, Image, OpenOptions};

const BLOCK: u32 = 512 * 1024;
const SIZE: u64 = 4 * MIB;

fn disk_of(model: &Disk) -> Vec<u8> {
    model.read(0, model.size())
}

/// A dynamic image of 8 blocks: data in blocks 0, 2 and 6, zeros written
/// into blocks 1 and 4 (allocated, reading as zeros), and a block that a
/// killed writer appended after them and never entered in the BAT (a
/// leak). Returns its bytes and what it reads as.
fn dynamic_with_holes() -> (Vec<u8>, Vec<u8>) {
    let mem = MemStorage::new();
    let mut model = Disk::new(SIZE);
    let mut img = CreateOptions::new(DiskType::Dynamic, SIZE)
        .block_size(BLOCK)
        .create_in(Box::new(mem.clone()), "image.vhd", None)
        .unwrap();
    let b = u64::from(BLOCK);
    for (offset, data) in [
        (100, pattern(3000, 1)),
        (b, vec![0u8; 8192]),
        (2 * b + 7 * SECTOR, pattern(70_000, 2)),
        (4 * b + 3 * SECTOR, vec![0u8; 512]),
        (6 * b, pattern(b as usize, 3)),
    ] {
        img.write_at(offset, &data).unwrap();
        model.write(offset, &data);
    }
    img.close().unwrap();
    // A killed session: its block reaches the file, its BAT entry never.
    let mut img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    img.write_at(7 * b, &pattern(4096, 9)).unwrap();
    std::mem::forget(img);
    (mem.to_vec(), disk_of(&model))
}

fn compact_in(storage: &FaultStorage, parents: &Parents) -> bool {
    let Ok(mut img) = support::open_with_parent(Box::new(storage.clone()), parents, true) else {
        return false;
    };
    compact_image(&mut img).is_ok()
}

#[test]
fn compact_releases_zero_blocks_drops_the_leak_and_cuts_the_file() {
    let (bytes, disk) = dynamic_with_holes();
    assert_eq!(
        rules_of(bytes.clone()),
        ["FILE-LEAK"],
        "the fixture leaks one block"
    );
    let before_len = bytes.len() as u64;
    let mem = MemStorage::from_bytes(bytes);
    let mut img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    let report = compact_image(&mut img).unwrap();
    img.close().unwrap();
    assert_eq!(report.blocks_released, 2, "{report:?}");
    assert_eq!(report.zero_blocks_kept, 0);
    let span = u64::from(BLOCK) + 512;
    // Block data lies on 4 KiB boundaries: 1536 bytes of padding before
    // the first block (the BAT ends at 0x800), 3584 before each other.
    let padding = |blocks: u64| 1536 + (blocks - 1) * 3584;
    assert_eq!(
        report.leaked_bytes,
        span + padding(6),
        "one leaked block, and the padding before the six blocks"
    );
    // Left: the footer copy, header, BAT (one sector), three blocks with
    // their padding, footer.
    let want_len = 512 + 1024 + 512 + padding(3) + 3 * span + 512;
    assert_eq!(report.file_size_after, want_len, "{report:?}");
    assert_eq!(report.bytes_reclaimed, before_len - want_len);
    assert_eq!(mem.to_vec().len() as u64, want_len);
    assert!(
        rules_of(mem.to_vec()).is_empty(),
        "{:?}",
        rules_of(mem.to_vec())
    );
    assert!(
        read_disk(mem.to_vec(), &Parents::none()) == disk,
        "contents changed"
    );
    let img = OpenOptions::new()
        .open_storage(Box::new(mem), "image.vhd")
        .unwrap();
    assert_eq!(img.block_counts(), Some((8, 3)));
}

#[test]
fn compacting_a_compact_image_changes_nothing() {
    let (bytes, _) = dynamic_with_holes();
    let mem = MemStorage::from_bytes(bytes);
    let mut img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    compact_image(&mut img).unwrap();
    let once = mem.to_vec();
    let report = compact_image(&mut img).unwrap();
    assert_eq!(report.bytes_reclaimed, 0);
    assert_eq!((report.blocks_released, report.blocks_moved), (0, 0));
    assert!(mem.to_vec() == once, "a second compact wrote something");
}

#[test]
fn compact_survives_a_fault_at_every_point() {
    let (bytes, disk) = dynamic_with_holes();
    let covered = prove(
        "compact",
        &bytes,
        &Parents::none(),
        &Contents::unchanged(disk),
        &compact_in,
    );
    assert!(covered.writes >= 5 && covered.syncs >= 4, "{covered:?}");
    assert!(covered.set_lens == 1, "the file is cut once: {covered:?}");
    assert!(covered.states > 60, "{covered:?}");
}

/// A parent with data under blocks 0 and 1 and zeros under block 2; a
/// child with zeros written over blocks 1 and 2 and data in block 3.
fn child_with_zero_blocks() -> (Vec<u8>, Parents, Vec<u8>) {
    let b = u64::from(BLOCK);
    let parent_mem = MemStorage::new();
    let mut model = Disk::new(SIZE);
    let mut parent = CreateOptions::new(DiskType::Dynamic, SIZE)
        .block_size(BLOCK)
        .create_in(Box::new(parent_mem.clone()), "parent.vhd", None)
        .unwrap();
    let data = pattern(2 * b as usize, 5);
    parent.write_at(0, &data).unwrap();
    model.write(0, &data);
    parent.close().unwrap();
    let parents = Parents::none().with("parent.vhd", parent_mem.to_vec());
    let child_mem = MemStorage::new();
    let mut child = CreateOptions::new(DiskType::Differencing, 0)
        .block_size(BLOCK)
        .create_in(
            Box::new(child_mem.clone()),
            "image.vhd",
            Some((parents.open_named("parent.vhd"), "parent.vhd")),
        )
        .unwrap();
    model.push_child();
    for (offset, data) in [
        (b + 4096, vec![0u8; 4096]),
        (2 * b, vec![0u8; 65536]),
        (3 * b + 5, pattern(1000, 6)),
    ] {
        child.write_at(offset, &data).unwrap();
        model.write(offset, &data);
    }
    child.close().unwrap();
    (child_mem.to_vec(), parents, disk_of(&model))
}

#[test]
fn compact_keeps_a_childs_zero_block_over_parent_data() {
    let (bytes, parents, disk) = child_with_zero_blocks();
    let mem = MemStorage::from_bytes(bytes);
    let mut img = support::open_with_parent(Box::new(mem.clone()), &parents, true).unwrap();
    let report = compact_image(&mut img).unwrap();
    img.close().unwrap();
    assert_eq!(
        report.blocks_released, 1,
        "block 2 (zeros over zeros): {report:?}"
    );
    assert_eq!(
        report.zero_blocks_kept, 1,
        "block 1 hides parent data: {report:?}"
    );
    let img = support::open_with_parent(Box::new(mem.clone()), &parents, false).unwrap();
    let bat = img.bat().unwrap().to_vec();
    assert_ne!(bat[1], vhdref::format::UNALLOCATED, "block 1 was released");
    assert_eq!(bat[2], vhdref::format::UNALLOCATED, "block 2 was kept");
    drop(img);
    assert!(
        read_disk(mem.to_vec(), &parents) == disk,
        "contents changed"
    );
}

#[test]
fn compact_of_a_child_survives_a_fault_at_every_point() {
    let (bytes, parents, disk) = child_with_zero_blocks();
    let covered = prove(
        "compact child",
        &bytes,
        &parents,
        &Contents::unchanged(disk),
        &compact_in,
    );
    assert!(covered.states > 30, "{covered:?}");
}

#[test]
fn compact_keeps_the_4k_data_alignment_of_windows_layouts() {
    // Blocks whose data starts at multiples of 4 KiB, with gaps, as some
    // Windows writers lay them out; block 1 holds only zeros.
    let bs = 64 * 1024;
    let mut sectors_3_and_4 = vec![0u8; 3 * 512];
    sectors_3_and_4.extend(pattern(1024, 2));
    let builder = VhdBuilder::dynamic(6 * u64::from(bs))
        .block_size(bs)
        .data_alignment(4096)
        .block(0, Bits::All, &pattern(bs as usize, 1))
        .block(1, Bits::All, &[])
        .block(2, Bits::Sectors(vec![3, 4]), &sectors_3_and_4)
        .block(5, Bits::All, &pattern(bs as usize, 3));
    let bytes = builder.build();
    let disk = builder.expected(&[]);
    assert!(
        rules_of(bytes.clone()).is_empty(),
        "{:?}",
        rules_of(bytes.clone())
    );
    let mem = MemStorage::from_bytes(bytes.clone());
    let mut img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    let report = compact_image(&mut img).unwrap();
    assert_eq!(report.blocks_released, 1);
    assert_eq!(report.blocks_moved, 1, "block 5 moves into block 1's place");
    for (i, &e) in img.bat().unwrap().iter().enumerate() {
        if e != vhdref::format::UNALLOCATED {
            assert_eq!(
                (u64::from(e) * 512 + 512) % 4096,
                0,
                "block {i} data unaligned"
            );
        }
    }
    img.close().unwrap();
    assert!(mem.to_vec().len() < bytes.len());
    assert!(read_disk(mem.to_vec(), &Parents::none()) == disk);
    assert!(
        rules_of(mem.to_vec()).is_empty(),
        "{:?}",
        rules_of(mem.to_vec())
    );
    prove(
        "compact aligned",
        &bytes,
        &Parents::none(),
        &Contents::unchanged(disk),
        &compact_in,
    );
}

#[test]
fn compact_releases_blocks_of_bat_entries_past_the_disk() {
    let bs = 4096u32;
    let builder = VhdBuilder::dynamic(4 * u64::from(bs))
        .block_size(bs)
        .max_table_entries(16)
        .block(0, Bits::All, &pattern(4096, 1))
        .block(2, Bits::All, &pattern(4096, 2));
    let (mut bytes, layout) = builder.build_with_layout();
    // Entry 9, past the disk, points at block 0's copy: append one.
    let footer_at = layout.footer_offset as usize;
    let footer = bytes[footer_at..].to_vec();
    let extra = footer_at as u64;
    bytes.truncate(footer_at);
    bytes.extend(vec![0xAB; 512 + 4096]);
    bytes.extend(footer);
    let entry = u32::try_from(extra / 512).unwrap().to_be_bytes();
    bytes[(layout.bat_offset + 9 * 4) as usize..][..4].copy_from_slice(&entry);
    let disk = builder.expected(&[]);
    assert_eq!(rules_of(bytes.clone()), ["BAT-ENTRY-UNUSED"]);
    let mem = MemStorage::from_bytes(bytes.clone());
    let mut img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    let report = compact_image(&mut img).unwrap();
    img.close().unwrap();
    assert_eq!(report.entries_past_disk_released, 1);
    assert_eq!(report.bytes_reclaimed, 512 + 4096);
    assert!(
        rules_of(mem.to_vec()).is_empty(),
        "{:?}",
        rules_of(mem.to_vec())
    );
    assert!(read_disk(mem.to_vec(), &Parents::none()) == disk);
    prove(
        "compact past the disk",
        &bytes,
        &Parents::none(),
        &Contents::unchanged(disk),
        &compact_in,
    );
}

#[test]
fn compact_works_with_512_byte_blocks() {
    let bs = 512u32;
    let mut builder = VhdBuilder::dynamic(64 * 512).block_size(bs);
    for i in 0..64u32 {
        let data = if i % 3 == 0 {
            vec![0u8; 512]
        } else {
            pattern(512, i as u8)
        };
        if i % 5 != 4 {
            builder = builder.block(i, Bits::All, &data);
        }
    }
    let bytes = builder.build();
    let disk = builder.expected(&[]);
    let covered = prove(
        "compact 512-byte blocks",
        &bytes,
        &Parents::none(),
        &Contents::unchanged(disk),
        &compact_in,
    );
    assert!(covered.writes > 10, "{covered:?}");
}

#[test]
fn compact_works_with_256_mib_blocks_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.vhd");
    let bs = 256 * MIB;
    let mut img = CreateOptions::new(DiskType::Dynamic, 3 * bs)
        .block_size(bs as u32)
        .create(&path)
        .unwrap();
    img.write_at(0, &[0u8; 4096]).unwrap(); // block 0: zeros
    img.write_at(2 * bs + 12_345, &pattern(10_000, 7)).unwrap();
    img.close().unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    let report = vhdref::ops::compact(&path, OpenOptions::new()).unwrap();
    assert_eq!(
        (report.blocks_released, report.blocks_moved),
        (1, 1),
        "{report:?}"
    );
    let after = std::fs::metadata(&path).unwrap().len();
    assert_eq!(before - after, bs + 64 * KIB, "one block span reclaimed");
    let mut img = Image::open(&path).unwrap();
    let mut buf = vec![0u8; 10_000];
    img.read_at(2 * bs + 12_345, &mut buf).unwrap();
    assert!(buf == pattern(10_000, 7));
    assert!(
        vhdref::check::check(&path, &vhdref::check::CheckOptions::new())
            .findings
            .is_empty()
    );
}

#[test]
fn compact_refuses_a_fixed_image() {
    let mem = MemStorage::new();
    let mut img = CreateOptions::new(DiskType::Fixed, MIB)
        .create_in(Box::new(mem), "image.vhd", None)
        .unwrap();
    let e = compact_image(&mut img).unwrap_err();
    assert!(e.to_string().contains("nothing to compact"), "{e}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 6, ..proptest::prelude::ProptestConfig::default() })]

    /// Random writes of data and of zeros, a leak or none: compact keeps
    /// the contents (the model's) under every fault, and leaves no leak.
    #[test]
    fn compact_of_random_images_keeps_every_promise(
        writes in proptest::collection::vec((0u64..SIZE / SECTOR, 1u64..300, proptest::prelude::any::<bool>()), 1..10),
        leak in proptest::prelude::any::<bool>(),
    ) {
        let mem = MemStorage::new();
        let mut model = Disk::new(SIZE);
        let mut img = CreateOptions::new(DiskType::Dynamic, SIZE)
            .block_size(BLOCK)
            .create_in(Box::new(mem.clone()), "image.vhd", None)
            .unwrap();
        for (i, (sector, sectors, zeros)) in writes.into_iter().enumerate() {
            let len = (sectors * SECTOR).min(SIZE - sector * SECTOR) as usize;
            let data = if zeros { vec![0u8; len] } else { pattern(len, i as u8) };
            img.write_at(sector * SECTOR, &data).unwrap();
            model.write(sector * SECTOR, &data);
        }
        img.close().unwrap();
        if leak {
            let mut img = OpenOptions::new().write(true).open_storage(Box::new(mem.clone()), "image.vhd").unwrap();
            let block = (0..SIZE / u64::from(BLOCK)).find(|&b| img.bat().unwrap()[b as usize] == vhdref::format::UNALLOCATED);
            if let Some(b) = block {
                img.write_at(b * u64::from(BLOCK), &pattern(512, 0xEE)).unwrap();
            }
            std::mem::forget(img);
        }
        let bytes = mem.to_vec();
        let disk = disk_of(&model);
        prove("random compact", &bytes, &Parents::none(), &Contents::unchanged(disk), &compact_in);
        let after = FaultStorage::from_bytes(bytes);
        proptest::prop_assert!(compact_in(&after, &Parents::none()));
        proptest::prop_assert!(!rules_of(after.durable()).contains(&"FILE-LEAK"));
    }
}

#[test]
fn compacting_a_parent_keeps_its_children_valid() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    let mut img = CreateOptions::new(DiskType::Dynamic, SIZE)
        .block_size(BLOCK)
        .create(&base)
        .unwrap();
    img.write_at(0, &[0u8; 8192]).unwrap();
    img.write_at(2 * MIB, &pattern(9000, 4)).unwrap();
    img.close().unwrap();
    let child = dir.path().join("child.vhd");
    let mut c = CreateOptions::differencing(&base).create(&child).unwrap();
    c.write_at(MIB, &pattern(700, 5)).unwrap();
    c.close().unwrap();
    let before = support::contents_sha256(&mut Image::open(&child).unwrap());
    let report = vhdref::ops::compact(&base, OpenOptions::new()).unwrap();
    assert_eq!(report.blocks_released, 1);
    let report = vhdref::check::check(&child, &vhdref::check::CheckOptions::new());
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(
        support::contents_sha256(&mut Image::open(&child).unwrap()),
        before
    );
}

#[test]
fn a_trailing_footer_off_a_sector_boundary_is_moved_up_first() {
    // 100 stray bytes before the footer (FILE-TAIL): the footer starts
    // inside a sector. Compact moves it to the next boundary (one write
    // inside one sector), zeroes what it leaves, and goes on.
    let builder = VhdBuilder::dynamic(8 * 4096)
        .block_size(4096)
        .block(0, Bits::All, &pattern(4096, 1))
        .block(5, Bits::All, &[]);
    let (clean, layout) = builder.build_with_layout();
    let at = layout.footer_offset as usize;
    let mut bytes = clean[..at].to_vec();
    bytes.extend(vec![0x3C; 100]);
    bytes.extend(&clean[at..]);
    assert_eq!(rules_of(bytes.clone()), ["FILE-TAIL"]);
    let disk = builder.expected(&[]);
    let mem = MemStorage::from_bytes(bytes.clone());
    let mut img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    compact_image(&mut img).unwrap();
    img.close().unwrap();
    assert!(
        rules_of(mem.to_vec()).is_empty(),
        "{:?}",
        rules_of(mem.to_vec())
    );
    assert_eq!(mem.to_vec().len() % 512, 0);
    prove(
        "compact, footer off a boundary",
        &bytes,
        &Parents::none(),
        &Contents::unchanged(disk),
        &compact_in,
    );
}

#[test]
fn compact_keeps_the_blocks_of_an_image_with_xens_batmap_and_says_so() {
    // Xen's vhd-util keeps a batmap (a bit per block) after the BAT:
    // compact must not release or move blocks under it.
    let (_dir, path) = support::corpus_copy("tap-dynamic.vhd.gz");
    let before = std::fs::read(&path).unwrap();
    let report = vhdref::ops::compact(&path, OpenOptions::new()).unwrap();
    assert!(report.batmap_kept, "{report:?}");
    assert_eq!(report.blocks_released, 0, "{report:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing moved");
}
