"""Differencing chains: valid chains of depth 1 to 4 and 64, every locator
kind, and the cases of the parent rules (PAR-*), each in its own directory
corpora/<case>/ so relative locators resolve wherever corpora/ is."""

from build import Image
from cases import case, chain, gen_dyn, gen_fixed, work_generic
from families import Ctx, base_name, generic, put
from vhdfmt import (DIFFERENCING, DYNAMIC, KIB, MIB, SECTOR, Footer, Layer, Locator,
                    SparseFile, align_up, geometry, utf16be_name)


class Phantom:
    """A parent that is not there (or not a VHD): what a child records of it."""

    def __init__(self, ctx, name, size):
        self.name = name
        self.current_size = size
        self.footer = Footer(unique_id=ctx.uuid(), time_stamp=ctx.stamp(),
                             geometry=geometry(size))
        self.layer = Layer(size)


def child(ctx, name, parent, locs=("W2ru",), tag="c", block_size=4 * KIB, write=True, **kw):
    """A generic child of `parent` with the listed locators (each pointing
    at the parent's file name, relative) and the standard child workload."""
    img = generic(ctx, name, None, parent=parent, block_size=block_size, **kw)
    for slot, code in enumerate(locs):
        text = {"W2ru": ".\\", "Wi2r": ".\\", "W2ku": ".\\", "Wi2k": ".\\",
                "MacX": "file://./"}[code] + base_name(parent)
        img.locator(slot, code.encode(), text)
    if write:
        spb = img.block_size // SECTOR
        put(img, ctx, tag, 5 * spb, 3)
        put(img, ctx, tag, 4)
        put(img, ctx, tag, 6)
    return img


def child_work(img, ctx, tag="c"):
    """The standard child workload (see child())."""
    spb = img.block_size // SECTOR
    put(img, ctx, tag, 5 * spb, 3)
    put(img, ctx, tag, 4)
    put(img, ctx, tag, 6)


def base(ctx, name="base.vhd", **kw):
    img = gen_dyn(ctx, name, **kw)
    img.finish()
    return img


# ================================================================ valid chains

@case("generator")
def chain_depth_1(ctx, c):
    """A child over a dynamic base, found through its W2ru locator. The child
    sets single sectors inside 4 KiB groups the parent also has."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "W2ru"}
    c.peer_notes = ("libvhdi reads the child's data area, not the parent, for clear sectors "
                    "after a set one in the same bitmap byte (divergences D3); qemu and "
                    "dissect have no differencing support.")


def deep_chain(ctx, c, depth):
    b = base(ctx)
    images = [b]
    for i in range(1, depth + 1):
        parent = images[-1]
        img = generic(ctx, "snap%d.vhd" % i, None, parent=parent, block_size=4 * KIB)
        img.locator(0, b"W2ru", ".\\" + base_name(parent))
        spb = 8
        # each layer: one sector it shares with the base, one new single
        # sector, and a run in a block no lower layer has
        put(img, ctx, "s%d" % i, 5 * spb + i, 1)
        put(img, ctx, "s%d" % i, 8 + i, 1)
        put(img, ctx, "s%d" % i, (11 - i) * spb + 1, 3)
        if i == depth:
            img.write(3 * SECTOR + 10, ctx.noise(20))   # partial sector over the base's
        img.finish()
        images.append(img)
    chain(c, list(reversed(images)))
    c.parent_source = {"via": "locator", "platform": "W2ru"}
    c.peer_notes = "libvhdi: partly set bitmap bytes read wrong (divergences D3)."


@case("generator")
def chain_depth_2(ctx, c):
    """Two children over a dynamic base (each found through W2ru)."""
    deep_chain(ctx, c, 2)


@case("generator")
def chain_depth_3(ctx, c):
    """Three children over a dynamic base."""
    deep_chain(ctx, c, 3)


@case("generator")
def chain_depth_4(ctx, c):
    """Four children over a dynamic base."""
    deep_chain(ctx, c, 4)


@case("generator")
def chain_fixed_base(ctx, c):
    """A child over a fixed base."""
    b = gen_fixed(ctx, "base.vhd")
    b.finish()
    ch = child(ctx, "child.vhd", b)
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


@case("generator")
def chain_w2ku_w2ru(ctx, c):
    """A child with an absolute W2ku path that exists nowhere and a W2ru that
    works: W2ru is followed (it comes first in the resolution order)."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b, locs=(), write=False)
    ch.locator(0, b"W2ku", "/nonexistent/vhdref-corpus/base.vhd")
    ch.locator(1, b"W2ru", ".\\base.vhd")
    child_work(ch, ctx)
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


