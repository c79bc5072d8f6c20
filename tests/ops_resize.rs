//! `vhdref::ops::resize`: dynamic images grow (the BAT in place, or the
//! first blocks moved to make room for it) and shrink over unallocated
//! blocks; fixed images grow and shrink over zeros; geometry follows the
//! image's size rule; a differencing child is refused. Every cut, tear,
//! power loss and I/O fault leaves the old size or the new with each
//! sector old or new (`tests/support`).

mod builder;
mod support;

use builder::{Bits, VhdBuilder};
use support::{Contents, Covered, KIB, MIB, Parents, SECTOR, pattern, prove, read_disk, rules_of};
use vhdref::ops::resize::{ResizeOptions, resize_image};
use vhdref::storage::{FaultStorage, MemStorage};
use vhdref::{CreateOptions, DiskType, ErrorKind, Geometry, Image, OpenOptions, SizeRule};

fn open_rw(bytes: &[u8]) -> (MemStorage, Image) {
    let mem = MemStorage::from_bytes(bytes.to_vec());
    let img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    (mem, img)
}

fn resized(disk: &[u8], size: u64) -> Vec<u8> {
    let mut v = disk.to_vec();
    v.resize(size as usize, 0);
    v
}

/// The resized image has no finding at all and reads as `want`.
fn assert_clean_and_reads(mem: &MemStorage, want: &[u8]) {
    let rules = rules_of(mem.to_vec());
    assert!(rules.is_empty(), "{rules:?}");
    assert!(read_disk(mem.to_vec(), &Parents::none()) == want);
}

/// Proves a resize of the image `bytes` (holding `disk`, no parent) to
/// `size` with `options` under every cut, tear, power loss and fault.
fn prove_resize(
    what: &str,
    bytes: &[u8],
    disk: &[u8],
    size: u64,
    options: ResizeOptions,
) -> Covered {
    prove(
        what,
        bytes,
        &Parents::none(),
        &Contents {
            old: disk.to_vec(),
            new: resized(disk, size),
        },
        &resize_op(options),
    )
}

fn resize_op(options: ResizeOptions) -> impl Fn(&FaultStorage, &Parents) -> bool {
    move |storage, _| {
        let Ok(mut img) = OpenOptions::new()
            .write(true)
            .open_storage(Box::new(storage.clone()), "image.vhd")
        else {
            return false;
        };
        resize_image(&mut img, &options).is_ok()
    }
}

