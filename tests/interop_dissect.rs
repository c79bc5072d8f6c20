//! The Python peers of the venv other than libvhdi: dissect.hypervisor
//! reads what vhdref writes, and vhdref reads what pyvhd writes.
//!
//! * dissect (3.21) reads our fixed and dynamic images exactly. It has no
//!   differencing support: it reads our child as a lone dynamic disk
//!   (pinned below), as QEMU does.
//! * pyvhd (0.0.1) converts a raw file into a dynamic image (creator
//!   `tap\0`, every block allocated, all-ones bitmaps); vhdref reads it byte
//!   for byte. pyvhd crashes on inputs over 7 blocks (14 MiB), so inputs stay
//!   at or under that. For an input that is not a whole number of sectors it
//!   writes that length as `current_size`; vhdref refuses such an image
//!   (FTR-CURRENT-SIZE) while libvhdi and 7-Zip read it (pinned below).

mod common;

use std::path::Path;

use common::{
    Case, KIB, MIB, Peer, Rng, assert_same_bytes, cmd, dissect_read, our_images, peer_available,
    read_all, read_image, run_ok, scatter_random, temp_dir, venv_python, write_script,
};
use vhdref::{DiskType, Image};

#[test]
fn dissect_reads_our_fixed_and_dynamic_images() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::Dissect) {
        return;
    }
    let dir = temp_dir();
    let cases = our_images(dir.path(), 0xD1);
    let plain: Vec<&Case> = cases
        .iter()
        .filter(|c| c.disk_type != DiskType::Differencing)
        .collect();
    assert!(plain.len() >= 5, "fixed and dynamic cases");
    for case in plain {
        let (bytes, size) = dissect_read(dir.path(), case.path());
        assert_eq!(
            size,
            case.expected.len() as u64,
            "{}: dissect's size",
            case.name
        );
        assert_same_bytes(
            &bytes,
            &case.expected,
            &format!("{} read by dissect", case.name),
        );
    }
}

/// dissect ignores the parent and the bitmap: for our child it returns the
/// data area of each block the child allocated and zeros elsewhere.
#[test]
fn dissect_reads_our_differencing_child_as_a_lone_dynamic_disk() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::Dissect) {
        return;
    }
    let dir = temp_dir();
    let cases = our_images(dir.path(), 0xD2);
    for case in cases
        .iter()
        .filter(|c| c.disk_type == DiskType::Differencing)
    {
        let img = Image::open(case.path()).expect("open");
        let file = std::fs::read(case.path()).expect("read the child file");
        let block = img.block_size().expect("sparse") as usize;
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
            lone != case.expected,
            "{}: the chain must read differently from the lone child",
            case.name
        );
        let (bytes, _) = dissect_read(dir.path(), case.path());
        assert_same_bytes(&bytes, &lone, &format!("{} read by dissect", case.name));
    }
}

/// `pyvhd_convert.py IN OUT`: pyvhd's only API, raw to dynamic.
const PYVHD_CONVERT: &str = r#"import sys, pyvhd
with open(sys.argv[1], "rb") as i, open(sys.argv[2], "wb") as o:
    pyvhd.do_vhd_convert(i, o)
"#;

fn pyvhd_convert(dir: &Path, raw: &[u8], name: &str) -> std::path::PathBuf {
    let raw_path = dir.join(format!("{name}.raw"));
    std::fs::write(&raw_path, raw).expect("writing the raw input");
    let vhd = dir.join(format!("{name}.vhd"));
    let script = write_script(dir, "pyvhd_convert.py", PYVHD_CONVERT);
    run_ok(&mut cmd(
        venv_python(),
        [script.as_os_str(), raw_path.as_os_str(), vhd.as_os_str()],
    ));
    vhd
}

