//! `vhdref::ops::rebase`: a safe rebase copies into the child exactly the
//! sectors where the old chain and the new parent differ and the child
//! does not hold them, then switches the parent fields and locators; an
//! unsafe one only switches. The child reads the same at every cut, tear,
//! power loss and I/O fault (`tests/support`), through whichever parent
//! its header names at that moment.

mod support;

use support::{Contents, KIB, MIB, Parents, SECTOR, pattern, prove, read_disk, rules_of};
use vhdref::format::Platform;
use vhdref::model::Disk;
use vhdref::ops::rebase::{ParentRef, RebaseMode, rebase_image};
use vhdref::storage::{FaultStorage, MemStorage};
use vhdref::{CreateOptions, DiskType, Image, OpenOptions};

const BLOCK: u32 = 512 * 1024;
const SIZE: u64 = 2 * MIB;

fn make_parent(writes: &[(u64, Vec<u8>)], id: u128) -> (Vec<u8>, Disk) {
    let mem = MemStorage::new();
    let mut model = Disk::new(SIZE);
    let mut img = CreateOptions::new(DiskType::Dynamic, SIZE)
        .block_size(BLOCK)
        .unique_id(uuid::Uuid::from_u128(id))
        .create_in(Box::new(mem.clone()), "p.vhd", None)
        .unwrap();
    for (offset, data) in writes {
        img.write_at(*offset, data).unwrap();
        model.write(*offset, data);
    }
    img.close().unwrap();
    (mem.to_vec(), model)
}

/// Old parent `a.vhd`, new parent `b.vhd` (the same data in places, other
/// data, zeros where `a` has data and data where `a` has none), and a
/// child of `a` with its own sectors over both kinds of place.
struct Fixture {
    child: Vec<u8>,
    parents: Parents,
    /// What the child reads through `a`.
    disk: Vec<u8>,
    /// What `b` reads.
    b: Vec<u8>,
    /// Sectors the child holds itself.
    own: Vec<u64>,
}

fn fixture() -> Fixture {
    let b = u64::from(BLOCK);
    let shared = pattern(64 * KIB as usize, 1);
    let (a_bytes, a_model) = make_parent(
        &[
            (0, shared.clone()),
            (b + 1000, pattern(5000, 2)),
            (2 * b, pattern(b as usize / 2, 3)),
            (3 * b + 512, pattern(4096, 4)),
        ],
        0xA,
    );
    let (b_bytes, b_model) = make_parent(
        &[
            (0, shared),
            (b + 3000, pattern(9000, 5)),
            (2 * b + b / 2, pattern(2048, 6)),
            (3 * b + 512, pattern(4096, 4)),
        ],
        0xB,
    );
    let parents = Parents::none()
        .with("a.vhd", a_bytes)
        .with("b.vhd", b_bytes);
    let mem = MemStorage::new();
    let mut model = a_model.clone();
    model.push_child();
    let mut child = CreateOptions::new(DiskType::Differencing, 0)
        .block_size(BLOCK)
        .create_in(
            Box::new(mem.clone()),
            "image.vhd",
            Some((parents.open_named("a.vhd"), "a.vhd")),
        )
        .unwrap();
    // The model counts the sectors written, exactly: no copy-up groups.
    child.set_exact_sectors(true);
    for (offset, data) in [
        (b + 2048, pattern(4096, 7)),    // over a difference
        (2 * b + 100, pattern(700, 8)),  // over a's data, b's zeros
        (3 * b + 8192, pattern(100, 9)), // where neither has data
    ] {
        child.write_at(offset, &data).unwrap();
        model.write(offset, &data);
    }
    child.close().unwrap();
    let own = (0..SIZE / SECTOR)
        .filter(|&s| model.written_in(1, s))
        .collect();
    Fixture {
        child: mem.to_vec(),
        parents,
        disk: model.read(0, SIZE),
        b: b_model.read(0, SIZE),
        own,
    }
}

fn rebase_op(mode: RebaseMode, to: &'static str) -> impl Fn(&FaultStorage, &Parents) -> bool {
    move |storage, parents| {
        let Ok(mut child) = support::open_with_parent(Box::new(storage.clone()), parents, true)
        else {
            return false;
        };
        rebase_image(
            &mut child,
            parents.open_named(to),
            &ParentRef::relative(to),
            mode,
        )
        .is_ok()
    }
}

