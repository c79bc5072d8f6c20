"""The generator's cases. Each function builds one case with the layouts of
families.py and says which rules it breaks (by construction: every other
field stays clean) and what it reads as (from the model).

Register a case with @case(family, rules). The function gets a Ctx and
returns a Case (see make()).
"""

import struct

from build import Image
from families import (Ctx, base_name, d2v, fixed, generic, put, qemu_layout, tap, tap_finish,
                      vbox, vpc, vpc_fixed, vs, w2ru, win, win7)
from vhdfmt import (ALL_ONES, DIFFERENCING, DYNAMIC, FIXED, GIB, KIB, MIB, PAGE, SECTOR,
                    Footer, Header, Layer, Locator, SparseFile, align_up, checksum, chs_round_up,
                    geometry,
                    utf16be_name)

LAYOUT_OF = {
    "win": "Windows vhdmp (Hyper-V, Disk Management)",
    "vpc": "Virtual PC",
    "vs": "Virtual Server",
    "d2v": "disk2vhd",
    "vbox": "VirtualBox",
    "tap": "Xen blktap vhd-util",
    "qemu": "qemu-img",
    "azure": "a fixed VHD for Azure",
}

REGISTRY = []


class Case:
    def __init__(self, name, family, rules, description):
        self.name = name
        self.family = family
        self.rules = sorted(rules)
        self.description = description
        self.files = {}
        self.top = None
        self.layer = None
        self.info = None
        self.layers = None
        self.peer_notes = None
        self.parent_rules = None
        self.parent_source = None
        self.function = None
        self.size = None

    def claimed_size(self):
        return self.size


def case(family, rules=()):
    def wrap(fn):
        REGISTRY.append((fn, family, tuple(rules)))
        return fn
    return wrap


def build_all(seed):
    out = []
    for fn, family, rules in REGISTRY:
        name = fn.__name__.replace("_", "-")
        ctx = Ctx(seed, name)
        c = Case(name, family, rules, (fn.__doc__ or "").strip())
        c.function = fn.__name__
        fn(ctx, c)
        assert c.top is not None, name
        out.append(c)
    return out


# --------------------------------------------------------------- helpers

def single(c, img, finish_kw=None, file=None):
    """A one-file case: finishes img (unless done) and records it."""
    f = img.file if img.finished else img.finish(**(finish_kw or {}))
    rel = file or (c.name + ".vhd")
    c.files[rel] = f
    c.top = rel
    c.size = img.current_size
    if not is_error_case(c):
        c.layer = img.layer
        c.info = img.info()
    return f


ERROR_RULES = {
    "FTR-SIZE", "FTR-COOKIE", "FTR-CHECKSUM", "FTR-VERSION", "FTR-DISK-TYPE",
    "FTR-DATA-OFFSET", "FTR-FIXED-LENGTH", "HDR-COOKIE", "HDR-CHECKSUM", "HDR-VERSION",
    "HDR-BLOCK-SIZE", "HDR-MAX-TABLE-ENTRIES", "HDR-TABLE-OFFSET", "BAT-ENTRY-BEYOND-EOF",
    "BAT-ENTRY-OVERLAP", "PAR-NOT-FOUND", "PAR-UNIQUE-ID", "PAR-SIZE", "PAR-LOOP",
    "PAR-DEPTH", "PAR-INVALID",
}


def is_error_case(c):
    return any(r in ERROR_RULES for r in c.rules)


def chain(c, images, top_layer_ok=True, layer_ok=None):
    """A chain case: `images` from the top child down to the base, each
    finished already. Files live in corpora/<case>/."""
    for img in images:
        c.files["%s/%s" % (c.name, base_name(img))] = img.file
    c.top = "%s/%s" % (c.name, base_name(images[0]))
    c.size = images[0].current_size
    oks = layer_ok or [True] * len(images)
    c.layers = [("%s/%s" % (c.name, base_name(img)), img.layer if ok else None)
                for img, ok in zip(images, oks)]
    if not is_error_case(c):
        c.layer = images[0].layer
        c.info = images[0].info()


def work_generic(img, ctx, tag="d"):
    """The standard workload of a small generic dynamic image with 4 KiB
    blocks: block 5 whole, then sectors 1 and 3 of block 0 (single sectors
    of one 4 KiB group) and 200 bytes inside sector 6, then sectors 2..5
    of block 11. Blocks are allocated in that order (5, 0, 11)."""
    spb = img.block_size // SECTOR
    put(img, ctx, tag, 5 * spb, spb)
    put(img, ctx, tag, 1)
    put(img, ctx, tag, 3)
    img.write(6 * SECTOR + 100, ctx.noise(200))
    put(img, ctx, tag, 11 * spb + 2, 4)