@case("generator")
def chain_wi2r_wi2k(ctx, c):
    """A child with the deprecated pair: Wi2k (an absolute C:\\ path) and
    Wi2r (relative, UTF-8). Wi2r is followed."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b, locs=(), write=False)
    ch.locator(0, b"Wi2k", "C:\\VMs\\base.vhd")
    ch.locator(1, b"Wi2r", ".\\base.vhd")
    child_work(ch, ctx)
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "Wi2r"}


@case("generator")
def chain_macx(ctx, c):
    """A child whose only path locator is MacX 'file://./base.vhd' (next to
    a Mac alias record, which no reader decodes). MacX is followed."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b, locs=(), write=False)
    ch.locator(0, b"Mac ", data=b"\0\0\x01\x02alias record" + bytes(40))
    ch.locator(1, b"MacX", "file://./base.vhd")
    child_work(ch, ctx)
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "MacX"}


@case("generator")
def chain_subdir(ctx, c):
    """A child whose W2ru points into a subdirectory: '.\\parents\\base.vhd'."""
    b = base(ctx, name="parents/base.vhd")
    ch = child(ctx, "child.vhd", b, locs=(), write=False)
    ch.locator(0, b"W2ru", ".\\parents\\base.vhd")
    child_work(ch, ctx)
    ch.finish()
    c.files["%s/parents/base.vhd" % c.name] = b.file
    c.files["%s/child.vhd" % c.name] = ch.file
    c.top = "%s/child.vhd" % c.name
    c.size = ch.current_size
    c.layers = [(c.top, ch.layer), ("%s/parents/base.vhd" % c.name, b.layer)]
    c.layer = ch.layer
    c.info = ch.info()
    c.parent_source = {"via": "locator", "platform": "W2ru"}


def long_chain(ctx, c, count):
    """`count` images: a base and count-1 children, 512-byte blocks; every
    8th child writes one sector."""
    b = generic(ctx, "layer00.vhd", 8 * KIB, block_size=512)
    put(b, ctx, "l0", 0, 2)
    b.finish()
    images = [b]
    for i in range(1, count):
        parent = images[-1]
        img = generic(ctx, "layer%02d.vhd" % i, None, parent=parent, block_size=512)
        img.locator(0, b"W2ru", ".\\" + base_name(parent))
        if i % 8 == 0:
            put(img, ctx, "l%d" % i, i % 16, 1)
        img.finish()
        images.append(img)
    return list(reversed(images))


@case("generator")
def chain_depth_64(ctx, c):
    """64 images (a base and 63 children): the deepest chain the rules allow."""
    chain(c, long_chain(ctx, c, 64))
    c.parent_source = {"via": "locator", "platform": "W2ru"}


# ============================================================ parent warnings

@case("generator", ["PAR-LOCATOR-MISSING"])
def w_PAR_LOCATOR_MISSING_name_only(ctx, c):
    """A child with no locator at all: the parent is found by its name only."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b, locs=())
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "name"}


@case("generator", ["PAR-LOCATOR-MISSING"])
def w_PAR_LOCATOR_MISSING_mac_alias(ctx, c):
    """A child whose only locator is a Mac alias record (no path): found by name."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b, locs=(), write=False)
    ch.locator(0, b"Mac ", data=b"\0\0\x01\x02alias record" + bytes(40))
    child_work(ch, ctx)
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "name"}


