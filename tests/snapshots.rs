//! Snapshots of what `create` writes: hexdumps of the metadata (footer,
//! dynamic header, BAT, locators) and the `info --output json` document,
//! with the unique ID and the clock injected so every byte is fixed.
//!
//! The geometry `create` writes is not judged by vhdref's own output: at
//! sizes on each side of every switch of the geometry algorithm the
//! created bytes must equal what the independent test writer
//! (`tests/builder`) lays out, and the chs size rule must give what
//! qemu-img wrote (`tests/snapshots/qemu_img_chs_rule.txt`).
//!
//! Snapshots live in `tests/snapshots/`. To accept a deliberate change of
//! the on-disk bytes: `INSTA_UPDATE=always cargo test --test snapshots`,
//! then review the diff of the `.snap` files before committing them.

#[path = "builder/mod.rs"]
mod builder;

use std::fmt::Write as _;

use builder::hexdump;
use uuid::Uuid;
use vhdref::format::{DYN_HEADER_SIZE, FOOTER_SIZE, Footer};
use vhdref::storage::MemStorage;
use vhdref::{CreateOptions, DiskType, Geometry, Image, OpenOptions, SizeRule, Timestamp};

/// 2024-12-30T00:00:00Z, as seconds since 2000-01-01.
const CREATED: Timestamp = Timestamp(788_832_000);
/// The parent of the differencing snapshots was made a day earlier.
const PARENT_CREATED: Timestamp = Timestamp(788_745_600);
const ID: u128 = 0x0123_4567_89ab_4def_8123_4567_89ab_cdef;
const PARENT_ID: u128 = 0xfedc_ba98_7654_4321_8fed_cba9_8765_4321;

/// Options with the ID and the clock fixed.
fn options(disk_type: DiskType, size: u64) -> CreateOptions {
    CreateOptions::new(disk_type, size)
        .unique_id(Uuid::from_u128(ID))
        .time_stamp(CREATED)
}

/// Creates an image in memory, closes it and returns its bytes.
fn create(options: &CreateOptions) -> Vec<u8> {
    let mem = MemStorage::new();
    options
        .create_in(Box::new(mem.clone()), "disk.vhd", None)
        .and_then(Image::close)
        .expect("create works");
    mem.to_vec()
}

/// A dynamic parent and an empty differencing child of it, both in memory;
/// the child's locators name the parent `parent.vhd`, relative, so no
/// path of this machine appears.
fn parent_and_child() -> (MemStorage, MemStorage) {
    let parent = MemStorage::new();
    CreateOptions::new(DiskType::Dynamic, 16 << 20)
        .unique_id(Uuid::from_u128(PARENT_ID))
        .time_stamp(PARENT_CREATED)
        .create_in(Box::new(parent.clone()), "parent.vhd", None)
        .and_then(Image::close)
        .expect("create parent");
    let child = MemStorage::new();
    let parent_image = open(&parent, "parent.vhd", None);
    CreateOptions::new(DiskType::Differencing, 0)
        .unique_id(Uuid::from_u128(ID))
        .time_stamp(CREATED)
        .create_in(
            Box::new(child.clone()),
            "child.vhd",
            Some((parent_image, "parent.vhd")),
        )
        .and_then(Image::close)
        .expect("create child");
    (parent, child)
}

fn open(mem: &MemStorage, name: &str, parent: Option<Image>) -> Image {
    let mut options = OpenOptions::new();
    if let Some(p) = parent {
        options = options.parent_image(p);
    }
    options
        .open_storage(Box::new(mem.clone()), name)
        .expect("open works")
}

fn footer_at(bytes: &[u8], offset: usize) -> Footer {
    let raw: &[u8; FOOTER_SIZE] = bytes[offset..offset + FOOTER_SIZE]
        .try_into()
        .expect("512 bytes");
    Footer::parse(raw).expect("a valid footer")
}

/// The footer of a fixed image (the file's last 512 bytes).
fn fixed_dump(bytes: &[u8]) -> String {
    let at = bytes.len() - FOOTER_SIZE;
    hexdump(&bytes[at..], at as u64)
}

/// A new dynamic or differencing image is all metadata: footer copy,
/// dynamic header, BAT, locator data, footer. Dump all of it.
fn sparse_dump(bytes: &[u8]) -> String {
    assert_eq!(
        bytes[..FOOTER_SIZE],
        bytes[bytes.len() - FOOTER_SIZE..],
        "footer copy equals footer"
    );
    hexdump(bytes, 0)
}