def gen_dyn(ctx, name, size=64 * KIB, bs=4 * KIB, **kw):
    img = generic(ctx, name, size, block_size=bs, **kw)
    work_generic(img, ctx)
    return img


def gen_fixed(ctx, name, size=64 * KIB, **kw):
    img = fixed(ctx, "generator", name, size, **kw)
    put(img, ctx, "f", 0, 2)
    put(img, ctx, "f", 17, 3)
    img.write(size - 300, ctx.noise(300))
    return img


def gen_child(ctx, name, parent, tag="c", **kw):
    """A generic child with one W2ru locator; it writes sectors the parent
    has (0..2 of block 5, replacing them) and new ones (4 and 6 of block 0:
    single sectors among the parent's 1 and 3)."""
    img = generic(ctx, name, None, parent=parent, block_size=kw.pop("block_size", 4 * KIB), **kw)
    w2ru(img, parent)
    spb = img.block_size // SECTOR
    put(img, ctx, tag, 5 * spb, 3)
    put(img, ctx, tag, 4)
    put(img, ctx, tag, 6)
    return img


def repack_footer(f, off, footer):
    f.write(off, footer.pack())


def trailing(img):
    return img.file.length - SECTOR


# ========================================================== valid: families

@case("win")
def win_fixed(ctx, c):
    """Windows fixed image: data then a 512-byte footer, size exactly as asked."""
    img = fixed(ctx, "win", c.name, 256 * KIB)
    put(img, ctx, "w", 0, 8)
    put(img, ctx, "w", 500, 5)
    single(c, img)


@case("win")
def win7_dynamic(ctx, c):
    """Windows 7 dynamic image: BAT at 1536, 2 MiB blocks packed after it."""
    img = win7(ctx, c.name, 6 * MIB)
    put(img, ctx, "w", 4096 + 3, 2)      # block 1 first
    put(img, ctx, "w", 0, 1)             # then block 0
    img.write(5 * MIB + 1000, ctx.noise(3000))  # block 2, crossing sectors
    single(c, img)


@case("win")
def win_dynamic(ctx, c):
    """Windows 8+ dynamic image, 4 KiB-aligned: each block's data starts on a
    4 KiB boundary and the trailing footer sits where the next bitmap would
    go, 3584 bytes of zeros after the last block (padding, not FILE-TAIL,
    which is about bytes that are not zeros)."""
    img = win(ctx, c.name, 8 * MIB)
    put(img, ctx, "w", 3 * 4096 + 8, 8)
    put(img, ctx, "w", 17, 1)
    put(img, ctx, "w", 19, 1)
    single(c, img)


@case("win")
def win_dynamic_empty(ctx, c):
    """A new, empty Windows 8+ dynamic image: copy, header, BAT, then the
    footer at 4 KiB + 3584 bytes past the BAT's 4 KiB boundary."""
    img = win(ctx, c.name, 20 * MIB)
    single(c, img)


@case("win")
def win_chain(ctx, c):
    """A Hyper-V differencing child over a Windows fixed base: BAT at 0x2000,
    W2ku (absolute C:\\ path, not usable here) at 0x1000, W2ru after the BAT
    with 64 KiB of space, the parent's full path as its name. W2ru is
    followed. The child's pre-footer padding is zeros."""
    base = fixed(ctx, "win", "base.vhd", 4 * MIB)
    put(base, ctx, "b", 0, 16)
    put(base, ctx, "b", 4096 + 1, 7)
    base.finish()
    child = win(ctx, "child.vhd", 4 * MIB, parent=base)
    put(child, ctx, "c", 4096 + 2, 1)    # one sector among the parent's
    put(child, ctx, "c", 4, 2)
    child.finish()
    chain(c, [child, base])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