@case("generator", ["PAR-NAME-MISMATCH"])
def w_PAR_NAME_MISMATCH(ctx, c):
    """The child's parent name says 'old-base.vhd'; W2ru finds 'base.vhd'."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    ch.header.parent_name = utf16be_name("old-base.vhd")
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


@case("generator", ["PAR-TIMESTAMP"])
def w_PAR_TIMESTAMP(ctx, c):
    """The child records a parent time stamp one second after the parent
    footer's (and far from any file time)."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    ch.header.parent_time_stamp = b.footer.time_stamp + 1
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


@case("generator", ["PAR-NAME"])
def w_PAR_NAME(ctx, c):
    """The parent name is not UTF-16 (a lone high surrogate); W2ru works."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    ch.header.parent_name = b"\xd8\x00" + utf16be_name("base.vhd")
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


def bad_locator_case(ctx, c, bad, followed="W2ru", block_size=4 * KIB):
    """A child with a working W2ru in slot 1 and `bad(child)` filling slot 0."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b, locs=(), write=False, block_size=block_size)
    bad(ch)
    ch.locator(1, b"W2ru", ".\\base.vhd")
    put(ch, ctx, "c", 40, 2)
    put(ch, ctx, "c", 7)
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": followed}
    return ch


@case("generator", ["PAR-LOCATOR-BOUNDS"])
def w_PAR_LOCATOR_BOUNDS_past_eof(ctx, c):
    """Locator 0 (W2ku) points 1 MiB past the end of the file."""
    def bad(ch):
        ch.header.locators[0] = Locator(b"W2ku", 512, 40, 0x100000)
    bad_locator_case(ctx, c, bad)


@case("generator", ["PAR-LOCATOR-BOUNDS"])
def w_PAR_LOCATOR_BOUNDS_empty(ctx, c):
    """Locator 0 (W2ku) is in use with a data length of 0."""
    def bad(ch):
        off = ch.locator(0, b"W2ku", "C:\\x.vhd")
        ch.header.locators[0] = Locator(b"W2ku", 512, 0, off)
    bad_locator_case(ctx, c, bad)


@case("generator", ["PAR-LOCATOR-BOUNDS"])
def w_PAR_LOCATOR_BOUNDS_over_64k(ctx, c):
    """Locator 0 (W2ku) holds 70008 bytes of (valid UTF-16) path, over the
    64 KiB bound. The child has 2 MiB blocks, so those bytes are less than a
    block span whether or not a checker counts them as referenced."""
    def bad(ch):
        text = "C:\\" + "d\\" * 17498 + "b.vhd"
        ch.locator(0, b"W2ku", text)
        assert ch.header.locators[0].length > 65536
    bad_locator_case(ctx, c, bad, block_size=2 * MIB)


@case("generator", ["PAR-LOCATOR-BOUNDS", "PAR-LOCATOR-OVERLAP"])
def w_PAR_LOCATOR_BOUNDS_in_footer_copy(ctx, c):
    """Locator 0 (W2ku) has its data at offset 100, inside the footer copy:
    below 512 (bounds) and over the copy (overlap)."""
    def bad(ch):
        ch.header.locators[0] = Locator(b"W2ku", 512, 40, 100)
    bad_locator_case(ctx, c, bad)


@case("generator", ["PAR-LOCATOR-PLATFORM"])
def w_PAR_LOCATOR_PLATFORM(ctx, c):
    """Locator 0 has the unknown platform code 'Lnx1' (with a path as data)."""
    def bad(ch):
        ch.locator(0, b"Lnx1", data=b"./base.vhd")
    bad_locator_case(ctx, c, bad)


def encoding_case(ctx, c, code, data):
    def bad(ch):
        ch.locator(0, code, data=data)
    bad_locator_case(ctx, c, bad)


@case("generator", ["PAR-LOCATOR-ENCODING"])
def w_PAR_LOCATOR_ENCODING_odd_length(ctx, c):
    """Locator 0 (W2ru) has 21 bytes: not whole UTF-16 units."""
    encoding_case(ctx, c, b"W2ru", ".\\x.vhd".encode("utf-16-le") + b"\x00" * 7)