#[test]
fn a_safe_rebase_copies_exactly_what_would_change_and_keeps_the_contents() {
    let f = fixture();
    let mem = MemStorage::from_bytes(f.child.clone());
    let mut child = support::open_with_parent(Box::new(mem.clone()), &f.parents, true).unwrap();
    let report = rebase_image(
        &mut child,
        f.parents.open_named("b.vhd"),
        &ParentRef::relative("b.vhd"),
        RebaseMode::Safe,
    )
    .unwrap();
    // The sectors the child does not hold where a and b differ.
    let differing = (0..SIZE / SECTOR)
        .filter(|s| !f.own.contains(s))
        .filter(|&s| {
            let r = (s * SECTOR) as usize..((s + 1) * SECTOR) as usize;
            f.disk[r.clone()] != f.b[r]
        })
        .count() as u64;
    assert!(differing > 10, "the fixture differs in {differing} sectors");
    assert_eq!(report.bytes_copied, differing * SECTOR, "{report:?}");
    assert_eq!(report.new_parent_id, uuid::Uuid::from_u128(0xB));
    assert_eq!(report.old_parent_name.as_deref(), Some("a.vhd"));
    assert_eq!(report.locators.len(), 1);
    assert_eq!(report.locators[0].platform, "W2ru");
    // It reads the same through b, and names b.
    let mut buf = vec![0u8; SIZE as usize];
    child.read_at(0, &mut buf).unwrap();
    assert!(
        buf == f.disk,
        "the child reads differently through its new parent"
    );
    child.close().unwrap();
    let back = OpenOptions::new()
        .skip_parent(true)
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    let h = back.dyn_header().unwrap();
    assert_eq!(h.parent_unique_id, uuid::Uuid::from_u128(0xB));
    assert_eq!(h.parent_name().unwrap().unwrap(), "b.vhd");
    let locators: Vec<Platform> = h
        .parent_locators
        .iter()
        .filter(|l| l.is_used())
        .map(vhdref::format::LocatorEntry::platform)
        .collect();
    assert_eq!(locators, [Platform::W2ru]);
    drop(back);
    assert!(
        rules_of(mem.to_vec()).is_empty(),
        "{:?}",
        rules_of(mem.to_vec())
    );
    assert!(read_disk(mem.to_vec(), &f.parents) == f.disk);
}

#[test]
fn a_safe_rebase_survives_a_fault_at_every_point() {
    let f = fixture();
    let covered = prove(
        "safe rebase",
        &f.child,
        &f.parents,
        &Contents::unchanged(f.disk.clone()),
        &rebase_op(RebaseMode::Safe, "b.vhd"),
    );
    assert!(covered.states > 50, "{covered:?}");
}

#[test]
fn an_unsafe_rebase_onto_a_moved_parent_only_switches_the_names() {
    let f = fixture();
    // The same parent, moved: a copy of its bytes under another name.
    let moved = {
        let a = f.parents.open_named("a.vhd").into_storage().unwrap();
        let mut bytes = vec![0u8; a.len().unwrap() as usize];
        a.read_exact_at(&mut bytes, 0).unwrap();
        bytes
    };
    let parents = Parents::none().with("moved/a.vhd", moved);
    let mem = MemStorage::from_bytes(f.child.clone());
    let mut child = OpenOptions::new()
        .write(true)
        .skip_parent(true)
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    let report = rebase_image(
        &mut child,
        parents.open_named("moved/a.vhd"),
        &ParentRef::relative("moved/a.vhd"),
        RebaseMode::Unsafe,
    )
    .unwrap();
    assert_eq!(report.bytes_copied, 0);
    child.close().unwrap();
    let back = OpenOptions::new()
        .skip_parent(true)
        .open_storage(Box::new(mem.clone()), "image.vhd")
        .unwrap();
    let h = back.dyn_header().unwrap().clone();
    assert_eq!(h.parent_name().unwrap().unwrap(), "a.vhd");
    drop(back);
    assert!(read_disk(mem.to_vec(), &parents) == f.disk);
    prove(
        "unsafe rebase",
        &f.child,
        &f.parents,
        &Contents::unchanged(f.disk.clone()),
        &|storage, _| {
            let Ok(mut child) = OpenOptions::new()
                .write(true)
                .skip_parent(true)
                .open_storage(Box::new(storage.clone()), "image.vhd")
            else {
                return false;
            };
            rebase_image(
                &mut child,
                f.parents.open_named("a.vhd"),
                &ParentRef::relative("moved\\a.vhd"),
                RebaseMode::Unsafe,
            )
            .is_ok()
        },
    );
}

#[test]
fn an_unsafe_rebase_onto_another_parent_switches_what_the_child_reads() {
    let f = fixture();
    let mut new = f.b.clone();
    for &s in &f.own {
        let r = (s * SECTOR) as usize..((s + 1) * SECTOR) as usize;
        new[r.clone()].copy_from_slice(&f.disk[r]);
    }
    prove(
        "unsafe rebase onto b",
        &f.child,
        &f.parents,
        &Contents {
            old: f.disk.clone(),
            new,
        },
        &rebase_op(RebaseMode::Unsafe, "b.vhd"),
    );
}

#[test]
fn a_rebase_refuses_a_parent_of_another_size_and_writes_nothing() {
    let f = fixture();
    let other = MemStorage::new();
    CreateOptions::new(DiskType::Dynamic, 2 * SIZE)
        .create_in(Box::new(other.clone()), "big.vhd", None)
        .unwrap()
        .close()
        .unwrap();
    for mode in [RebaseMode::Safe, RebaseMode::Unsafe] {
        let mem = MemStorage::from_bytes(f.child.clone());
        let mut child = support::open_with_parent(Box::new(mem.clone()), &f.parents, true).unwrap();
        let big = OpenOptions::new()
            .open_storage(Box::new(other.clone()), "big.vhd")
            .unwrap();
        let e = rebase_image(&mut child, big, &ParentRef::relative("big.vhd"), mode).unwrap_err();
        assert_eq!(e.rule(), Some(vhdref::Rule::ParSize), "{e}");
        drop(child);
        assert!(mem.to_vec() == f.child, "{mode:?}: a refused rebase wrote");
    }
}

