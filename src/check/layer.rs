//! Judging one image file on its own: footer, header, BAT, blocks,
//! bitmaps, locators and the use of space, every rule in turn.

use std::collections::HashMap;

use crate::error::{Error, Result, count};
use crate::format::bat::{UNALLOCATED, bat_size_on_disk, parse_bat};
use crate::format::dyn_header::DynHeader;
use crate::format::{
    DYN_HEADER_SIZE, DiskType, FOOTER_SIZE, Footer, MAX_BLOCKS, Platform, SECTOR_SIZE, bitmap,
};
use crate::image::rules as open_rules;
use crate::rules::{self, Finding, Rule};
use crate::storage::Storage;

use super::CheckOptions;
use super::space;

/// Bytes of data looked at per read when data is scanned.
const WINDOW: u64 = 1 << 20;

/// The findings of one image, at most a bound per rule (then one more that
/// counts the rest).
pub(crate) struct Findings {
    list: Vec<Finding>,
    per_rule: HashMap<Rule, u64>,
    cap: u64,
}

impl Findings {
    pub(crate) fn new(cap: usize) -> Self {
        Findings {
            list: Vec::new(),
            per_rule: HashMap::new(),
            cap: cap as u64,
        }
    }

    pub(crate) fn push(&mut self, f: Finding) {
        let n = self.per_rule.entry(f.rule).or_insert(0);
        *n += 1;
        if *n <= self.cap {
            self.list.push(f);
        }
    }

    /// An error of the shared rule checks as a finding (errors that are
    /// not about a rule are not findings).
    fn error(&mut self, e: &Error, at: Option<(u64, u64)>) {
        if let Some(f) = e.to_finding() {
            self.push(match at {
                Some((o, l)) => f.at(o, l),
                None => f,
            });
        }
    }

    pub(crate) fn finish(mut self) -> Vec<Finding> {
        let mut over: Vec<(Rule, u64)> = self
            .per_rule
            .iter()
            .filter(|&(_, &n)| n > self.cap)
            .map(|(&r, &n)| (r, n - self.cap))
            .collect();
        over.sort();
        for (rule, more) in over {
            self.list.push(Finding::new(
                rule,
                format!(
                    "... and {} like these",
                    count(more, "more finding", "more findings")
                ),
            ));
        }
        self.list
    }
}

/// How far a layer could be judged.
pub(crate) enum Outcome {
    /// Its footer was read: the type it has.
    Judged(DiskType),
    /// No footer cookie where one belongs: not a VHD (FTR-SIZE or
    /// FTR-COOKIE is among the findings).
    NotAVhd,
    /// A footer with the cookie, but one that cannot be used (its version
    /// or type is unknown): the finding says which.
    Unusable,
}

/// Reads `len` bytes at `offset`.
fn read(storage: &dyn Storage, offset: u64, len: usize, what: &str) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    storage
        .read_exact_at(&mut buf, offset)
        .map_err(|e| Error::io(format!("reading {what}"), e))?;
    Ok(buf)
}

/// Judges the image in `storage`. An I/O error ends the judgement.
pub(crate) fn judge_layer(
    storage: &dyn Storage,
    options: &CheckOptions,
    out: &mut Findings,
) -> Result<Outcome> {
    let len = storage
        .len()
        .map_err(|e| Error::io("reading the file length", e))?;
    let Some(footer) = judge_footer(storage, len, out)? else {
        return Ok(match out.list.first().map(|f| f.rule) {
            Some(Rule::FtrSize | Rule::FtrCookie) | None => Outcome::NotAVhd,
            Some(_) => Outcome::Unusable,
        });
    };
    let disk_type = footer.footer.disk_type;
    if disk_type == DiskType::Fixed {
        judge_fixed(&footer, out);
    } else {
        judge_sparse(storage, &footer, options, out)?;
    }
    Ok(Outcome::Judged(disk_type))
}