@case("generator", ["PAR-LOCATOR-ENCODING"])
def w_PAR_LOCATOR_ENCODING_lone_surrogate(ctx, c):
    """Locator 0 (W2ru) holds a lone high surrogate before the path."""
    encoding_case(ctx, c, b"W2ru", b"\x00\xd8" + ".\\base.vhd".encode("utf-16-le"))


@case("generator", ["PAR-LOCATOR-ENCODING"])
def w_PAR_LOCATOR_ENCODING_macx_not_utf8(ctx, c):
    """Locator 0 (MacX) is not UTF-8 (a Latin-1 byte)."""
    encoding_case(ctx, c, b"MacX", b"file://./b\xe4se.vhd")


@case("generator", ["PAR-LOCATOR-ENCODING"])
def w_PAR_LOCATOR_ENCODING_inner_nul(ctx, c):
    """Locator 0 (W2ru) has a NUL inside the path."""
    encoding_case(ctx, c, b"W2ru", ".\\ba\0se.vhd".encode("utf-16-le"))


@case("generator", ["PAR-LOCATOR-ENCODING"])
def w_PAR_LOCATOR_ENCODING_all_nul(ctx, c):
    """Locator 0 (W2ku) holds only NULs: empty once trailing NULs are cut."""
    encoding_case(ctx, c, b"W2ku", bytes(16))


@case("generator", ["PAR-LOCATOR-OVERLAP"])
def w_PAR_LOCATOR_OVERLAP_shared(ctx, c):
    """Locators 0 and 1 (both W2ru) share the same data; the first works."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    loc = ch.header.locators[0]
    ch.header.locators[1] = Locator(loc.code, loc.space, loc.length, loc.offset)
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


@case("generator", ["PAR-LOCATOR-OVERLAP"])
def w_PAR_LOCATOR_OVERLAP_header(ctx, c):
    """Locator 0 (W2ru) points into the dynamic header, at the parent name;
    read as UTF-16LE it is valid text that names no file. Locator 1 works."""
    def bad(ch):
        name = utf16be_name("base.vhd")
        ch.header.locators[0] = Locator(b"W2ru", len(name), len(name), 512 + 64)
    bad_locator_case(ctx, c, bad)


@case("generator", ["PAR-LOCATOR-SPACE"])
def w_PAR_LOCATOR_SPACE_zero(ctx, c):
    """Locator 0 (W2ku, a C:\\ path) records a data space of 0."""
    def bad(ch):
        ch.locator(0, b"W2ku", "C:\\VMs\\base.vhd", space=0)
    bad_locator_case(ctx, c, bad)


@case("generator", ["PAR-LOCATOR-SPACE"])
def w_PAR_LOCATOR_SPACE_short(ctx, c):
    """Locator 0 (W2ku) holds 600 bytes but records a space of 1: too small
    whether it counts bytes (1) or sectors (512)."""
    def bad(ch):
        text = "C:\\" + "v\\" * 146 + "b.vhd"
        off = ch.locator(0, b"W2ku", text, space=1)
        assert ch.header.locators[0].length == 600
        ch.end = max(ch.end, off + 1024)
    bad_locator_case(ctx, c, bad)


@case("generator", ["FTR-TRAILING"])
def w_FTR_TRAILING_differencing(ctx, c):
    """A child whose trailing footer was never written (the file ends with
    its last block); read through the footer copy, read-only."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    ch.finish(trailing=False)
    ch.file.truncate(ch.end)
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


