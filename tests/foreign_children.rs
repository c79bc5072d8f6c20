//! Differencing children laid out the way other writers lay them out
//! (built with the independent test writer), placed next to real parent
//! files, are found through their locators and read correctly.

#[path = "builder/mod.rs"]
mod builder;

use std::path::{Path, PathBuf};

use builder::{Bits, DataSpace, Platform, VhdBuilder, pattern};
use uuid::Uuid;
use vhdref::{CreateOptions, DiskType, Image, ParentSource, Timestamp};

const SIZE: u64 = 1 << 20;
const BLOCK: u32 = 64 * 1024;

/// A parent file on disk and the guest bytes it holds.
struct Parent {
    path: PathBuf,
    id: Uuid,
    stamp: u32,
    contents: Vec<u8>,
}

/// A fixed parent written by the test writer.
fn fixed_parent(path: &Path, seed: u8) -> Parent {
    let b = VhdBuilder::fixed(SIZE).data(&pattern(SIZE as usize, seed));
    std::fs::write(path, b.build()).unwrap();
    Parent {
        path: path.to_path_buf(),
        id: b.id(),
        stamp: b.stamp(),
        contents: b.expected(&[]),
    }
}

/// A dynamic parent made by vhdref, with data in two places.
fn vhdref_parent(path: &Path) -> Parent {
    let id = Uuid::new_v4();
    let mut img = CreateOptions::new(DiskType::Dynamic, SIZE)
        .block_size(512 * 1024)
        .unique_id(id)
        .time_stamp(Timestamp(0x1234_5678))
        .create(path)
        .unwrap();
    let mut contents = vec![0u8; SIZE as usize];
    for (offset, len, seed) in [(0usize, 70_000usize, 21u8), (600_000, 100_000, 22)] {
        let data = pattern(len, seed);
        img.write_at(offset as u64, &data).unwrap();
        contents[offset..offset + len].copy_from_slice(&data);
    }
    img.close().unwrap();
    Parent {
        path: path.to_path_buf(),
        id,
        stamp: 0x1234_5678,
        contents,
    }
}

/// A child of `parent` with no locators yet and data in three blocks: one
/// full, one with a few sectors, one with every other sector.
fn child_of(parent: &Parent, block_size: u32) -> VhdBuilder {
    let bs = block_size as usize;
    let sectors = u64::from(block_size) / 512;
    let blocks = SIZE / u64::from(block_size);
    let mut b = VhdBuilder::differencing(SIZE)
        .block_size(block_size)
        .creator(*b"win ")
        .host_os(*b"Wi2k")
        .parent_id(parent.id)
        .parent_time_stamp(parent.stamp)
        .block(0, Bits::Sectors(vec![0, 2, sectors - 1]), &pattern(bs, 31));
    if blocks > 3 {
        b = b.block(1, Bits::All, &pattern(bs, 32)).block(
            3,
            Bits::Sectors((0..sectors).step_by(2).collect()),
            &pattern(bs, 33),
        );
    }
    b
}

/// Writes the child, opens it by path and checks every guest byte.
fn open_and_compare(child: &VhdBuilder, path: &Path, parent: &Parent) -> Image {
    std::fs::write(path, child.build()).unwrap();
    let mut img = Image::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut buf = vec![0u8; SIZE as usize];
    img.read_at(0, &mut buf).unwrap();
    let expected = child.expected(&parent.contents);
    if let Some(at) = buf.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!(
            "guest byte {at} differs: read {}, expected {}",
            buf[at], expected[at]
        );
    }
    assert!(
        img.findings().is_empty(),
        "unexpected findings: {:?}",
        img.findings()
    );
    img
}

fn assert_locator(img: &Image, platform: &str, parent: &Path) {
    match img.parent_source() {
        Some(ParentSource::Locator {
            platform: p, path, ..
        }) => {
            assert_eq!(p, platform);
            assert_eq!(
                Path::new(path).canonicalize().unwrap(),
                parent.canonicalize().unwrap()
            );
        }
        other => panic!("expected a {platform} locator, parent came from {other:?}"),
    }
}

fn abs(p: &Path) -> String {
    p.canonicalize().unwrap().display().to_string()
}

#[test]
fn w2ru_locator_with_data_space_in_bytes_finds_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), 1);
    let child = child_of(&parent, BLOCK).locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes);
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "W2ru", &parent.path);
}

