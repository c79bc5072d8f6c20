"""Single images that break one rule each (or a stated few), and a few
valid edge cases. The base images are small generic ones (cases.gen_dyn:
64 KiB, 4 KiB blocks, blocks 5, 0 and 11 allocated in that order;
cases.gen_fixed: 64 KiB fixed). Wherever a field is changed, the checksum
of its structure is recomputed unless the case is about the checksum."""

from build import Image
from cases import case, gen_dyn, gen_fixed, single
from families import generic, put
from vhdfmt import (ALL_ONES, DYNAMIC, FIXED, KIB, MIB, SECTOR, align_up, bitmap_bytes)


def both(img, **changes):
    """Changes footer fields in both copies (the checksum follows)."""
    for k, v in changes.items():
        setattr(img.footer, k, v)


def bad_checksum(footer):
    good = footer.pack()
    return footer.copy(checksum=int.from_bytes(good[64:68], "big") ^ 0x1).pack()


def cut_footer_checksum(img):
    """Finishes with a wrong checksum in every footer."""
    bad = bad_checksum(img.footer)
    if img.disk_type == FIXED:
        img.finish(trailing=bad)
    else:
        img.finish(copy_footer=bad, trailing=bad)


# ===================================================================== footer

@case("generator", ["FTR-SIZE"])
def x_FTR_SIZE_empty(ctx, c):
    """An empty file."""
    c.files[c.name + ".vhd"] = b""
    c.top = c.name + ".vhd"


@case("generator", ["FTR-SIZE"])
def x_FTR_SIZE_short(ctx, c):
    """A 300-byte file: the first 300 bytes of a fixed image's footer."""
    img = gen_fixed(ctx, "x")
    foot = img.footer.pack()
    c.files[c.name + ".vhd"] = foot[:300]
    c.top = c.name + ".vhd"


@case("generator", ["FTR-COOKIE"])
def x_FTR_COOKIE_fixed(ctx, c):
    """A fixed image whose footer cookie is 'conectiv' (checksum recomputed)."""
    img = gen_fixed(ctx, c.name)
    both(img, cookie=b"conectiv")
    single(c, img)


@case("generator", ["FTR-COOKIE"])
def x_FTR_COOKIE_dynamic(ctx, c):
    """A dynamic image whose two footers both have the cookie 'CONECTIX'."""
    img = gen_dyn(ctx, c.name)
    both(img, cookie=b"CONECTIX")
    single(c, img)


@case("generator", ["FTR-CHECKSUM"])
def x_FTR_CHECKSUM_fixed(ctx, c):
    """A fixed image whose footer checksum is off by one bit."""
    img = gen_fixed(ctx, c.name)
    cut_footer_checksum(img)
    single(c, img)


@case("generator", ["FTR-CHECKSUM"])
def x_FTR_CHECKSUM_dynamic(ctx, c):
    """A dynamic image whose footer copy and trailing footer both have a wrong checksum."""
    img = gen_dyn(ctx, c.name)
    cut_footer_checksum(img)
    single(c, img)


@case("generator", ["FTR-VERSION"])
def x_FTR_VERSION_fixed(ctx, c):
    """A fixed image with file format version 2.0."""
    img = gen_fixed(ctx, c.name)
    both(img, version=0x00020000)
    single(c, img)


@case("generator", ["FTR-VERSION"])
def x_FTR_VERSION_dynamic(ctx, c):
    """A dynamic image with file format version 0.1 in both footers."""
    img = gen_dyn(ctx, c.name)
    both(img, version=0x00000001)
    single(c, img)


@case("generator", ["FTR-DISK-TYPE"])
def x_FTR_DISK_TYPE_5(ctx, c):
    """A dynamic image whose footers say disk type 5 (deprecated)."""
    img = gen_dyn(ctx, c.name)
    img.finish()
    foot = img.footer.copy(disk_type=5).pack()
    img.file.write(0, foot)
    img.file.write(img.file.length - SECTOR, foot)
    single(c, img)


@case("generator", ["FTR-DISK-TYPE"])
def x_FTR_DISK_TYPE_0(ctx, c):
    """A fixed image whose footer says disk type 0 (none)."""
    img = gen_fixed(ctx, c.name)
    img.finish()
    img.file.write(img.current_size, img.footer.copy(disk_type=0).pack())
    single(c, img)


