//! Commit merges a differencing child into its parent; an interrupted
//! commit, run again, completes with the right result.

use vhdref::storage::{Fault, FaultStorage, MemStorage, Op, Storage};
use vhdref::{CreateOptions, DiskType, Image, OpenOptions};

const MIB: u64 = 1024 * 1024;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A parent with data, and a child over it with writes of its own; returns
/// the two storages and what the chain reads as.
fn chain(parent_type: DiskType) -> (MemStorage, MemStorage, Vec<u8>) {
    let size = 4 * MIB;
    let parent_mem = MemStorage::new();
    let mut parent = CreateOptions::new(parent_type, size)
        .block_size(512 * 1024)
        .create_in(Box::new(parent_mem.clone()), "parent.vhd", None)
        .unwrap();
    parent.write_at(0, &pattern(1, MIB as usize)).unwrap();
    parent.write_at(3 * MIB, &pattern(2, 100_000)).unwrap();
    parent.close().unwrap();

    let parent = OpenOptions::new()
        .open_storage(Box::new(parent_mem.clone()), "parent.vhd")
        .unwrap();
    let child_mem = MemStorage::new();
    let mut child = CreateOptions::new(DiskType::Differencing, 0)
        .block_size(512 * 1024)
        .create_in(
            Box::new(child_mem.clone()),
            "child.vhd",
            Some((parent, "parent.vhd")),
        )
        .unwrap();
    child.write_at(1000, &pattern(3, 5000)).unwrap();
    child
        .write_at(MIB - 700, &pattern(4, 2 * MIB as usize))
        .unwrap();
    child.write_at(4 * MIB - 512, &pattern(5, 512)).unwrap();
    let mut expected = vec![0u8; size as usize];
    child.read_at(0, &mut expected).unwrap();
    child.close().unwrap();
    (parent_mem, child_mem, expected)
}

fn read_all(img: &mut Image) -> Vec<u8> {
    let mut buf = vec![0u8; img.size() as usize];
    img.read_at(0, &mut buf).unwrap();
    buf
}

fn commit(parent: Box<dyn Storage>, child_mem: &MemStorage) -> vhdref::Result<vhdref::CommitStats> {
    let parent = OpenOptions::new()
        .write(true)
        .open_storage(parent, "parent.vhd")?;
    let mut child = OpenOptions::new()
        .parent_image(parent)
        .open_storage(Box::new(child_mem.clone()), "child.vhd")?;
    let stats = child.commit_into_parent()?;
    if let Some(p) = child.take_parent() {
        p.close()?;
    }
    Ok(stats)
}

fn open_parent(mem: &MemStorage) -> Image {
    OpenOptions::new()
        .open_storage(Box::new(mem.clone()), "parent.vhd")
        .unwrap()
}

#[test]
fn commit_makes_the_parent_read_like_the_chain_and_leaves_the_child_unchanged() {
    for parent_type in [DiskType::Fixed, DiskType::Dynamic] {
        let (parent_mem, child_mem, expected) = chain(parent_type);
        let child_before = child_mem.to_vec();
        let stats = commit(Box::new(parent_mem.clone()), &child_mem).unwrap();
        // The child's writes, widened to whole 4 KiB copy-up groups:
        // 0..8 KiB, 1 MiB - 4 KiB .. 3 MiB, and the last 4 KiB.
        assert_eq!(
            stats.bytes,
            8192 + (2 * MIB + 4096) + 4096,
            "{parent_type:?}"
        );
        assert_eq!(
            read_all(&mut open_parent(&parent_mem)),
            expected,
            "{parent_type:?}"
        );
        assert_eq!(
            child_mem.to_vec(),
            child_before,
            "the child's bytes must not change"
        );
        let mut child = OpenOptions::new()
            .parent_image(open_parent(&parent_mem))
            .open_storage(Box::new(child_mem.clone()), "child.vhd")
            .unwrap();
        assert_eq!(
            read_all(&mut child),
            expected,
            "the child still reads the same"
        );
    }
}

#[test]
fn interrupted_commit_completes_when_run_again() {
    for parent_type in [DiskType::Fixed, DiskType::Dynamic] {
        let mut cut = 0u64;
        loop {
            let (parent_mem, child_mem, expected) = chain(parent_type);
            // The process dies at the write after `cut` writes: that write
            // and everything after it never happen.
            let failing = FaultStorage::from_bytes(parent_mem.to_vec());
            failing.plan(Op::Write, cut, Fault::Stop);
            let first = commit(Box::new(failing.clone()), &child_mem);
            let parent_mem = MemStorage::from_bytes(failing.bytes());
            // Whatever the cut left, the parent opens and a second commit
            // finishes the job.
            let second = commit(Box::new(parent_mem.clone()), &child_mem);
            assert!(second.is_ok(), "{parent_type:?} cut {cut}: {second:?}");
            assert_eq!(
                read_all(&mut open_parent(&parent_mem)),
                expected,
                "{parent_type:?} cut after {cut} writes"
            );
            if first.is_ok() {
                break;
            }
            cut += 1;
            assert!(cut < 10_000, "commit never finished");
        }
        assert!(
            cut > 3,
            "the cut must have landed inside the commit at least a few times"
        );
    }
}

#[test]
fn committing_an_image_that_is_not_differencing_is_refused() {
    let mem = MemStorage::new();
    let img = CreateOptions::new(DiskType::Dynamic, MIB)
        .create_in(Box::new(mem.clone()), "d.vhd", None)
        .unwrap();
    drop(img);
    let mut img = OpenOptions::new()
        .open_storage(Box::new(mem), "d.vhd")
        .unwrap();
    let err = img.commit_into_parent().unwrap_err();
    assert!(
        err.to_string().contains("only a differencing image"),
        "{err}"
    );
}

#[test]
fn commit_with_a_read_only_parent_is_refused() {
    let (parent_mem, child_mem, _) = chain(DiskType::Dynamic);
    let mut child = OpenOptions::new()
        .parent_image(open_parent(&parent_mem))
        .open_storage(Box::new(child_mem), "child.vhd")
        .unwrap();
    let err = child.commit_into_parent().unwrap_err();
    assert_eq!(err.kind(), vhdref::ErrorKind::ReadOnly);
}