#[test]
fn w2ru_locator_with_data_space_in_sectors_over_two_sectors_finds_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = ("a".repeat(150), "b".repeat(150));
    let deep = dir.path().join(&a).join(&b);
    std::fs::create_dir_all(&deep).unwrap();
    let parent = vhdref_parent(&deep.join("parent.vhd"));
    let text = format!(".\\{a}\\{b}\\parent.vhd");
    assert!(text.len() * 2 > 512, "the locator must need two sectors");
    let child = child_of(&parent, BLOCK).locator(Platform::W2ru, &text, DataSpace::Sectors);
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "W2ru", &parent.path);
}

#[test]
fn w2ku_locator_with_an_absolute_unix_path_finds_the_parent() {
    for space in [DataSpace::Bytes, DataSpace::Sectors] {
        let dir = tempfile::tempdir().unwrap();
        let parent = vhdref_parent(&dir.path().join("parent.vhd"));
        let child = child_of(&parent, BLOCK).locator(Platform::W2ku, &abs(&parent.path), space);
        let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
        assert_locator(&img, "W2ku", &parent.path);
    }
}

#[cfg(unix)]
#[test]
fn w2ku_drive_letter_path_is_skipped_and_the_next_locator_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), 2);
    let child = child_of(&parent, BLOCK)
        .locator(Platform::W2ku, "C:\\VMs\\parent.vhd", DataSpace::Bytes)
        .locator(Platform::W2ku, &abs(&parent.path), DataSpace::Bytes);
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "W2ku", &parent.path);
}

#[cfg(unix)]
#[test]
fn a_drive_letter_path_alone_is_reported_with_the_reason_it_was_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), 2);
    let child =
        child_of(&parent, BLOCK).locator(Platform::W2ku, "C:\\VMs\\parent.vhd", DataSpace::Bytes);
    let path = dir.path().join("child.vhd");
    std::fs::write(&path, child.build()).unwrap();
    let err = Image::open(&path).unwrap_err();
    assert_eq!(
        err.rule().map(vhdref::Rule::id),
        Some("PAR-NOT-FOUND"),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("drive-letter") && text.contains("VMs"),
        "{text}"
    );
}

#[test]
fn w2ru_locator_into_a_subdirectory_with_windows_separators() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let parent = fixed_parent(&dir.path().join("sub").join("parent.vhd"), 3);
    let child =
        child_of(&parent, BLOCK).locator(Platform::W2ru, ".\\sub\\parent.vhd", DataSpace::Bytes);
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "W2ru", &parent.path);
}

#[test]
fn w2ru_locator_to_the_parent_directory_with_windows_separators() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("kids")).unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), 4);
    let child =
        child_of(&parent, BLOCK).locator(Platform::W2ru, "..\\parent.vhd", DataSpace::Sectors);
    let img = open_and_compare(&child, &dir.path().join("kids").join("child.vhd"), &parent);
    assert_locator(&img, "W2ru", &parent.path);
}

#[test]
fn deprecated_wi2r_locator_in_plain_bytes_finds_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), 5);
    let child = child_of(&parent, BLOCK).locator_bytes(
        Platform::Code(*b"Wi2r"),
        b".\\parent.vhd",
        DataSpace::Sectors,
    );
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "Wi2r", &parent.path);
}

#[test]
fn a_child_with_only_the_parent_name_finds_the_parent_in_its_directory() {
    for name in ["parent.vhd", "C:\\Hyper-V\\Disks\\parent.vhd"] {
        let dir = tempfile::tempdir().unwrap();
        let parent = fixed_parent(&dir.path().join("parent.vhd"), 6);
        let child = child_of(&parent, BLOCK).parent_name(name);
        let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
        assert!(
            matches!(img.parent_source(), Some(ParentSource::Name(_))),
            "{name}: {:?}",
            img.parent_source()
        );
    }
}

#[test]
fn macx_absolute_file_url_finds_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), 7);
    let url = format!("file://{}", abs(&parent.path));
    let child = child_of(&parent, BLOCK).locator(Platform::MacX, &url, DataSpace::Bytes);
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "MacX", &parent.path);
}

#[test]
fn macx_relative_file_url_finds_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("rel.vhd"), 8);
    let child =
        child_of(&parent, BLOCK).locator(Platform::MacX, "file://./rel.vhd", DataSpace::Sectors);
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "MacX", &parent.path);
}

