//! QEMU (`qemu-img`, `qemu-io`, 10.x) and vhdref read each other's images.
//!
//! * Images `qemu-img create` makes (fixed and dynamic, with and without
//!   `force_size`) open in vhdref with the size QEMU reports; without
//!   `force_size` QEMU rounds the size up to a CHS product, the same size
//!   vhdref's `SizeRule::Chs` computes.
//! * Images `qemu-img convert` fills from a raw file read byte for byte like
//!   the raw (padded with zeros to `current_size`).
//! * Images vhdref creates and writes compare identical to the expected raw
//!   in `qemu-img compare`, and `qemu-img info` reports `current_size` as
//!   their virtual size (QEMU sizes creator `vhdr` by `current_size`).
//! * `qemu-io` writes into images vhdref made, and vhdref reads the change.
//! * QEMU has no differencing support: it reads our child as a lone dynamic
//!   disk (pinned below). `qemu-img check` does not support vpc.
//!
//! Always `-f vpc`: QEMU probes for `conectix` only at offset 0 and takes a
//! fixed VHD for raw.

mod common;

use std::path::Path;

use common::{
    KIB, MIB, Peer, Rng, SECTOR, assert_same_bytes, cmd, padded, peer_available, read_all,
    read_image, run, run_ok, scatter_random, temp_dir, write_random,
};
use vhdref::{CreateOptions, DiskType, Image, SizeRule};

/// The `qemu-img info -f vpc --output json` fields we use.
struct QemuInfo {
    virtual_size: u64,
    cluster_size: Option<u64>,
}

fn qemu_info(image: &Path) -> QemuInfo {
    let out = run_ok(&mut cmd(
        "qemu-img",
        [
            "info".as_ref(),
            "-f".as_ref(),
            "vpc".as_ref(),
            "--output".as_ref(),
            "json".as_ref(),
            image.as_os_str(),
        ],
    ));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("qemu-img info prints JSON");
    QemuInfo {
        virtual_size: v["virtual-size"].as_u64().expect("virtual-size"),
        cluster_size: v["cluster-size"].as_u64(),
    }
}

fn subformat(t: DiskType) -> &'static str {
    match t {
        DiskType::Fixed => "fixed",
        _ => "dynamic",
    }
}

/// The size QEMU gives a disk asked for `size` bytes: rounded up to a CHS
/// product (vhdref's `SizeRule::Chs`), or with `force_size` to a sector.
fn qemu_size(size: u64, force_size: bool) -> u64 {
    if force_size {
        size.div_ceil(SECTOR) * SECTOR
    } else {
        CreateOptions::new(DiskType::Dynamic, size)
            .size_rule(SizeRule::Chs)
            .effective_size()
            .expect("a size the chs rule can describe")
    }
}

/// Rule IDs of the warnings vhdref reports when opening.
fn finding_ids(img: &Image) -> Vec<&'static str> {
    img.findings().iter().map(|f| f.rule.id()).collect()
}

/// What vhdref finds in a QEMU image: `qem2` (`force_size`) writes the
/// largest geometry whatever the size, which the spec algorithm would not
/// give (GEO-ALGORITHM); `qemu` images are clean.
fn expected_qemu_findings(force_size: bool) -> Vec<&'static str> {
    if force_size {
        vec!["GEO-ALGORITHM"]
    } else {
        vec![]
    }
}

#[test]
fn images_qemu_img_creates_open_with_qemus_size_and_read_zeros() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::QemuImg) {
        return;
    }
    let dir = temp_dir();
    // 100 MB + 12345 is neither a sector nor a CHS multiple; the files stay
    // small (fixed ones are sparse).
    for size in [MIB, 10 * MIB, 100_000_000 + 12_345] {
        for disk_type in [DiskType::Dynamic, DiskType::Fixed] {
            for force_size in [false, true] {
                let what = format!("{} {size} force_size={force_size}", subformat(disk_type));
                let path = dir
                    .path()
                    .join(format!("{}-{size}-{force_size}.vhd", subformat(disk_type)));
                let force = if force_size { "on" } else { "off" };
                run_ok(&mut cmd(
                    "qemu-img",
                    [
                        "create".as_ref(),
                        "-q".as_ref(),
                        "-f".as_ref(),
                        "vpc".as_ref(),
                        "-o".as_ref(),
                        format!("subformat={},force_size={force}", subformat(disk_type)).as_ref(),
                        path.as_os_str(),
                        size.to_string().as_ref(),
                    ],
                ));
                let mut img = Image::open(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(img.disk_type(), disk_type, "{what}");
                assert_eq!(
                    img.size(),
                    qemu_size(size, force_size),
                    "{what}: current_size"
                );
                assert_eq!(
                    qemu_info(&path).virtual_size,
                    img.size(),
                    "{what}: qemu's virtual size"
                );
                let creator = if force_size { "qem2" } else { "qemu" };
                assert_eq!(img.footer().creator_application_str(), creator, "{what}");
                assert_eq!(
                    finding_ids(&img),
                    expected_qemu_findings(force_size),
                    "{what}: findings"
                );
                // Every byte reads as zero, without holding 100 MB at once.
                let mut buf = vec![0xEEu8; MIB as usize];
                let mut at = 0;
                while at < img.size() {
                    let n = MIB.min(img.size() - at) as usize;
                    img.read_at(at, &mut buf[..n]).expect("read");
                    assert!(
                        buf[..n].iter().all(|&b| b == 0),
                        "{what}: non-zero byte near {at}"
                    );
                    at += n as u64;
                }
                if disk_type == DiskType::Dynamic {
                    assert_eq!(
                        img.block_counts().map(|c| c.1),
                        Some(0),
                        "{what}: no block allocated"
                    );
                }
            }
        }
    }
}