/// The footer in use, where it is, and whether it is the copy at 0.
pub(crate) struct FooterState {
    pub(crate) footer: Footer,
    pub(crate) offset: u64,
    pub(crate) from_copy: bool,
    pub(crate) len: u64,
}

/// Footer rules. `None` when no footer can be used (the reason is a
/// finding); a footer whose only fault is its checksum is used anyway, to
/// judge what it describes.
fn judge_footer(
    storage: &dyn Storage,
    len: u64,
    out: &mut Findings,
) -> Result<Option<FooterState>> {
    let mut lint = Vec::new();
    let (footer, offset, from_copy, bytes_at) = match open_rules::locate_footer(storage, &mut lint)
    {
        Ok(l) => {
            let at = if l.from_copy { 0 } else { l.offset };
            (l.footer, l.offset, l.from_copy, at)
        }
        Err(e @ Error::Io { .. }) => return Err(e),
        Err(e @ Error::FooterChecksum { .. }) => {
            // The cookie is there: report the checksum and judge the rest
            // as the fields say, if they are readable.
            let at = len - FOOTER_SIZE as u64;
            out.error(&e, Some((at, FOOTER_SIZE as u64)));
            let mut bytes = [0u8; FOOTER_SIZE];
            storage
                .read_exact_at(&mut bytes, at)
                .map_err(|e| Error::io("reading the footer", e))?;
            match Footer::parse_ignoring_checksum(&bytes) {
                Ok(f) => (f, at, false, at),
                Err(e) => {
                    out.error(&e, Some((at, FOOTER_SIZE as u64)));
                    return Ok(None);
                }
            }
        }
        Err(e) => {
            let at = len.saturating_sub(FOOTER_SIZE as u64);
            out.error(&e, Some((at, len.min(FOOTER_SIZE as u64))));
            return Ok(None);
        }
    };
    for f in lint {
        out.push(f);
    }
    let footer_len = if offset + FOOTER_SIZE as u64 > len && !from_copy {
        FOOTER_SIZE - 1
    } else {
        FOOTER_SIZE
    };
    let bytes = read(storage, bytes_at, footer_len, "the footer")?;
    if !Footer::reserved_is_zero(&bytes) && !rules::disabled(Rule::FtrReserved) {
        out.push(
            Finding::new(
                Rule::FtrReserved,
                "the reserved bytes at the end of the footer are not all zero",
            )
            .at(bytes_at + 85, (footer_len - 85) as u64),
        );
    }
    for f in footer.lint() {
        out.push(f.at(bytes_at, footer_len as u64));
    }
    Ok(Some(FooterState {
        footer,
        offset,
        from_copy,
        len,
    }))
}

fn judge_fixed(state: &FooterState, out: &mut Findings) {
    let current = state.footer.current_size;
    let data_len = state.offset;
    if data_len < current && !rules::disabled(Rule::FtrFixedLength) {
        out.error(
            &Error::FixedLength {
                current_size: current,
                data_len,
            },
            Some((0, data_len)),
        );
    } else if data_len > current && !rules::disabled(Rule::FtrFixedSlack) {
        out.push(
            Finding::new(
                Rule::FtrFixedSlack,
                format!(
                    "{} between the end of the data ({current}) and the footer",
                    count(data_len - current, "byte lies", "bytes lie")
                ),
            )
            .at(current, data_len - current),
        );
    }
}

/// What the sparse rules know about a dynamic or differencing layer.
pub(crate) struct SparseState {
    pub(crate) header: DynHeader,
    pub(crate) header_offset: u64,
    pub(crate) footer_offset: u64,
    pub(crate) from_copy: bool,
    pub(crate) len: u64,
    pub(crate) disk_type: DiskType,
    pub(crate) current_size: u64,
    /// Bitmap plus data of one block.
    pub(crate) span: u64,
}

