//! Laws of the pure functions, checked with quickcheck: serialization round
//! trips, the checksum against the model and against every single-byte
//! change, the geometry algorithm against its transcription in the model,
//! the BAT mapping, and the bitmap helpers.

// quickcheck hands every generated value to a law by value.
#![allow(clippy::needless_pass_by_value)]

#[path = "builder/mod.rs"]
mod builder;

use std::collections::BTreeSet;

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use uuid::Uuid;
use vhdref::format::dyn_header::{self, DynHeader};
use vhdref::format::footer::{self, FEATURE_RESERVED, FILE_FORMAT_VERSION, NO_DATA_OFFSET};
use vhdref::format::geometry::{MAX_CHS_SECTORS, chs_rounded, chs_rounded_size};
use vhdref::format::{LocatorEntry, Platform, SECTOR_SIZE, bitmap, checksum::checksum};
use vhdref::storage::MemStorage;
use vhdref::{CreateOptions, DiskType, Footer, Geometry, Rule, Timestamp, model};

// ---------------------------------------------------------------- helpers

/// How many cases each law gets.
const CASES: u64 = 400;

fn check<A: quickcheck::Testable>(law: A) {
    QuickCheck::new()
        .tests(CASES)
        .max_tests(CASES * 20)
        .quickcheck(law);
}

fn check_n<A: quickcheck::Testable>(cases: u64, law: A) {
    QuickCheck::new()
        .tests(cases)
        .max_tests(cases * 20)
        .quickcheck(law);
}

/// A number in `0..n` (`n > 0`).
fn below(g: &mut Gen, n: u64) -> u64 {
    u64::arbitrary(g) % n
}

fn pick<T: Copy>(g: &mut Gen, items: &[T]) -> T {
    *g.choose(items).expect("a non-empty slice")
}

fn arbitrary_uuid(g: &mut Gen) -> Uuid {
    if below(g, 8) == 0 {
        Uuid::nil()
    } else {
        Uuid::from_u128(u128::arbitrary(g))
    }
}

fn arbitrary_fourcc(g: &mut Gen) -> [u8; 4] {
    match below(g, 5) {
        0 => *b"vhdr",
        1 => *b"vpc ",
        2 => *b"qemu",
        3 => *b"win ",
        _ => <[u8; 4]>::arbitrary(g),
    }
}

/// A guest size in bytes: a multiple of 512, small, CHS-sized or huge.
fn arbitrary_size(g: &mut Gen) -> u64 {
    match below(g, 4) {
        0 => (1 + below(g, 64)) * SECTOR_SIZE,
        1 => below(g, MAX_CHS_SECTORS + 1) * SECTOR_SIZE,
        2 => (u64::arbitrary(g) / SECTOR_SIZE) * SECTOR_SIZE,
        _ => (1 + below(g, 4096)) << 20,
    }
}

/// A total sector count, weighted towards the interesting ranges of the
/// geometry algorithm.
fn arbitrary_total_sectors(g: &mut Gen) -> u64 {
    match below(g, 5) {
        0 => below(g, 70_000),
        1 => below(g, 17 * 1024 * 17),
        2 => below(g, MAX_CHS_SECTORS + 1),
        3 => 65535 * 16 * 63 - 2000 + below(g, 4000),
        _ => u64::arbitrary(g),
    }
}

// ----------------------------------------------------- arbitrary structures

#[derive(Debug, Clone)]
struct ArbFooter(Footer);

impl Arbitrary for ArbFooter {
    fn arbitrary(g: &mut Gen) -> Self {
        let disk_type = pick(
            g,
            &[DiskType::Fixed, DiskType::Dynamic, DiskType::Differencing],
        );
        let current_size = arbitrary_size(g);
        let disk_geometry = if bool::arbitrary(g) {
            Geometry::for_size(current_size)
        } else {
            Geometry {
                cylinders: u16::arbitrary(g),
                heads: u8::arbitrary(g),
                sectors_per_track: u8::arbitrary(g),
            }
        };
        let data_offset = match (disk_type, below(g, 3)) {
            (_, 0) => u64::arbitrary(g),
            (DiskType::Fixed, _) => NO_DATA_OFFSET,
            _ => 512,
        };
        let any_features = u32::arbitrary(g);
        let features = pick(
            g,
            &[FEATURE_RESERVED, FEATURE_RESERVED | 1, 0, any_features],
        );
        let any_os = <[u8; 4]>::arbitrary(g);
        let creator_host_os = pick(g, &[*b"Wi2k", *b"Mac ", any_os]);
        ArbFooter(Footer {
            features,
            // Any minor version of major version 1 is accepted.
            file_format_version: if bool::arbitrary(g) {
                FILE_FORMAT_VERSION
            } else {
                0x0001_0000 | u32::from(u16::arbitrary(g))
            },
            data_offset,
            time_stamp: Timestamp(u32::arbitrary(g)),
            creator_application: arbitrary_fourcc(g),
            creator_version: u32::arbitrary(g),
            creator_host_os,
            original_size: if bool::arbitrary(g) {
                current_size
            } else {
                u64::arbitrary(g)
            },
            current_size,
            disk_geometry,
            disk_type,
            unique_id: arbitrary_uuid(g),
            saved_state: bool::arbitrary(g),
        })
    }
}