@case("generator", ["FTR-DISK-TYPE"])
def x_FTR_DISK_TYPE_7(ctx, c):
    """A fixed image whose footer says disk type 7 (not defined)."""
    img = gen_fixed(ctx, c.name)
    img.finish()
    img.file.write(img.current_size, img.footer.copy(disk_type=7).pack())
    single(c, img)


def data_offset_case(ctx, c, value_of):
    img = gen_dyn(ctx, c.name)
    img.finish()
    foot = img.footer.copy(data_offset=value_of(img)).pack()
    img.file.write(0, foot)
    img.file.write(img.file.length - SECTOR, foot)
    single(c, img)


@case("generator", ["FTR-DATA-OFFSET"])
def x_FTR_DATA_OFFSET_past_eof(ctx, c):
    """A dynamic image whose footers put the dynamic header 1 MiB past the end."""
    data_offset_case(ctx, c, lambda img: 1 * MIB)


@case("generator", ["FTR-DATA-OFFSET"])
def x_FTR_DATA_OFFSET_zero(ctx, c):
    """A dynamic image whose footers put the dynamic header at 0, over the footer copy."""
    data_offset_case(ctx, c, lambda img: 0)


@case("generator", ["FTR-DATA-OFFSET"])
def x_FTR_DATA_OFFSET_into_footer(ctx, c):
    """A dynamic image whose footers put the dynamic header 1024 bytes before
    the end: it would run into the trailing footer."""
    data_offset_case(ctx, c, lambda img: img.file.length - 1024)


@case("generator", ["FTR-FIXED-LENGTH"])
def x_FTR_FIXED_LENGTH(ctx, c):
    """A fixed image of 64 KiB cut to 32 KiB of data, its footer kept."""
    img = gen_fixed(ctx, c.name)
    img.finish()
    foot = img.file.read(img.current_size, SECTOR)
    img.file.truncate(32 * KIB)
    img.file.write(32 * KIB, foot)
    single(c, img)


@case("generator", ["FTR-CURRENT-SIZE"])
def w_FTR_CURRENT_SIZE_fixed(ctx, c):
    """A fixed image of 1000 bytes: not whole sectors."""
    img = fixed_image(ctx, c.name, 1000)
    img.write(0, ctx.noise(1000))
    single(c, img)


@case("generator", ["FTR-CURRENT-SIZE"])
def w_FTR_CURRENT_SIZE_dynamic(ctx, c):
    """A dynamic image of 64 KiB + 100 bytes; the last block holds those 100 bytes."""
    img = generic(ctx, c.name, 64 * KIB + 100)
    put(img, ctx, "d", 2)
    img.write(64 * KIB, ctx.noise(100))
    single(c, img)
    c.peer_notes = "qemu floors the size to whole sectors (divergences D12)."


def fixed_image(ctx, name, size, **kw):
    from families import fixed
    return fixed(ctx, "generator", name, size, **kw)


@case("generator", ["FTR-FIXED-DATA-OFFSET"])
def w_FTR_FIXED_DATA_OFFSET_512(ctx, c):
    """A fixed image whose footer data offset is 512 instead of all ones."""
    img = gen_fixed(ctx, c.name)
    img.finish()
    img.file.write(img.current_size, img.footer.copy(data_offset=512).pack())
    single(c, img)
    c.peer_notes = "dissect takes any data offset other than all ones for a dynamic image."


@case("generator", ["FTR-FIXED-DATA-OFFSET"])
def w_FTR_FIXED_DATA_OFFSET_32bit(ctx, c):
    """A fixed image whose footer data offset is 0x00000000FFFFFFFF (the
    spec's prose taken literally)."""
    img = gen_fixed(ctx, c.name)
    img.finish()
    img.file.write(img.current_size, img.footer.copy(data_offset=0xFFFFFFFF).pack())
    single(c, img)


@case("generator", ["FTR-FIXED-SLACK"])
def w_FTR_FIXED_SLACK(ctx, c):
    """A fixed image with 4 KiB of zeros between its data and its footer."""
    img = gen_fixed(ctx, c.name)
    img.finish()
    foot = img.file.read(img.current_size, SECTOR)
    img.file.zero(img.current_size, 4 * KIB)
    img.file.write(img.current_size + 4 * KIB, foot)
    single(c, img)