@case("generator", ["FTR-COPY-MISMATCH"])
def w_FTR_COPY_MISMATCH_differencing(ctx, c):
    """A child whose footer copy records another time stamp (checksum right)."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    ch.finish(copy_footer=ch.footer.copy(time_stamp=ch.footer.time_stamp - 60).pack())
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


@case("generator", ["FILE-LEAK"])
def w_FILE_LEAK_differencing(ctx, c):
    """A child with a whole block's span that no BAT entry references (a
    block written before a crash lost its BAT entry)."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b, write=False)
    spb = ch.block_size // SECTOR
    put(ch, ctx, "c", 2 * spb, 2)
    put(ch, ctx, "c", 9 * spb, 1)   # this block is lost below
    put(ch, ctx, "c", 3 * spb + 1, 1)
    lost = ch.blocks.pop(9)
    ch.bat[9] = 0xFFFFFFFF
    for s in range(spb):
        ch.layer.present.pop(9 * spb + s, None)
    ch.file.write(lost["offset"], lost["bitmap"])
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


@case("generator", ["FILE-ORDER"])
def w_FILE_ORDER_locator_after_block(ctx, c):
    """A child whose locator data was written after its first block."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b, locs=(), write=False)
    spb = ch.block_size // SECTOR
    put(ch, ctx, "c", 5 * spb, 2)
    ch.locator(0, b"W2ru", ".\\base.vhd")
    put(ch, ctx, "c", 7 * spb, 1)
    ch.finish()
    chain(c, [ch, b])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


# ================================================================ chain errors

@case("generator", ["FTR-CHECKSUM"])
def x_FTR_CHECKSUM_differencing(ctx, c):
    """A child whose footer copy and trailing footer both have a wrong checksum."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    good = ch.footer.pack()
    bad = ch.footer.copy(checksum=int.from_bytes(good[64:68], "big") ^ 0x10).pack()
    ch.finish(copy_footer=bad, trailing=bad)
    chain(c, [ch, b], layer_ok=[False, True])


@case("generator", ["HDR-CHECKSUM"])
def x_HDR_CHECKSUM_differencing(ctx, c):
    """A child whose dynamic header checksum is off by one."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    raw = bytearray(ch.header.pack())
    raw[39] ^= 0x01
    ch.finish(header_bytes=bytes(raw))
    chain(c, [ch, b], layer_ok=[False, True])


@case("generator", ["BAT-ENTRY-OVERLAP"])
def x_BAT_ENTRY_OVERLAP_locator(ctx, c):
    """A child's block 2 is placed over its W2ru locator data (a 4 KiB block
    whose span covers the locator's sector and what follows)."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    loc_off = ch.header.locators[0].offset
    assert ch.bat[2] == 0xFFFFFFFF
    ch.bat[2] = loc_off // SECTOR
    ch.finish()
    chain(c, [ch, b], layer_ok=[False, True])


@case("generator", ["BAT-ENTRY-BEYOND-EOF"])
def x_BAT_ENTRY_BEYOND_EOF_differencing(ctx, c):
    """A child's BAT entry 3 points 16 MiB past the end of the file."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    ch.bat[3] = (16 * MIB) // SECTOR
    ch.finish()
    chain(c, [ch, b], layer_ok=[False, True])


@case("generator", ["HDR-TABLE-OFFSET", "PAR-LOCATOR-OVERLAP"])
def x_HDR_TABLE_OFFSET_locator_in_bat(ctx, c):
    """A child's W2ku locator data is the last 16 bytes of its BAT (entries
    12..15, unused: 0xFFFF units, valid UTF-16 naming no file)."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    t = ch.header.table_offset
    assert all(ch.bat[i] == 0xFFFFFFFF for i in range(12, 16))
    ch.header.locators[1] = Locator(b"W2ku", 16, 16, t + 48)
    ch.finish()
    chain(c, [ch, b], layer_ok=[False, True])


@case("generator", ["PAR-NOT-FOUND"])
def x_PAR_NOT_FOUND(ctx, c):
    """The child's W2ru and its name both say 'base.vhd', which is not there."""
    p = Phantom(ctx, "base.vhd", 64 * KIB)
    ch = child(ctx, "child.vhd", p)
    ch.finish()
    chain(c, [ch], layer_ok=[False])