#[test]
fn long_locators_make_room_by_moving_the_first_block() {
    let f = fixture();
    let long = ParentRef {
        name: "b.vhd".into(),
        relative: Some(format!("..\\{}\\b.vhd", "d".repeat(300))),
        absolute: Some(format!("/srv/{}/b.vhd", "e".repeat(400))),
    };
    let op = |storage: &FaultStorage, parents: &Parents| {
        let Ok(mut child) = support::open_with_parent(Box::new(storage.clone()), parents, true)
        else {
            return false;
        };
        rebase_image(
            &mut child,
            parents.open_named("b.vhd"),
            &long,
            RebaseMode::Safe,
        )
        .is_ok()
    };
    let storage = FaultStorage::from_bytes(f.child.clone());
    let mut child = support::open_with_parent(Box::new(storage.clone()), &f.parents, true).unwrap();
    let report = rebase_image(
        &mut child,
        f.parents.open_named("b.vhd"),
        &long,
        RebaseMode::Safe,
    )
    .unwrap();
    drop(child);
    assert!(report.blocks_moved >= 1, "{report:?}");
    assert_eq!(report.locators.len(), 2);
    assert!(
        rules_of(storage.bytes()).is_empty(),
        "{:?}",
        rules_of(storage.bytes())
    );
    prove(
        "rebase with long locators",
        &f.child,
        &f.parents,
        &Contents::unchanged(f.disk.clone()),
        &op,
    );
}

#[test]
fn rebasing_back_and_forth_reuses_the_locator_space() {
    let f = fixture();
    let mem = MemStorage::from_bytes(f.child.clone());
    let mut sizes = Vec::new();
    for to in ["b.vhd", "a.vhd", "b.vhd", "a.vhd"] {
        let mut child = support::open_with_parent(Box::new(mem.clone()), &f.parents, true).unwrap();
        rebase_image(
            &mut child,
            f.parents.open_named(to),
            &ParentRef::relative(to),
            RebaseMode::Safe,
        )
        .unwrap();
        child.close().unwrap();
        sizes.push(mem.to_vec().len());
        assert!(
            read_disk(mem.to_vec(), &f.parents) == f.disk,
            "after rebasing onto {to}"
        );
        assert!(
            rules_of(mem.to_vec()).is_empty(),
            "{:?}",
            rules_of(mem.to_vec())
        );
    }
    assert_eq!(sizes[1], sizes[3], "the file keeps growing: {sizes:?}");
}

#[test]
fn rebase_of_files_names_the_new_parent_so_that_open_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let a_path = dir.path().join("a.vhd");
    let b_path = dir.path().join("sub").join("b.vhd");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    for (name, path) in [("a.vhd", &a_path), ("b.vhd", &b_path)] {
        let s = f.parents.open_named(name).into_storage().unwrap();
        let mut bytes = vec![0u8; s.len().unwrap() as usize];
        s.read_exact_at(&mut bytes, 0).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let child = dir.path().join("child.vhd");
    std::fs::write(&child, &f.child).unwrap();
    let report =
        vhdref::ops::rebase(&child, &b_path, RebaseMode::Safe, OpenOptions::new()).unwrap();
    let texts: Vec<&str> = report.locators.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts[0], ".\\sub\\b.vhd");
    assert!(texts[1].ends_with("/sub/b.vhd"), "{texts:?}");
    std::fs::remove_file(&a_path).unwrap();
    let mut img = Image::open(&child).unwrap();
    match img.parent_source() {
        Some(vhdref::ParentSource::Locator { platform, .. }) => assert_eq!(platform, "W2ru"),
        other => panic!("the parent was found {other:?}"),
    }
    let mut buf = vec![0u8; SIZE as usize];
    img.read_at(0, &mut buf).unwrap();
    assert!(buf == f.disk);
    assert!(
        vhdref::check::check(&child, &vhdref::check::CheckOptions::new())
            .findings
            .is_empty()
    );
}

#[test]
fn rebase_refuses_a_parent_whose_chain_holds_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    CreateOptions::new(DiskType::Dynamic, MIB)
        .create(&base)
        .unwrap()
        .close()
        .unwrap();
    let child = dir.path().join("child.vhd");
    CreateOptions::differencing(&base)
        .create(&child)
        .unwrap()
        .close()
        .unwrap();
    let grandchild = dir.path().join("grandchild.vhd");
    CreateOptions::differencing(&child)
        .create(&grandchild)
        .unwrap()
        .close()
        .unwrap();
    let before = std::fs::read(&child).unwrap();
    let e = vhdref::ops::rebase(&child, &grandchild, RebaseMode::Unsafe, OpenOptions::new())
        .unwrap_err();
    assert_eq!(e.rule(), Some(vhdref::Rule::ParLoop), "{e}");
    assert_eq!(std::fs::read(&child).unwrap(), before);
}
