//! Rules and errors that the table-driven tests do not reach: entries past
//! the disk, parent time stamps, guest ranges, size limits and arguments.

use vhdref::format::Timestamp;
use vhdref::storage::MemStorage;
use vhdref::{CreateOptions, DiskType, ErrorKind, Image, OpenOptions, SizeRule};

const MIB: u64 = 1024 * 1024;

fn dynamic_in_memory(size: u64) -> (MemStorage, Image) {
    let mem = MemStorage::new();
    let img = CreateOptions::new(DiskType::Dynamic, size)
        .block_size(512 * 1024)
        .create_in(Box::new(mem.clone()), "d.vhd", None)
        .unwrap();
    (mem, img)
}

fn reopen(mem: &MemStorage) -> vhdref::Result<Image> {
    OpenOptions::new().open_storage(Box::new(mem.clone()), "d.vhd")
}

/// Recomputes the checksum of the dynamic header at 512 after an edit.
fn fix_header_checksum(bytes: &mut [u8]) {
    let header = &mut bytes[512..512 + 1024];
    header[36..40].fill(0);
    let sum = !header
        .iter()
        .fold(0u32, |a, b| a.wrapping_add(u32::from(*b)));
    header[36..40].copy_from_slice(&sum.to_be_bytes());
}

fn rules_of(img: &Image) -> Vec<&'static str> {
    img.findings().iter().map(|f| f.rule.id()).collect()
}

#[test]
fn an_allocated_bat_entry_past_the_end_of_the_disk_is_a_checker_warning_and_open_does_not_read_it()
{
    // A 2 MiB disk with 512 KiB blocks has 4 entries; grow the table to 8
    // by hand (the BAT has room: it is padded to a sector) and allocate
    // entry 6 at a block appended before the footer.
    let (mem, img) = dynamic_in_memory(2 * MIB);
    img.close().unwrap();
    let mut bytes = mem.to_vec();
    let header = 512;
    bytes[header + 28..header + 32].copy_from_slice(&8u32.to_be_bytes());
    fix_header_checksum(&mut bytes);
    let footer: Vec<u8> = bytes[bytes.len() - 512..].to_vec();
    let block_at = (bytes.len() - 512) as u32 / 512;
    bytes.truncate(bytes.len() - 512);
    bytes.resize(bytes.len() + 512 + 512 * 1024, 0);
    bytes.extend_from_slice(&footer);
    bytes[1536 + 6 * 4..1536 + 7 * 4].copy_from_slice(&block_at.to_be_bytes());
    let mem = MemStorage::from_bytes(bytes);
    // Open never reads entries past the disk (its time grows with the
    // disk's own blocks, not with max_table_entries) ...
    let img = OpenOptions::new()
        .open_storage(Box::new(mem.clone()), "d.vhd")
        .unwrap();
    assert!(rules_of(&img).is_empty(), "{:?}", rules_of(&img));
    // ... the checker does.
    let report = vhdref::check::check_storage(&mem, "d.vhd", &vhdref::check::CheckOptions::new());
    let rules: Vec<&str> = report
        .findings
        .iter()
        .map(|f| f.finding.rule.id())
        .collect();
    assert_eq!(rules, vec!["BAT-ENTRY-UNUSED"]);
}

#[test]
fn a_clean_dynamic_image_has_no_unused_entry_warning() {
    let (mem, mut img) = dynamic_in_memory(2 * MIB);
    img.write_at(0, &[1; 4096]).unwrap();
    img.close().unwrap();
    assert!(rules_of(&reopen(&mem).unwrap()).is_empty());
}

fn child_over(parent_stamp: Timestamp, recorded: Timestamp) -> Image {
    let parent_mem = MemStorage::new();
    CreateOptions::new(DiskType::Dynamic, MIB)
        .time_stamp(parent_stamp)
        .create_in(Box::new(parent_mem.clone()), "p.vhd", None)
        .unwrap()
        .close()
        .unwrap();
    let parent = OpenOptions::new()
        .open_storage(Box::new(parent_mem.clone()), "p.vhd")
        .unwrap();
    let child_mem = MemStorage::new();
    CreateOptions::new(DiskType::Differencing, 0)
        .create_in(
            Box::new(child_mem.clone()),
            "c.vhd",
            Some((parent, "p.vhd")),
        )
        .unwrap()
        .close()
        .unwrap();
    // Rewrite the recorded parent time stamp (header offset 56) by hand.
    let mut bytes = child_mem.to_vec();
    let header = 512;
    bytes[header + 56..header + 60].copy_from_slice(&recorded.0.to_be_bytes());
    fix_header_checksum(&mut bytes);
    let parent = OpenOptions::new()
        .open_storage(Box::new(parent_mem), "p.vhd")
        .unwrap();
    OpenOptions::new()
        .parent_image(parent)
        .open_storage(Box::new(MemStorage::from_bytes(bytes)), "c.vhd")
        .unwrap()
}

