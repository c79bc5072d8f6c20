//! Inputs the fuzz targets (`fuzz/`) found, kept as ordinary tests so they
//! stay fixed. Each is rebuilt with the library rather than pasted as bytes.

mod builder;

use builder::{Bits, DataSpace, Platform, VhdBuilder, pattern};
use uuid::Uuid;
use vhdref::check::{self, CheckOptions};
use vhdref::format::FOOTER_SIZE;
use vhdref::storage::MemStorage;
use vhdref::{CreateOptions, DiskType, ErrorKind, Footer, Image, OpenOptions, Rule};

/// The footer of a freshly created fixed image, to edit.
fn fixed_footer() -> Footer {
    let mem = MemStorage::new();
    CreateOptions::new(DiskType::Fixed, 4096)
        .create_in(Box::new(mem.clone()), "seed.vhd", None)
        .and_then(Image::close)
        .expect("create works");
    let bytes = mem.to_vec();
    let raw: &[u8; FOOTER_SIZE] = bytes[bytes.len() - FOOTER_SIZE..]
        .try_into()
        .expect("512 bytes");
    Footer::parse(raw).expect("valid footer")
}

/// `open_read` found: a fixed image whose `current_size` is 0 (here with
/// 82 bytes of slack before the footer, as in the fuzzer's input) mapped
/// to one extent of length 0, where a sparse image of size 0 maps to none.
#[test]
fn fixed_image_of_size_zero_maps_to_no_extent() {
    let mut footer = fixed_footer();
    footer.current_size = 0;
    footer.original_size = 0;
    let mut bytes = vec![0u8; 82];
    bytes.extend_from_slice(&footer.to_bytes());
    let mut img = OpenOptions::new()
        .open_storage(Box::new(MemStorage::from_bytes(bytes)), "empty.vhd")
        .expect("a fixed image of size 0 opens");
    assert_eq!(img.size(), 0);
    assert_eq!(img.map().expect("map works"), vec![]);
    img.read_at(0, &mut [])
        .expect("an empty read at the end works");
    let err = img.read_at(0, &mut [0u8; 1]).expect_err("nothing to read");
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
}

/// `check` found (in a long run): a differencing image whose table offset
/// lies near 2^64 (`0xFFFF_FFFF_FFFF_FF2D` in the fuzzer's input) made the
/// checker, which goes on past HDR-TABLE-OFFSET, overflow where it placed
/// the BAT among the regions a locator's data must not overlap (a panic
/// with overflow checks, a wrong region without them). Dynamic images
/// took the same arithmetic in the leaked-space rules.
#[test]
fn a_table_offset_near_the_top_of_u64_is_hdr_table_offset_for_the_checker_and_open() {
    fn dynamic() -> VhdBuilder {
        VhdBuilder::dynamic(64 * 1024)
            .block_size(4096)
            .block(0, Bits::All, &pattern(4096, 1))
    }
    fn differencing() -> VhdBuilder {
        VhdBuilder::differencing(64 * 1024)
            .block_size(4096)
            .parent_id(Uuid::new_v4())
            .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes)
            .block(1, Bits::All, &pattern(4096, 2))
    }
    type Make = fn() -> VhdBuilder;
    let images: [(&str, Make); 2] = [("dynamic", dynamic), ("differencing", differencing)];
    for (kind, image) in images {
        for offset in [u64::MAX, 0xFFFF_FFFF_FFFF_FF2D, u64::MAX - 511, 1 << 63] {
            let bytes = image().table_offset(offset).build();
            let report = check::check_storage(
                &MemStorage::from_bytes(bytes.clone()),
                "img.vhd",
                &CheckOptions::new(),
            );
            assert!(
                report
                    .findings
                    .iter()
                    .any(|f| f.finding.rule == Rule::HdrTableOffset),
                "{kind} at {offset:#x}: {:?}",
                report.findings
            );
            let opened =
                OpenOptions::new().open_storage(Box::new(MemStorage::from_bytes(bytes)), "img.vhd");
            let rule = opened.err().and_then(|e| e.rule());
            assert_eq!(rule, Some(Rule::HdrTableOffset), "{kind} at {offset:#x}");
        }
    }
}