@case("generator", ["PAR-NOT-FOUND"])
def x_PAR_NOT_FOUND_w2ku_only(ctx, c):
    """The child's only locator is W2ku with an absolute path that exists
    nowhere, and its name is empty."""
    p = Phantom(ctx, "base.vhd", 64 * KIB)
    ch = child(ctx, "child.vhd", p, locs=(), write=False)
    ch.header.parent_name = b""
    ch.locator(0, b"W2ku", "/nonexistent/vhdref-corpus/base.vhd")
    child_work(ch, ctx)
    ch.finish()
    chain(c, [ch], layer_ok=[False])


@case("generator", ["PAR-NOT-FOUND"])
def x_PAR_NOT_FOUND_drive_letter(ctx, c):
    """W2ku 'C:\\VMs\\base.vhd' and W2ru '..\\gone\\base.vhd': neither is here."""
    p = Phantom(ctx, "base.vhd", 64 * KIB)
    ch = child(ctx, "child.vhd", p, locs=(), write=False)
    ch.header.parent_name = utf16be_name("C:\\VMs\\gone.vhd")
    ch.locator(0, b"W2ku", "C:\\VMs\\base.vhd")
    ch.locator(1, b"W2ru", "..\\gone\\base.vhd")
    child_work(ch, ctx)
    ch.finish()
    chain(c, [ch], layer_ok=[False])


@case("generator", ["PAR-LOCATOR-MISSING", "PAR-NOT-FOUND"])
def x_PAR_NOT_FOUND_nothing(ctx, c):
    """A child with no locator and an empty parent name."""
    p = Phantom(ctx, "base.vhd", 64 * KIB)
    ch = child(ctx, "child.vhd", p, locs=())
    ch.header.parent_name = b""
    ch.finish()
    chain(c, [ch], layer_ok=[False])


@case("generator", ["PAR-UNIQUE-ID"])
def x_PAR_UNIQUE_ID(ctx, c):
    """The child records another unique ID than the 'base.vhd' beside it has."""
    b = base(ctx)
    ch = child(ctx, "child.vhd", b)
    ch.header.parent_unique_id = ctx.uuid()
    ch.finish()
    chain(c, [ch, b], layer_ok=[False, True])


@case("generator", ["PAR-UNIQUE-ID"])
def x_PAR_UNIQUE_ID_top_of_three(ctx, c):
    """A chain of three: the top child records another ID than its parent;
    the parent and the base are a good pair."""
    b = base(ctx)
    mid = child(ctx, "mid.vhd", b)
    mid.finish()
    top = child(ctx, "top.vhd", mid, tag="t")
    top.header.parent_unique_id = ctx.uuid()
    top.finish()
    chain(c, [top, mid, b], layer_ok=[False, True, True])


@case("generator", ["PAR-SIZE"])
def x_PAR_SIZE(ctx, c):
    """The child is 64 KiB; the parent it names (right ID) is 128 KiB."""
    b = gen_dyn(ctx, "base.vhd", size=128 * KIB)
    b.finish()
    img = generic(ctx, "child.vhd", 64 * KIB, kind=DIFFERENCING, block_size=4 * KIB)
    img.parent = b
    img.header.parent_unique_id = b.footer.unique_id
    img.header.parent_time_stamp = b.footer.time_stamp
    img.header.parent_name = utf16be_name("base.vhd")
    img.layer.parent = Layer(64 * KIB)
    img.locator(0, b"W2ru", ".\\base.vhd")
    put(img, ctx, "c", 3, 1)
    img.finish()
    chain(c, [img, b], layer_ok=[False, True])


def self_child(ctx, name, size=64 * KIB):
    img = generic(ctx, name, size, kind=DIFFERENCING, block_size=4 * KIB)
    img.layer.parent = Layer(size)
    return img


@case("generator", ["PAR-LOOP"])
def x_PAR_LOOP_self(ctx, c):
    """A child whose W2ru and name point at itself, recording its own ID."""
    img = self_child(ctx, "child.vhd")
    img.header.parent_unique_id = img.footer.unique_id
    img.header.parent_time_stamp = img.footer.time_stamp
    img.header.parent_name = utf16be_name("child.vhd")
    img.locator(0, b"W2ru", ".\\child.vhd")
    put(img, ctx, "c", 3, 1)
    img.finish()
    chain(c, [img], layer_ok=[False])