#[test]
fn a_parent_time_stamp_that_matches_nothing_is_a_warning() {
    let img = child_over(Timestamp(1000), Timestamp(2000));
    assert_eq!(rules_of(&img), vec!["PAR-TIMESTAMP"]);
}

#[test]
fn a_parent_time_stamp_equal_to_the_parent_footer_is_clean() {
    let img = child_over(Timestamp(1000), Timestamp(1000));
    assert!(rules_of(&img).is_empty());
}

#[test]
fn reads_and_writes_past_the_end_of_the_disk_are_refused() {
    let (_, mut img) = dynamic_in_memory(MIB);
    let mut buf = [0u8; 2];
    assert_eq!(
        img.read_at(MIB - 1, &mut buf).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    assert_eq!(
        img.write_at(MIB, &[1]).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    assert_eq!(
        img.read_at(u64::MAX, &mut buf).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    img.read_at(MIB - 2, &mut buf).unwrap();
}

#[test]
fn sizes_over_the_limits_are_refused_naming_the_limit() {
    let over = CreateOptions::new(DiskType::Dynamic, 2041 << 30)
        .effective_size()
        .unwrap_err();
    assert!(over.to_string().contains("2040 GiB"), "{over}");
    let chs = CreateOptions::new(DiskType::Fixed, 200 << 30)
        .size_rule(SizeRule::Chs)
        .effective_size()
        .unwrap_err();
    assert!(chs.to_string().contains("65535 x 16 x 255"), "{chs}");
    assert_eq!(
        CreateOptions::new(DiskType::Dynamic, 2040 << 30)
            .effective_size()
            .unwrap(),
        2040 << 30
    );
}

#[test]
fn unusable_create_arguments_are_refused() {
    let mem = || Box::new(MemStorage::new());
    let odd = CreateOptions::new(DiskType::Dynamic, 1000)
        .create_in(mem(), "x", None)
        .unwrap_err();
    assert_eq!(odd.kind(), ErrorKind::InvalidArgument);
    let zero = CreateOptions::new(DiskType::Fixed, 0)
        .create_in(mem(), "x", None)
        .unwrap_err();
    assert_eq!(zero.kind(), ErrorKind::InvalidArgument);
    for bs in [256 * 1024, 3 * 1024 * 1024, 512 * 1024 * 1024] {
        let e = CreateOptions::new(DiskType::Dynamic, MIB)
            .block_size(bs)
            .create_in(mem(), "x", None)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "block size {bs}");
    }
    let orphan = CreateOptions::new(DiskType::Differencing, MIB)
        .create_in(mem(), "x", None)
        .unwrap_err();
    assert_eq!(orphan.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn the_chs_rule_rounds_up_to_what_the_geometry_describes() {
    let img = CreateOptions::new(DiskType::Dynamic, 10 * MIB)
        .size_rule(SizeRule::Chs)
        .create_in(Box::new(MemStorage::new()), "x", None)
        .unwrap();
    // qemu-img create -f vpc 10M writes the same size (spec/peers-survey.md).
    assert_eq!(img.size(), 10_514_432);
    assert_eq!(img.footer().disk_geometry.capacity(), img.size());
}

#[test]
fn a_child_opened_without_its_parent_refuses_what_only_the_parent_can_serve() {
    let parent_mem = MemStorage::new();
    CreateOptions::new(DiskType::Dynamic, MIB)
        .create_in(Box::new(parent_mem.clone()), "p.vhd", None)
        .unwrap()
        .close()
        .unwrap();
    let parent = OpenOptions::new()
        .open_storage(Box::new(parent_mem), "p.vhd")
        .unwrap();
    let child_mem = MemStorage::new();
    let mut child = CreateOptions::new(DiskType::Differencing, 0)
        .create_in(
            Box::new(child_mem.clone()),
            "c.vhd",
            Some((parent, "p.vhd")),
        )
        .unwrap();
    child.write_at(0, &[7; 512]).unwrap();
    child.close().unwrap();
    let mut child = OpenOptions::new()
        .skip_parent(true)
        .open_storage(Box::new(child_mem), "c.vhd")
        .unwrap();
    assert!(child.parent().is_none());
    let mut sector = [0u8; 512];
    child.read_at(0, &mut sector).unwrap();
    assert_eq!(sector, [7; 512], "what the child holds still reads");
    // The child's write copied up the rest of its 4 KiB group; past it,
    // only the parent holds the disk.
    let err = child.read_at(4096, &mut sector).unwrap_err();
    assert_eq!(err.rule().map(vhdref::Rule::id), Some("PAR-NOT-FOUND"));
    let err = child.map().unwrap_err();
    assert_eq!(err.rule().map(vhdref::Rule::id), Some("PAR-NOT-FOUND"));
}