fn arbitrary_locator(g: &mut Gen) -> LocatorEntry {
    if below(g, 3) == 0 {
        return LocatorEntry::default();
    }
    let unknown = Platform::Unknown(u32::arbitrary(g));
    let platform = pick(
        g,
        &[
            Platform::W2ru,
            Platform::W2ku,
            Platform::Wi2r,
            Platform::Wi2k,
            Platform::Mac,
            Platform::MacX,
            unknown,
        ],
    );
    LocatorEntry {
        platform_code: platform.code(),
        platform_data_space: u32::arbitrary(g),
        platform_data_length: u32::arbitrary(g),
        platform_data_offset: u64::arbitrary(g),
    }
}

#[derive(Debug, Clone)]
struct ArbHeader(DynHeader);

impl Arbitrary for ArbHeader {
    fn arbitrary(g: &mut Gen) -> Self {
        let block_size = 1u32 << (9 + below(g, 22)); // 512 B ..= 1 GiB
        let mut parent_unicode_name = [0u8; dyn_header::PARENT_NAME_SIZE];
        match below(g, 3) {
            0 => {}
            1 => {
                let name = format!("parent-{}.vhd", u32::arbitrary(g));
                parent_unicode_name =
                    DynHeader::encode_parent_name(&name).expect("a short name fits");
            }
            _ => {
                for byte in &mut parent_unicode_name {
                    *byte = u8::arbitrary(g);
                }
            }
        }
        let mut parent_locators = [LocatorEntry::default(); 8];
        for entry in &mut parent_locators {
            *entry = arbitrary_locator(g);
        }
        ArbHeader(DynHeader {
            data_offset: if bool::arbitrary(g) {
                u64::MAX
            } else {
                u64::arbitrary(g)
            },
            table_offset: if bool::arbitrary(g) {
                1536
            } else {
                u64::arbitrary(g)
            },
            header_version: if bool::arbitrary(g) {
                dyn_header::HEADER_VERSION
            } else {
                0x0001_0000 | u32::from(u16::arbitrary(g))
            },
            max_table_entries: u32::arbitrary(g),
            block_size,
            parent_unique_id: arbitrary_uuid(g),
            parent_time_stamp: Timestamp(u32::arbitrary(g)),
            parent_unicode_name,
            parent_locators,
        })
    }
}

/// A position in a serialized structure and a non-zero change to its byte.
#[derive(Debug, Clone, Copy)]
struct ByteChange {
    index: usize,
    delta: u8,
}

impl ByteChange {
    fn arbitrary_in(g: &mut Gen, len: usize) -> Self {
        ByteChange {
            index: below(g, len as u64) as usize,
            delta: 1 + (u8::arbitrary(g) % 255),
        }
    }

    fn apply(self, bytes: &mut [u8]) {
        bytes[self.index] = bytes[self.index].wrapping_add(self.delta);
    }
}

#[derive(Debug, Clone)]
struct FooterChange(ArbFooter, ByteChange);

impl Arbitrary for FooterChange {
    fn arbitrary(g: &mut Gen) -> Self {
        FooterChange(ArbFooter::arbitrary(g), ByteChange::arbitrary_in(g, 512))
    }
}

#[derive(Debug, Clone)]
struct HeaderChange(ArbHeader, ByteChange);

impl Arbitrary for HeaderChange {
    fn arbitrary(g: &mut Gen) -> Self {
        HeaderChange(ArbHeader::arbitrary(g), ByteChange::arbitrary_in(g, 1024))
    }
}

// ------------------------------------------------------ footer and header

#[test]
fn footer_parses_back_to_what_was_serialized() {
    fn law(f: ArbFooter) -> bool {
        Footer::parse(&f.0.to_bytes()).ok() == Some(f.0)
    }
    check(law as fn(ArbFooter) -> bool);
}

#[test]
fn footer_bytes_survive_parse_and_serialize() {
    // Arbitrary bytes made valid (cookie, version, disk type, size,
    // saved-state flag, zero reserved bytes, checksum) come back unchanged.
    fn law(seed: Vec<u8>, kind: u8) -> bool {
        let mut bytes = [0u8; 512];
        for (dst, src) in bytes.iter_mut().zip(seed.iter().cycle()) {
            *dst = *src;
        }
        bytes[..8].copy_from_slice(b"conectix");
        bytes[12] = 0;
        bytes[13] = 1;
        bytes[60..64].copy_from_slice(&(2 + u32::from(kind % 3)).to_be_bytes());
        // current_size (bytes 48..56) a multiple of 512.
        bytes[55] = 0;
        bytes[54] &= !0x01;
        bytes[84] &= 1; // saved state: 0 or 1
        bytes[85..].fill(0); // reserved
        let sum = checksum(&bytes, footer::CHECKSUM_OFFSET);
        bytes[64..68].copy_from_slice(&sum.to_be_bytes());
        match Footer::parse(&bytes) {
            Ok(f) => f.to_bytes() == bytes,
            Err(_) => false,
        }
    }
    check(law as fn(Vec<u8>, u8) -> bool);
}

