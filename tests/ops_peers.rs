//! The peers read what the maintenance operations produce: each result
//! (compacted, grown, shrunk, rebased, repaired, aligned for Azure) is
//! read by qemu-img (`compare` against the expected raw bytes; QEMU has no
//! differencing support, so children are left to the others), by libvhdi
//! (pyvhdi, both builds, with the chain attached) and by 7-Zip (which
//! finds parents by name beside the child), and must read exactly as the
//! writes the test made say: the expected bytes are never vhdref's own
//! reading. libvhdi sizes a disk by `original_size`, which a resize keeps
//! (the spec calls it the size at creation; `VirtualBox`'s resize keeps it
//! too), so it reads a resized disk at its old size: pinned below.
//!
//! Children are written in whole 4 KiB pages and their parents differ in
//! whole pages, so every bitmap byte a rebase sets is whole: libvhdi
//! misreads partly set bitmap bytes of a child (`tests/interop_libvhdi.rs`,
//! spec/divergences.md).

mod common;

use std::path::{Path, PathBuf};

use common::{
    Case, ChildWrites, KIB, MIB, Peer, Rng, SECTOR, assert_same_bytes, cmd, make_base, make_child,
    peer_available, pyvhdi_read, read_image, run, temp_dir, write_at,
};
use vhdref::ops::{RebaseMode, RepairOptions, ResizeOptions};
use vhdref::{CreateOptions, DiskType, Image, OpenOptions};

fn subdir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).expect("a case directory");
    d
}

fn case(name: &'static str, chain: Vec<PathBuf>, expected: Vec<u8>) -> Case {
    let disk_type = Image::open(&chain[0]).expect("opens").disk_type();
    Case {
        name,
        chain,
        expected,
        disk_type,
    }
}