fn judge_sparse(
    storage: &dyn Storage,
    footer: &FooterState,
    options: &CheckOptions,
    out: &mut Findings,
) -> Result<()> {
    let f = &footer.footer;
    let header_offset = f.data_offset;
    if let Err(e) = open_rules::check_header_place(header_offset, footer.offset) {
        out.error(&e, Some((header_offset, DYN_HEADER_SIZE as u64)));
        return Ok(());
    }
    let raw = read(
        storage,
        header_offset,
        DYN_HEADER_SIZE,
        "the dynamic header",
    )?;
    let mut bytes = [0u8; DYN_HEADER_SIZE];
    bytes.copy_from_slice(&raw);
    let here = Some((header_offset, DYN_HEADER_SIZE as u64));
    let header = match DynHeader::parse(&bytes, header_offset) {
        Ok(h) => h,
        Err(e @ Error::HeaderChecksum { .. }) => {
            out.error(&e, here);
            match DynHeader::parse_ignoring_checksum(&bytes, header_offset) {
                Ok(h) => h,
                Err(e) => {
                    out.error(&e, here);
                    return Ok(());
                }
            }
        }
        Err(e) => {
            out.error(&e, here);
            return Ok(());
        }
    };
    for finding in header.lint() {
        out.push(finding.at(header_offset, DYN_HEADER_SIZE as u64));
    }
    if !DynHeader::reserved_is_zero(&bytes) && !rules::disabled(Rule::HdrReserved) {
        out.push(
            Finding::new(
                Rule::HdrReserved,
                "the reserved fields of the dynamic header are not all zero",
            )
            .at(header_offset, DYN_HEADER_SIZE as u64),
        );
    }
    let state = SparseState {
        span: header.bitmap_size() + u64::from(header.block_size),
        header,
        header_offset,
        footer_offset: footer.offset,
        from_copy: footer.from_copy,
        len: footer.len,
        disk_type: f.disk_type,
        current_size: f.current_size,
    };
    if state.disk_type == DiskType::Differencing {
        judge_locators(storage, &state, out);
    }
    let Some(used) = judge_table(&state, out) else {
        return Ok(());
    };
    let table_offset = state.header.table_offset;
    let mut bat = open_rules::read_bat(storage, table_offset, used)?;
    let beyond = judge_unused_entries(storage, &state, used, out)?;
    let regions = open_rules::metadata_regions(
        &state.header,
        state.header_offset,
        state.disk_type,
        state.footer_offset,
    );
    let mut broken = judge_block_places(&state, &regions, &bat, out);
    // FILE-ORDER is about the blocks that lie where they may.
    let first_block = bat
        .iter()
        .enumerate()
        .filter(|&(i, &e)| e != UNALLOCATED && !broken.get(i))
        .map(|(_, &e)| u64::from(e) * SECTOR_SIZE)
        .min();
    let mut beyond = beyond;
    if let Some(b) = &mut beyond {
        b.sort_unstable();
    }
    // Blocks against each other, and the use of space, need the blocks in
    // file order. Blocks allocated in index order (the common case) are
    // already; otherwise the BAT is sorted in place and read again after,
    // so memory stays at one BAT.
    let in_order = ascending(&bat);
    let pairs = if in_order {
        let pairs = overlapping_pairs(&state, &regions, bat.iter().copied());
        if let Some(b) = &beyond {
            space::judge_space(storage, &state, merged(&bat, b), first_block, options, out)?;
        }
        pairs
    } else {
        bat.sort_unstable();
        let pairs = overlapping_pairs(&state, &regions, bat.iter().copied());
        if let Some(b) = &beyond {
            space::judge_space(storage, &state, merged(&bat, b), first_block, options, out)?;
        }
        bat = open_rules::read_bat(storage, table_offset, used)?;
        pairs
    };
    report_overlaps(&state, &bat, &pairs, &mut broken, out);
    judge_bitmaps(storage, &state, &bat, &broken, options, out)
}

/// Whether the allocated entries of `bat` grow with the index.
fn ascending(bat: &[u32]) -> bool {
    let mut last = 0u32;
    for &e in bat.iter().filter(|&&e| e != UNALLOCATED) {
        if e < last {
            return false;
        }
        last = e;
    }
    true
}

