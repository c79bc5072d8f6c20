"""Writer families: the layouts real writers use, reproduced with build.Image.

corpora/README.md gives, per family, the layout reproduced here and the
evidence for it. Each function returns an unfinished Image; the caller
writes guest data and calls finish().
"""

import random

from build import Image
from vhdfmt import (DIFFERENCING, DYNAMIC, FIXED, KIB, MIB, PAGE, SECTOR, Footer, align_up,
                    chs_round_up, checksum, utf16be_name)

# Creator fields per family: application, version, host OS.
CREATORS = {
    "win": (b"win ", 0x000A0000, b"Wi2k"),    # Windows 10 vhdmp (Hyper-V, Disk Management)
    "win7": (b"win ", 0x00060001, b"Wi2k"),   # Windows 7 vhdmp
    "vpc": (b"vpc ", 0x00050003, b"Wi2k"),    # Virtual PC 2007 (qemu copies this version)
    "vpc-old": (b"vpc ", 0x00040000, b"Wi2k"),  # Virtual PC before 2004 (511-byte footers)
    "vs": (b"vs  ", 0x00010000, b"Wi2k"),     # Virtual Server (version the spec names)
    "d2v": (b"d2v\0", 0x00020001, b"Wi2k"),   # disk2vhd, as libvhdi lists it
    "d2v-space": (b"d2v ", 0x00020001, b"Wi2k"),  # disk2vhd, as qemu's table spells it
    "vbox": (b"vbox", 0x00070001, b"Wi2k"),   # VirtualBox 7.1 (VBOX_VERSION = major<<16|minor)
    "tap": (b"tap\0", 0x00010003, b"\0\0\0\0"),  # blktap vhd-util / tapdisk
    "qemu": (b"qemu", 0x00050003, b"Wi2k"),   # qemu-img without force_size
    "qem2": (b"qem2", 0x00050003, b"Wi2k"),   # qemu-img with force_size
    "azure": (b"win ", 0x000A0000, b"Wi2k"),  # a fixed VHD prepared for Azure on Windows
    "generator": (b"cgen", 0x00010000, b"Wi2k"),  # this generator's own generic images
}

WIN_DIR = "C:\\Hyper-V\\Virtual Hard Disks"
VPC_DIR = "C:\\Users\\corpus\\Documents\\Virtual Machines"
VBOX_DIR = "/home/corpus/VirtualBox VMs/corpus"


class Ctx:
    """Deterministic randomness for one case: seed + case name."""

    def __init__(self, seed, name):
        self.rng = random.Random("%d/%s" % (seed, name))
        self.seed = seed
        self.name = name

    def uuid(self):
        b = bytearray(self.rng.getrandbits(128).to_bytes(16, "big"))
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        return bytes(b)

    def stamp(self):
        # Some time in 2023/2024, in seconds since 2000-01-01.
        return 0x2B000000 + self.rng.randrange(0x2000000)

    def sector(self, tag, lba):
        """512 non-zero bytes that name the case, the image and the sector."""
        head = ("%s/%s lba %#010x " % (self.name, tag, lba)).encode()
        fill = bytes(self.rng.randrange(1, 256) for _ in range(16))
        return (head + fill * 32)[:SECTOR]

    def noise(self, n):
        return bytes(self.rng.getrandbits(8) for _ in range(n))

    def footer(self, family):
        app, ver, os_ = CREATORS[family]
        return Footer(creator_app=app, creator_ver=ver, creator_os=os_,
                      time_stamp=self.stamp(), unique_id=self.uuid())


def put(img, ctx, tag, lba, count=1):
    """Writes `count` whole tagged sectors from `lba`."""
    for i in range(count):
        img.write((lba + i) * SECTOR, ctx.sector(tag, lba + i))


def base_name(img):
    return img.name.rsplit("/", 1)[-1]


# ------------------------------------------------------------------ layouts

def fixed(ctx, family, name, size, **kw):
    return Image(name, FIXED, size, ctx.footer(family), **kw)