#[test]
fn macx_file_url_with_percent_escapes_finds_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("my disks")).unwrap();
    let parent = fixed_parent(&dir.path().join("my disks").join("parent.vhd"), 9);
    let url = format!("file://{}", abs(&parent.path).replace(' ', "%20"));
    let child = child_of(&parent, BLOCK).locator(Platform::MacX, &url, DataSpace::Bytes);
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "MacX", &parent.path);
}

#[test]
fn a_mac_alias_is_skipped_and_the_next_locator_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), 10);
    let alias = [
        0x00, 0x00, 0x01, 0x2A, 0x00, 0x02, 0xFF, 0x00, 0x70, 0x61, 0x72,
    ];
    let child = child_of(&parent, BLOCK)
        .locator_bytes(Platform::Mac, &alias, DataSpace::Sectors)
        .locator(Platform::MacX, "file://./parent.vhd", DataSpace::Sectors);
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "MacX", &parent.path);
}

#[test]
fn a_mac_alias_alone_is_reported_as_undecodable() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), 10);
    let child =
        child_of(&parent, BLOCK).locator_bytes(Platform::Mac, &[1, 2, 3, 4], DataSpace::Sectors);
    let path = dir.path().join("child.vhd");
    std::fs::write(&path, child.build()).unwrap();
    let err = Image::open(&path).unwrap_err();
    assert_eq!(
        err.rule().map(vhdref::Rule::id),
        Some("PAR-NOT-FOUND"),
        "{err}"
    );
    assert!(err.to_string().contains("Mac alias"), "{err}");
}

#[test]
fn a_first_locator_to_a_wrong_image_loses_to_a_second_to_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    fixed_parent(&dir.path().join("impostor.vhd"), 11);
    let parent = fixed_parent(&dir.path().join("parent.vhd"), 12);
    let child = child_of(&parent, BLOCK)
        .locator(Platform::W2ru, ".\\impostor.vhd", DataSpace::Bytes)
        .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes);
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "W2ru", &parent.path);
}

#[test]
fn a_wrong_relative_locator_loses_to_a_right_absolute_one() {
    let dir = tempfile::tempdir().unwrap();
    fixed_parent(&dir.path().join("impostor.vhd"), 11);
    let parent = fixed_parent(&dir.path().join("parent.vhd"), 12);
    let child = child_of(&parent, BLOCK)
        .parent_name("parent.vhd")
        .locator(Platform::W2ru, ".\\impostor.vhd", DataSpace::Bytes)
        .locator(Platform::W2ku, &abs(&parent.path), DataSpace::Bytes);
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "W2ku", &parent.path);
}

#[test]
fn a_hyper_v_style_child_with_both_windows_locators_reads_through_a_vhdref_parent() {
    let dir = tempfile::tempdir().unwrap();
    let parent = vhdref_parent(&dir.path().join("parent.vhd"));
    let child = child_of(&parent, 2 << 20)
        .parent_name("parent.vhd")
        .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes)
        .locator(Platform::W2ku, &abs(&parent.path), DataSpace::Bytes);
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "W2ru", &parent.path);
}

#[test]
fn partly_set_bitmaps_mix_child_and_parent_sectors_in_one_block() {
    let dir = tempfile::tempdir().unwrap();
    let parent = vhdref_parent(&dir.path().join("parent.vhd"));
    // Raw bitmap bytes: alternating runs, a lone bit, and bits past the
    // block's last sector that must be ignored.
    let mut raw = vec![0b1010_0110, 0xFF, 0x00, 0x01, 0x80];
    raw.resize(16, 0);
    raw[15] = 0b0000_0011;
    raw.extend([0xFF; 4]);
    let child = child_of(&parent, BLOCK)
        .parent_name("parent.vhd")
        .block(2, Bits::Raw(raw), &pattern(BLOCK as usize, 40))
        .block(
            9,
            Bits::Sectors(vec![5, 6, 7, 8, 100]),
            &pattern(BLOCK as usize, 41),
        );
    open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
}

#[test]
fn children_with_unusual_block_sizes_read_correctly() {
    for block_size in [512, 4096, 512 * 1024, 1 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let parent = vhdref_parent(&dir.path().join("parent.vhd"));
        let child = child_of(&parent, block_size).locator(
            Platform::W2ru,
            ".\\parent.vhd",
            DataSpace::Bytes,
        );
        let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
        assert_eq!(img.block_size(), Some(block_size));
    }
}