/// A raw file of `size` bytes: zeros, with random runs in a few places
/// (some whole 2 MiB blocks stay zero, which `convert` leaves unallocated).
fn raw_with_scattered_data(size: u64, rng: &mut Rng) -> Vec<u8> {
    let mut raw = vec![0u8; size as usize];
    scatter_random(&mut raw[..(size / 3) as usize], rng, 5, 100 * KIB);
    let tail = (size - size / 4) as usize;
    scatter_random(&mut raw[tail..], rng, 3, 50 * KIB);
    // The very first and last bytes too.
    raw[0] = 0xA5;
    *raw.last_mut().expect("not empty") = 0x5A;
    raw
}

#[test]
fn images_qemu_img_converts_from_raw_read_like_the_raw() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::QemuImg) {
        return;
    }
    let dir = temp_dir();
    let mut rng = Rng::new(0x91);
    for size in [MIB, 5 * MIB + 12_345, 20_000_000] {
        let raw = raw_with_scattered_data(size, &mut rng);
        let raw_path = dir.path().join(format!("{size}.raw"));
        std::fs::write(&raw_path, &raw).expect("writing the raw file");
        for disk_type in [DiskType::Dynamic, DiskType::Fixed] {
            for force_size in [false, true] {
                let what = format!(
                    "convert to {} {size} force_size={force_size}",
                    subformat(disk_type)
                );
                let path = dir
                    .path()
                    .join(format!("{}-{size}-{force_size}.vhd", subformat(disk_type)));
                let force = if force_size { "on" } else { "off" };
                run_ok(&mut cmd(
                    "qemu-img",
                    [
                        "convert".as_ref(),
                        "-f".as_ref(),
                        "raw".as_ref(),
                        "-O".as_ref(),
                        "vpc".as_ref(),
                        "-o".as_ref(),
                        format!("subformat={},force_size={force}", subformat(disk_type)).as_ref(),
                        raw_path.as_os_str(),
                        path.as_os_str(),
                    ],
                ));
                let mut img = Image::open(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(
                    img.size(),
                    qemu_size(size, force_size),
                    "{what}: current_size"
                );
                assert_eq!(
                    qemu_info(&path).virtual_size,
                    img.size(),
                    "{what}: qemu's virtual size"
                );
                assert_eq!(
                    finding_ids(&img),
                    expected_qemu_findings(force_size),
                    "{what}: findings"
                );
                let want = padded(&raw, img.size());
                assert_same_bytes(&read_all(&mut img), &want, &what);
                if disk_type == DiskType::Dynamic {
                    // convert allocates exactly the blocks that hold a non-zero byte.
                    let block = img.block_size().expect("dynamic") as usize;
                    let allocated: Vec<bool> = img
                        .bat()
                        .expect("dynamic")
                        .iter()
                        .map(|&e| e != u32::MAX)
                        .collect();
                    let nonzero: Vec<bool> = want
                        .chunks(block)
                        .map(|c| c.iter().any(|&b| b != 0))
                        .collect();
                    assert_eq!(allocated, nonzero, "{what}: allocated blocks");
                }
            }
        }
    }
}

/// `qemu-img compare -f vpc -F raw IMAGE RAW`: exit 0 identical, 1 differ.
fn qemu_compare(image: &Path, raw: &Path) -> Option<i32> {
    let out = run(&mut cmd(
        "qemu-img",
        [
            "compare".as_ref(),
            "-f".as_ref(),
            "vpc".as_ref(),
            "-F".as_ref(),
            "raw".as_ref(),
            image.as_os_str(),
            raw.as_os_str(),
        ],
    ));
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "qemu-img compare {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.code()
}