/// Checks by hand what the snapshot shows, so a wrong snapshot cannot be
/// accepted by accident: cookies, sizes, geometry, an empty BAT.
fn assert_sparse_layout(bytes: &[u8], size: u64, block_size: u32) {
    let footer = footer_at(bytes, bytes.len() - FOOTER_SIZE);
    assert_eq!(footer.current_size, size);
    assert_eq!(footer.original_size, size);
    assert_eq!(footer.data_offset, FOOTER_SIZE as u64);
    assert_eq!(&bytes[512..520], b"cxsparse");
    let header = vhdref::format::DynHeader::parse(
        bytes[512..512 + DYN_HEADER_SIZE].try_into().expect("1024"),
        512,
    )
    .expect("a valid dynamic header");
    assert_eq!(header.block_size, block_size);
    assert_eq!(header.table_offset, 1536);
    let blocks = size.div_ceil(u64::from(block_size)) as usize;
    assert_eq!(header.max_table_entries as usize, blocks);
    let bat = &bytes[1536..1536 + blocks.div_ceil(128) * 512];
    assert!(
        bat.iter().all(|&b| b == 0xff),
        "a new BAT is all unallocated, padding included"
    );
}

#[test]
fn fixed_image_with_exact_size_writes_this_footer() {
    let size = 6 << 20;
    let bytes = create(&options(DiskType::Fixed, size));
    assert_eq!(bytes.len() as u64, size + 512);
    let footer = footer_at(&bytes, bytes.len() - FOOTER_SIZE);
    assert_eq!(footer.current_size, size);
    assert_eq!(footer.data_offset, u64::MAX);
    assert_eq!(footer.disk_geometry, builder_geometry(size));
    insta::assert_snapshot!("fixed_exact_6m_footer", fixed_dump(&bytes));
}

#[test]
fn fixed_image_with_chs_size_rounds_up_to_its_geometry() {
    let bytes = create(&options(DiskType::Fixed, 10_000_000).size_rule(SizeRule::Chs));
    let footer = footer_at(&bytes, bytes.len() - FOOTER_SIZE);
    assert!(footer.current_size >= 10_000_000);
    assert_eq!(
        footer.disk_geometry.capacity(),
        footer.current_size,
        "the geometry describes the size exactly"
    );
    assert_eq!(bytes.len() as u64, footer.current_size + 512);
    insta::assert_snapshot!("fixed_chs_10mb_footer", fixed_dump(&bytes));
}

#[test]
fn dynamic_image_with_exact_size_writes_this_metadata() {
    let size = 64 << 20;
    let bytes = create(&options(DiskType::Dynamic, size));
    assert_sparse_layout(&bytes, size, 2 << 20);
    assert_eq!(footer_at(&bytes, 0).disk_geometry, builder_geometry(size));
    insta::assert_snapshot!("dynamic_exact_64m", sparse_dump(&bytes));
}

#[test]
fn dynamic_image_with_chs_size_rounds_up_to_its_geometry() {
    let bytes = create(&options(DiskType::Dynamic, 100_000_000).size_rule(SizeRule::Chs));
    let footer = footer_at(&bytes, 0);
    assert!(footer.current_size >= 100_000_000);
    assert_eq!(footer.disk_geometry.capacity(), footer.current_size);
    assert_sparse_layout(&bytes, footer.current_size, 2 << 20);
    insta::assert_snapshot!("dynamic_chs_100mb", sparse_dump(&bytes));
}

#[test]
fn dynamic_image_with_512k_blocks_writes_this_metadata() {
    let size = 40 << 20;
    let bytes = create(&options(DiskType::Dynamic, size).block_size(512 << 10));
    assert_sparse_layout(&bytes, size, 512 << 10);
    insta::assert_snapshot!("dynamic_block_512k_40m", sparse_dump(&bytes));
}

#[test]
fn differencing_child_records_its_parent_and_a_relative_locator() {
    let (parent, child) = parent_and_child();
    let bytes = child.to_vec();
    assert_sparse_layout(&bytes, 16 << 20, 2 << 20);
    let header = open(&child, "child.vhd", Some(open(&parent, "parent.vhd", None)))
        .dyn_header()
        .cloned()
        .expect("a header");
    assert_eq!(header.parent_unique_id, Uuid::from_u128(PARENT_ID));
    assert_eq!(header.parent_time_stamp, PARENT_CREATED);
    assert_eq!(footer_at(&bytes, 0).disk_type, DiskType::Differencing);
    let dump = sparse_dump(&bytes);
    assert!(
        !dump.contains("/tmp") && !dump.contains("/work"),
        "no path of this machine"
    );
    insta::assert_snapshot!("differencing_child_16m", dump);
}

#[test]
fn hexdump_stars_repeated_lines_and_ends_with_the_length() {
    let mut bytes = vec![0u8; 64];
    bytes[0] = b'A';
    assert_eq!(
        hexdump(&bytes, 0x200),
        "00000200  41 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |A...............|\n\
         00000210  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
         *\n\
         00000240\n"
    );
}