/// Every operation's result, each in a directory of its own, with what it
/// must read as.
#[allow(clippy::too_many_lines)] // one fixture per operation, in order
fn results(root: &Path) -> Vec<Case> {
    let mut rng = Rng::new(0x0b5);
    let mut out = Vec::new();
    let block = 512 * KIB;

    // Compact: zero blocks, data blocks, a leaked block.
    let path = subdir(root, "compact").join("compacted.vhd");
    let mut img = CreateOptions::new(DiskType::Dynamic, 12 * MIB)
        .block_size(block as u32)
        .create(&path)
        .expect("create");
    let mut expected = vec![0u8; 12 * MIB as usize];
    for blk in [0u64, 3, 5, 9, 20, 23] {
        write_at(
            &mut img,
            &mut expected,
            blk * block + 4096,
            &rng.nonzero_bytes(70_000),
        );
    }
    for blk in [1u64, 7, 21] {
        write_at(&mut img, &mut expected, blk * block, &vec![0u8; 8192]);
    }
    img.close().expect("close");
    let report = vhdref::ops::compact(&path, OpenOptions::new()).expect("compact");
    assert_eq!(report.blocks_released, 3);
    out.push(case("compacted", vec![path], expected));

    // Compact of a child over a parent with data.
    let dir = subdir(root, "compact-child");
    let parent = dir.join("base.vhd");
    let mut parent_bytes = make_base(
        &parent,
        &CreateOptions::new(DiskType::Dynamic, 8 * MIB),
        &mut rng,
        0,
        None,
    );
    common::fill_random(&parent, &mut parent_bytes, &mut rng, 0..3 * MIB);
    let child = dir.join("child.vhd");
    let mut child_bytes = make_child(&child, &parent, &parent_bytes, &mut rng, ChildWrites::Pages);
    let mut img = Image::open_rw(&child).expect("open child");
    write_at(&mut img, &mut child_bytes, 6 * MIB, &vec![0u8; 4096]);
    img.close().expect("close");
    vhdref::ops::compact(&child, OpenOptions::new()).expect("compact child");
    out.push(case("compacted child", vec![child, parent], child_bytes));

    // Grow a dynamic image until its table reaches past the padding
    // before the first block (0x600 to 0xe00 with 512 KiB blocks: room
    // for 512 entries): blocks move. 544 entries of 512 KiB.
    let path = subdir(root, "grow").join("grown.vhd");
    let mut img = CreateOptions::new(DiskType::Dynamic, 4 * MIB)
        .block_size(block as u32)
        .create(&path)
        .expect("create");
    let mut expected = vec![0u8; 4 * MIB as usize];
    common::write_random(&mut img, &mut expected, &mut rng, 12, 100 * KIB, 0..4 * MIB);
    img.close().expect("close");
    let report = vhdref::ops::resize(&path, OpenOptions::new(), &ResizeOptions::new(272 * MIB))
        .expect("grow");
    assert!(report.blocks_moved > 0, "{report:?}");
    expected.resize(272 * MIB as usize, 0);
    out.push(case("grown dynamic", vec![path], expected));

    // Shrink a dynamic image over unallocated blocks.
    let path = subdir(root, "shrink").join("shrunk.vhd");
    let mut img = CreateOptions::new(DiskType::Dynamic, 12 * MIB)
        .create(&path)
        .expect("create");
    let mut expected = vec![0u8; 12 * MIB as usize];
    common::write_random(&mut img, &mut expected, &mut rng, 8, 200 * KIB, 0..6 * MIB);
    img.close().expect("close");
    vhdref::ops::resize(
        &path,
        OpenOptions::new(),
        &ResizeOptions::new(6 * MIB).shrink(true),
    )
    .expect("shrink");
    expected.truncate(6 * MIB as usize);
    out.push(case("shrunk dynamic", vec![path], expected));

    // Grow and shrink fixed images.
    for (name, from, to, dir) in [
        ("grown fixed", 5 * MIB + 3 * SECTOR, 9 * MIB, "fixed-grow"),
        ("shrunk fixed", 9 * MIB, 5 * MIB, "fixed-shrink"),
    ] {
        let path = subdir(root, dir).join("fixed.vhd");
        let mut expected = make_base(
            &path,
            &CreateOptions::new(DiskType::Fixed, from),
            &mut rng,
            8,
            Some(0..4 * MIB),
        );
        vhdref::ops::resize(
            &path,
            OpenOptions::new(),
            &ResizeOptions::new(to).shrink(true),
        )
        .expect("resize fixed");
        expected.resize(to as usize, 0);
        out.push(case(name, vec![path], expected));
    }

    // Rebase a child onto another parent (pages differ).
    let dir = subdir(root, "rebase");
    let a = dir.join("a.vhd");
    let mut a_bytes = make_base(
        &a,
        &CreateOptions::new(DiskType::Dynamic, 8 * MIB),
        &mut rng,
        0,
        None,
    );
    common::fill_random(&a, &mut a_bytes, &mut rng, 0..5 * MIB);
    let b_path = dir.join("block.vhd");
    std::fs::copy(&a, &b_path).expect("copy");
    let mut b_img = OpenOptions::new()
        .write(true)
        .open(&b_path)
        .expect("open b");
    let mut b_bytes = a_bytes.clone();
    for page in [3u64, 40, 41, 700, 1200] {
        write_at(
            &mut b_img,
            &mut b_bytes,
            page * 4096,
            &rng.nonzero_bytes(4096),
        );
    }
    b_img.close().expect("close b");
    // block must be a parent of its own: another unique ID, via convert.
    let b_fresh = dir.join("b2.vhd");
    let mut b2 = CreateOptions::new(DiskType::Dynamic, 8 * MIB)
        .create(&b_fresh)
        .expect("create b2");
    b2.write_at(0, &b_bytes).expect("write b2");
    b2.close().expect("close b2");
    std::fs::remove_file(&b_path).expect("rm");
    let child = dir.join("child.vhd");
    let child_bytes = make_child(&child, &a, &a_bytes, &mut rng, ChildWrites::Pages);
    let report = vhdref::ops::rebase(&child, &b_fresh, RebaseMode::Safe, OpenOptions::new())
        .expect("rebase");
    assert!(report.bytes_copied > 0);
    out.push(case("rebased child", vec![child, b_fresh], child_bytes));

    // Repair: a zeroed footer copy and stray bytes before the footer.
    let path = subdir(root, "repair").join("repaired.vhd");
    let mut img = CreateOptions::new(DiskType::Dynamic, 6 * MIB)
        .block_size(block as u32)
        .create(&path)
        .expect("create");
    let mut expected = vec![0u8; 6 * MIB as usize];
    common::write_random(&mut img, &mut expected, &mut rng, 6, 100 * KIB, 0..6 * MIB);
    img.close().expect("close");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[..512].fill(0);
    let footer = bytes.split_off(bytes.len() - 512);
    bytes.extend(vec![0x4Cu8; 300]);
    bytes.extend(vec![0u8; 212]);
    bytes.extend(footer);
    std::fs::write(&path, bytes).expect("write");
    let report = vhdref::ops::repair(&path, &RepairOptions::new()).expect("repair");
    assert!(
        report.written && report.fixes.len() == 2,
        "{:?}",
        report.fixes
    );
    out.push(case("repaired dynamic", vec![path], expected));

    // A fixed image sized for Azure.
    let path = subdir(root, "azure").join("upload.vhd");
    let size = vhdref::ops::aligned_size(30_000_000, MIB).expect("align");
    let expected = make_base(
        &path,
        &CreateOptions::new(DiskType::Fixed, size),
        &mut rng,
        5,
        None,
    );
    assert!(vhdref::ops::check_azure(&path).expect("profile").is_empty());
    out.push(case("fixed for azure", vec![path], expected));

    for c in &out {
        assert_same_bytes(
            &read_image(c.path()),
            &c.expected,
            &format!("vhdref reading {}", c.name),
        );
        let report = vhdref::check::check(c.path(), &vhdref::check::CheckOptions::new());
        assert!(
            report.findings.is_empty(),
            "{}: {:?}",
            c.name,
            report.findings
        );
    }
    out
}