#[test]
fn images_pyvhd_converts_from_raw_read_like_the_raw() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::Pyvhd) {
        return;
    }
    let dir = temp_dir();
    let mut rng = Rng::new(0xD3);
    // 7 blocks exactly (pyvhd's limit), 5 blocks, and a partial last block.
    for size in [14 * MIB, 10 * MIB, 3 * MIB + 3 * 512] {
        let mut raw = vec![0u8; size as usize];
        scatter_random(&mut raw, &mut rng, 8, 300 * KIB);
        let path = pyvhd_convert(dir.path(), &raw, &format!("p{size}"));
        let what = format!("pyvhd image of {size} bytes");
        let mut img = Image::open(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(img.disk_type(), DiskType::Dynamic, "{what}");
        assert_eq!(img.size(), size, "{what}: current_size is the input length");
        assert_eq!(
            img.footer().creator_application,
            *b"tap\0",
            "{what}: creator"
        );
        assert_eq!(img.block_size(), Some(2 * MIB as u32), "{what}");
        let (blocks, allocated) = img.block_counts().expect("dynamic");
        assert_eq!(
            (blocks as u64, allocated as u64),
            (size.div_ceil(2 * MIB), size.div_ceil(2 * MIB)),
            "{what}: pyvhd allocates every block"
        );
        let findings: Vec<&str> = img.findings().iter().map(|f| f.rule.id()).collect();
        assert!(findings.is_empty(), "{what}: findings {findings:?}");
        assert_same_bytes(&read_all(&mut img), &raw, &what);
    }
}

/// pyvhd writes an input of 5,000,000 bytes (not a whole number of
/// sectors) as `current_size` 5000000. vhdref reads exactly 5,000,000
/// bytes with a FTR-CURRENT-SIZE warning, as pyvhdi and 7-Zip do (QEMU
/// floors to 4,999,680; spec/divergences.md).
#[test]
fn an_unaligned_pyvhd_image_is_read_with_a_warning_like_libvhdi_reads_it() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::Pyvhd) {
        return;
    }
    let dir = temp_dir();
    let mut rng = Rng::new(0xD4);
    let mut raw = vec![0u8; 5_000_000];
    scatter_random(&mut raw, &mut rng, 6, 200 * KIB);
    *raw.last_mut().expect("not empty") = 0xEE;
    let path = pyvhd_convert(dir.path(), &raw, "unaligned");
    let mut img = Image::open(&path).expect("vhdref opens a current_size of 5000000");
    let rules: Vec<_> = img.findings().iter().map(|f| f.rule.id()).collect();
    assert_eq!(rules, ["FTR-CURRENT-SIZE"]);
    assert_eq!(img.size(), 5_000_000);
    assert_same_bytes(
        &read_all(&mut img),
        &raw,
        "vhdref reading the unaligned pyvhd image",
    );
    drop(img);
    // Writing the last, partial sector works and keeps the rest of it.
    let mut img = vhdref::Image::open_rw(&path).expect("open for writing");
    img.write_at(4_999_990, &[0xAB; 10])
        .expect("write the tail");
    img.close().expect("close");
    let mut expected = raw.clone();
    expected[4_999_990..].fill(0xAB);
    let mut img = Image::open(&path).expect("reopen");
    assert_same_bytes(
        &read_all(&mut img),
        &expected,
        "vhdref after writing the tail",
    );
    drop(img);
    let raw = expected;
    if peer_available(Peer::PyvhdiVenv) {
        let (bytes, size, _) =
            common::pyvhdi_read(&Peer::PyvhdiVenv.python(), dir.path(), &[&path]);
        assert_eq!(size, 5_000_000, "pyvhdi's media size");
        assert_same_bytes(&bytes, &raw, "pyvhdi reading the unaligned pyvhd image");
    }
    if peer_available(Peer::SevenZip) {
        let out = run_ok(&mut cmd(
            "7zz",
            ["e".as_ref(), "-so".as_ref(), path.as_os_str()],
        ));
        assert_same_bytes(
            &out.stdout,
            &raw,
            "7zz extracting the unaligned pyvhd image",
        );
    }
}

/// The peers agree with each other on pyvhd's images too: dissect reads
/// what vhdref reads.
#[test]
fn dissect_and_vhdref_agree_on_a_pyvhd_image() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::Pyvhd) || !peer_available(Peer::Dissect) {
        return;
    }
    let dir = temp_dir();
    let mut rng = Rng::new(0xD5);
    let mut raw = vec![0u8; 6 * MIB as usize];
    scatter_random(&mut raw, &mut rng, 6, 300 * KIB);
    let path = pyvhd_convert(dir.path(), &raw, "agree");
    let (bytes, _) = dissect_read(dir.path(), &path);
    assert_same_bytes(
        &bytes,
        &read_image(&path),
        "dissect vs vhdref on a pyvhd image",
    );
    assert_same_bytes(&bytes, &raw, "dissect vs the raw");
}