@case("generator", ["FTR-511"])
def w_FTR_511(ctx, c):
    """A generic fixed image whose footer lacks its last (reserved) byte."""
    img = gen_fixed(ctx, c.name)
    img.finish()
    img.file.truncate(img.file.length - 1)
    single(c, img)


@case("generator", ["FTR-TRAILING"])
def w_FTR_TRAILING(ctx, c):
    """A dynamic image whose trailing footer was never written: the file
    ends with its last block. Readable (read-only) through the copy."""
    img = gen_dyn(ctx, c.name)
    img.finish(trailing=False)
    img.file.truncate(img.end)
    single(c, img)
    c.peer_notes = "libvhdi and 7-Zip refuse it; dissect reads 0 bytes (divergences D4)."


@case("generator", ["FTR-COPY-MISMATCH"])
def w_FTR_COPY_MISMATCH_zeroed(ctx, c):
    """A dynamic image whose footer copy at offset 0 is all zeros."""
    img = gen_dyn(ctx, c.name)
    img.finish(copy_footer=bytes(SECTOR))
    single(c, img)
    c.peer_notes = "qemu and 7-Zip refuse it (divergences D5)."


@case("generator", ["FTR-COPY-MISMATCH"])
def w_FTR_COPY_MISMATCH_checksum(ctx, c):
    """A dynamic image whose footer copy has a wrong checksum (the trailing footer is right)."""
    img = gen_dyn(ctx, c.name)
    img.finish(copy_footer=bad_checksum(img.footer))
    single(c, img)


@case("generator", ["FTR-COPY-MISMATCH"])
def w_FTR_COPY_MISMATCH_unique_id(ctx, c):
    """A dynamic image whose footer copy has another unique ID (checksum right)."""
    img = gen_dyn(ctx, c.name)
    img.finish(copy_footer=img.footer.copy(unique_id=ctx.uuid()).pack())
    single(c, img)
    c.peer_notes = "qemu uses the copy at offset 0, the others the trailing footer."


@case("generator", ["FTR-FEATURES"])
def w_FTR_FEATURES_zero(ctx, c):
    """A fixed image with features 0 (the reserved bit clear)."""
    img = gen_fixed(ctx, c.name)
    both(img, features=0)
    single(c, img)
    c.peer_notes = "dissect takes a clear bit 0x2 for a 511-byte footer and fails (divergences D14)."


@case("generator", ["FTR-FEATURES"])
def w_FTR_FEATURES_unknown_bit(ctx, c):
    """A dynamic image with features 0x6 (an unknown bit) in both footers."""
    img = gen_dyn(ctx, c.name)
    both(img, features=6)
    single(c, img)


@case("generator")
def fixed_temporary(ctx, c):
    """A fixed image with features 0x3: the temporary bit is allowed."""
    img = gen_fixed(ctx, c.name)
    both(img, features=3)
    single(c, img)


@case("generator", ["FTR-SAVED-STATE"])
def w_FTR_SAVED_STATE_fixed(ctx, c):
    """A fixed image in saved state."""
    img = gen_fixed(ctx, c.name)
    both(img, saved_state=1)
    single(c, img)


@case("generator", ["FTR-SAVED-STATE"])
def w_FTR_SAVED_STATE_dynamic(ctx, c):
    """A dynamic image in saved state (both footers)."""
    img = gen_dyn(ctx, c.name)
    both(img, saved_state=1)
    single(c, img)


@case("generator", ["FTR-UNIQUE-ID"])
def w_FTR_UNIQUE_ID_fixed(ctx, c):
    """A fixed image with a nil unique ID."""
    img = gen_fixed(ctx, c.name)
    both(img, unique_id=bytes(16))
    single(c, img)


@case("generator", ["FTR-UNIQUE-ID"])
def w_FTR_UNIQUE_ID_dynamic(ctx, c):
    """A dynamic image with a nil unique ID in both footers."""
    img = gen_dyn(ctx, c.name)
    both(img, unique_id=bytes(16))
    single(c, img)