/// The allocated entries of two ascending lists (the BAT in file order and
/// the entries past the disk), in one ascending stream.
fn merged<'a>(bat: &'a [u32], beyond: &'a [u32]) -> impl Iterator<Item = u32> + Clone + 'a {
    let mut a = bat.iter().copied().filter(|&e| e != UNALLOCATED).peekable();
    let mut b = beyond.iter().copied().peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(&x), Some(&y)) if y < x => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

/// How many overlapping pairs are named with their block indexes; the
/// rest are only counted.
const NAMED_PAIRS: usize = 4096;

/// The pairs of readable blocks, by entry, that overlap, from entries in
/// ascending order: `(earlier, later)` entries of each pair.
fn overlapping_pairs(
    state: &SparseState,
    regions: &[(u64, u64, String)],
    ascending: impl Iterator<Item = u32>,
) -> Vec<(u32, u32)> {
    let readable = |e: u32| {
        e != UNALLOCATED
            && open_rules::check_block_in_file(0, e, state.span, state.footer_offset).is_ok()
            && open_rules::check_block_clear_of_metadata(0, e, state.span, regions).is_ok()
    };
    let mut pairs = Vec::new();
    let mut last: Option<u32> = None;
    for e in ascending.filter(|&e| readable(e)) {
        if let Some(prev) = last
            && u64::from(prev) * SECTOR_SIZE + state.span > u64::from(e) * SECTOR_SIZE
        {
            pairs.push((prev, e));
        }
        last = Some(e);
    }
    pairs
}

/// Reports each overlapping pair (naming the blocks by index, as `open`
/// does) and marks both blocks unreadable.
fn report_overlaps(
    state: &SparseState,
    bat: &[u32],
    pairs: &[(u32, u32)],
    broken: &mut Bits,
    out: &mut Findings,
) {
    if pairs.is_empty() || rules::disabled(Rule::BatEntryOverlap) {
        return;
    }
    let mut values: Vec<u32> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
    values.sort_unstable();
    values.dedup();
    // Every block with one of these entries overlaps another.
    let mut first_index: std::collections::HashMap<u32, (usize, Option<usize>)> =
        std::collections::HashMap::new();
    for (i, &e) in bat.iter().enumerate() {
        if e != UNALLOCATED && !broken.get(i) && values.binary_search(&e).is_ok() {
            broken.set(i);
            if first_index.len() < 2 * NAMED_PAIRS || first_index.contains_key(&e) {
                let slot = first_index.entry(e).or_insert((i, None));
                if slot.0 != i && slot.1.is_none() {
                    slot.1 = Some(i);
                }
            }
        }
    }
    let block_at = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
    for &(ea, eb) in pairs {
        let a = first_index.get(&ea).map(|s| s.0);
        // Two blocks with the same entry: the second index holding it.
        let b = first_index
            .get(&eb)
            .map(|s| if ea == eb { s.1.unwrap_or(s.0) } else { s.0 });
        let (first, second) = match (a, b) {
            (Some(a), Some(b)) if a <= b => (a, b),
            (Some(a), Some(b)) => (b, a),
            _ => (usize::MAX, usize::MAX),
        };
        let entry = |i: usize| bat.get(i).copied().unwrap_or(UNALLOCATED);
        out.error(
            &open_rules::overlap(
                block_at(second),
                entry(second),
                block_at(first),
                entry(first),
            ),
            Some((u64::from(eb) * SECTOR_SIZE, state.span)),
        );
    }
}