#[test]
fn dynamic_header_parses_back_to_what_was_serialized() {
    fn law(h: ArbHeader) -> bool {
        DynHeader::parse(&h.0.to_bytes(), 512).ok() == Some(h.0)
    }
    check(law as fn(ArbHeader) -> bool);
}

#[test]
fn dynamic_header_rejects_block_sizes_that_are_not_powers_of_two_in_range() {
    fn law(h: ArbHeader, block_size: u32) -> TestResult {
        let valid = block_size.is_power_of_two() && (512..=1 << 30).contains(&block_size);
        let mut header = h.0;
        header.block_size = block_size;
        let parsed = DynHeader::parse(&header.to_bytes(), 512);
        if valid {
            TestResult::from_bool(parsed.ok() == Some(header))
        } else {
            TestResult::from_bool(parsed.is_err_and(|e| e.rule() == Some(Rule::HdrBlockSize)))
        }
    }
    check(law as fn(ArbHeader, u32) -> TestResult);
}

#[test]
fn dynamic_header_block_sizes_are_read_from_512_bytes_to_1_gib_and_no_further() {
    // HDR-BLOCK-SIZE at its two ends: every power of two and its
    // neighbours, so moving either limit by one step is seen.
    let base = ArbHeader::arbitrary(&mut Gen::new(8)).0;
    for shift in 0..32u32 {
        let power = 1u32 << shift;
        for block_size in [power - 1, power, power.saturating_add(1)] {
            let mut header = base.clone();
            header.block_size = block_size;
            let parsed = DynHeader::parse(&header.to_bytes(), 512);
            let valid = block_size.is_power_of_two() && (9..=30).contains(&shift);
            if valid {
                assert_eq!(parsed.ok(), Some(header), "block size {block_size}");
            } else {
                assert!(
                    parsed.is_err_and(|e| e.rule() == Some(Rule::HdrBlockSize)),
                    "block size {block_size} is HDR-BLOCK-SIZE"
                );
            }
        }
    }
}

// --------------------------------------------------------------- checksum

#[test]
fn checksum_equals_the_models_long_hand_checksum() {
    fn law(bytes: Vec<u8>, field: u16) -> bool {
        let field = usize::from(field) % (bytes.len() + 8);
        checksum(&bytes, field) == model::checksum(&bytes, field)
    }
    check(law as fn(Vec<u8>, u16) -> bool);
}

#[test]
fn checksum_of_serialized_structures_equals_the_models() {
    fn law(f: ArbFooter, h: ArbHeader) -> bool {
        let fb = f.0.to_bytes();
        let hb = h.0.to_bytes();
        let stored_f = u32::from_be_bytes(fb[64..68].try_into().expect("4 bytes"));
        let stored_h = u32::from_be_bytes(hb[36..40].try_into().expect("4 bytes"));
        stored_f == model::checksum(&fb, 64) && stored_h == model::checksum(&hb, 36)
    }
    check(law as fn(ArbFooter, ArbHeader) -> bool);
}

#[test]
fn footer_rejects_every_single_byte_change() {
    fn law(c: FooterChange) -> bool {
        let FooterChange(f, change) = c;
        let mut bytes = f.0.to_bytes();
        change.apply(&mut bytes);
        let expected = if change.index < 8 {
            Rule::FtrCookie
        } else {
            Rule::FtrChecksum
        };
        Footer::parse(&bytes).is_err_and(|e| e.rule() == Some(expected))
    }
    check(law as fn(FooterChange) -> bool);
}

#[test]
fn footer_rejects_a_change_at_each_byte_position() {
    // Exhaustive over positions for a few footers, so no position is missed
    // by chance.
    let mut g = Gen::new(64);
    for _ in 0..8 {
        let f = ArbFooter::arbitrary(&mut g).0;
        for index in 0..512 {
            for delta in [1u8, 0x80, 0xFF] {
                let mut bytes = f.to_bytes();
                ByteChange { index, delta }.apply(&mut bytes);
                let expected = if index < 8 {
                    Rule::FtrCookie
                } else {
                    Rule::FtrChecksum
                };
                let rule = Footer::parse(&bytes).err().and_then(|e| e.rule());
                assert_eq!(rule, Some(expected), "byte {index} changed by {delta}");
            }
        }
    }
}

#[test]
fn dynamic_header_rejects_every_single_byte_change() {
    fn law(c: HeaderChange) -> bool {
        let HeaderChange(h, change) = c;
        let mut bytes = h.0.to_bytes();
        change.apply(&mut bytes);
        let expected = if change.index < 8 {
            Rule::HdrCookie
        } else {
            Rule::HdrChecksum
        };
        DynHeader::parse(&bytes, 512).is_err_and(|e| e.rule() == Some(expected))
    }
    check(law as fn(HeaderChange) -> bool);
}