def win(ctx, name, size, parent=None, block_size=2 * MIB):
    """Windows 8+ vhdmp: BAT at 1536 (dynamic) or 0x2000 (differencing);
    block data 4 KiB-aligned; the trailing footer where the next bitmap
    would go. A child has W2ku at 0x1000 (4 KiB space) and W2ru after the
    BAT (64 KiB space), and the parent's full path as its name."""
    f = ctx.footer("win")
    if parent is None:
        return Image(name, DYNAMIC, size, f, block_size=block_size, placement="win",
                     footer_at="next-bitmap")
    n = -(-size // block_size)
    img = Image(name, DIFFERENCING, size, f, block_size=block_size, parent=parent,
                table_offset=0x2000, metadata_end=0x2000 + align_up(4 * n, PAGE),
                placement="win", footer_at="next-bitmap",
                geometry_override=parent.footer.geometry)
    full = WIN_DIR + "\\" + base_name(parent)
    img.header.parent_name = utf16be_name(full)
    img.locator(0, b"W2ku", full, offset=0x1000, space=4096)
    img.locator(1, b"W2ru", ".\\" + base_name(parent), space=65536, align=PAGE)
    return img


def win7(ctx, name, size, parent=None):
    """Windows 7 vhdmp (before 4 KiB alignment): BAT at 1536, blocks packed
    after it, W2ku then W2ru after the BAT for a child."""
    f = ctx.footer("win7")
    if parent is None:
        return Image(name, DYNAMIC, size, f)
    img = Image(name, DIFFERENCING, size, f, parent=parent,
                geometry_override=parent.footer.geometry)
    img.locator(0, b"W2ku", WIN_DIR + "\\" + base_name(parent))
    img.locator(1, b"W2ru", ".\\" + base_name(parent))
    return img


def vpc(ctx, name, request, parent=None, family="vpc"):
    """Virtual PC: size rounded up to a CHS product, BAT at 1536, blocks
    packed. A child (Windows Virtual PC) has four 512-byte locator slots in
    entries 4..7 from the first 4 KiB boundary after the BAT: Wi2r and
    Wi2k (ASCII), W2ru and W2ku (UTF-16)."""
    f = ctx.footer(family)
    if parent is None:
        size, geo = chs_round_up(request)
        return Image(name, DYNAMIC, size, f, geometry_override=geo)
    img = Image(name, DIFFERENCING, parent.current_size, f, parent=parent,
                geometry_override=parent.footer.geometry)
    rel = ".\\" + base_name(parent)
    absolute = VPC_DIR + "\\" + base_name(parent)
    off = align_up(img.end, PAGE)
    img.locator(4, b"Wi2r", rel, offset=off, space=512)
    img.locator(5, b"Wi2k", absolute, offset=off + 512, space=512)
    img.locator(6, b"W2ru", rel, offset=off + 1024, space=512)
    img.locator(7, b"W2ku", absolute, offset=off + 1536, space=512)
    return img


def vpc_fixed(ctx, name, request, family="vpc"):
    size, geo = chs_round_up(request)
    return Image(name, FIXED, size, ctx.footer(family), geometry_override=geo)


def vs(ctx, name, request, parent=None):
    """Virtual Server: CHS-rounded size like Virtual PC, BAT at 1536, blocks
    packed; a child has W2ru and W2ku (the pair the spec describes) after
    the BAT, each in a whole number of sectors counted in bytes."""
    f = ctx.footer("vs")
    if parent is None:
        size, geo = chs_round_up(request)
        return Image(name, DYNAMIC, size, f, geometry_override=geo)
    img = Image(name, DIFFERENCING, parent.current_size, f, parent=parent,
                geometry_override=parent.footer.geometry)
    img.locator(0, b"W2ru", ".\\" + base_name(parent))
    img.locator(1, b"W2ku", VPC_DIR + "\\" + base_name(parent))
    return img


def d2v(ctx, name, size, family="d2v"):
    """disk2vhd: current_size is the physical disk's size (no CHS rounding),
    BAT at 1536, blocks packed, every copied block whole (full bitmap)."""
    return Image(name, DYNAMIC, size, ctx.footer(family), bitmaps="full")


def vbox(ctx, name, size, parent=None):
    """VirtualBox VHD.cpp: BAT at 1536 written with only its entries (the
    rest of its last sector stays zero), blocks packed, whole blocks written
    (full bitmaps; a child copies the parent's data into a new block). A
    child has W2ku then W2ru after the BAT, 1024 bytes of space each (512
    UTF-16 units), and the parent's file name."""
    f = ctx.footer("vbox")
    if parent is None:
        return Image(name, DYNAMIC, size, f, bitmaps="full", bat_pad=0)
    img = Image(name, DIFFERENCING, size, f, parent=parent, bitmaps="full", bat_pad=0)
    img.locator(0, b"W2ku", VBOX_DIR + "/" + base_name(parent), space=1024)
    img.locator(1, b"W2ru", base_name(parent), space=1024)
    return img


def tap(ctx, name, request, parent=None):
    """blktap vhd-util: size rounded up to 2 MiB, BAT at 1536 (zero padded),
    a 'tdbatmap' header and batmap after the BAT, block data page-aligned
    (tapdisk). A child's MacX, W2ku and W2ru locators (in that order, 512
    bytes each, data space in bytes) follow the batmap and all hold the
    relative path; its name is the parent's file name."""
    size = align_up(request, 2 * MIB)
    f = ctx.footer("tap")
    n = size // (2 * MIB)
    bat_end = 1536 + align_up(4 * n, SECTOR)
    map_bytes = -(-n // 8)
    map_secs = max(1, -(-map_bytes // SECTOR))
    meta_end = bat_end + SECTOR + map_secs * SECTOR
    if parent is None:
        img = Image(name, DYNAMIC, size, f, bat_pad=0, placement="tap", metadata_end=meta_end)
    else:
        img = Image(name, DIFFERENCING, size, f, parent=parent, bat_pad=0, placement="tap",
                    metadata_end=meta_end, geometry_override=parent.footer.geometry)
        rel = "./" + base_name(parent)
        img.locator(0, b"MacX", "file://" + rel, space=512)
        img.locator(1, b"W2ku", ".\\" + base_name(parent), space=512)
        img.locator(2, b"W2ru", ".\\" + base_name(parent), space=512)
    img.tap_batmap = (bat_end, map_secs)
    return img


def tap_finish(img, **kw):
    """Writes the batmap (a bit per block whose bitmap is full) and finishes."""
    bat_end, map_secs = img.tap_batmap
    spb = img.block_size // SECTOR
    full_map = bytearray(map_secs * SECTOR)
    for index, blk in img.blocks.items():
        if all(blk["bitmap"][i // 8] & (0x80 >> (i % 8)) for i in range(spb)):
            full_map[index // 8] |= 0x80 >> (index % 8)
    total = sum(full_map)
    hdr = bytearray(SECTOR)
    hdr[0:8] = b"tdbatmap"
    hdr[8:16] = (bat_end + SECTOR).to_bytes(8, "big")
    hdr[16:20] = map_secs.to_bytes(4, "big")
    hdr[20:24] = (0x00010002).to_bytes(4, "big")
    hdr[24:28] = ((~total) & 0xFFFFFFFF).to_bytes(4, "big")
    img.file.write(bat_end, hdr)
    img.file.write(bat_end + SECTOR, full_map)
    return img.finish(**kw)


def qemu_layout(ctx, name, request):
    """qemu-img's dynamic layout (as written by this generator): CHS-rounded
    size, BAT at 1536 padded with 0xFF, whole blocks with full bitmaps."""
    size, geo = chs_round_up(request)
    return Image(name, DYNAMIC, size, ctx.footer("qemu"), bitmaps="full",
                 geometry_override=geo)


def generic(ctx, name, size, kind=DYNAMIC, parent=None, block_size=4 * KIB, **kw):
    """This generator's own plain layout: BAT at 1536 padded with 0xFF,
    blocks packed in the order they are first written, bits for the
    sectors written; a child gets one W2ru locator and the parent's name."""
    f = ctx.footer("generator")
    if parent is not None:
        kind = DIFFERENCING
        kw.setdefault("geometry_override", parent.footer.geometry)
        size = parent.current_size
    img = Image(name, kind, size, f, block_size=block_size, parent=parent, **kw)
    return img


def w2ru(img, parent, slot=0):
    img.locator(slot, b"W2ru", ".\\" + base_name(parent))


def header_checksum_ok(raw):
    return int.from_bytes(raw[36:40], "big") == checksum(raw, 36)