@case("generator", ["PAR-LOOP"])
def x_PAR_LOOP_pair(ctx, c):
    """a.vhd names b.vhd as its parent and b.vhd names a.vhd, IDs and time
    stamps recorded consistently."""
    a = self_child(ctx, "a.vhd")
    bb = self_child(ctx, "b.vhd")
    for img, other in ((a, bb), (bb, a)):
        img.header.parent_unique_id = other.footer.unique_id
        img.header.parent_time_stamp = other.footer.time_stamp
        img.header.parent_name = utf16be_name(other.name)
        img.locator(0, b"W2ru", ".\\" + other.name)
        put(img, ctx, img.name, 3, 1)
        img.finish()
    chain(c, [a, bb], layer_ok=[False, False])


@case("generator", ["PAR-DEPTH"])
def x_PAR_DEPTH_65(ctx, c):
    """65 images: one more than a chain may have. The second image, with its
    64-image chain, opens on its own."""
    images = long_chain(ctx, c, 65)
    chain(c, images, layer_ok=[False] + [True] * 64)


def invalid_parent_case(ctx, c, parent_file, parent_rules):
    p = Phantom(ctx, "base.vhd", 64 * KIB)
    ch = child(ctx, "child.vhd", p)
    ch.finish()
    c.files["%s/child.vhd" % c.name] = ch.file
    c.files["%s/base.vhd" % c.name] = parent_file
    c.top = "%s/child.vhd" % c.name
    c.size = ch.current_size
    c.layers = [(c.top, None)]
    c.parent_rules = parent_rules


@case("generator", ["PAR-INVALID"])
def x_PAR_INVALID_text(ctx, c):
    """The child's parent 'base.vhd' is a text file (2 KiB, no VHD footer)."""
    text = ("This is not a VHD. " * 120).encode()[:2048]
    invalid_parent_case(ctx, c, text, ["FTR-COOKIE"])


@case("generator", ["PAR-INVALID"])
def x_PAR_INVALID_zeroed(ctx, c):
    """The child's former parent was zeroed (same length, all zero bytes)."""
    invalid_parent_case(ctx, c, bytes(8 * KIB), ["FTR-COOKIE"])


@case("generator", ["PAR-INVALID"])
def x_PAR_INVALID_truncated(ctx, c):
    """The child's former parent was cut to its first 300 bytes."""
    b = base(ctx)
    invalid_parent_case(ctx, c, b.file.read(0, 300), ["FTR-SIZE"])


@case("generator", ["PAR-INVALID"])
def x_PAR_INVALID_parent_checksum(ctx, c):
    """The child's parent has wrong checksums in both of its footers."""
    b = gen_dyn(ctx, "base.vhd")
    good = b.footer.pack()
    bad = b.footer.copy(checksum=int.from_bytes(good[64:68], "big") ^ 0x100).pack()
    b.finish(copy_footer=bad, trailing=bad)
    ch = child(ctx, "child.vhd", b)
    ch.finish()
    chain(c, [ch, b], layer_ok=[False, False])
    c.parent_rules = ["FTR-CHECKSUM"]


@case("generator", ["PAR-UNIQUE-ID"])
def x_PAR_UNIQUE_ID_deep(ctx, c):
    """top -> mid -> base where mid records another ID than base has: the
    link mid -> base breaks PAR-UNIQUE-ID (reported on mid); opening top
    fails with that error, which names base and mid."""
    b = base(ctx)
    mid = child(ctx, "mid.vhd", b)
    mid.header.parent_unique_id = ctx.uuid()
    mid.finish()
    top = child(ctx, "top.vhd", mid, tag="t")
    top.finish()
    chain(c, [top, mid, b], layer_ok=[False, False, True])