#[test]
fn qemu_reads_images_we_create_and_write_as_identical_to_the_raw() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::QemuImg) {
        return;
    }
    let dir = temp_dir();
    let mut rng = Rng::new(0x92);
    let mut variants: Vec<(DiskType, SizeRule, Option<u32>)> = Vec::new();
    for rule in [SizeRule::Exact, SizeRule::Chs] {
        variants.push((DiskType::Fixed, rule, None));
        for block in [512 * KIB as u32, 2 * MIB as u32, 8 * MIB as u32] {
            variants.push((DiskType::Dynamic, rule, Some(block)));
        }
    }
    for (i, (disk_type, rule, block)) in variants.into_iter().enumerate() {
        // Exact: a sector multiple that no geometry describes; Chs: rounded up.
        let size = match rule {
            SizeRule::Exact => 9 * MIB + 7 * SECTOR,
            SizeRule::Chs => 9_000_001,
        };
        let what = format!("{disk_type:?} {rule:?} block {block:?}");
        let path = dir.path().join(format!("ours-{i}.vhd"));
        let mut options = CreateOptions::new(disk_type, size).size_rule(rule);
        if let Some(b) = block {
            options = options.block_size(b);
        }
        let mut img = options
            .create(&path)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let current = img.size();
        assert_eq!(current, options.effective_size().expect("size"), "{what}");
        let mut expected = vec![0u8; current as usize];
        write_random(&mut img, &mut expected, &mut rng, 10, 200 * KIB, 0..current);
        common::write_at(&mut img, &mut expected, current - 3, &[1, 2, 3]);
        img.close().expect("close");

        let info = qemu_info(&path);
        assert_eq!(
            info.virtual_size, current,
            "{what}: qemu's virtual size is our current_size"
        );
        assert_eq!(
            info.cluster_size,
            block.map(u64::from),
            "{what}: qemu's cluster size"
        );
        let raw = dir.path().join(format!("expected-{i}.raw"));
        std::fs::write(&raw, &expected).expect("write raw");
        assert_eq!(
            qemu_compare(&path, &raw),
            Some(0),
            "{what}: qemu-img compare"
        );
        // The comparison can fail: one byte changed is found.
        let at = (current - 2) as usize;
        expected[at] ^= 0xFF;
        std::fs::write(&raw, &expected).expect("write raw");
        assert_eq!(
            qemu_compare(&path, &raw),
            Some(1),
            "{what}: qemu-img compare sees a changed byte"
        );
    }
}

#[test]
fn qemu_io_writes_into_images_we_create_and_we_read_them() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::QemuIo) {
        return;
    }
    let dir = temp_dir();
    let mut rng = Rng::new(0x93);
    for (disk_type, block) in [
        (DiskType::Fixed, 0),
        (DiskType::Dynamic, 2 * MIB),
        (DiskType::Dynamic, 512 * KIB),
    ] {
        let what = format!("{disk_type:?} block {block}");
        let path = dir
            .path()
            .join(format!("ours-{}-{block}.vhd", subformat(disk_type)));
        let size = 4 * MIB;
        let mut options = CreateOptions::new(disk_type, size);
        if block > 0 {
            options = options.block_size(block as u32);
        }
        let mut img = options.create(&path).expect("create");
        let mut expected = vec![0u8; size as usize];
        // Ours: a few sectors of block 0 and data around 1 MiB + 100 KiB;
        // 3 MiB.. stays unallocated.
        common::write_at(
            &mut img,
            &mut expected,
            3 * SECTOR,
            &rng.nonzero_bytes(2000),
        );
        common::write_at(
            &mut img,
            &mut expected,
            MIB + 100 * KIB,
            &rng.nonzero_bytes(5000),
        );
        img.close().expect("close");
        // QEMU's: 64 KiB at 1 MiB (in a block we allocated, for 2 MiB
        // blocks), and 4 KiB at 3 MiB (a block nobody allocated).
        run_ok(&mut cmd(
            "qemu-io",
            [
                "-f".as_ref(),
                "vpc".as_ref(),
                "-c".as_ref(),
                "write -P 0xab 1M 64k".as_ref(),
                "-c".as_ref(),
                "write -P 0xcd 3M 4k".as_ref(),
                path.as_os_str(),
            ],
        ));
        expected[MIB as usize..(MIB + 64 * KIB) as usize].fill(0xAB);
        expected[(3 * MIB) as usize..(3 * MIB + 4 * KIB) as usize].fill(0xCD);
        let img = Image::open(&path)
            .unwrap_or_else(|e| panic!("{what}: vhdref opens after qemu-io: {e}"));
        assert!(
            img.findings().is_empty(),
            "{what}: findings after qemu-io: {:?}",
            img.findings()
        );
        drop(img);
        assert_same_bytes(
            &read_image(&path),
            &expected,
            &format!("{what} after qemu-io"),
        );

        // And we can go on writing what QEMU wrote to.
        let mut img = Image::open_rw(&path).expect("open_rw");
        write_random(&mut img, &mut expected, &mut rng, 4, 100 * KIB, 0..size);
        img.close().expect("close");
        let raw = dir.path().join("expected.raw");
        std::fs::write(&raw, &expected).expect("write raw");
        if peer_available(Peer::QemuImg) {
            assert_eq!(
                qemu_compare(&path, &raw),
                Some(0),
                "{what}: qemu-img compare after both wrote"
            );
        }
        assert_same_bytes(
            &read_image(&path),
            &expected,
            &format!("{what} after both wrote"),
        );
    }
}

