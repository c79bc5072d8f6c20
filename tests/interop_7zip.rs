//! 7-Zip (`7zz`) reads what vhdref writes: it extracts the guest bytes of
//! our fixed, dynamic and differencing images (parents found by name beside
//! the child) exactly as vhdref reads them, and lists our size, type,
//! block size and chain. 7-Zip honours sector bitmaps bit by bit, and is
//! the strictest checker among the peers (checksums, both footer copies),
//! so a clean extraction also says our metadata is consistent.

mod common;

use std::path::Path;

use common::{
    Case, Peer, assert_same_bytes, cmd, our_images, peer_available, read_image, run, run_ok,
    sevenzip_read, temp_dir,
};
use vhdref::{DiskType, Image};

#[test]
fn sevenzip_streams_our_images_byte_for_byte() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::SevenZip) {
        return;
    }
    let dir = temp_dir();
    for case in our_images(dir.path(), 0x71) {
        let out = sevenzip_read(case.path());
        assert!(
            out.status.success(),
            "{}: 7zz e -so failed with {}: {}",
            case.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // Our flattened read, and 7-Zip's, equal the bytes we wrote.
        assert_same_bytes(
            &read_image(case.path()),
            &case.expected,
            &format!("{} read by vhdref", case.name),
        );
        assert_same_bytes(
            &out.stdout,
            &case.expected,
            &format!("{} extracted by 7zz", case.name),
        );
    }
}

#[test]
fn sevenzip_extracts_our_images_to_img_files() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::SevenZip) {
        return;
    }
    let dir = temp_dir();
    let cases = our_images(dir.path(), 0x72);
    for case in cases
        .iter()
        .filter(|c| ["fixed", "dynamic", "child-of-child"].contains(&c.name))
    {
        let out_dir = dir.path().join(format!("out-{}", case.name));
        let mut o = std::ffi::OsString::from("-o");
        o.push(&out_dir);
        // `-o` must be joined to the directory; the parent is looked for
        // beside the child, whatever the working directory.
        run_ok(&mut cmd(
            "7zz",
            [
                "x".as_ref(),
                "-y".as_ref(),
                case.path().as_os_str(),
                o.as_os_str(),
            ],
        ));
        let stem = case
            .path()
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let extracted =
            std::fs::read(out_dir.join(format!("{stem}.img"))).expect("7zz wrote NAME.img");
        assert_same_bytes(
            &extracted,
            &case.expected,
            &format!("{} extracted by 7zz x", case.name),
        );
    }
}

/// `7zz l -slt` prints `Key = value` lines: the first value of `key`.
fn field<'a>(listing: &'a str, key: &str) -> Option<&'a str> {
    listing
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(" = "))
}

