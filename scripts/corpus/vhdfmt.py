"""A minimal VHD 1.0 writer for the conformance corpus.

It knows the on-disk structures (footer, dynamic header, parent locators,
BAT, sector bitmaps), the checksum and the spec's geometry algorithm, and
nothing else: it does not use vhdref. Everything is built in memory as a
sparse file (`SparseFile`) next to a model of the guest contents
(`Layer`), so the expected contents of every case come from the model, never
from a reader.

Only the Python standard library is used.
"""

import hashlib
import struct

SECTOR = 512
KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB
UNUSED = 0xFFFFFFFF
ALL_ONES = 0xFFFFFFFFFFFFFFFF
PAGE = 4096
ZERO_SECTOR = bytes(SECTOR)

FIXED, DYNAMIC, DIFFERENCING = 2, 3, 4
TYPE_NAMES = {FIXED: "fixed", DYNAMIC: "dynamic", DIFFERENCING: "differencing"}


# ---------------------------------------------------------------- arithmetic

def align_up(n, unit):
    return (n + unit - 1) // unit * unit


def checksum(buf, field):
    """Ones' complement of the byte sum of `buf` without the 4 bytes at `field`."""
    total = sum(buf) - sum(buf[field:field + 4])
    return (~total) & 0xFFFFFFFF