#[test]
fn dynamic_header_rejects_a_change_at_each_byte_position() {
    let mut g = Gen::new(64);
    for _ in 0..4 {
        let h = ArbHeader::arbitrary(&mut g).0;
        for index in 0..1024 {
            for delta in [1u8, 0xFF] {
                let mut bytes = h.to_bytes();
                ByteChange { index, delta }.apply(&mut bytes);
                let expected = if index < 8 {
                    Rule::HdrCookie
                } else {
                    Rule::HdrChecksum
                };
                let rule = DynHeader::parse(&bytes, 512).err().and_then(|e| e.rule());
                assert_eq!(rule, Some(expected), "byte {index} changed by {delta}");
            }
        }
    }
}

// --------------------------------------------------------------- geometry

#[derive(Debug, Clone, Copy)]
struct Sectors(u64);

impl Arbitrary for Sectors {
    fn arbitrary(g: &mut Gen) -> Self {
        Sectors(arbitrary_total_sectors(g))
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(Sectors))
    }
}

fn tuple(g: Geometry) -> (u64, u64, u64) {
    (
        u64::from(g.cylinders),
        u64::from(g.heads),
        u64::from(g.sectors_per_track),
    )
}

#[test]
fn geometry_equals_the_models_transcription_of_the_spec() {
    fn law(t: Sectors) -> bool {
        tuple(Geometry::from_total_sectors(t.0)) == model::geometry(t.0)
    }
    check(law as fn(Sectors) -> bool);
}

#[test]
fn geometry_equals_the_model_for_every_size_up_to_a_few_regime_switches() {
    // Exhaustive over the first switches of the algorithm (17 -> 31 sectors
    // per track at 4, 5 and 6 heads).
    for t in 0..17 * 1024 * 7 {
        assert_eq!(
            tuple(Geometry::from_total_sectors(t)),
            model::geometry(t),
            "{t} sectors"
        );
    }
}

#[test]
fn geometry_never_describes_more_than_the_disk() {
    fn law(t: Sectors) -> bool {
        Geometry::from_total_sectors(t.0).total_sectors() <= t.0
    }
    check(law as fn(Sectors) -> bool);
}

#[test]
fn geometry_trails_the_size_by_less_than_one_cylinder() {
    // Up to the CHS maximum, the capacity misses less than heads x sectors
    // per track sectors of the size.
    fn law(t: Sectors) -> bool {
        let t = t.0.min(MAX_CHS_SECTORS);
        let g = Geometry::from_total_sectors(t);
        t - g.total_sectors() < u64::from(g.heads) * u64::from(g.sectors_per_track)
    }
    check(law as fn(Sectors) -> bool);
}

#[test]
fn geometry_capacity_is_monotone_while_heads_and_sectors_per_track_stay() {
    fn law(a: Sectors, delta: u32) -> bool {
        let (t1, t2) = (
            a.0.min(MAX_CHS_SECTORS),
            a.0.min(MAX_CHS_SECTORS).saturating_add(u64::from(delta)),
        );
        let (g1, g2) = (
            Geometry::from_total_sectors(t1),
            Geometry::from_total_sectors(t2),
        );
        let same_regime = (g1.heads, g1.sectors_per_track) == (g2.heads, g2.sectors_per_track);
        !same_regime || g1.total_sectors() <= g2.total_sectors()
    }
    check(law as fn(Sectors, u32) -> bool);
}

#[test]
fn geometry_capacity_drops_where_the_spec_algorithm_switches_regime() {
    // The spec's algorithm is not monotone overall: at 4 x 1024 x 17
    // sectors it moves from 17 to 31 sectors per track and loses capacity.
    // Callers must not assume a larger disk gets a larger geometry.
    let before = Geometry::from_total_sectors(17 * 4096 - 1);
    let at = Geometry::from_total_sectors(17 * 4096);
    assert_eq!((before.heads, before.sectors_per_track), (4, 17));
    assert_eq!((at.heads, at.sectors_per_track), (16, 31));
    assert!(at.total_sectors() < before.total_sectors());
}

#[test]
fn geometry_capacity_grows_with_the_size_in_whole_mebibytes() {
    // What users ask for: whole MiB sizes. Capacity is non-decreasing over
    // them up to the CHS maximum (checked every 1 MiB up to 127 GiB).
    let mut last = 0;
    let mut mib = 1u64;
    while mib * 2048 <= MAX_CHS_SECTORS {
        let cap = Geometry::from_total_sectors(mib * 2048).total_sectors();
        assert!(cap >= last, "{mib} MiB: {cap} < {last}");
        last = cap;
        mib += 1;
    }
}

#[derive(Debug, Clone, Copy)]
struct Request(u64);

impl Arbitrary for Request {
    fn arbitrary(g: &mut Gen) -> Self {
        Request(match below(g, 3) {
            0 => below(g, 1 << 20),
            1 => below(g, 200 << 20),
            _ => below(g, MAX_CHS_SECTORS * SECTOR_SIZE + 1),
        })
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(Request))
    }
}