fn listing(image: &Path) -> String {
    let out = run_ok(&mut cmd(
        "7zz",
        ["l".as_ref(), "-slt".as_ref(), image.as_os_str()],
    ));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sevenzip_lists_our_size_type_block_size_and_chain() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::SevenZip) {
        return;
    }
    let dir = temp_dir();
    for case in our_images(dir.path(), 0x73) {
        let text = listing(case.path());
        let img = Image::open(case.path()).expect("vhdref opens its own image");
        let chain = img.chain();
        let base = chain.last().expect("a chain has a base");
        let what = case.name;
        assert_eq!(field(&text, "Type"), Some("VHD"), "{what}");
        // The archive's only item: its Size is current_size.
        let size = img.size().to_string();
        assert_eq!(field(&text, "Size"), Some(size.as_str()), "{what}: size");
        let base_type = match base.disk_type() {
            DiskType::Fixed => "Fixed",
            _ => "Dynamic",
        };
        let method = match case.disk_type {
            DiskType::Differencing => format!("Differencing -> {base_type}"),
            _ => base_type.to_string(),
        };
        assert_eq!(
            field(&text, "Method"),
            Some(method.as_str()),
            "{what}: method"
        );
        let block = img.block_size().map(|b| b.to_string());
        assert_eq!(
            field(&text, "Cluster Size"),
            block.as_deref(),
            "{what}: block size"
        );
        assert_eq!(
            field(&text, "Creator Application"),
            Some("vhdr 0.1"),
            "{what}: creator"
        );
        let id = img.footer().unique_id.simple().to_string().to_uppercase();
        assert_eq!(field(&text, "ID"), Some(id.as_str()), "{what}: unique id");
        let file_len = std::fs::metadata(case.path())
            .expect("stat")
            .len()
            .to_string();
        assert_eq!(
            field(&text, "Physical Size"),
            Some(file_len.as_str()),
            "{what}: file size"
        );
        if case.disk_type == DiskType::Differencing {
            // "child.vhd -> parent.vhd": the names of the ancestors, nearest first.
            let names: Vec<&str> = case.chain[1..]
                .iter()
                .map(|p| p.file_name().and_then(|n| n.to_str()).expect("utf-8 name"))
                .collect();
            let parents = names.join(" -> ");
            assert_eq!(
                field(&text, "Parent"),
                Some(parents.as_str()),
                "{what}: parents"
            );
            let volumes = case.chain.len().to_string();
            assert_eq!(
                field(&text, "Volumes"),
                Some(volumes.as_str()),
                "{what}: volumes"
            );
            let total: u64 = case
                .chain
                .iter()
                .map(|p| std::fs::metadata(p).expect("stat").len())
                .sum();
            let total = total.to_string();
            assert_eq!(
                field(&text, "Total Physical Size"),
                Some(total.as_str()),
                "{what}: chain size"
            );
        } else {
            assert_eq!(field(&text, "Parent"), None, "{what}");
        }
    }
}

/// 7-Zip looks for the parent only by name beside the child; vhdref also
/// follows the locators (here the absolute W2ku one). A child copied away
/// from its parent: 7-Zip exits 2 naming the missing parent and still
/// leaves an empty output behind (so callers must check the exit code),
/// while vhdref reads it through the locator; once the parent is gone,
/// vhdref refuses it too (PAR-NOT-FOUND).
#[test]
fn sevenzip_and_vhdref_refuse_a_child_without_its_parent() {
    let _serial = common::one_at_a_time();
    if !peer_available(Peer::SevenZip) {
        return;
    }
    let dir = temp_dir();
    let cases = our_images(dir.path(), 0x74);
    let case: &Case = cases
        .iter()
        .find(|c| c.name == "child-of-dynamic")
        .expect("case exists");
    let lone_dir = dir.path().join("lone");
    std::fs::create_dir(&lone_dir).expect("mkdir");
    let lone = lone_dir.join("child.vhd");
    std::fs::copy(case.path(), &lone).expect("copying the child alone");

    let out = sevenzip_read(&lone);
    assert_eq!(out.status.code(), Some(2), "7zz e -so without the parent");
    assert!(out.stdout.is_empty(), "no guest bytes without the parent");
    let messages = String::from_utf8_lossy(&out.stderr);
    assert!(
        messages.contains("Missing volume : parent.vhd"),
        "{messages}"
    );

    let mut o = std::ffi::OsString::from("-o");
    o.push(lone_dir.join("out"));
    let out = run(&mut cmd(
        "7zz",
        ["x".as_ref(), "-y".as_ref(), lone.as_os_str(), o.as_os_str()],
    ));
    assert_eq!(out.status.code(), Some(2), "7zz x without the parent");
    let left =
        std::fs::metadata(lone_dir.join("out/child.img")).expect("7zz leaves child.img behind");
    assert_eq!(left.len(), 0, "the file 7zz leaves behind is empty");

    let mut img = Image::open(&lone).expect("vhdref finds the parent through the absolute locator");
    assert_same_bytes(
        &common::read_all(&mut img),
        &case.expected,
        "vhdref reading the copied child",
    );
    drop(img);
    std::fs::rename(&case.chain[1], dir.path().join("parent.moved"))
        .expect("moving the parent away");
    let err = Image::open(&lone).expect_err("vhdref opened a child without its parent");
    assert_eq!(
        err.rule().map(vhdref::Rule::id),
        Some("PAR-NOT-FOUND"),
        "{err}"
    );
}