/// QEMU has no differencing support: it opens our child as if it were a
/// dynamic disk with no parent, returning the whole data area of each
/// block the child allocated (bitmap ignored) and zeros elsewhere. vhdref
/// reads the chain.
#[test]
fn qemu_reads_our_differencing_child_as_a_lone_dynamic_disk() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::QemuImg) {
        return;
    }
    let dir = temp_dir();
    let mut rng = Rng::new(0x94);
    let parent = dir.path().join("parent.vhd");
    let mut parent_bytes = common::make_base(
        &parent,
        &CreateOptions::new(DiskType::Dynamic, 6 * MIB),
        &mut rng,
        0,
        None,
    );
    common::fill_random(&parent, &mut parent_bytes, &mut rng, 0..6 * MIB);
    let child = dir.path().join("child.vhd");
    let child_bytes = common::make_child(
        &child,
        &parent,
        &parent_bytes,
        &mut rng,
        common::ChildWrites::Sectors,
    );
    assert_same_bytes(
        &read_image(&child),
        &child_bytes,
        "vhdref reading the chain",
    );

    // What QEMU is expected to return: each allocated block's data area.
    let img = Image::open(&child).expect("open");
    let file = std::fs::read(&child).expect("read child file");
    let block = u64::from(img.block_size().expect("sparse")) as usize;
    let bitmap = (block / 512 / 8).div_ceil(512) * 512;
    let mut lone = vec![0u8; img.size() as usize];
    for (b, &entry) in img.bat().expect("sparse").iter().enumerate() {
        if entry != u32::MAX {
            let at = entry as usize * 512 + bitmap;
            let n = block.min(lone.len() - b * block);
            lone[b * block..b * block + n].copy_from_slice(&file[at..at + n]);
        }
    }
    assert!(
        lone != child_bytes,
        "the child must differ from a lone dynamic reading of it"
    );
    let out = dir.path().join("qemu.raw");
    run_ok(&mut cmd(
        "qemu-img",
        [
            "convert".as_ref(),
            "-f".as_ref(),
            "vpc".as_ref(),
            "-O".as_ref(),
            "raw".as_ref(),
            child.as_os_str(),
            out.as_os_str(),
        ],
    ));
    let theirs = std::fs::read(&out).expect("read qemu output");
    assert_same_bytes(&theirs, &lone, "qemu-img convert of our child");
}

/// `tests/snapshots/qemu_img_chs_rule.txt` records what qemu-img writes for
/// requests on each side of every switch of the geometry algorithm, and
/// `tests/snapshots.rs` holds vhdref's chs rule to it. Run qemu-img again
/// on every request, so the record cannot drift from what qemu-img does
/// (nor be rewritten from vhdref's output).
#[test]
fn qemu_img_still_writes_what_the_chs_rule_fixture_says() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::QemuImg) {
        return;
    }
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/snapshots/qemu_img_chs_rule.txt"
    );
    let text = std::fs::read_to_string(fixture).expect("the fixture");
    let dir = temp_dir();
    let image = dir.path().join("chs.vhd");
    let mut lines = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let request = line.split_whitespace().next().expect("a request");
        std::fs::remove_file(&image).ok();
        run_ok(&mut cmd(
            "qemu-img",
            [
                "create".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "vpc".as_ref(),
                "-o".as_ref(),
                "subformat=dynamic".as_ref(),
                image.as_os_str(),
                request.as_ref(),
            ],
        ));
        let bytes = std::fs::read(&image).expect("qemu-img wrote the image");
        let footer = &bytes[..512];
        let be64 = |at: usize| u64::from_be_bytes(footer[at..at + 8].try_into().expect("8"));
        let written = format!(
            "{request} {} {} {} {} {}",
            be64(48),
            be64(40),
            u16::from_be_bytes([footer[56], footer[57]]),
            footer[58],
            footer[59]
        );
        assert_eq!(written, line, "qemu-img create ... {request}");
        lines += 1;
    }
    assert!(lines > 100, "only {lines} requests in {fixture}");
}