#[test]
fn a_foreign_grandchild_reads_through_two_foreign_layers() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixed_parent(&dir.path().join("base.vhd"), 50);
    let mid = child_of(&base, 4096).locator(Platform::W2ru, ".\\base.vhd", DataSpace::Sectors);
    let mid_path = dir.path().join("mid.vhd");
    std::fs::write(&mid_path, mid.build()).unwrap();
    let mid_parent = Parent {
        path: mid_path.clone(),
        id: mid.id(),
        stamp: mid.stamp(),
        contents: mid.expected(&base.contents),
    };
    let top = child_of(&mid_parent, BLOCK)
        .block(
            0,
            Bits::Sectors(vec![1, 3, 64, 65]),
            &pattern(BLOCK as usize, 51),
        )
        .locator(Platform::MacX, "file://./mid.vhd", DataSpace::Bytes);
    let img = open_and_compare(&top, &dir.path().join("top.vhd"), &mid_parent);
    assert_eq!(img.chain().len(), 3);
}

#[test]
fn a_foreign_child_can_be_opened_for_writing_and_keeps_its_parent_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), 13);
    let before = std::fs::read(&parent.path).unwrap();
    let child = child_of(&parent, BLOCK).locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes);
    let path = dir.path().join("child.vhd");
    std::fs::write(&path, child.build()).unwrap();
    let mut expected = child.expected(&parent.contents);
    let mut img = Image::open_rw(&path).unwrap();
    // Into a partly set block, an unallocated block, across a block edge.
    for (offset, seed) in [
        (1000u64, 60u8),
        (5 * 65536 + 512, 61),
        (65536 * 4 - 300, 62),
    ] {
        let data = pattern(700, seed);
        img.write_at(offset, &data).unwrap();
        expected[offset as usize..offset as usize + 700].copy_from_slice(&data);
    }
    img.close().unwrap();
    let mut img = Image::open(&path).unwrap();
    let mut buf = vec![0u8; SIZE as usize];
    img.read_at(0, &mut buf).unwrap();
    assert!(buf == expected, "contents differ after writing");
    assert_eq!(
        std::fs::read(&parent.path).unwrap(),
        before,
        "the parent changed"
    );
}

#[test]
fn a_locator_whose_data_space_is_its_exact_length_in_bytes_finds_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), 14);
    let text = ".\\parent.vhd";
    let child = child_of(&parent, BLOCK)
        .locator(Platform::W2ru, text, DataSpace::Bytes)
        .locator_space_field((text.len() * 2) as u32);
    let img = open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    assert_locator(&img, "W2ru", &parent.path);
}

#[test]
fn a_child_whose_block_data_is_aligned_with_gaps_reads_correctly() {
    for align in [4096, 1 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let parent = vhdref_parent(&dir.path().join("parent.vhd"));
        let child = child_of(&parent, BLOCK)
            .data_alignment(align)
            .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes)
            .locator(Platform::W2ku, &abs(&parent.path), DataSpace::Bytes);
        open_and_compare(&child, &dir.path().join("child.vhd"), &parent);
    }
}

#[test]
fn a_child_with_its_locators_before_the_bat_reads_correctly() {
    for align in [512, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let parent = vhdref_parent(&dir.path().join("parent.vhd"));
        let child = child_of(&parent, BLOCK)
            .bat_after_locators(align)
            .locator(Platform::W2ku, &abs(&parent.path), DataSpace::Bytes)
            .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes);
        let (_, layout) = child.build_with_layout();
        assert!(layout.bat_offset > layout.locators[1]);
        let path = dir.path().join("child.vhd");
        open_and_compare(&child, &path, &parent);
        // Writing appends blocks after everything and keeps the locators.
        let mut img = Image::open_rw(&path).unwrap();
        img.write_at(SIZE - 512, &[0xAB; 512]).unwrap();
        img.close().unwrap();
        let mut img = Image::open(&path).unwrap();
        let mut buf = vec![0u8; SIZE as usize];
        img.read_at(0, &mut buf).unwrap();
        let mut expected = child.expected(&parent.contents);
        expected[SIZE as usize - 512..].fill(0xAB);
        assert!(buf == expected);
    }
}
