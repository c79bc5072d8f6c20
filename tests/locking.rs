//! Locking: one writer or many readers per image, parents shared between
//! children, commit taking its parent exclusively, and readers that never
//! change a byte (or the modification time) of what they read.

#[path = "builder/mod.rs"]
mod builder;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use builder::{Bits, VhdBuilder, pattern};
use vhdref::{CreateOptions, DiskType, ErrorKind, Image, OpenOptions};

const SIZE: u64 = 4 << 20;
const BLOCK: u32 = 512 * 1024;

fn dynamic(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut img = CreateOptions::new(DiskType::Dynamic, SIZE)
        .block_size(BLOCK)
        .create(&path)
        .unwrap();
    img.write_at(100_000, &pattern(300_000, 1)).unwrap();
    img.close().unwrap();
    path
}

fn child(dir: &Path, parent: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    CreateOptions::differencing(parent)
        .block_size(BLOCK)
        .create(&path)
        .unwrap()
        .close()
        .unwrap();
    path
}

fn assert_locked(result: vhdref::Result<Image>, image: &Path) {
    match result {
        Ok(_) => panic!("{} opened despite a conflicting lock", image.display()),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
            assert!(e.rule().is_none());
            assert!(
                e.to_string().contains(&image.display().to_string()),
                "message does not name the image: {e}"
            );
        }
    }
}

#[test]
fn two_writers_cannot_open_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dynamic(dir.path(), "disk.vhd");
    let first = Image::open_rw(&path).unwrap();
    assert_locked(Image::open_rw(&path), &path);
    first.close().unwrap();
    Image::open_rw(&path).unwrap().close().unwrap();
}

#[test]
fn an_image_being_created_is_locked_for_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.vhd");
    let img = CreateOptions::new(DiskType::Dynamic, SIZE)
        .create(&path)
        .unwrap();
    assert_locked(Image::open(&path), &path);
    assert_locked(Image::open_rw(&path), &path);
    img.close().unwrap();
    Image::open(&path).unwrap();
}

#[test]
fn a_reader_blocks_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dynamic(dir.path(), "disk.vhd");
    let reader = Image::open(&path).unwrap();
    assert_locked(Image::open_rw(&path), &path);
    drop(reader);
    Image::open_rw(&path).unwrap();
}

#[test]
fn a_writer_blocks_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dynamic(dir.path(), "disk.vhd");
    let writer = Image::open_rw(&path).unwrap();
    assert_locked(Image::open(&path), &path);
    drop(writer);
    Image::open(&path).unwrap();
}

#[test]
fn two_readers_share_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dynamic(dir.path(), "disk.vhd");
    let mut a = Image::open(&path).unwrap();
    let mut b = Image::open(&path).unwrap();
    let (mut x, mut y) = (vec![0u8; 4096], vec![0u8; 4096]);
    a.read_at(100_000, &mut x).unwrap();
    b.read_at(100_000, &mut y).unwrap();
    assert_eq!(x, y);
    assert_eq!(x, pattern(4096, 1));
}

#[test]
fn a_writer_on_a_parent_blocks_opening_its_child() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dynamic(dir.path(), "parent.vhd");
    let kid = child(dir.path(), &parent, "child.vhd");
    let writer = Image::open_rw(&parent).unwrap();
    // Whatever path led to the parent, the error is that it is in use.
    assert_locked(Image::open(&kid), &parent);
    assert_locked(Image::open_rw(&kid), &parent);
    drop(writer);
    Image::open(&kid).unwrap();
}

#[test]
fn two_children_of_one_parent_can_be_written_at_the_same_time() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dynamic(dir.path(), "parent.vhd");
    let parent_bytes = std::fs::read(&parent).unwrap();
    let (a, b) = (
        child(dir.path(), &parent, "a.vhd"),
        child(dir.path(), &parent, "b.vhd"),
    );
    let mut wa = Image::open_rw(&a).unwrap();
    let mut wb = Image::open_rw(&b).unwrap();
    // The parent is shared by both: nobody may write it meanwhile.
    assert_locked(Image::open_rw(&parent), &parent);
    wa.write_at(200_000, b"child a").unwrap();
    wb.write_at(200_000, b"child b").unwrap();
    wa.close().unwrap();
    wb.close().unwrap();
    for (path, text) in [(&a, b"child a"), (&b, b"child b")] {
        let mut img = Image::open(path).unwrap();
        let mut buf = [0u8; 7];
        img.read_at(200_000, &mut buf).unwrap();
        assert_eq!(&buf, text);
    }
    assert_eq!(
        std::fs::read(&parent).unwrap(),
        parent_bytes,
        "a child wrote into its parent"
    );
}