def geometry(current_size):
    """The spec's CHS algorithm (appendix of the VHD 1.0 spec), on current_size // 512."""
    sectors = min(current_size // SECTOR, 65535 * 16 * 255)
    if sectors >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = sectors // spt
    else:
        spt = 17
        cth = sectors // spt
        heads = max(4, (cth + 1023) // 1024)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = sectors // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = sectors // spt
    return (cth // heads, heads, spt)


def chs_round_up(size):
    """Virtual PC-style sizing: the smallest C*H*S*512 >= size, found by running
    the algorithm on size, size+1 sector, ... and keeping the geometry found
    (what Virtual PC and qemu-img without force_size store)."""
    want = align_up(size, SECTOR) // SECTOR
    n = want
    while True:
        c, h, s = geometry(n * SECTOR)
        if c * h * s >= want:
            return c * h * s * SECTOR, (c, h, s)
        n += 1


def escape4(b):
    """A 4-byte creator field as `vhd info` prints it (Rust's escape_ascii)."""
    out = []
    for ch in b:
        if ch == 0x5C:
            out.append("\\\\")
        elif ch == 0x27:
            out.append("\\'")
        elif ch == 0x22:
            out.append('\\"')
        elif ch == 0x09:
            out.append("\\t")
        elif ch == 0x0A:
            out.append("\\n")
        elif ch == 0x0D:
            out.append("\\r")
        elif 0x20 <= ch < 0x7F:
            out.append(chr(ch))
        else:
            out.append("\\x%02x" % ch)
    return "".join(out)


# ---------------------------------------------------------------- structures

class Footer:
    """The 512-byte hard disk footer. `pack()` computes the checksum unless
    `checksum` is set explicitly (to break it on purpose)."""

    def __init__(self, **kw):
        self.cookie = b"conectix"
        self.features = 2
        self.version = 0x00010000
        self.data_offset = ALL_ONES
        self.time_stamp = 0
        self.creator_app = b"cgen"
        self.creator_ver = 0x00010000
        self.creator_os = b"Wi2k"
        self.original_size = 0
        self.current_size = 0
        self.geometry = (0, 0, 0)
        self.disk_type = FIXED
        self.checksum = None
        self.unique_id = bytes(16)
        self.saved_state = 0
        self.reserved = bytes(427)
        for k, v in kw.items():
            if not hasattr(self, k):
                raise AttributeError(k)
            setattr(self, k, v)

    def copy(self, **kw):
        f = Footer()
        f.__dict__.update(self.__dict__)
        for k, v in kw.items():
            if not hasattr(f, k):
                raise AttributeError(k)
            setattr(f, k, v)
        return f

    def pack(self):
        c, h, s = self.geometry
        raw = bytearray(struct.pack(
            ">8sIIQI4sI4sQQHBBII16sB427s", self.cookie, self.features, self.version,
            self.data_offset, self.time_stamp, self.creator_app, self.creator_ver,
            self.creator_os, self.original_size, self.current_size, c, h, s,
            self.disk_type, 0, self.unique_id, self.saved_state, self.reserved))
        assert len(raw) == 512
        value = checksum(raw, 64) if self.checksum is None else self.checksum
        raw[64:68] = struct.pack(">I", value)
        return bytes(raw)


class Locator:
    """One parent locator entry: platform code, data space (as stored),
    data length and data offset."""

    def __init__(self, code=b"\0\0\0\0", space=0, length=0, offset=0, reserved=0):
        self.code, self.space, self.length, self.offset, self.reserved = \
            code, space, length, offset, reserved

    def pack(self):
        return struct.pack(">4sIIIQ", self.code, self.space, self.length, self.reserved,
                           self.offset)


class Header:
    """The 1024-byte dynamic disk header ("cxsparse")."""

    def __init__(self, **kw):
        self.cookie = b"cxsparse"
        self.data_offset = ALL_ONES
        self.table_offset = 1536
        self.version = 0x00010000
        self.max_table_entries = 0
        self.block_size = 2 * MIB
        self.checksum = None
        self.parent_unique_id = bytes(16)
        self.parent_time_stamp = 0
        self.reserved1 = 0
        self.parent_name = bytes(512)  # raw bytes, UTF-16BE
        self.locators = [Locator() for _ in range(8)]
        self.reserved2 = bytes(256)
        for k, v in kw.items():
            if not hasattr(self, k):
                raise AttributeError(k)
            setattr(self, k, v)

    def pack(self):
        name = self.parent_name.ljust(512, b"\0")[:512]
        locs = b"".join(loc.pack() for loc in self.locators)
        raw = bytearray(struct.pack(
            ">8sQQIIII16sII512s192s256s", self.cookie, self.data_offset, self.table_offset,
            self.version, self.max_table_entries, self.block_size, 0, self.parent_unique_id,
            self.parent_time_stamp, self.reserved1, name, locs, self.reserved2))
        assert len(raw) == 1024
        value = checksum(raw, 36) if self.checksum is None else self.checksum
        raw[36:40] = struct.pack(">I", value)
        return bytes(raw)


def utf16be_name(text):
    return text.encode("utf-16-be")


def encode_locator(platform, text):
    """Locator data as real writers store it: UTF-16LE for W2ru/W2ku,
    bytes of the text (ASCII/UTF-8) for Wi2r/Wi2k/MacX. No terminating NUL."""
    if platform in (b"W2ru", b"W2ku"):
        return text.encode("utf-16-le")
    return text.encode("utf-8")


def bitmap_bytes(block_size):
    """Size of a block's sector bitmap on disk (rounded up to a sector)."""
    return align_up(max(1, block_size // SECTOR // 8), SECTOR)


# ---------------------------------------------------------------- sparse file

class SparseFile:
    """A file held as 4 KiB pages; pages never written read as zeros."""

    def __init__(self, length=0):
        self.length = length
        self.pages = {}

    def write(self, off, data):
        data = bytes(data)
        if not data:
            return
        end = off + len(data)
        self.length = max(self.length, end)
        pos = off
        while pos < end:
            idx, inner = divmod(pos, PAGE)
            n = min(PAGE - inner, end - pos)
            chunk = data[pos - off:pos - off + n]
            page = self.pages.get(idx)
            if page is None:
                if not any(chunk):
                    pos += n
                    continue
                page = bytearray(PAGE)
                self.pages[idx] = page
            page[inner:inner + n] = chunk
            pos += n

    def zero(self, off, n):
        self.write(off, bytes(n))

    def read(self, off, n):
        out = bytearray(n)
        pos = off
        end = min(off + n, self.length)
        while pos < end:
            idx, inner = divmod(pos, PAGE)
            k = min(PAGE - inner, end - pos)
            page = self.pages.get(idx)
            if page is not None:
                out[pos - off:pos - off + k] = page[inner:inner + k]
            pos += k
        return bytes(out)

    def truncate(self, length):
        for idx in [i for i in self.pages if i * PAGE >= length]:
            del self.pages[idx]
        if length % PAGE and (length // PAGE) in self.pages:
            page = self.pages[length // PAGE]
            page[length % PAGE:] = bytes(PAGE - length % PAGE)
        self.length = length

    def copy(self):
        f = SparseFile(self.length)
        f.pages = {k: bytearray(v) for k, v in self.pages.items()}
        return f

    def chunks(self, size=MIB):
        """Yields the file's bytes in order, in pieces of at most `size`."""
        pos = 0
        while pos < self.length:
            n = min(size, self.length - pos)
            yield self.read(pos, n)
            pos += n

    def to_bytes(self):
        return self.read(0, self.length)


# ---------------------------------------------------------------- guest model

class Layer:
    """What one image holds for the guest. `present` maps a guest sector to
    its 512 bytes for every sector the image itself provides (for a dynamic
    or differencing image: every sector whose bitmap bit is set). Sectors not
    present read as zeros, or from `parent` for a differencing image."""

    def __init__(self, size, parent=None):
        self.size = size
        self.parent = parent
        self.present = {}

    def sector(self, lba):
        if lba in self.present:
            return self.present[lba]
        if self.parent is not None:
            return self.parent.sector(lba)
        return ZERO_SECTOR

    def nonzero_lbas(self):
        lbas = set()
        layer = self
        while layer is not None:
            lbas.update(layer.present)
            layer = layer.parent
        return sorted(lba for lba in lbas if any(self.sector(lba)))

    def sha256(self):
        h = hashlib.sha256()
        pos = 0
        zeros = bytes(MIB)
        for lba in self.nonzero_lbas():
            start = lba * SECTOR
            if start >= self.size:
                break
            while pos < start:
                n = min(len(zeros), start - pos)
                h.update(zeros[:n])
                pos += n
            data = self.sector(lba)[:self.size - start]
            h.update(data)
            pos += len(data)
        while pos < self.size:
            n = min(len(zeros), self.size - pos)
            h.update(zeros[:n])
            pos += n
        return h.hexdigest()

    def raw(self):
        """The guest contents as bytes (small disks only)."""
        out = bytearray(self.size)
        for lba in self.nonzero_lbas():
            start = lba * SECTOR
            if start < self.size:
                data = self.sector(lba)[:self.size - start]
                out[start:start + len(data)] = data
        return bytes(out)