#[test]
fn chs_rounded_size_is_at_least_the_request_and_less_than_a_cylinder_more() {
    fn law(r: Request) -> bool {
        let Some(size) = chs_rounded_size(r.0) else {
            return false;
        };
        // Whole sectors, at most one cylinder of the largest geometry
        // (16 x 255 sectors) above the request rounded up to a sector.
        size >= r.0
            && size % SECTOR_SIZE == 0
            && size - r.0.div_ceil(SECTOR_SIZE) * SECTOR_SIZE < 16 * 255 * SECTOR_SIZE
    }
    check(law as fn(Request) -> bool);
}

#[test]
fn chs_rounded_size_is_monotone_and_idempotent() {
    fn law(a: Request, delta: u32) -> bool {
        let b = (a.0 + u64::from(delta)).min(MAX_CHS_SECTORS * SECTOR_SIZE);
        match (chs_rounded_size(a.0), chs_rounded_size(b)) {
            (Some(ra), Some(rb)) => ra <= rb && chs_rounded_size(ra) == Some(ra),
            _ => false,
        }
    }
    check(law as fn(Request, u32) -> bool);
}

#[test]
fn chs_rounded_size_of_whole_mebibytes_is_described_exactly_by_its_own_geometry() {
    for mib in (1..=130_048u64)
        .step_by(7)
        .chain([34, 35, 59, 60, 127, 128])
    {
        let size = chs_rounded_size(mib << 20).expect("under the CHS maximum");
        assert_eq!(
            Geometry::for_size(size).capacity(),
            size,
            "{mib} MiB rounds to {size}"
        );
    }
}

#[test]
fn the_geometry_the_chs_rule_finds_describes_the_rounded_size_exactly() {
    fn law(r: Request) -> bool {
        let Some((size, geometry)) = chs_rounded(r.0) else {
            return false;
        };
        geometry.capacity() == size && chs_rounded_size(r.0) == Some(size)
    }
    check(law as fn(Request) -> bool);
}

#[test]
fn below_a_switch_of_the_algorithm_the_chs_rule_keeps_the_geometry_it_found() {
    // qemu-img create -f vpc 35617280 writes 35642880 bytes with 819/5/17
    // (spec/rules.md, GEO-ALGORITHM); the algorithm on 35642880 gives less.
    let (size, geometry) = chs_rounded(35_617_280).expect("small");
    assert_eq!(size, 35_642_880);
    assert_eq!(
        (
            geometry.cylinders,
            geometry.heads,
            geometry.sectors_per_track
        ),
        (819, 5, 17)
    );
    assert!(Geometry::for_size(size).capacity() < size);
}

#[test]
fn the_chs_rule_finds_the_same_geometry_again_for_the_size_it_rounded_to() {
    // What lets GEO-ALGORITHM recognize a rounded footer (spec/errata.md 2).
    fn law(r: Request) -> bool {
        let Some((size, geometry)) = chs_rounded(r.0) else {
            return false;
        };
        chs_rounded(size) == Some((size, geometry))
    }
    check(law as fn(Request) -> bool);
    for t in around_every_switch(600) {
        if let Some((size, geometry)) = chs_rounded(t * SECTOR_SIZE) {
            assert_eq!(chs_rounded(size), Some((size, geometry)), "{t} sectors");
        } else {
            assert!(t > MAX_CHS_SECTORS, "{t} sectors");
        }
    }
}

#[test]
fn chs_rounded_size_refuses_what_no_geometry_describes() {
    assert_eq!(
        chs_rounded_size(MAX_CHS_SECTORS * SECTOR_SIZE),
        Some(MAX_CHS_SECTORS * SECTOR_SIZE)
    );
    assert_eq!(chs_rounded_size(MAX_CHS_SECTORS * SECTOR_SIZE + 1), None);
}

// ------------------------------------------- geometry around every switch

/// Every sector count within `window` sectors of a switch of the
/// algorithm (`builder::chs_switches`), capped a window past the CHS
/// maximum.
fn around_every_switch(window: u64) -> BTreeSet<u64> {
    builder::chs_switches()
        .into_iter()
        .flat_map(|switch| switch.saturating_sub(window)..=switch + window)
        .collect()
}

fn builder_geometry(total_sectors: u64) -> Geometry {
    let (cylinders, heads, sectors_per_track) = builder::chs(total_sectors);
    Geometry {
        cylinders,
        heads,
        sectors_per_track,
    }
}

#[test]
fn geometry_equals_the_independent_transcription_at_every_size_around_every_switch() {
    // Two cylinders of the largest geometry (2 x 16 x 255 sectors) on each
    // side of each switch, every sector count.
    let sizes = around_every_switch(2 * 16 * 255);
    assert!(sizes.len() > 100_000, "{} sizes", sizes.len());
    for t in sizes {
        assert_eq!(
            Geometry::from_total_sectors(t),
            builder_geometry(t),
            "{t} sectors"
        );
    }
}

#[test]
fn the_chs_rule_equals_qemus_search_at_every_size_around_every_switch() {
    for t in around_every_switch(600) {
        let request = t * SECTOR_SIZE;
        let want = builder::chs_round_up(request).map(|(size, g)| {
            (
                size,
                Geometry {
                    cylinders: g.0,
                    heads: g.1,
                    sectors_per_track: g.2,
                },
            )
        });
        assert_eq!(chs_rounded(request), want, "a request of {t} sectors");
    }
}