@case("generator", ["FTR-RESERVED"])
def w_FTR_RESERVED_fixed(ctx, c):
    """A fixed image with one non-zero byte in the footer's reserved area."""
    img = gen_fixed(ctx, c.name)
    both(img, reserved=bytes(200) + b"\x5a" + bytes(226))
    single(c, img)


@case("generator", ["FTR-RESERVED"])
def w_FTR_RESERVED_dynamic(ctx, c):
    """A dynamic image with a non-zero last reserved byte in both footers."""
    img = gen_dyn(ctx, c.name)
    both(img, reserved=bytes(426) + b"\x01")
    single(c, img)


@case("tap", ["FTR-RESERVED"])
def w_FTR_RESERVED_tap_hidden(ctx, c):
    """A vhd-util dynamic image marked hidden: tapdisk keeps its 'hidden'
    flag in the first reserved byte of the footer (offset 85)."""
    from families import tap, tap_finish
    img = tap(ctx, c.name, 2 * MIB)
    put(img, ctx, "t", 0, 2)
    both(img, reserved=b"\x01" + bytes(426))
    tap_finish(img)
    single(c, img)


@case("generator", ["GEO-ALGORITHM"])
def w_GEO_ALGORITHM_wrong(ctx, c):
    """A dynamic image of 64 KiB whose geometry says 2/4/17 (136 sectors):
    neither the algorithm's 1/4/17 nor the size."""
    img = generic(ctx, c.name, 64 * KIB, geometry_override=(2, 4, 17))
    put(img, ctx, "g", 3)
    single(c, img)
    c.peer_notes = "qemu would read 2*4*17 sectors for the creators 'vpc ' and 'qemu'."


@case("generator", ["GEO-ALGORITHM"])
def w_GEO_ALGORITHM_max(ctx, c):
    """A fixed image of 64 KiB with the maximum geometry 65535/16/255 (what
    qemu-img writes with force_size)."""
    img = gen_fixed(ctx, c.name, geometry_override=(65535, 16, 255))
    single(c, img)


@case("generator")
def geometry_exact_chs(ctx, c):
    """A dynamic image of 35642880 bytes with geometry 819/5/17, which
    describes the size exactly (the CHS rounding just below an algorithm
    switch), although the algorithm on that size gives 1023/4/17."""
    img = generic(ctx, c.name, 35642880, block_size=2 * MIB, geometry_override=(819, 5, 17))
    put(img, ctx, "g", 60000, 2)
    single(c, img)


# ===================================================================== header

@case("generator", ["HDR-COOKIE"])
def x_HDR_COOKIE(ctx, c):
    """A dynamic image whose header cookie is 'cxsparsx' (checksum recomputed)."""
    img = gen_dyn(ctx, c.name)
    img.header.cookie = b"cxsparsx"
    single(c, img)


@case("generator", ["HDR-CHECKSUM"])
def x_HDR_CHECKSUM(ctx, c):
    """A dynamic image whose header checksum is off by one."""
    img = gen_dyn(ctx, c.name)
    raw = bytearray(img.header.pack())
    raw[39] ^= 1
    img.finish(header_bytes=bytes(raw))
    single(c, img)


@case("generator", ["HDR-VERSION"])
def x_HDR_VERSION(ctx, c):
    """A dynamic image with header version 2.0."""
    img = gen_dyn(ctx, c.name)
    img.header.version = 0x00020000
    single(c, img)


def empty_with_block_size(ctx, c, size, header_bs, build_bs=None):
    img = generic(ctx, c.name, size, block_size=build_bs or header_bs)
    img.header.block_size = header_bs
    single(c, img)


@case("generator", ["HDR-BLOCK-SIZE"])
def x_HDR_BLOCK_SIZE_3m(ctx, c):
    """A 6 MiB dynamic image with 3 MiB blocks (not a power of two)."""
    empty_with_block_size(ctx, c, 6 * MIB, 3 * MIB)


@case("generator", ["HDR-BLOCK-SIZE"])
def x_HDR_BLOCK_SIZE_256(ctx, c):
    """An 8 KiB dynamic image with 256-byte blocks (below a sector)."""
    empty_with_block_size(ctx, c, 8 * KIB, 256)