/// HDR-MAX-TABLE-ENTRIES and HDR-TABLE-OFFSET; returns how many entries
/// can be read (the disk's, or fewer when the table is short), or `None`
/// when the table cannot be read at all.
fn judge_table(state: &SparseState, out: &mut Findings) -> Option<u64> {
    let h = &state.header;
    let here = Some((state.header_offset, DYN_HEADER_SIZE as u64));
    let needed = state.current_size.div_ceil(u64::from(h.block_size));
    if let Err(e) = open_rules::check_table_entries(h, state.current_size) {
        out.error(&e, here);
        if needed > MAX_BLOCKS {
            return None;
        }
    }
    let table_here = Some((h.table_offset, u64::from(h.max_table_entries) * 4));
    if let Err(e) = open_rules::check_table_in_file(h, state.footer_offset) {
        out.error(&e, table_here);
        return None;
    }
    if let Err(e) = open_rules::check_table_aligned(h) {
        out.error(&e, table_here);
    }
    if let Err(e) = open_rules::check_table_clear_of_header(h, state.header_offset) {
        out.error(&e, table_here);
    }
    if state.disk_type == DiskType::Differencing
        && let Err(e) = open_rules::check_table_clear_of_locators(h)
    {
        out.error(&e, table_here);
    }
    Some(needed.min(u64::from(h.max_table_entries)))
}

/// Bytes of BAT read per step past the disk's entries.
const UNUSED_CHUNK: u64 = 64 * 1024;
/// The most allocated entries past the disk kept for the space rules: the
/// blocks they point at still take space in the file.
const KEEP: usize = 1 << 20;

/// BAT-ENTRY-UNUSED: entries past the disk's own are unallocated. Read 64
/// KiB at a time; a hole of the file (all zeros: entries "allocated" at
/// sector 0) is counted without reading it.
fn judge_unused_entries(
    storage: &dyn Storage,
    state: &SparseState,
    used: u64,
    out: &mut Findings,
) -> Result<Option<Vec<u32>>> {
    let mut kept = Some(Vec::new());
    // The checker goes on past HDR-TABLE-OFFSET: the offset may be anything.
    let start = state.header.table_offset.saturating_add(used * 4);
    let end =
        (state.header.table_offset).saturating_add(u64::from(state.header.max_table_entries) * 4);
    let mut allocated = 0u64;
    let mut pos = start;
    let mut buf = Vec::new();
    while pos < end {
        let next = storage
            .next_data(pos)
            .map_err(|e| Error::io("mapping the BAT", e))?;
        let data_start = next.map_or(end, |(s, _)| s.clamp(pos, end));
        // Whole entries in the hole read as zero: allocated at sector 0.
        let hole_entries = (data_start - pos) / 4;
        allocated += hole_entries;
        if hole_entries > 0 {
            kept = None;
        }
        pos += hole_entries * 4;
        if pos >= end {
            break;
        }
        let data_end = next.map_or(end, |(_, e)| e.clamp(pos + 4, end));
        let n = (data_end - pos).clamp(4, UNUSED_CHUNK) / 4 * 4;
        buf.resize(usize::try_from(n).unwrap_or(0), 0);
        storage
            .read_exact_at(&mut buf, pos)
            .map_err(|e| Error::io("reading the BAT", e))?;
        for e in parse_bat(&buf).into_iter().filter(|&e| e != UNALLOCATED) {
            allocated += 1;
            if let Some(k) = &mut kept {
                k.push(e);
                if k.len() > KEEP {
                    kept = None;
                }
            }
        }
        pos += n;
    }
    if allocated > 0 && !rules::disabled(Rule::BatEntryUnused) {
        out.push(
            Finding::new(
                Rule::BatEntryUnused,
                format!(
                    "{} past the end of the disk ({}) allocated",
                    count(allocated, "BAT entry is", "BAT entries are"),
                    count(used, "block", "blocks")
                ),
            )
            .at(start, end - start),
        );
    }
    Ok(kept)
}

