//! Inputs the fuzz targets (`fuzz/`) found, kept as ordinary tests so they
//! stay fixed. Each is rebuilt with the library rather than pasted as bytes.

use vhdref::format::FOOTER_SIZE;
use vhdref::storage::MemStorage;
use vhdref::{CreateOptions, DiskType, ErrorKind, Footer, Image, OpenOptions};

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