@case("generator", ["HDR-BLOCK-SIZE"])
def x_HDR_BLOCK_SIZE_2g(ctx, c):
    """A 64 KiB dynamic image with 2 GiB blocks (over 1 GiB)."""
    empty_with_block_size(ctx, c, 64 * KIB, 2 * 1024 * MIB)


@case("generator", ["HDR-BLOCK-SIZE"])
def x_HDR_BLOCK_SIZE_0(ctx, c):
    """A 64 KiB dynamic image with block size 0."""
    empty_with_block_size(ctx, c, 64 * KIB, 0, build_bs=4 * KIB)


@case("generator", ["HDR-MAX-TABLE-ENTRIES"])
def x_HDR_MAX_TABLE_ENTRIES(ctx, c):
    """A 64 KiB dynamic image with 4 KiB blocks (16) and a BAT of 15 entries."""
    img = generic(ctx, c.name, 64 * KIB, max_table_entries=15)
    put(img, ctx, "d", 8, 2)
    single(c, img)


@case("generator")
def dynamic_bat_longer_than_disk(ctx, c):
    """A 64 KiB dynamic image (16 blocks of 4 KiB) whose BAT has 18 entries,
    the last two unused: allowed."""
    img = generic(ctx, c.name, 64 * KIB, max_table_entries=18)
    put(img, ctx, "d", 8, 2)
    single(c, img)


@case("generator")
def dynamic_empty(ctx, c):
    """A new 1 MiB dynamic image with 4 KiB blocks and no block allocated."""
    img = generic(ctx, c.name, 1 * MIB)
    single(c, img)


@case("generator", ["HDR-TABLE-OFFSET"])
def x_HDR_TABLE_OFFSET_unaligned(ctx, c):
    """A dynamic image whose BAT starts at 1540, not on a sector (the BAT's
    bytes are there; the blocks after it are fine)."""
    img = generic(ctx, c.name, 64 * KIB, table_offset=1540)
    put(img, ctx, "d", 8, 2)
    single(c, img)


@case("generator", ["HDR-TABLE-OFFSET"])
def x_HDR_TABLE_OFFSET_past_eof(ctx, c):
    """An empty dynamic image whose header puts the BAT 1 MiB past the end."""
    img = generic(ctx, c.name, 64 * KIB, table_offset=1 * MIB, metadata_end=1536)
    img.finish(bat_bytes=b"")
    single(c, img)


@case("generator", ["HDR-TABLE-OFFSET"])
def x_HDR_TABLE_OFFSET_in_header(ctx, c):
    """A 16 KiB dynamic image (4 entries) whose BAT offset 1024 lies inside
    its own header (where the header holds 16 bytes of 0xFF, read as four
    unused entries)."""
    img = generic(ctx, c.name, 16 * KIB, table_offset=1024, metadata_end=1536)
    img.header.parent_name = bytes(448) + b"\xff" * 16
    img.finish(bat_bytes=b"\xff" * 16)
    single(c, img)


@case("generator", ["HDR-TABLE-OFFSET"])
def x_HDR_TABLE_OFFSET_into_footer(ctx, c):
    """An empty dynamic image whose 4-entry BAT starts at 2040, 8 bytes
    before the trailing footer at 2048: it runs into the footer."""
    img = generic(ctx, c.name, 16 * KIB, table_offset=2040, metadata_end=2048)
    img.finish(bat_bytes=b"")
    img.file.write(1536, b"\xff" * 512)
    single(c, img)


@case("generator", ["HDR-TABLE-OFFSET"])
def x_HDR_TABLE_OFFSET_zero(ctx, c):
    """An empty dynamic image whose BAT offset is 0 (the footer copy)."""
    img = generic(ctx, c.name, 16 * KIB, table_offset=0, metadata_end=2048)
    img.finish(bat_bytes=b"")
    img.file.write(1536, b"\xff" * 512)
    single(c, img)


@case("generator", ["HDR-DATA-OFFSET"])
def w_HDR_DATA_OFFSET_32bit(ctx, c):
    """A dynamic image whose header data offset is 0x00000000FFFFFFFF."""
    img = gen_dyn(ctx, c.name)
    img.header.data_offset = 0xFFFFFFFF
    single(c, img)