@case("vpc")
def vpc_fixed_chs(ctx, c):
    """Virtual PC fixed image: 700 KiB asked for, rounded up to a CHS product."""
    img = vpc_fixed(ctx, c.name, 200 * KIB)
    put(img, ctx, "v", 1, 6)
    put(img, ctx, "v", img.current_size // SECTOR - 2, 2)
    single(c, img)
    c.peer_notes = "qemu sizes 'vpc ' images by CHS; here CHS x 512 = current_size, so all agree."


@case("vpc", ["FTR-511"])
def w_FTR_511_vpc_fixed(ctx, c):
    """A fixed image as Virtual PC before 2004 left it: the footer is 511
    bytes (its last reserved byte missing)."""
    img = vpc_fixed(ctx, c.name, 100 * KIB, family="vpc-old")
    put(img, ctx, "v", 0, 4)
    img.finish()
    img.file.truncate(img.file.length - 1)
    single(c, img)
    c.peer_notes = "libvhdi and 7-Zip refuse a 511-byte footer; qemu and dissect read it (divergences D1)."


@case("vpc")
def vpc_dynamic(ctx, c):
    """Virtual PC dynamic image: CHS-rounded 5 MiB, BAT at 1536, 2 MiB blocks packed."""
    img = vpc(ctx, c.name, 5 * MIB)
    put(img, ctx, "v", 4096, 3)
    put(img, ctx, "v", 10, 1)
    single(c, img)


@case("vpc")
def vpc_chain(ctx, c):
    """A Windows Virtual PC child: Wi2r, Wi2k, W2ru and W2ku in entries 4..7,
    512 bytes each, from the first 4 KiB boundary after the BAT. Wi2r (entry
    4, a relative ASCII path) is followed; the absolute ones are C:\\ paths."""
    base = vpc(ctx, "base.vhd", 5 * MIB)
    put(base, ctx, "b", 0, 9)
    put(base, ctx, "b", 4096 + 8, 8)
    base.finish()
    child = vpc(ctx, "child.vhd", None, parent=base)
    put(child, ctx, "c", 2, 1)
    put(child, ctx, "c", 5, 1)
    put(child, ctx, "c", 4096 + 12, 4)
    child.finish()
    chain(c, [child, base])
    c.parent_source = {"via": "locator", "platform": "Wi2r"}


@case("vs")
def vs_fixed(ctx, c):
    """Virtual Server fixed image, CHS-rounded size."""
    size, geo = chs_round_up(150 * KIB)
    img = Image(c.name, FIXED, size, ctx.footer("vs"), geometry_override=geo)
    put(img, ctx, "s", 3, 3)
    single(c, img)


@case("vs")
def vs_dynamic(ctx, c):
    """Virtual Server dynamic image, CHS-rounded, 2 MiB blocks."""
    img = vs(ctx, c.name, 3 * MIB)
    put(img, ctx, "s", 0, 2)
    put(img, ctx, "s", 4097, 2)
    single(c, img)


@case("vs")
def vs_chain(ctx, c):
    """A Virtual Server child with W2ru then W2ku after the BAT. W2ru is followed."""
    base = vs(ctx, "base.vhd", 3 * MIB)
    put(base, ctx, "b", 0, 16)
    base.finish()
    child = vs(ctx, "child.vhd", None, parent=base)
    put(child, ctx, "c", 7, 2)
    child.finish()
    chain(c, [child, base])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


@case("d2v")
def d2v_dynamic(ctx, c):
    """disk2vhd (creator 'd2v\\0'): the physical disk's exact size (not a CHS
    product), whole blocks copied with full bitmaps."""
    img = d2v(ctx, c.name, 6 * MIB + 2 * MIB)   # 8 MiB: blocks are whole
    put(img, ctx, "d", 0, 2)
    put(img, ctx, "d", 3 * 4096 + 100, 10)
    single(c, img)
    c.peer_notes = ("libvhdi's documentation lists the creator as 'd2v\\0', qemu's source "
                    "table as 'd2v '; both spellings are in the corpus.")


@case("d2v")
def d2v_dynamic_space(ctx, c):
    """disk2vhd with the creator spelled 'd2v ' as qemu's table has it; a
    disk size that is not a CHS product (4 MiB + 4 KiB... rounded to blocks)."""
    img = d2v(ctx, c.name, 4 * MIB, family="d2v-space")
    put(img, ctx, "d", 100, 4)
    single(c, img)


@case("vbox")
def vbox_fixed(ctx, c):
    """VirtualBox fixed image."""
    img = fixed(ctx, "vbox", c.name, 160 * KIB)
    put(img, ctx, "x", 0, 3)
    single(c, img)


@case("vbox")
def vbox_dynamic(ctx, c):
    """VirtualBox dynamic image: BAT zero-padded, whole blocks (full bitmaps)."""
    img = vbox(ctx, c.name, 6 * MIB)
    put(img, ctx, "x", 4096 * 2 + 5, 3)
    put(img, ctx, "x", 0, 1)
    single(c, img)


@case("vbox")
def vbox_chain(ctx, c):
    """A VirtualBox child: W2ku (an absolute Linux path, not here) then W2ru
    ('base.vhd'), 1024 bytes of space each; each written block is whole,
    with the parent's data copied in. W2ru is followed."""
    base = vbox(ctx, "base.vhd", 4 * MIB)
    put(base, ctx, "b", 0, 4)
    put(base, ctx, "b", 4096 + 30, 4)
    base.finish()
    child = vbox(ctx, "child.vhd", 4 * MIB, parent=base)
    put(child, ctx, "c", 2, 1)
    child.finish()
    chain(c, [child, base])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


@case("tap")
def tap_dynamic(ctx, c):
    """vhd-util/tapdisk dynamic image: size rounded up to 2 MiB, batmap after
    the BAT, page-aligned block data; block 1 is written whole (its batmap
    bit is set), block 0 in part."""
    img = tap(ctx, c.name, 5 * MIB)
    put(img, ctx, "t", 4096, 4096)
    put(img, ctx, "t", 8, 1)
    put(img, ctx, "t", 12, 1)
    tap_finish(img)
    single(c, img)


@case("tap")
def tap_fixed(ctx, c):
    """vhd-util fixed image (size a multiple of 2 MiB)."""
    img = fixed(ctx, "tap", c.name, 2 * MIB)
    put(img, ctx, "t", 1, 1)
    single(c, img)


@case("tap")
def tap_empty(ctx, c):
    """A new, empty vhd-util dynamic image: the batmap header and batmap sit
    between the BAT and the footer (metadata a checker must know)."""
    img = tap(ctx, c.name, 4 * MIB)
    tap_finish(img)
    single(c, img)


@case("tap")
def tap_chain(ctx, c):
    """A vhd-util child: MacX 'file://./base.vhd', W2ku and W2ru '.\\base.vhd'
    after the batmap. W2ru is followed (W2ku holds a relative path too).
    Note: blktap records the parent file's mtime as the parent time stamp;
    a file in git has no fixed mtime, so this child records the parent
    footer's time stamp (which the rule also accepts)."""
    base = tap(ctx, "base.vhd", 4 * MIB)
    put(base, ctx, "b", 0, 24)
    tap_finish(base)
    child = tap(ctx, "child.vhd", 4 * MIB, parent=base)
    put(child, ctx, "c", 9, 1)
    put(child, ctx, "c", 11, 1)
    tap_finish(child)
    chain(c, [child, base])
    c.parent_source = {"via": "locator", "platform": "W2ru"}


@case("qemu")
def qemu_layout_dynamic(ctx, c):
    """qemu-img's dynamic layout: CHS-rounded size, whole blocks with full
    bitmaps; the last (partial) block is not allocated."""
    img = qemu_layout(ctx, c.name, 5 * MIB)
    put(img, ctx, "q", 4096 + 1, 2)
    single(c, img)


@case("qemu")
def qemu_layout_fixed(ctx, c):
    """qemu-img's fixed layout: CHS-rounded size, data, footer."""
    size, geo = chs_round_up(100 * KIB)
    img = Image(c.name, FIXED, size, ctx.footer("qemu"), geometry_override=geo)
    put(img, ctx, "q", 0, 1)
    single(c, img)


@case("azure")
def azure_fixed_1m(ctx, c):
    """A fixed image for Azure: size a whole number of MiB (1 MiB)."""
    img = fixed(ctx, "azure", c.name, 1 * MIB)
    put(img, ctx, "a", 0, 1)
    put(img, ctx, "a", 2047, 1)
    single(c, img)


@case("azure")
def azure_fixed_3m(ctx, c):
    """A fixed image for Azure: 3 MiB."""
    img = fixed(ctx, "azure", c.name, 3 * MIB)
    put(img, ctx, "a", 4000, 8)
    single(c, img)


# ========================================================== valid: block sizes

def block_size_case(bs):
    def fn(ctx, c):
        # Three blocks plus half a block: the last block is partial and
        # its bits past the end stay clear.
        if bs <= 64 * KIB:
            size = 3 * bs + bs // 2
        else:
            size = bs + bs // 2
        size = max(size, 3 * SECTOR)
        size = align_up(size, SECTOR)
        img = generic(ctx, c.name, size, block_size=bs)
        spb = bs // SECTOR
        n = -(-size // bs)
        last = n - 1
        # the last block first, then block 0: allocation order != index order
        last_sectors = (size - last * bs) // SECTOR
        put(img, ctx, "k", last * spb, min(8, max(1, last_sectors // 2)))
        if bs <= 16 * MIB:
            put(img, ctx, "k", 0, 1)
            if spb >= 4:
                put(img, ctx, "k", 2, 1)
            if spb >= 16:
                img.write(9 * SECTOR + 7, ctx.noise(900))
        if n > 2:
            if bs <= 16 * KIB:
                put(img, ctx, "k", spb, spb)   # block 1 whole
            else:
                put(img, ctx, "k", spb + spb // 2 - 3, 6)
        single(c, img)
        if bs < 8 * KIB:
            c.peer_notes = "dissect fails on blocks this small (divergences D11)."
    fn.__doc__ = "Generic dynamic image with %d-byte blocks: a partial last block, " \
                 "partly set bitmaps, blocks allocated out of order." % bs
    return fn


for _shift in range(9, 29):
    _bs = 1 << _shift
    _name = "block_size_" + (("%dk" % (_bs // KIB)) if _bs < MIB else ("%dm" % (_bs // MIB))) \
        if _bs >= KIB else "block_size_512"
    _fn = block_size_case(_bs)
    _fn.__name__ = _name
    case("generator")(_fn)