#[test]
fn qemu_img_compare_finds_every_result_equal_to_its_raw() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::QemuImg) {
        return;
    }
    let dir = temp_dir();
    let mut compared = 0;
    for c in results(dir.path()) {
        if c.disk_type == DiskType::Differencing {
            continue; // QEMU has no differencing support
        }
        let raw = c.path().with_extension("raw");
        std::fs::write(&raw, &c.expected).expect("write raw");
        let out = run(&mut cmd(
            "qemu-img",
            [
                "compare".as_ref(),
                "-f".as_ref(),
                "vpc".as_ref(),
                "-F".as_ref(),
                "raw".as_ref(),
                c.path().as_os_str(),
                raw.as_os_str(),
            ],
        ));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: qemu-img compare: {}{}",
            c.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        compared += 1;
    }
    assert_eq!(compared, 7);
}

#[test]
fn libvhdi_reads_every_result_as_written() {
    let _serial = common::one_at_a_time();
    let dir = temp_dir();
    let cases = results(dir.path());
    for peer in [Peer::PyvhdiSystem, Peer::PyvhdiVenv] {
        if !peer_available(peer) {
            continue;
        }
        for c in &cases {
            let what = format!("{} reading {}", peer.name(), c.name);
            let original = Image::open(c.path()).expect("opens").footer().original_size;
            let current = c.expected.len() as u64;
            if original == current {
                let (bytes, size, _) = pyvhdi_read(&peer.python(), dir.path(), &c.chain_refs());
                assert_eq!(size, current, "{what}");
                assert_same_bytes(&bytes, &c.expected, &what);
                continue;
            }
            // libvhdi sizes a disk by the footer's original_size, which a
            // resize keeps (the spec calls it the size at creation, and
            // `VirtualBox`'s resize keeps it too): it reports a resized disk
            // at its old size. What both sizes cover reads right; past the
            // new end of a shrunk disk it reads zeros (dynamic) or fails
            // (fixed: the file ends there).
            let (size, bytes) =
                pyvhdi_prefix(&peer.python(), dir.path(), c.path(), original.min(current));
            assert_eq!(size, original, "{what}: libvhdi's media size");
            assert_same_bytes(&bytes, &c.expected[..original.min(current) as usize], &what);
            if original > current {
                let full = pyvhdi_prefix_result(&peer.python(), dir.path(), c.path(), original);
                if c.disk_type == DiskType::Fixed {
                    assert!(full.is_err(), "{what}: read past the data");
                } else {
                    let (_, all) = full.expect("libvhdi reads a shrunk dynamic disk");
                    assert!(all[current as usize..].iter().all(|&b| b == 0), "{what}");
                }
            }
        }
    }
}