/// A dynamic image made by vhdref with data in some blocks.
fn dynamic(size: u64, block: u32, writes: &[(u64, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
    let mem = MemStorage::new();
    let mut img = CreateOptions::new(DiskType::Dynamic, size)
        .block_size(block)
        .create_in(Box::new(mem.clone()), "image.vhd", None)
        .unwrap();
    let mut disk = vec![0u8; size as usize];
    for (offset, data) in writes {
        img.write_at(*offset, data).unwrap();
        disk[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
    }
    img.close().unwrap();
    (mem.to_vec(), disk)
}

#[test]
fn a_dynamic_image_grows_with_its_table_in_the_same_sector() {
    let (bytes, disk) = dynamic(
        4 * MIB,
        512 * 1024,
        &[(10, pattern(5000, 1)), (4 * MIB - 700, pattern(700, 2))],
    );
    let (mem, mut img) = open_rw(&bytes);
    let report = resize_image(&mut img, &ResizeOptions::new(10 * MIB)).unwrap();
    img.close().unwrap();
    assert_eq!((report.old_size, report.new_size), (4 * MIB, 10 * MIB));
    assert_eq!(report.table_grown, Some((8, 20)));
    assert_eq!(report.blocks_moved, 0, "20 entries fit the table's sector");
    assert_eq!(report.size_rule, "exact");
    let g = Geometry::for_size(10 * MIB);
    assert_eq!(
        report.new_geometry,
        [
            u32::from(g.cylinders),
            u32::from(g.heads),
            u32::from(g.sectors_per_track)
        ]
    );
    let img = OpenOptions::new()
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    assert_eq!(img.footer().original_size, 4 * MIB, "original_size stays");
    assert_eq!(img.footer().disk_geometry, g);
    assert_eq!(img.dyn_header().unwrap().max_table_entries, 20);
    drop(img);
    assert_clean_and_reads(&mem, &resized(&disk, 10 * MIB));
    let covered = prove_resize(
        "grow in place",
        &bytes,
        &disk,
        10 * MIB,
        ResizeOptions::new(10 * MIB),
    );
    assert!(covered.states > 20, "{covered:?}");
}

#[test]
fn a_dynamic_image_grows_by_moving_its_first_blocks_after_the_last() {
    // 4 KiB blocks: 8 entries now, 1500 after, so the table needs twelve
    // sectors and the two blocks right after it must move.
    let bs = 4096u32;
    let builder = VhdBuilder::dynamic(8 * 4096)
        .block_size(bs)
        .block(0, Bits::All, &pattern(4096, 1))
        .block(1, Bits::Sectors(vec![0]), &pattern(512, 2))
        .block(5, Bits::All, &pattern(4096, 3));
    let bytes = builder.build();
    let disk = builder.expected(&[]);
    let new_size = 1500 * 4096;
    let (mem, mut img) = open_rw(&bytes);
    let report = resize_image(&mut img, &ResizeOptions::new(new_size)).unwrap();
    img.close().unwrap();
    assert_eq!(report.table_grown, Some((8, 1500)));
    assert_eq!(report.blocks_moved, 2, "{report:?}");
    assert_clean_and_reads(&mem, &resized(&disk, new_size));
    let covered = prove_resize(
        "grow, blocks moved",
        &bytes,
        &disk,
        new_size,
        ResizeOptions::new(new_size),
    );
    assert!(covered.writes > 6, "{covered:?}");
}

#[test]
fn growing_clears_what_lies_past_the_old_end_of_the_last_block() {
    // 2.5 blocks of 4 KiB; block 2 has every bit set and data in every
    // sector, also past the end (BMP-PAST-END): the new sectors must read
    // zeros in every reader, so the bits go and the data too.
    let bs = 4096u32;
    let builder = VhdBuilder::dynamic(10 * 1024)
        .block_size(bs)
        .block(0, Bits::All, &pattern(4096, 1))
        .block(2, Bits::All, &pattern(4096, 2));
    let bytes = builder.build();
    let disk = builder.expected(&[]);
    assert!(rules_of(bytes.clone()).contains(&"BMP-PAST-END"));
    let new_size = 64 * 1024;
    let (mem, mut img) = open_rw(&bytes);
    resize_image(&mut img, &ResizeOptions::new(new_size)).unwrap();
    img.close().unwrap();
    let after = mem.to_vec();
    assert!(
        rules_of(after.clone()).is_empty(),
        "{:?}",
        rules_of(after.clone())
    );
    assert!(read_disk(after, &Parents::none()) == resized(&disk, new_size));
    prove_resize(
        "grow over bits past the end",
        &bytes,
        &disk,
        new_size,
        ResizeOptions::new(new_size),
    );
}

#[test]
fn a_dynamic_image_shrinks_only_over_unallocated_blocks() {
    let bs = 512 * 1024u32;
    let (bytes, disk) = dynamic(
        4 * MIB,
        bs,
        &[(100, pattern(3000, 1)), (3 * MIB, pattern(10, 2))],
    );
    // Without --shrink: refused.
    let (_, mut img) = open_rw(&bytes);
    let e = resize_image(&mut img, &ResizeOptions::new(2 * MIB)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("--shrink"), "{e}");
    // Over the allocated block at 3 MiB: refused, naming it.
    let e = resize_image(&mut img, &ResizeOptions::new(2 * MIB).shrink(true)).unwrap_err();
    assert!(
        e.to_string()
            .contains("block 6 (guest bytes 3145728..3670016)"),
        "{e}"
    );
    drop(img);
    // To 3 MiB + 512: the block holding the new end keeps its data.
    let new_size = 3 * MIB + 512;
    let (mem, mut img) = open_rw(&bytes);
    resize_image(&mut img, &ResizeOptions::new(new_size).shrink(true)).unwrap();
    img.close().unwrap();
    assert!(read_disk(mem.to_vec(), &Parents::none()) == resized(&disk, new_size));
    assert!(
        rules_of(mem.to_vec()).is_empty(),
        "{:?}",
        rules_of(mem.to_vec())
    );
    prove_resize(
        "shrink",
        &bytes,
        &disk,
        new_size,
        ResizeOptions::new(new_size).shrink(true),
    );
}

#[test]
fn a_shrink_that_cuts_data_inside_the_last_block_is_refused() {
    let (bytes, _) = dynamic(MIB, 512 * 1024, &[(MIB - 100, pattern(100, 1))]);
    let (_, mut img) = open_rw(&bytes);
    let e = resize_image(&mut img, &ResizeOptions::new(MIB - 4096).shrink(true)).unwrap_err();
    assert!(e.to_string().contains("guest byte 1048476"), "{e}");
}

fn fixed(size: u64, data: &[(u64, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
    let mem = MemStorage::new();
    let mut img = CreateOptions::new(DiskType::Fixed, size)
        .create_in(Box::new(mem.clone()), "image.vhd", None)
        .unwrap();
    let mut disk = vec![0u8; size as usize];
    for (offset, d) in data {
        img.write_at(*offset, d).unwrap();
        disk[*offset as usize..*offset as usize + d.len()].copy_from_slice(d);
    }
    img.close().unwrap();
    (mem.to_vec(), disk)
}

#[test]
fn a_fixed_image_grows_and_its_footer_moves() {
    let (bytes, disk) = fixed(MIB, &[(0, pattern(4096, 1)), (MIB - 512, pattern(512, 2))]);
    let (mem, mut img) = open_rw(&bytes);
    let report = resize_image(&mut img, &ResizeOptions::new(3 * MIB)).unwrap();
    img.close().unwrap();
    assert_eq!(report.file_size_after, 3 * MIB + 512);
    assert_eq!(mem.to_vec().len() as u64, 3 * MIB + 512);
    assert_clean_and_reads(&mem, &resized(&disk, 3 * MIB));
    let covered = prove_resize(
        "fixed grow",
        &bytes,
        &disk,
        3 * MIB,
        ResizeOptions::new(3 * MIB),
    );
    assert!(covered.syncs >= 3, "{covered:?}");
}

#[test]
fn a_fixed_image_shrinks_only_over_zeros() {
    let (bytes, disk) = fixed(2 * MIB, &[(MIB - 10, pattern(10, 1))]);
    let (_, mut img) = open_rw(&bytes);
    let e = resize_image(&mut img, &ResizeOptions::new(MIB - 4096).shrink(true)).unwrap_err();
    assert!(e.to_string().contains("guest byte 1048566"), "{e}");
    drop(img);
    let (mem, mut img) = open_rw(&bytes);
    resize_image(&mut img, &ResizeOptions::new(MIB).shrink(true)).unwrap();
    img.close().unwrap();
    assert_eq!(mem.to_vec().len() as u64, MIB + 512);
    assert!(rules_of(mem.to_vec()).is_empty());
    assert!(read_disk(mem.to_vec(), &Parents::none()) == resized(&disk, MIB));
    prove_resize(
        "fixed shrink",
        &bytes,
        &disk,
        MIB,
        ResizeOptions::new(MIB).shrink(true),
    );
}

#[test]
fn fixed_images_with_a_511_byte_footer_or_slack_resize_too() {
    for (what, builder) in [
        (
            "511-byte footer",
            VhdBuilder::fixed(64 * KIB)
                .data(&pattern(64 * 1024, 1))
                .corrupt(|b| {
                    b.pop();
                }),
        ),
        (
            "slack",
            VhdBuilder::fixed(64 * KIB)
                .data(&pattern(64 * 1024, 2))
                .fixed_slack(1000),
        ),
    ] {
        let bytes = builder.build();
        let disk = builder.expected(&[]);
        for new_size in [128 * KIB, 64 * KIB + 512, 60 * KIB] {
            let contents = Contents {
                old: disk.clone(),
                new: resized(&disk, new_size),
            };
            if new_size < 64 * KIB {
                // Over data: refused, nothing written.
                let (mem, mut img) = open_rw(&bytes);
                assert!(
                    resize_image(&mut img, &ResizeOptions::new(new_size).shrink(true)).is_err()
                );
                drop(img);
                assert!(mem.to_vec() == bytes, "{what}: a refused shrink wrote");
                continue;
            }
            prove(
                &format!("{what} to {new_size}"),
                &bytes,
                &Parents::none(),
                &contents,
                &resize_op(ResizeOptions::new(new_size)),
            );
        }
    }
}

#[test]
fn a_differencing_image_cannot_change_size_apart_from_its_parent() {
    let parent = MemStorage::new();
    CreateOptions::new(DiskType::Dynamic, MIB)
        .create_in(Box::new(parent.clone()), "parent.vhd", None)
        .unwrap()
        .close()
        .unwrap();
    let child = MemStorage::new();
    let parent_img = OpenOptions::new()
        .open_storage(Box::new(parent), "parent.vhd")
        .unwrap();
    let mut img = CreateOptions::new(DiskType::Differencing, 0)
        .create_in(
            Box::new(child.clone()),
            "child.vhd",
            Some((parent_img, "parent.vhd")),
        )
        .unwrap();
    let before = child.to_vec();
    let e = resize_image(&mut img, &ResizeOptions::new(2 * MIB)).unwrap_err();
    assert!(e.to_string().contains("size of its parent"), "{e}");
    drop(img);
    assert!(child.to_vec() == before);
}

#[test]
fn an_image_made_by_the_chs_rule_keeps_it() {
    // Virtual PC's rule: the geometry describes the size exactly; the new
    // size is rounded up to the next size a geometry describes.
    let (c, h, s) = builder::chs(4 * MIB / SECTOR);
    let size = u64::from(c) * u64::from(h) * u64::from(s) * SECTOR;
    let builder = VhdBuilder::dynamic(size)
        .creator(*b"vpc ")
        .geometry(c, h, s)
        .block(0, Bits::All, &pattern(2 * MIB as usize, 1));
    let bytes = builder.build();
    let (mem, mut img) = open_rw(&bytes);
    let report = resize_image(&mut img, &ResizeOptions::new(10 * MIB)).unwrap();
    img.close().unwrap();
    assert_eq!(report.size_rule, "chs");
    assert!(report.size_rule_inferred);
    let (want, geometry) = vhdref::format::geometry::chs_rounded(10 * MIB).unwrap();
    assert_eq!(report.new_size, want);
    assert!(want > 10 * MIB, "10 MiB is not a CHS size");
    let img = OpenOptions::new()
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    assert_eq!(img.footer().disk_geometry, geometry);
    assert_eq!(img.footer().disk_geometry.capacity(), want);
    drop(img);
    assert!(
        rules_of(mem.to_vec()).is_empty(),
        "{:?}",
        rules_of(mem.to_vec())
    );
    // Asked for the exact rule instead: the size as given.
    let (_, mut img) = open_rw(&bytes);
    let report = resize_image(
        &mut img,
        &ResizeOptions::new(10 * MIB).size_rule(SizeRule::Exact),
    )
    .unwrap();
    assert_eq!((report.new_size, report.size_rule), (10 * MIB, "exact"));
}

#[test]
fn resize_works_with_block_sizes_from_512_bytes_up() {
    for bs in [512u32, 2048, 64 * 1024] {
        let size = 16 * u64::from(bs);
        let mut builder = VhdBuilder::dynamic(size).block_size(bs);
        for i in [0u32, 1, 7, 15] {
            builder = builder.block(i, Bits::All, &pattern(bs as usize, i as u8));
        }
        let bytes = builder.build();
        let disk = builder.expected(&[]);
        let new_size = 200 * u64::from(bs);
        prove(
            &format!("grow {bs}-byte blocks"),
            &bytes,
            &Parents::none(),
            &Contents {
                old: disk.clone(),
                new: resized(&disk, new_size),
            },
            &resize_op(ResizeOptions::new(new_size)),
        );
    }
}

#[test]
fn resize_works_with_256_mib_blocks_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.vhd");
    let bs = 256 * MIB;
    let mut img = CreateOptions::new(DiskType::Dynamic, bs)
        .block_size(bs as u32)
        .create(&path)
        .unwrap();
    img.write_at(bs - 4096, &pattern(4096, 1)).unwrap();
    img.close().unwrap();
    let report =
        vhdref::ops::resize(&path, OpenOptions::new(), &ResizeOptions::new(3 * bs)).unwrap();
    assert_eq!(report.new_size, 3 * bs);
    let mut img = Image::open(&path).unwrap();
    assert_eq!(img.size(), 3 * bs);
    let mut buf = vec![0u8; 8192];
    img.read_at(bs - 4096, &mut buf).unwrap();
    assert!(buf[..4096] == pattern(4096, 1)[..] && buf[4096..].iter().all(|&b| b == 0));
    assert!(
        vhdref::check::check(&path, &vhdref::check::CheckOptions::new())
            .findings
            .is_empty()
    );
}

#[test]
fn a_shrink_shortens_the_table_and_gives_its_space_back() {
    // 2000 entries of 4 KiB blocks shrunk to 10: the table's freed tail is
    // longer than a block span, so the last block moves into it.
    let bs = 4096u32;
    let builder = VhdBuilder::dynamic(2000 * 4096)
        .block_size(bs)
        .block(0, Bits::All, &pattern(4096, 1))
        .block(3, Bits::All, &pattern(4096, 2))
        .block(9, Bits::All, &pattern(4096, 3));
    let bytes = builder.build();
    let disk = builder.expected(&[]);
    let new_size = 10 * 4096;
    let (mem, mut img) = open_rw(&bytes);
    let report = resize_image(&mut img, &ResizeOptions::new(new_size).shrink(true)).unwrap();
    img.close().unwrap();
    assert!(report.blocks_moved >= 1, "{report:?}");
    assert!(report.file_size_after < report.file_size_before);
    let img = OpenOptions::new()
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    assert_eq!(img.dyn_header().unwrap().max_table_entries, 10);
    drop(img);
    assert_clean_and_reads(&mem, &resized(&disk, new_size));
    prove_resize(
        "shrink a long table",
        &bytes,
        &disk,
        new_size,
        ResizeOptions::new(new_size).shrink(true),
    );
}