/// `vhd info --output json` of an image in memory.
fn info_of(bytes: Vec<u8>, name: &str) -> serde_json::Value {
    let img = open(&MemStorage::from_bytes(bytes), name, None);
    vhdref::cli::info::info_json(&img)
}

#[test]
fn info_json_of_created_images_is_stable() {
    let cases = [
        ("info_fixed_exact_6m", options(DiskType::Fixed, 6 << 20)),
        (
            "info_fixed_chs_10mb",
            options(DiskType::Fixed, 10_000_000).size_rule(SizeRule::Chs),
        ),
        (
            "info_dynamic_exact_64m",
            options(DiskType::Dynamic, 64 << 20),
        ),
        (
            "info_dynamic_chs_100mb",
            options(DiskType::Dynamic, 100_000_000).size_rule(SizeRule::Chs),
        ),
        (
            "info_dynamic_block_512k_40m",
            options(DiskType::Dynamic, 40 << 20).block_size(512 << 10),
        ),
    ];
    for (name, options) in cases {
        let info = info_of(create(&options), "disk.vhd");
        assert_eq!(info["unique_id"], Uuid::from_u128(ID).to_string());
        assert_eq!(info["time_stamp_seconds"], CREATED.0);
        insta::assert_json_snapshot!(name, info);
    }
}

#[test]
fn info_json_of_a_child_opened_on_its_parent_in_memory_is_stable() {
    let (parent, child) = parent_and_child();
    let img = open(&child, "child.vhd", Some(open(&parent, "parent.vhd", None)));
    let info = vhdref::cli::info::info_json(&img);
    assert_eq!(
        info["parent"]["unique_id"],
        Uuid::from_u128(PARENT_ID).to_string()
    );
    assert_eq!(info["chain"].as_array().map(Vec::len), Some(2));
    insta::assert_json_snapshot!("info_differencing_child_16m", info);
}

/// The JSON with every mention of `dir` replaced by `[dir]`.
fn without_dir(value: &serde_json::Value, dir: &std::path::Path) -> serde_json::Value {
    let mut text = value.to_string();
    let canonical = dir.canonicalize().expect("the temp dir exists");
    for d in [canonical.as_path(), dir] {
        let shown = d.display().to_string();
        let escaped = serde_json::Value::String(shown).to_string();
        text = text.replace(escaped.trim_matches('"'), "[dir]");
    }
    serde_json::from_str(&text).expect("still JSON")
}

#[test]
fn info_json_of_a_three_image_chain_found_through_locators_is_stable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().join("base.vhd");
    let mid = dir.path().join("mid.vhd");
    let top = dir.path().join("top.vhd");
    CreateOptions::new(DiskType::Dynamic, 8 << 20)
        .block_size(512 << 10)
        .unique_id(Uuid::from_u128(PARENT_ID))
        .time_stamp(PARENT_CREATED)
        .create(&base)
        .and_then(Image::close)
        .expect("create base");
    for (path, parent, id) in [(&mid, &base, ID), (&top, &mid, ID + 1)] {
        let mut child = CreateOptions::differencing(parent)
            .block_size(512 << 10)
            .unique_id(Uuid::from_u128(id))
            .time_stamp(CREATED)
            .create(path)
            .expect("create child");
        if path == &top {
            // One block allocated in the top image, so the count shows.
            child.write_at(1 << 20, b"top data").expect("write");
        }
        child.close().expect("close");
    }
    let img = Image::open(&top).expect("the chain opens through its locators");
    let info = without_dir(&vhdref::cli::info::info_json(&img), dir.path());
    assert_eq!(info["chain"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        info["chain"][2]["unique_id"],
        Uuid::from_u128(PARENT_ID).to_string()
    );
    assert!(!info.to_string().contains(&dir.path().display().to_string()));
    insta::assert_json_snapshot!("info_chain_of_three", info);
}

// ------------------------------------------- geometry at every switch

/// The geometry of the spec's algorithm for `size` bytes, as the
/// independent test writer computes it.
fn builder_geometry(size: u64) -> Geometry {
    let (cylinders, heads, sectors_per_track) = builder::chs(size / 512);
    Geometry {
        cylinders,
        heads,
        sectors_per_track,
    }
}

/// A new dynamic image of `size` bytes as the independent test writer
/// lays it out, with the creator fields vhdref writes (spec/errata.md 3)
/// and the ID and clock of these snapshots.
fn builder_dynamic(size: u64) -> Vec<u8> {
    builder::VhdBuilder::dynamic(size)
        .creator(*b"vhdr")
        .creator_version(1)
        .host_os(*b"Wi2k")
        .time_stamp(CREATED.0)
        .unique_id(Uuid::from_u128(ID))
        .build()
}