#[test]
fn commit_needs_its_parent_exclusively() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dynamic(dir.path(), "parent.vhd");
    let kid = child(dir.path(), &parent, "child.vhd");
    let mut w = Image::open_rw(&kid).unwrap();
    w.write_at(0, b"committed").unwrap();
    w.close().unwrap();

    let reader = Image::open(&parent).unwrap();
    match Image::commit(&kid, OpenOptions::new()) {
        Ok(stats) => panic!("commit went ahead while the parent was open elsewhere: {stats:?}"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
            assert!(e.to_string().contains(&parent.display().to_string()), "{e}");
        }
    }
    drop(reader);

    // A writer on the child blocks commit too.
    let writer = Image::open_rw(&kid).unwrap();
    let e = Image::commit(&kid, OpenOptions::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    drop(writer);

    Image::commit(&kid, OpenOptions::new()).unwrap();
    let mut img = Image::open(&parent).unwrap();
    let mut buf = [0u8; 9];
    img.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"committed");
}

/// Bytes and modification time of a file.
fn snapshot(path: &Path) -> (Vec<u8>, SystemTime) {
    (
        std::fs::read(path).unwrap(),
        std::fs::metadata(path).unwrap().modified().unwrap(),
    )
}

/// Opens read-only, reads every byte through two APIs, maps, flushes and
/// drops; returns what was read.
fn read_everything(path: &Path) -> Vec<u8> {
    let mut img = Image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!img.is_writable());
    let mut buf = vec![0u8; img.size() as usize];
    img.read_at(0, &mut buf).unwrap();
    let mut again = Vec::new();
    std::io::Read::read_to_end(&mut img.cursor(), &mut again).unwrap();
    assert!(buf == again);
    img.map().unwrap();
    img.flush().unwrap();
    assert_eq!(
        img.write_at(0, b"x").unwrap_err().kind(),
        ErrorKind::ReadOnly
    );
    img.close().unwrap();
    buf
}

#[test]
fn reading_never_changes_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("fixed.vhd");
    let mut img = CreateOptions::new(DiskType::Fixed, SIZE)
        .create(&fixed)
        .unwrap();
    img.write_at(12_345, &pattern(70_000, 2)).unwrap();
    img.close().unwrap();
    let parent = dynamic(dir.path(), "parent.vhd");
    let kid = child(dir.path(), &parent, "child.vhd");
    let mut w = Image::open_rw(&kid).unwrap();
    w.write_at(1_000_000, &pattern(5000, 3)).unwrap();
    w.close().unwrap();
    // Let any write show in the modification time, however coarse.
    std::thread::sleep(std::time::Duration::from_millis(20));

    let files = [&fixed, &parent, &kid];
    let before: Vec<_> = files.iter().map(|p| snapshot(p)).collect();
    for path in files {
        read_everything(path);
    }
    let after: Vec<_> = files.iter().map(|p| snapshot(p)).collect();
    for ((path, b), a) in files.iter().zip(&before).zip(&after) {
        assert!(b.0 == a.0, "{} changed", path.display());
        assert_eq!(b.1, a.1, "{} modification time changed", path.display());
    }
}

#[test]
fn reading_an_image_with_a_damaged_trailing_footer_never_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.vhd");
    let b = VhdBuilder::dynamic(1 << 20)
        .block_size(64 * 1024)
        .block(3, Bits::All, &pattern(64 * 1024, 4))
        .block(7, Bits::Sectors(vec![1, 2]), &pattern(64 * 1024, 5))
        .corrupt(|bytes| {
            let end = bytes.len();
            bytes[end - 512..end - 256].fill(0);
        });
    std::fs::write(&path, b.build()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let before = snapshot(&path);

    let contents = read_everything(&path);
    assert!(contents == b.expected(&[]));
    let img = Image::open(&path).unwrap();
    assert!(img.findings().iter().any(|f| f.rule.id() == "FTR-TRAILING"));
    drop(img);
    let e = Image::open_rw(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly, "{e}");

    let after = snapshot(&path);
    assert!(before.0 == after.0, "the damaged image changed");
    assert_eq!(
        before.1, after.1,
        "the damaged image's modification time changed"
    );
}

#[test]
fn committing_a_child_while_a_sibling_is_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dynamic(dir.path(), "parent.vhd");
    let (a, b) = (
        child(dir.path(), &parent, "a.vhd"),
        child(dir.path(), &parent, "b.vhd"),
    );
    let mut w = Image::open_rw(&a).unwrap();
    w.write_at(0, b"from a").unwrap();
    w.close().unwrap();
    let before = std::fs::read(&parent).unwrap();
    let sibling = Image::open_rw(&b).unwrap();
    let e = Image::commit(&a, OpenOptions::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(
        std::fs::read(&parent).unwrap() == before,
        "the parent changed under an open sibling"
    );
    drop(sibling);
}

#[test]
fn opening_for_writing_and_closing_without_a_write_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dynamic(dir.path(), "parent.vhd");
    let kid = child(dir.path(), &parent, "child.vhd");
    std::thread::sleep(std::time::Duration::from_millis(20));
    for path in [&parent, &kid] {
        let before = snapshot(path);
        let mut img = Image::open_rw(path).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        img.read_at(0, &mut buf).unwrap();
        img.close().unwrap();
        let after = snapshot(path);
        assert!(before.0 == after.0, "{} changed", path.display());
        assert_eq!(
            before.1,
            after.1,
            "{} modification time changed",
            path.display()
        );
    }
}