#[test]
fn a_248_mib_disk_gets_63_sectors_per_track_and_one_sector_less_gets_31() {
    // The 31 -> 63 switch: 248 MiB is 31 x 16 x 1024 sectors.
    let at = Geometry::for_size(248 << 20);
    assert_eq!(
        (at.cylinders, at.heads, at.sectors_per_track),
        (503, 16, 63)
    );
    let below = Geometry::from_total_sectors((248 << 11) - 1);
    assert_eq!(
        (below.cylinders, below.heads, below.sectors_per_track),
        (1023, 16, 31)
    );
}

/// A footer's size and geometry for the GEO-ALGORITHM law: the
/// algorithm's geometry, the one CHS rounding finds near a switch, a
/// geometry that describes the size exactly but is neither, or any.
#[derive(Debug, Clone)]
struct GeoCase {
    footer: Footer,
}

impl Arbitrary for GeoCase {
    fn arbitrary(g: &mut Gen) -> Self {
        let mut footer = ArbFooter::arbitrary(g).0;
        let random_geometry = |g: &mut Gen| Geometry {
            cylinders: 1 + (u16::arbitrary(g) % u16::MAX),
            heads: 1 + (u8::arbitrary(g) % 16),
            sectors_per_track: 1 + (u8::arbitrary(g) % u8::MAX),
        };
        match below(g, 4) {
            0 => footer.disk_geometry = builder_geometry(footer.current_size / SECTOR_SIZE),
            1 => {
                let switches = builder::chs_switches();
                let near = pick(g, &switches) + below(g, 1200) - 600;
                let (size, (c, h, s)) =
                    builder::chs_round_up(near * SECTOR_SIZE).unwrap_or((0, (0, 0, 0)));
                footer.current_size = size;
                footer.disk_geometry = Geometry {
                    cylinders: c,
                    heads: h,
                    sectors_per_track: s,
                };
            }
            2 => {
                footer.disk_geometry = random_geometry(g);
                footer.current_size = footer.disk_geometry.capacity();
            }
            _ => footer.disk_geometry = random_geometry(g),
        }
        GeoCase { footer }
    }
}

fn warns_geo_algorithm(footer: &Footer) -> bool {
    footer.lint().iter().any(|f| f.rule == Rule::GeoAlgorithm)
}

#[test]
fn geo_algorithm_accepts_exactly_the_algorithms_geometry_and_the_one_chs_rounding_finds() {
    fn law(case: GeoCase) -> bool {
        let f = &case.footer;
        let (c, h, s) = (
            f.disk_geometry.cylinders,
            f.disk_geometry.heads,
            f.disk_geometry.sectors_per_track,
        );
        let algorithm = builder::chs(f.current_size / SECTOR_SIZE) == (c, h, s);
        let rounding = builder::chs_round_up(f.current_size) == Some((f.current_size, (c, h, s)));
        let accepted = algorithm || rounding;
        warns_geo_algorithm(f) != accepted
    }
    check(law as fn(GeoCase) -> bool);
}

#[test]
fn geo_algorithm_warns_about_a_geometry_that_only_has_the_right_capacity() {
    // 100 x 16 x 63 sectors: the algorithm gives 988/6/17 (24 sectors
    // short), and no CHS rounding finds 100/16/63.
    let mut footer = ArbFooter::arbitrary(&mut Gen::new(8)).0;
    footer.disk_geometry = Geometry {
        cylinders: 100,
        heads: 16,
        sectors_per_track: 63,
    };
    footer.current_size = footer.disk_geometry.capacity();
    assert!(warns_geo_algorithm(&footer));
    // What qemu-img writes for a request just below a switch is accepted.
    let (size, (c, h, s)) = builder::chs_round_up(35_617_280).expect("small");
    footer.current_size = size;
    footer.disk_geometry = Geometry {
        cylinders: c,
        heads: h,
        sectors_per_track: s,
    };
    assert_eq!((size, c, h, s), (35_642_880, 819, 5, 17));
    assert!(!warns_geo_algorithm(&footer));
}

// ------------------------------------------------------------ BAT mapping

/// A valid layout of allocated blocks: distinct, non-overlapping BAT
/// entries (bitmap + data each), in any order, with gaps.
#[derive(Debug, Clone)]
struct Layout {
    block_size: u64,
    bat: Vec<u32>,
}

impl Layout {
    fn allocated(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        (0u64..)
            .zip(self.bat.iter().copied())
            .filter(|(_, e)| *e != vhdref::format::UNALLOCATED)
    }
}

impl Arbitrary for Layout {
    fn arbitrary(g: &mut Gen) -> Self {
        let block_size = 1u64 << (9 + below(g, 13)); // 512 B ..= 2 MiB
        let blocks = 1 + below(g, 40) as usize;
        let mut order: Vec<usize> = (0..blocks).collect();
        // Shuffle: the file order of blocks is not the guest order.
        for i in (1..order.len()).rev() {
            order.swap(i, below(g, i as u64 + 1) as usize);
        }
        let mut bat = vec![vhdref::format::UNALLOCATED; blocks];
        let span = (model::bitmap_bytes(block_size) + block_size) / SECTOR_SIZE;
        let mut next = 3 + below(g, 64);
        for block in order {
            if below(g, 4) == 0 {
                continue; // left unallocated
            }
            bat[block] = u32::try_from(next).expect("small layouts");
            next += span + below(g, 3) * below(g, 5);
        }
        Layout { block_size, bat }
    }
}