/// Reads the first `len` bytes of `image` with pyvhdi; returns its media
/// size and the bytes, or what it printed when it failed.
fn pyvhdi_prefix_result(
    python: &Path,
    dir: &Path,
    image: &Path,
    len: u64,
) -> Result<(u64, Vec<u8>), String> {
    const SCRIPT: &str = r#"import sys, pyvhdi
path, length, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
f = pyvhdi.file()
f.open(path)
chunk = 512 * 1024
with open(out, "wb") as o:
    off = 0
    while off < length:
        data = f.read_buffer_at_offset(min(chunk, length - off), off)
        if not data:
            sys.exit("short read at %d" % off)
        o.write(data)
        off += len(data)
print(f.get_media_size())
"#;
    let script = common::write_script(dir, "pyvhdi_prefix.py", SCRIPT);
    let out_path = dir.join("pyvhdi_prefix.raw");
    let length = len.to_string();
    let out = run(&mut cmd(
        python,
        [
            script.as_os_str(),
            image.as_os_str(),
            length.as_ref(),
            out_path.as_os_str(),
        ],
    ));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let size = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a media size");
    Ok((size, std::fs::read(&out_path).expect("the bytes read")))
}

fn pyvhdi_prefix(python: &Path, dir: &Path, image: &Path, len: u64) -> (u64, Vec<u8>) {
    pyvhdi_prefix_result(python, dir, image, len)
        .unwrap_or_else(|e| panic!("pyvhdi reading {}: {e}", image.display()))
}

#[test]
fn sevenzip_extracts_every_result_as_written() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::SevenZip) {
        return;
    }
    let dir = temp_dir();
    for c in results(dir.path()) {
        let image = c.path();
        let out = run(
            cmd("7zz", ["e".as_ref(), "-so".as_ref(), image.as_os_str()])
                .current_dir(image.parent().expect("in a directory")),
        );
        assert!(
            out.status.success(),
            "{}: 7zz failed: {}",
            c.name,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same_bytes(
            &out.stdout,
            &c.expected,
            &format!("7zz extracting {}", c.name),
        );
    }
}

#[test]
fn qemu_img_sees_the_azure_sizes() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::QemuImg) {
        return;
    }
    let dir = temp_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vhd"))
        .args([
            "create", "up.vhd", "30000000", "--type", "fixed", "--align", "1M",
        ])
        .current_dir(dir.path())
        .output()
        .expect("vhd runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = run(&mut cmd(
        "qemu-img",
        [
            "info".as_ref(),
            "-f".as_ref(),
            "vpc".as_ref(),
            "--output=json".as_ref(),
            dir.path().join("up.vhd").as_os_str(),
        ],
    ));
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(v["virtual-size"], 29 * MIB);
    assert_eq!(
        std::fs::metadata(dir.path().join("up.vhd")).unwrap().len(),
        29 * MIB + 512
    );
}