#[test]
fn created_footers_around_every_switch_equal_the_independent_builders() {
    // One sector below, at and one above every switch, in sectors: the
    // whole new image (footers, header, BAT) must be the builder's, and the
    // table of geometries is the snapshot.
    let mut table = String::new();
    for switch in builder::chs_switches() {
        for sectors in [switch - 1, switch, switch + 1] {
            let size = sectors * 512;
            let ours = create(&options(DiskType::Dynamic, size));
            let theirs = builder_dynamic(size);
            assert!(
                ours == theirs,
                "{sectors} sectors: vhdref wrote {} bytes, the builder {}; footers {:?} and {:?}",
                ours.len(),
                theirs.len(),
                footer_at(&ours, 0).disk_geometry,
                builder_geometry(size)
            );
            let g = footer_at(&theirs, 0).disk_geometry;
            let _ = writeln!(
                table,
                "{sectors:>9} sectors  {:>5}/{:>2}/{:>3}  {:>9} sectors described",
                g.cylinders,
                g.heads,
                g.sectors_per_track,
                g.total_sectors()
            );
        }
    }
    insta::assert_snapshot!("geometry_around_every_switch", table);
}

/// One line of `tests/snapshots/qemu_img_chs_rule.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuChs {
    request: u64,
    current_size: u64,
    original_size: u64,
    geometry: Geometry,
}

/// The lines of `tests/snapshots/qemu_img_chs_rule.txt`.
fn qemu_chs_fixture() -> Vec<QemuChs> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/snapshots/qemu_img_chs_rule.txt"
    );
    let text = std::fs::read_to_string(path).expect("the qemu-img fixture");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let n: Vec<u64> = l
                .split_whitespace()
                .map(|w| w.parse().unwrap_or_else(|_| panic!("{path}: {l}")))
                .collect();
            assert_eq!(n.len(), 6, "{path}: {l}");
            QemuChs {
                request: n[0],
                current_size: n[1],
                original_size: n[2],
                geometry: Geometry {
                    cylinders: u16::try_from(n[3]).expect("cylinders"),
                    heads: u8::try_from(n[4]).expect("heads"),
                    sectors_per_track: u8::try_from(n[5]).expect("sectors per track"),
                },
            }
        })
        .collect()
}

/// 65535 x 16 x 255 sectors, in bytes: the largest size a geometry
/// describes.
const MAX_CHS_BYTES: u64 = 65535 * 16 * 255 * 512;

/// Whether qemu-img wrote this line in the one way vhdref's chs rule
/// differs (spec/divergences.md D25): when the search reaches the largest
/// geometry, qemu keeps the request (rounded up to a sector) under
/// 65535/16/255 instead of rounding it up to what that geometry describes.
fn qemu_kept_the_request_under_the_largest_geometry(q: &QemuChs) -> bool {
    q.geometry.capacity() == MAX_CHS_BYTES && q.current_size < MAX_CHS_BYTES
}

#[test]
fn chs_rule_sizes_and_geometries_equal_what_qemu_img_wrote() {
    let fixture = qemu_chs_fixture();
    // Every switch has a request on each side of it.
    for switch in builder::chs_switches() {
        let at = switch * 512;
        assert!(
            fixture.iter().any(|q| q.request < at) && fixture.iter().any(|q| q.request >= at),
            "no request around {switch} sectors"
        );
    }
    let mut divergent = 0;
    for q in &fixture {
        let bytes = create(&options(DiskType::Dynamic, q.request).size_rule(SizeRule::Chs));
        let ours = footer_at(&bytes, 0);
        let geo_warning = |f: &Footer| f.lint().iter().any(|f| f.rule.id() == "GEO-ALGORITHM");
        assert!(
            !geo_warning(&ours),
            "a request of {} bytes: GEO-ALGORITHM on what the chs rule wrote",
            q.request
        );
        // What qemu-img wrote, judged by the same lint.
        let mut theirs = ours.clone();
        theirs.current_size = q.current_size;
        theirs.original_size = q.original_size;
        theirs.disk_geometry = q.geometry;
        if qemu_kept_the_request_under_the_largest_geometry(q) {
            divergent += 1;
            assert_eq!(q.current_size, q.request.div_ceil(512) * 512);
            assert_eq!(
                (ours.current_size, ours.disk_geometry),
                (MAX_CHS_BYTES, q.geometry),
                "a request of {} bytes",
                q.request
            );
            assert!(geo_warning(&theirs), "a request of {} bytes", q.request);
            continue;
        }
        assert_eq!(
            (ours.current_size, ours.original_size, ours.disk_geometry),
            (q.current_size, q.original_size, q.geometry),
            "a request of {} bytes",
            q.request
        );
        assert!(
            !geo_warning(&theirs),
            "a request of {} bytes: GEO-ALGORITHM on what qemu-img wrote",
            q.request
        );
    }
    // The divergence is in the last cylinder only: the requests 600 and 1
    // sectors below the largest size.
    assert_eq!(divergent, 2);
}