#[test]
fn locate_splits_an_offset_into_block_sector_and_byte() {
    fn law(offset: u64, shift: u8) -> bool {
        let block_size = 1u64 << (9 + shift % 22);
        let loc = model::locate(offset, block_size);
        loc.block * block_size + loc.sector_in_block * SECTOR_SIZE + loc.byte_in_sector == offset
            && loc.sector_in_block < block_size / SECTOR_SIZE
            && loc.byte_in_sector < SECTOR_SIZE
    }
    check(law as fn(u64, u8) -> bool);
}

#[test]
fn bitmap_size_equals_the_models_bitmap_bytes() {
    for shift in 9..=30 {
        let block_size = 1u32 << shift;
        assert_eq!(
            bitmap::bitmap_size(block_size),
            model::bitmap_bytes(u64::from(block_size))
        );
        assert_eq!(bitmap::bitmap_size(block_size) % SECTOR_SIZE, 0);
        assert!(bitmap::bitmap_size(block_size) * 8 >= u64::from(block_size) / SECTOR_SIZE);
    }
}

#[test]
fn file_offsets_stay_inside_their_blocks_data_area() {
    fn law(layout: Layout, picks: Vec<u64>) -> bool {
        let bitmap = model::bitmap_bytes(layout.block_size);
        let allocated: Vec<(u64, u32)> = layout.allocated().collect();
        if allocated.is_empty() {
            return true;
        }
        picks.iter().all(|p| {
            let (block, entry) = allocated[(*p % allocated.len() as u64) as usize];
            let offset = block * layout.block_size + (p / 7) % layout.block_size;
            let loc = model::locate(offset, layout.block_size);
            let at = model::file_offset(entry, layout.block_size, loc);
            let data = u64::from(entry) * SECTOR_SIZE + bitmap;
            loc.block == block
                && (data..data + layout.block_size).contains(&at)
                && at - data == offset % layout.block_size
        })
    }
    check(law as fn(Layout, Vec<u64>) -> bool);
}

#[test]
fn file_offsets_of_allocated_blocks_are_a_bijection_onto_their_data_areas() {
    // Every sector of every allocated block maps to a distinct file sector,
    // and the file sectors reached are exactly the data areas of the blocks.
    fn law(layout: Layout) -> TestResult {
        if layout.block_size > 64 * 1024 {
            return TestResult::discard();
        }
        let sectors = layout.block_size / SECTOR_SIZE;
        let bitmap_sectors = model::bitmap_bytes(layout.block_size) / SECTOR_SIZE;
        let mut reached = BTreeSet::new();
        let mut count = 0u64;
        for (block, entry) in layout.allocated() {
            for s in 0..sectors {
                let loc = model::locate(
                    block * layout.block_size + s * SECTOR_SIZE,
                    layout.block_size,
                );
                reached.insert(model::file_offset(entry, layout.block_size, loc) / SECTOR_SIZE);
                count += 1;
            }
        }
        let mut areas = BTreeSet::new();
        for (_, entry) in layout.allocated() {
            let first = u64::from(entry) + bitmap_sectors;
            areas.extend(first..first + sectors);
        }
        TestResult::from_bool(reached.len() as u64 == count && reached == areas)
    }
    check(law as fn(Layout) -> TestResult);
}

#[test]
fn distinct_guest_bytes_of_allocated_blocks_have_distinct_file_offsets() {
    fn law(layout: Layout, a: u64, b: u64) -> TestResult {
        let allocated: Vec<(u64, u32)> = layout.allocated().collect();
        if allocated.is_empty() {
            return TestResult::discard();
        }
        let guest = |x: u64| {
            let (block, entry) = allocated[(x % allocated.len() as u64) as usize];
            (
                block * layout.block_size + (x >> 8) % layout.block_size,
                entry,
            )
        };
        let ((ga, ea), (gb, eb)) = (guest(a), guest(b));
        let fa = model::file_offset(ea, layout.block_size, model::locate(ga, layout.block_size));
        let fb = model::file_offset(eb, layout.block_size, model::locate(gb, layout.block_size));
        TestResult::from_bool((ga == gb) == (fa == fb))
    }
    check(law as fn(Layout, u64, u64) -> TestResult);
}

/// Writes for a driver image: (offset, length, byte).
#[derive(Debug, Clone)]
struct ImageWrites {
    size: u64,
    block_size: u32,
    steps: Vec<(u64, u64, u8)>,
}