@case("generator", ["HDR-DATA-OFFSET"])
def w_HDR_DATA_OFFSET_zero(ctx, c):
    """A dynamic image whose header data offset is 0."""
    img = gen_dyn(ctx, c.name)
    img.header.data_offset = 0
    single(c, img)


@case("generator", ["HDR-RESERVED"])
def w_HDR_RESERVED_1(ctx, c):
    """A dynamic image whose header reserved1 (at 0x3C) is 1."""
    img = gen_dyn(ctx, c.name)
    img.header.reserved1 = 1
    single(c, img)


@case("generator", ["HDR-RESERVED"])
def w_HDR_RESERVED_2(ctx, c):
    """A dynamic image with a non-zero byte in the header's last 256 reserved bytes."""
    img = gen_dyn(ctx, c.name)
    img.header.reserved2 = bytes(100) + b"\x80" + bytes(155)
    single(c, img)


# ======================================================================== BAT

def patch_bat(img, index, value):
    img.file.write(img.header.table_offset + 4 * index, value.to_bytes(4, "big"))


@case("generator", ["BAT-ENTRY-BEYOND-EOF"])
def x_BAT_ENTRY_BEYOND_EOF(ctx, c):
    """A dynamic image whose BAT entry 3 points 16 MiB past the end."""
    img = gen_dyn(ctx, c.name)
    img.finish()
    patch_bat(img, 3, (16 * MIB) // SECTOR)
    single(c, img)


@case("generator", ["BAT-ENTRY-BEYOND-EOF"])
def x_BAT_ENTRY_BEYOND_EOF_into_footer(ctx, c):
    """A dynamic image whose last block lost its last sector: the block now
    runs into the trailing footer."""
    img = gen_dyn(ctx, c.name)
    img.finish()
    foot = img.footer.pack()
    new_len = img.file.length - SECTOR
    img.file.truncate(new_len - SECTOR)
    img.file.write(new_len - SECTOR, foot)
    single(c, img)


@case("generator", ["BAT-ENTRY-OVERLAP"])
def x_BAT_ENTRY_OVERLAP_footer_copy(ctx, c):
    """A dynamic image whose BAT entry 3 is 0: that block would start on the footer copy."""
    img = gen_dyn(ctx, c.name)
    img.finish()
    patch_bat(img, 3, 0)
    single(c, img)
    c.peer_notes = "dissect treats entry 0 as unallocated; libvhdi and qemu read the header as data (D13)."


def small_blocks(ctx, name):
    """8 KiB, 512-byte blocks: blocks 2, 5 and 9 written."""
    img = generic(ctx, name, 8 * KIB, block_size=512)
    put(img, ctx, "s", 2)
    put(img, ctx, "s", 5)
    put(img, ctx, "s", 9)
    return img


@case("generator", ["BAT-ENTRY-OVERLAP"])
def x_BAT_ENTRY_OVERLAP_header(ctx, c):
    """512-byte blocks; BAT entry 0 is sector 1: its bitmap and data are
    exactly the dynamic header."""
    img = small_blocks(ctx, c.name)
    img.finish()
    patch_bat(img, 0, 1)
    single(c, img)


@case("generator", ["BAT-ENTRY-OVERLAP"])
def x_BAT_ENTRY_OVERLAP_bat(ctx, c):
    """512-byte blocks; BAT entry 0 is sector 3: its bitmap is the BAT."""
    img = small_blocks(ctx, c.name)
    img.finish()
    patch_bat(img, 0, 3)
    single(c, img)


@case("generator", ["BAT-ENTRY-OVERLAP"])
def x_BAT_ENTRY_OVERLAP_same_block(ctx, c):
    """BAT entries 5 and 7 point at the same block."""
    img = gen_dyn(ctx, c.name)
    img.finish()
    patch_bat(img, 7, img.bat[5])
    single(c, img)


@case("generator", ["BAT-ENTRY-OVERLAP"])
def x_BAT_ENTRY_OVERLAP_shifted(ctx, c):
    """BAT entry 7 points one sector after block 5's start: the two spans
    overlap by all but a sector."""
    img = gen_dyn(ctx, c.name)
    img.finish()
    patch_bat(img, 7, img.bat[5] + 1)
    single(c, img)


@case("generator", ["BAT-ENTRY-UNUSED"])
def w_BAT_ENTRY_UNUSED(ctx, c):
    """A 64 KiB dynamic image (16 blocks) with an 18-entry BAT whose entry 17
    points at a block (bitmap and data zero) after the others."""
    img = generic(ctx, c.name, 64 * KIB, max_table_entries=18)
    put(img, ctx, "d", 8, 2)
    img.allocate(17)
    single(c, img)


# ===================================================================== bitmaps

@case("generator", ["BMP-CLEAR-DATA"])
def w_BMP_CLEAR_DATA_block(ctx, c):
    """Block 2 is allocated with an all-clear bitmap over non-zero data: the
    spec reads zeros there."""
    img = gen_dyn(ctx, c.name)
    img.raw_block_data(2, 0, ctx.noise(4 * KIB))
    single(c, img)
    c.peer_notes = ("vhdref and libvhdi read zeros; qemu and dissect return the data; "
                    "7-Zip fails (divergences D2).")


@case("generator", ["BMP-CLEAR-DATA"])
def w_BMP_CLEAR_DATA_sector(ctx, c):
    """In block 0 sectors 1 and 3 are set; sector 2 between them is clear
    but holds non-zero bytes."""
    img = gen_dyn(ctx, c.name)
    img.raw_block_data(0, 2, ctx.noise(SECTOR))
    single(c, img)
    c.peer_notes = "libvhdi returns the data of clear sectors after a set one in the same byte (D3)."


@case("generator", ["BMP-PAST-END"])
def w_BMP_PAST_END(ctx, c):
    """A 62 KiB dynamic image (the last 4 KiB block has 4 sectors) whose last
    block's bitmap also sets the 4 sectors past the end."""
    img = generic(ctx, c.name, 62 * KIB)
    put(img, ctx, "d", 120, 2)
    for lba in range(124, 128):
        img.set_bit(lba)
    single(c, img)


# ====================================================================== layout

@case("generator", ["FILE-LEAK"])
def w_FILE_LEAK(ctx, c):
    """Block 0's span sits between blocks 5 and 11 but no BAT entry points at
    it (it lost its entry): a whole block span of unreferenced bytes."""
    img = gen_dyn(ctx, c.name)
    lost = img.blocks.pop(0)
    img.bat[0] = 0xFFFFFFFF
    for lba in range(8):
        img.layer.present.pop(lba, None)
    img.file.write(lost["offset"], lost["bitmap"])
    single(c, img)


@case("generator", ["FILE-LEAK"])
def w_FILE_LEAK_before_footer(ctx, c):
    """A block span of zeros (and a bit of data) between the last block and
    the trailing footer, referenced by nothing."""
    img = gen_dyn(ctx, c.name)
    img.file.write(img.end + 600, b"leftover")
    img.end += img.span
    single(c, img)


@case("generator", ["FILE-TAIL"])
def w_FILE_TAIL(ctx, c):
    """Two sectors between the last block and the trailing footer, holding
    bytes an old writer left there (not zeros)."""
    img = gen_dyn(ctx, c.name)
    img.file.write(img.end + 100, b"left behind by an earlier writer")
    img.end += 2 * SECTOR
    single(c, img)


@case("generator", ["FILE-ORDER"])
def w_FILE_ORDER_bat_after_blocks(ctx, c):
    """The BAT comes after the blocks (which start right after the header)."""
    img = generic(ctx, c.name, 64 * KIB, metadata_end=1536)
    put(img, ctx, "d", 40, 2)
    put(img, ctx, "d", 3, 1)
    img.header.table_offset = align_up(img.end, SECTOR)
    img.end = img.header.table_offset + SECTOR
    single(c, img)


@case("generator", ["FILE-ORDER"])
def w_FILE_ORDER_header_after_blocks(ctx, c):
    """The footer's data offset puts the dynamic header (and the BAT after
    it) behind the blocks, which start at 512."""
    img = generic(ctx, c.name, 64 * KIB, metadata_end=512)
    put(img, ctx, "d", 40, 2)
    put(img, ctx, "d", 3, 1)
    hdr = align_up(img.end, SECTOR)
    img.footer.data_offset = hdr
    img.header.table_offset = hdr + 1024
    img.end = hdr + 1024 + SECTOR
    single(c, img)