/// One bit per BAT entry.
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    pub(crate) fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// BAT-ENTRY-BEYOND-EOF and BAT-ENTRY-OVERLAP (with the metadata) for
/// every allocated entry. Returns the blocks that break either: they are
/// not read afterwards (their space still counts as used).
fn judge_block_places(
    state: &SparseState,
    regions: &[(u64, u64, String)],
    bat: &[u32],
    out: &mut Findings,
) -> Bits {
    let block_at = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
    let mut broken = Bits::new(bat.len());
    for (i, &entry) in bat.iter().enumerate() {
        if entry == UNALLOCATED {
            continue;
        }
        let here = Some((u64::from(entry) * SECTOR_SIZE, state.span));
        let checks = [
            open_rules::check_block_in_file(block_at(i), entry, state.span, state.footer_offset),
            open_rules::check_block_clear_of_metadata(block_at(i), entry, state.span, regions),
        ];
        for e in checks.iter().filter_map(|r| r.as_ref().err()) {
            out.error(e, here);
            broken.set(i);
        }
    }
    broken
}

/// BMP-PAST-END and BMP-CLEAR-DATA, one block at a time.
fn judge_bitmaps(
    storage: &dyn Storage,
    state: &SparseState,
    bat: &[u32],
    broken: &Bits,
    options: &CheckOptions,
    out: &mut Findings,
) -> Result<()> {
    let block_size = u64::from(state.header.block_size);
    let bitmap_size = state.header.bitmap_size();
    let sectors = block_size / SECTOR_SIZE;
    let mut bits = Vec::new();
    for (i, &entry) in bat.iter().enumerate() {
        if entry == UNALLOCATED || broken.get(i) {
            continue;
        }
        let start = u64::from(entry) * SECTOR_SIZE;
        let guest = i as u64 * block_size;
        let in_disk = state.current_size.saturating_sub(guest).min(block_size);
        let disk_sectors = in_disk.div_ceil(SECTOR_SIZE);
        let past_end = guest + block_size > state.current_size;
        let clear_scan = options.data_checks && state.disk_type == DiskType::Dynamic;
        if !past_end && !clear_scan {
            continue;
        }
        bits.resize(usize::try_from(bitmap_size).unwrap_or(0), 0);
        storage
            .read_exact_at(&mut bits, start)
            .map_err(|e| Error::io(format!("reading the bitmap of block {i}"), e))?;
        if past_end
            && (disk_sectors..sectors).any(|s| bitmap::get(&bits, s))
            && !rules::disabled(Rule::BmpPastEnd)
        {
            out.push(
                Finding::new(
                    Rule::BmpPastEnd,
                    format!(
                        "block {i} has bitmap bits set for sectors past the end of the disk (from sector {disk_sectors} of the block)"
                    ),
                )
                .at(start, bitmap_size),
            );
        }
        if clear_scan {
            judge_clear_data(storage, i, start + bitmap_size, &bits, disk_sectors, out)?;
        }
    }
    Ok(())
}

/// BMP-CLEAR-DATA for one block: the sectors whose bits are clear hold
/// only zeros. Reads only those sectors, a window at a time, and stops at
/// the first that does not.
fn judge_clear_data(
    storage: &dyn Storage,
    block: usize,
    data_start: u64,
    bits: &[u8],
    sectors: u64,
    out: &mut Findings,
) -> Result<()> {
    let mut sector = 0;
    let mut buf = Vec::new();
    while sector < sectors {
        let run = bitmap::run_length(bits, sector, sectors);
        if bitmap::get(bits, sector) {
            sector += run;
            continue;
        }
        let mut pos = sector * SECTOR_SIZE;
        let end = (sector + run) * SECTOR_SIZE;
        while pos < end {
            let n = (end - pos).min(WINDOW);
            buf.resize(usize::try_from(n).unwrap_or(0), 0);
            storage
                .read_exact_at(&mut buf, data_start + pos)
                .map_err(|e| Error::io(format!("reading the data of block {block}"), e))?;
            if let Some(k) = buf
                .iter()
                .position(|&b| b != 0)
                .filter(|_| !rules::disabled(Rule::BmpClearData))
            {
                let at = pos + k as u64;
                out.push(
                    Finding::new(
                        Rule::BmpClearData,
                        format!(
                            "block {block}: sector {} holds data but its bitmap bit is clear (vhdref and libvhdi read zeros there, QEMU and dissect read the data, 7-Zip reports a data error)",
                            at / SECTOR_SIZE
                        ),
                    )
                    .at(data_start + at / SECTOR_SIZE * SECTOR_SIZE, SECTOR_SIZE),
                );
                return Ok(());
            }
            pos += n;
        }
        sector += run;
    }
    Ok(())
}

