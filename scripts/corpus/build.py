"""Lays out whole images with the structures of vhdfmt.py.

`Image` writes one fixed, dynamic or differencing image the way a given
writer family does (where the BAT goes, how it is padded, where blocks go,
how bitmaps are set) while keeping the guest model (`Layer`) in step with
every byte it writes. Damaged cases change the footers or the header before
`finish()`, or patch the finished `SparseFile`.
"""

from vhdfmt import (ALL_ONES, DIFFERENCING, DYNAMIC, FIXED, Footer, Header, Layer,
                    Locator, PAGE, SECTOR, SparseFile, ZERO_SECTOR, align_up, bitmap_bytes,
                    encode_locator, geometry, utf16be_name)


class Image:
    """One image being written.

    placement: where a new block goes
      'packed'  right after the last structure (qemu, Virtual PC, VirtualBox)
      'win'     the end rounded up to 4 KiB plus a 4 KiB bitmap area, the
                bitmap in its last bytes (Windows 8+ as makevhdx lays it out)
      'tap'     the smallest gap that puts the block's data on a 4 KiB
                boundary (blktap's tapdisk)
    footer_at: where the trailing footer goes
      'end'         right after the last structure
      'next-bitmap' the end rounded up to 4 KiB plus 3.5 KiB: where the next
                    block's bitmap would go (Windows 8+)
    bitmaps: 'written' sets the bits of the sectors written; 'full' sets every
      bit of a new block (the rest of the block holds zeros in a dynamic image
      and the parent's data in a differencing one).
    """

    def __init__(self, name, disk_type, current_size, footer, *, block_size=2 * 1024 * 1024,
                 max_table_entries=None, table_offset=1536, parent=None, placement="packed",
                 footer_at="end", bitmaps="written", bat_pad=0xFF, metadata_end=None,
                 geometry_override=None):
        self.name = name
        self.disk_type = disk_type
        self.current_size = current_size
        self.parent = parent
        self.placement = placement
        self.footer_at = footer_at
        self.bitmaps = bitmaps
        self.bat_pad = bat_pad
        self.file = SparseFile()
        self.layer = Layer(current_size, parent.layer if parent is not None else None)
        geo = geometry_override if geometry_override is not None else geometry(current_size)
        self.footer = footer.copy(current_size=current_size, original_size=current_size,
                                  geometry=geo, disk_type=disk_type)
        self.blocks = {}
        self.order = []
        self.finished = False
        if disk_type == FIXED:
            self.footer.data_offset = ALL_ONES
            self.header = None
            self.block_size = None
            return
        self.footer.data_offset = 512
        self.block_size = block_size
        n = -(-current_size // block_size)
        mte = n if max_table_entries is None else max_table_entries
        self.n_blocks = n
        self.header = Header(table_offset=table_offset, max_table_entries=mte,
                             block_size=block_size)
        self.bat = [0xFFFFFFFF] * mte
        self.bm = bitmap_bytes(block_size)
        self.span = self.bm + block_size
        self.end = (table_offset + align_up(4 * mte, SECTOR)) if metadata_end is None \
            else metadata_end
        if parent is not None:
            pf = parent.footer
            self.header.parent_unique_id = pf.unique_id
            self.header.parent_time_stamp = pf.time_stamp
            self.header.parent_name = utf16be_name(parent.name.rsplit("/", 1)[-1])

    # -- parent locators --------------------------------------------------

    def locator(self, slot, code, text=None, data=None, offset=None, space=None, length=None,
                align=SECTOR):
        """Writes locator data (text encoded for `code`, or raw `data`) and its
        entry. Without `offset` the data goes at the current end of the
        metadata (aligned to `align`), and the end moves past its space.
        `space` is the stored data-space value (bytes unless the case says
        otherwise); by default the data length rounded up to a sector."""
        if data is None:
            data = encode_locator(code, text)
        if offset is None:
            offset = align_up(self.end, align)
        if space is None:
            space = align_up(max(len(data), 1), SECTOR)
        self.file.write(offset, data)
        self.header.locators[slot] = Locator(code, space, len(data) if length is None
                                             else length, offset)
        self.end = max(self.end, offset + max(space if space >= len(data) else 0, len(data)))
        return offset

    # -- blocks and data --------------------------------------------------

    def next_block_offset(self):
        if self.placement == "win":
            # makevhdx's reading of Windows 8+: the next free offset is
            # rounded up to 4 KiB, then a 4 KiB-aligned bitmap area whose
            # last bytes are the bitmap, so the data starts aligned.
            return align_up(self.end, PAGE) + align_up(self.bm, PAGE) - self.bm
        if self.placement == "tap":
            # tapdisk allocate_block(): a gap so that the data region of the
            # block begins on a page boundary.
            return align_up(self.end + self.bm, PAGE) - self.bm
        return align_up(self.end, SECTOR)

    def allocate(self, index, offset=None):
        if offset is None:
            offset = self.next_block_offset()
        bitmap = bytearray(self.bm)
        self.blocks[index] = {"offset": offset, "bitmap": bitmap}
        self.order.append(index)
        self.bat[index] = offset // SECTOR
        self.end = max(self.end, offset + self.span)
        if self.bitmaps == "full":
            spb = self.block_size // SECTOR
            for s in range(spb):
                bitmap[s // 8] |= 0x80 >> (s % 8)
            first = index * spb
            if self.disk_type == DIFFERENCING:
                for s in range(spb):
                    lba = first + s
                    data = self.layer.parent.sector(lba) if lba * SECTOR < self.current_size \
                        else ZERO_SECTOR
                    self.layer.present[lba] = data
                    if any(data):
                        self.file.write(offset + self.bm + s * SECTOR, data)
        return self.blocks[index]

    def set_bit(self, lba):
        spb = self.block_size // SECTOR
        blk = self.blocks[lba // spb]
        s = lba % spb
        blk["bitmap"][s // 8] |= 0x80 >> (s % 8)

    def write(self, guest_offset, data):
        """Writes guest bytes: through to the data area of a fixed image, or
        into blocks (allocated on first touch) of a sparse image."""
        data = bytes(data)
        assert guest_offset + len(data) <= self.current_size, (self.name, guest_offset)
        pos = guest_offset
        end = guest_offset + len(data)
        while pos < end:
            lba = pos // SECTOR
            inner = pos % SECTOR
            n = min(SECTOR - inner, end - pos)
            sector = bytearray(self.layer.sector(lba))
            sector[inner:inner + n] = data[pos - guest_offset:pos - guest_offset + n]
            self.put_sector(lba, bytes(sector))
            pos += n

    def put_sector(self, lba, sector):
        if self.disk_type == FIXED:
            self.file.write(lba * SECTOR, sector)
            if any(sector):
                self.layer.present[lba] = sector
            else:
                self.layer.present.pop(lba, None)
            return
        spb = self.block_size // SECTOR
        index = lba // spb
        blk = self.blocks.get(index) or self.allocate(index)
        self.set_bit(lba)
        self.file.write(blk["offset"] + self.bm + (lba % spb) * SECTOR, sector)
        if self.disk_type == DIFFERENCING or any(sector):
            self.layer.present[lba] = sector
        else:
            self.layer.present.pop(lba, None)

    def raw_block_data(self, index, sector_in_block, data):
        """Puts bytes into a block's data area without touching its bitmap
        (for sectors whose bit stays clear). The model is not changed: such
        bytes are not guest data."""
        blk = self.blocks.get(index) or self.allocate(index)
        self.file.write(blk["offset"] + self.bm + sector_in_block * SECTOR, data)

    # -- the end ------------------------------------------------------------

    def trailing_offset(self):
        if self.disk_type == FIXED:
            return self.current_size
        if self.footer_at == "next-bitmap":
            return align_up(self.end, PAGE) + PAGE - SECTOR
        return align_up(self.end, SECTOR)

    def finish(self, copy_footer=None, trailing=True, header_bytes=None, bat_bytes=None):
        """Writes the footer(s), header, BAT and bitmaps. `copy_footer`
        replaces the footer copy at offset 0 (bytes); `trailing=False` leaves
        the trailing footer out, bytes replace it."""
        assert not self.finished
        self.finished = True
        foot = self.footer.pack()
        if self.disk_type == FIXED:
            self.file.length = max(self.file.length, self.current_size)
        else:
            self.file.write(0, foot if copy_footer is None else copy_footer)
            self.file.write(self.footer.data_offset,
                            self.header.pack() if header_bytes is None else header_bytes)
            if bat_bytes is None:
                bat = b"".join(e.to_bytes(4, "big") for e in self.bat)
                pad = align_up(len(bat), SECTOR) - len(bat)
                bat += bytes([self.bat_pad]) * pad
            else:
                bat = bat_bytes
            self.file.write(self.header.table_offset, bat)
            for blk in self.blocks.values():
                self.file.write(blk["offset"], blk["bitmap"])
                self.file.length = max(self.file.length, blk["offset"] + self.span)
        at = self.trailing_offset()
        self.file.length = max(self.file.length, at)
        if trailing is True:
            self.file.write(at, foot)
        elif trailing:
            self.file.write(at, trailing)
        return self.file

    # -- facts for the manifest ----------------------------------------------

    def info(self):
        f = self.footer
        return {
            "type": {FIXED: "fixed", DYNAMIC: "dynamic", DIFFERENCING: "differencing"}[
                self.disk_type],
            "current_size": self.current_size,
            "block_size": self.block_size,
            "creator_application": escape(f.creator_app),
            "creator_host_os": escape(f.creator_os),
            "geometry": list(f.geometry),
        }


def escape(b):
    from vhdfmt import escape4
    return escape4(b)