impl Arbitrary for ImageWrites {
    fn arbitrary(g: &mut Gen) -> Self {
        let block_size = pick(g, &[512 * 1024, 1 << 20, 2 << 20]);
        let size = pick(g, &[512, 4096, 3 << 20, (5 << 20) + 1536, 8 << 20]);
        let n = below(g, 12) as usize;
        let steps = (0..n)
            .map(|_| {
                let offset = below(g, size);
                let longest = if bool::arbitrary(g) { 3000 } else { 1 << 20 };
                let len = 1 + below(g, (size - offset).min(longest));
                (offset, len, 1 + u8::arbitrary(g) % 255)
            })
            .collect();
        ImageWrites {
            size,
            block_size,
            steps,
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let this = self.clone();
        Box::new(self.steps.shrink().map(move |steps| ImageWrites {
            steps,
            ..this.clone()
        }))
    }
}

#[test]
fn driver_map_agrees_with_the_models_file_offsets() {
    fn law(w: ImageWrites) -> bool {
        let mem = MemStorage::new();
        let mut img = CreateOptions::new(DiskType::Dynamic, w.size)
            .block_size(w.block_size)
            .create_in(Box::new(mem.clone()), "map.vhd", None)
            .expect("create");
        let mut disk = model::Disk::new(w.size);
        for &(offset, len, byte) in &w.steps {
            let data = vec![byte; len as usize];
            img.write_at(offset, &data).expect("write");
            disk.write(offset, &data);
        }
        img.flush().expect("flush");
        let bat: Vec<u32> = img.bat().expect("a dynamic image has a BAT").to_vec();
        let extents = img.map().expect("map");
        let file = mem.to_vec();
        let bs = u64::from(w.block_size);
        let mut expected_offset = 0;
        for e in &extents {
            // The extents tile the disk in order.
            assert_eq!(e.offset, expected_offset);
            expected_offset += e.length;
            // Sample each sector start and the last byte of the extent.
            let samples = (e.offset..e.offset + e.length)
                .step_by(SECTOR_SIZE as usize)
                .chain([e.offset + e.length - 1]);
            for guest in samples {
                let loc = model::locate(guest, bs);
                let entry = bat[loc.block as usize];
                let written = disk.written_in(0, guest / SECTOR_SIZE);
                if e.data {
                    let at = e.file_offset.expect("data has a file offset") + (guest - e.offset);
                    assert_eq!(e.depth, Some(0));
                    assert_ne!(entry, vhdref::format::UNALLOCATED);
                    assert_eq!(at, model::file_offset(entry, bs, loc));
                    assert_eq!(
                        file[at as usize],
                        disk.read(guest, 1)[0],
                        "guest byte {guest}"
                    );
                    assert!(written, "data extent over a sector never written: {guest}");
                } else {
                    assert!(!written, "a written sector mapped as zero: {guest}");
                }
            }
        }
        assert_eq!(expected_offset, w.size);
        true
    }
    check_n(40, law as fn(ImageWrites) -> bool);
}

// ---------------------------------------------------------------- bitmaps

#[derive(Debug, Clone)]
struct Bits {
    bytes: Vec<u8>,
    start: u64,
    end: u64,
}

impl Arbitrary for Bits {
    fn arbitrary(g: &mut Gen) -> Self {
        let len = below(g, 70) as usize;
        let bytes = (0..len)
            .map(|_| match below(g, 4) {
                0 => 0,
                1 => 0xFF,
                _ => u8::arbitrary(g),
            })
            .collect();
        let bits = len as u64 * 8 + 16;
        let start = below(g, bits);
        let end = below(g, bits + 1);
        Bits { bytes, start, end }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let this = self.clone();
        Box::new(self.bytes.shrink().map(move |bytes| Bits {
            bytes,
            ..this.clone()
        }))
    }
}

#[test]
fn bitmap_get_agrees_with_the_model() {
    fn law(b: Bits) -> bool {
        (0..b.bytes.len() as u64 * 8 + 16)
            .all(|i| bitmap::get(&b.bytes, i) == model::bitmap_bit(&b.bytes, i))
    }
    check(law as fn(Bits) -> bool);
}

#[test]
fn bitmap_set_range_sets_exactly_the_range() {
    fn law(b: Bits) -> bool {
        let mut after = b.bytes.clone();
        let changed = bitmap::set_range(&mut after, b.start, b.end);
        let bits = b.bytes.len() as u64 * 8;
        let mut any_was_clear = false;
        for i in 0..bits {
            let before = model::bitmap_bit(&b.bytes, i);
            let now = model::bitmap_bit(&after, i);
            if (b.start..b.end).contains(&i) {
                any_was_clear |= !before;
                if !now {
                    return false;
                }
            } else if now != before {
                return false;
            }
        }
        changed == any_was_clear && after.len() == b.bytes.len()
    }
    check(law as fn(Bits) -> bool);
}

#[test]
fn bitmap_run_length_counts_equal_bits_like_the_model() {
    fn law(b: Bits) -> bool {
        let value = model::bitmap_bit(&b.bytes, b.start);
        let mut expected = 0;
        let mut i = b.start;
        while i < b.end && model::bitmap_bit(&b.bytes, i) == value {
            expected += 1;
            i += 1;
        }
        bitmap::run_length(&b.bytes, b.start, b.end) == expected
    }
    check(law as fn(Bits) -> bool);
}