/// The locator rules of a differencing image: what decoding finds
/// (PAR-LOCATOR-BOUNDS, -PLATFORM, -ENCODING, PAR-NAME), and
/// PAR-LOCATOR-OVERLAP, PAR-LOCATOR-SPACE, PAR-LOCATOR-MISSING.
fn judge_locators(storage: &dyn Storage, state: &SparseState, out: &mut Findings) {
    let h = &state.header;
    let mut reader = |offset: u64, len: u32| -> std::result::Result<Vec<u8>, String> {
        read(storage, offset, len as usize, "a parent locator").map_err(|e| e.to_string())
    };
    let decoded = crate::image::decode_locators(h, state.footer_offset, &mut reader);
    for f in decoded.findings {
        out.push(f);
    }
    let with_path = h.parent_locators.iter().any(|l| {
        matches!(
            l.platform(),
            Platform::W2ru | Platform::W2ku | Platform::Wi2r | Platform::Wi2k | Platform::MacX
        )
    });
    if !with_path && !rules::disabled(Rule::ParLocatorMissing) {
        out.push(Finding::new(
            Rule::ParLocatorMissing,
            "no parent locator holds a path (W2ru, W2ku, Wi2r, Wi2k or MacX); only the parent name can find the parent",
        ));
    }
    let fixed = [
        (0, FOOTER_SIZE as u64, "the footer copy".to_string()),
        (
            state.header_offset,
            state.header_offset.saturating_add(DYN_HEADER_SIZE as u64),
            "the dynamic header".to_string(),
        ),
        (
            h.table_offset,
            // Any offset: the checker goes on past HDR-TABLE-OFFSET.
            h.table_offset
                .saturating_add(bat_size_on_disk(h.max_table_entries)),
            "the BAT".to_string(),
        ),
    ];
    let locs: Vec<(usize, u64, u64)> = h
        .parent_locators
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_used() && l.platform_data_length > 0)
        .map(|(i, l)| {
            let start = l.platform_data_offset;
            (
                i,
                start,
                start.saturating_add(u64::from(l.platform_data_length)),
            )
        })
        .collect();
    for &(i, start, end) in &locs {
        let loc = &h.parent_locators[i];
        let len = u64::from(loc.platform_data_length);
        let space = u64::from(loc.platform_data_space);
        if space < len
            && space.saturating_mul(SECTOR_SIZE) < len
            && !rules::disabled(Rule::ParLocatorSpace)
        {
            out.push(
                Finding::new(
                    Rule::ParLocatorSpace,
                    format!(
                        "parent locator {i} has {} of data but a data space of {space} (too small in bytes and in sectors)",
                        count(len, "byte", "bytes")
                    ),
                )
                .at(start, len),
            );
        }
        let other = fixed
            .iter()
            .map(|(s, e, what)| (*s, *e, what.clone()))
            .chain(
                locs.iter()
                    .filter(|&&(j, _, _)| j != i)
                    .map(|&(j, s, e)| (s, e, format!("parent locator {j}"))),
            )
            .find(|(s, e, _)| start < *e && *s < end);
        if let Some((_, _, what)) = other.filter(|_| !rules::disabled(Rule::ParLocatorOverlap)) {
            out.push(
                Finding::new(
                    Rule::ParLocatorOverlap,
                    format!("the data of parent locator {i} at {start:#x} overlaps {what}"),
                )
                .at(start, len),
            );
        }
    }
}
