//! Repair: fix what can be fixed without guessing, and say so rule by
//! rule.
//!
//! | finding | repair |
//! |---|---|
//! | FTR-511 | the 511-byte footer of a fixed image made 512 (its missing last byte is reserved: a zero) |
//! | FTR-TRAILING | the trailing footer restored from the copy at offset 0: in place over a damaged footer, else after the end of the file |
//! | FTR-COPY-MISMATCH | the copy at offset 0 restored from the trailing footer (the one every reader uses) |
//! | FTR-CHECKSUM, HDR-CHECKSUM | the checksum recomputed, only with [`RepairOptions::fix_checksums`], after the fields that would then be trusted are shown |
//! | FILE-TAIL, FILE-LEAK at the end | the space after the last structure cut off (the footer moves down) |
//! | FTR-FIXED-SLACK | the bytes between a fixed image's data and its footer cut off |
//! | BMP-PAST-END | the bits of sectors past the end of the disk cleared |
//!
//! Leaked blocks inside the file are left as they are (`vhd compact`
//! reclaims them), and so is every other warning. An error that is not in
//! this table is refused with its rule, and then nothing at all is written.
//!
//! # How
//!
//! The fixes are planned on an [`Overlay`] of the file: one at a time, the
//! checker judges the overlay, the first finding with a repair gets it,
//! until none is left. When the checker finds no error in the result, the
//! same writes and syncs are made on the file, in the same order;
//! otherwise (or with [`RepairOptions::dry_run`]) the file is not touched.
//!
//! # Write order of each fix
//!
//! Each fix is one write (or one write and a cut), then a sync, and leaves
//! a valid image after each step: a footer or a checksum field is one
//! write inside one sector (or a write into space no reader looks at); a
//! cut first writes the footer where the new end will be and syncs
//! (the driver's `cut_to`).

use std::path::Path;

use serde::Serialize;

use crate::check::{CheckOptions, Located, Report, check_storage};
use crate::error::{Error, Result};
use crate::format::dyn_header::CHECKSUM_OFFSET as HEADER_CHECKSUM;
use crate::format::footer::{CHECKSUM_OFFSET as FOOTER_CHECKSUM, FOOTER_COOKIE};
use crate::format::{
    DYN_HEADER_SIZE, DiskType, DynHeader, FOOTER_SIZE, Footer, SECTOR_SIZE, bitmap,
};
use crate::image::maintenance::{cut_to, sector_ceil, set_checksum};
use crate::image::{Image, OpenOptions, ParentResolver};
use crate::rules::{Rule, Severity};
use crate::storage::{FileStorage, OpenError, Storage};

use super::Overlay;

/// How to repair.
#[derive(Debug, Clone, Copy, Default)]
pub struct RepairOptions {
    dry_run: bool,
    fix_checksums: bool,
}

impl RepairOptions {
    /// Repair what can be repaired; checksums are not recomputed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Say what would be done and write nothing.
    #[must_use]
    pub fn dry_run(mut self, yes: bool) -> Self {
        self.dry_run = yes;
        self
    }

    /// Recompute footer and header checksums (FTR-CHECKSUM, HDR-CHECKSUM),
    /// trusting the fields they cover.
    #[must_use]
    pub fn fix_checksums(mut self, yes: bool) -> Self {
        self.fix_checksums = yes;
        self
    }
}

/// One fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// The rule the image broke.
    pub rule: Rule,
    /// What was (or would be) done.
    pub action: String,
}

/// A finding that was not repaired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotRepaired {
    /// The rule.
    pub rule: Rule,
    /// How bad.
    pub severity: Severity,
    /// The checker's message.
    pub message: String,
    /// Why it was left: refused (an error) or left as is (a warning).
    pub reason: String,
}

/// What a repair did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    /// The image.
    pub path: String,
    /// Nothing was to be written (asked, or the image is in use).
    pub dry_run: bool,
    /// The image is open elsewhere, so this was a dry run.
    pub in_use: bool,
    /// The fixes, in the order they are made.
    pub fixes: Vec<Fix>,
    /// Errors with no safe repair: while any is left, nothing is written.
    pub refused: Vec<NotRepaired>,
    /// Warnings left as they are.
    pub left: Vec<NotRepaired>,
    /// Whether the fixes were written to the file.
    pub written: bool,
    /// The checker's report before.
    pub before: Report,
    /// The checker's report after (in a dry run, or when something was
    /// refused: what it would be after the fixes).
    pub after: Report,
}

impl RepairReport {
    /// Whether errors are left (refused), so the image still does not open.
    pub fn has_errors(&self) -> bool {
        !self.refused.is_empty()
    }
}

/// Repairs the image file at `path`. An image another process holds open
/// is only looked at, as in a dry run; one being written elsewhere (so
/// not even readable under a shared lock) is an error.
pub fn repair(path: impl AsRef<Path>, options: &RepairOptions) -> Result<RepairReport> {
    let path = path.as_ref();
    crate::image::image_metadata(path, true)?;
    let (storage, in_use) = if options.dry_run {
        (FileStorage::open(path, false), false)
    } else {
        match FileStorage::open(path, true) {
            Err(OpenError::Locked(_)) => (FileStorage::open(path, false), true),
            other => (other, false),
        }
    };
    let storage = storage.map_err(|e| crate::image::file_open_error(path, e))?;
    let options = options.dry_run(options.dry_run || in_use);
    let (mut report, storage) =
        repair_storage(Box::new(storage), &path.display().to_string(), &options)?;
    report.in_use = in_use;
    drop(storage);
    Ok(report)
}

/// Repairs the image held by `storage` (`name` is used in messages) and
/// gives the storage back. See the module documentation.
pub fn repair_storage(
    storage: Box<dyn Storage>,
    name: &str,
    options: &RepairOptions,
) -> Result<(RepairReport, Box<dyn Storage>)> {
    let check = CheckOptions::new().follow_parents(false);
    let before = check_storage(&*storage, name, &check);
    if let Some(why) = &before.not_checked {
        return Err(Error::Refused {
            operation: "repair".into(),
            reason: format!(
                "the image cannot be judged at all, so nothing can be repaired from it: {}",
                why.message
            ),
        });
    }
    let overlay = Overlay::new(storage).map_err(|e| Error::io(format!("reading {name}"), e))?;
    let mut fixes = Vec::new();
    let mut tried: Vec<(Rule, Option<u64>)> = Vec::new();
    let mut now = before.clone();
    while let Some(found) = now
        .findings
        .iter()
        .filter(|f| f.depth == 0)
        .filter(|f| !tried.contains(&(f.finding.rule, f.finding.offset)))
        .filter_map(|f| plan(f, *options).map(|p| (f.clone(), p)))
        .min_by_key(|(_, p)| p.priority())
    {
        let (finding, planned) = found;
        tried.push((finding.finding.rule, finding.finding.offset));
        let mut target = overlay.clone();
        if let Some(action) = apply(planned, &mut target, &finding, name)? {
            fixes.push(Fix {
                rule: finding.finding.rule,
                action,
            });
        }
        now = check_storage(&overlay, name, &check);
    }
    let mut refused = Vec::new();
    let mut left = Vec::new();
    for f in now.findings.iter().filter(|f| f.depth == 0) {
        let item = |reason: String| NotRepaired {
            rule: f.finding.rule,
            severity: f.finding.severity,
            message: f.finding.message.clone(),
            reason,
        };
        if f.finding.severity == Severity::Error {
            refused.push(item(refusal(f, &overlay, options.fix_checksums)));
        } else {
            left.push(item(leave_reason(f.finding.rule)));
        }
    }
    let dry_run = options.dry_run || !refused.is_empty();
    let mut report = RepairReport {
        path: name.to_string(),
        dry_run: options.dry_run,
        in_use: false,
        fixes,
        refused,
        left,
        written: false,
        after: now,
        before,
    };
    let storage = if dry_run || report.fixes.is_empty() {
        overlay
            .discard()
            .ok_or_else(|| Error::InvalidArgument("the repair overlay is still shared".into()))?
    } else {
        let storage = overlay
            .commit()
            .map_err(|(e, _)| Error::io(format!("writing the repairs of {name}"), e))?;
        report.written = true;
        report.after = check_storage(&*storage, name, &check);
        storage
    };
    Ok((report, storage))
}

/// What a fix will do, in the order fixes are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// FTR-511.
    ShortFooter,
    /// FTR-TRAILING.
    RestoreTrailing,
    /// FTR-CHECKSUM.
    FooterChecksum,
    /// HDR-CHECKSUM.
    HeaderChecksum,
    /// FTR-COPY-MISMATCH.
    RestoreCopy,
    /// BMP-PAST-END.
    ClearPastEnd,
    /// FILE-TAIL, FILE-LEAK at the end, FTR-FIXED-SLACK.
    CutTail,
}

impl Plan {
    fn priority(self) -> u8 {
        self as u8
    }
}

/// The fix for a finding, if it has one (and the options allow it).
fn plan(f: &Located, options: RepairOptions) -> Option<Plan> {
    match f.finding.rule {
        Rule::Ftr511 => Some(Plan::ShortFooter),
        Rule::FtrTrailing => Some(Plan::RestoreTrailing),
        Rule::FtrChecksum if options.fix_checksums => Some(Plan::FooterChecksum),
        Rule::HdrChecksum if options.fix_checksums => Some(Plan::HeaderChecksum),
        Rule::FtrCopyMismatch => Some(Plan::RestoreCopy),
        Rule::BmpPastEnd => Some(Plan::ClearPastEnd),
        // Only a leak that reaches the trailing footer is at the end;
        // whether it does is known once the footer is.
        Rule::FileTail | Rule::FtrFixedSlack | Rule::FileLeak => Some(Plan::CutTail),
        _ => None,
    }
}

fn io(name: &str, what: &str) -> impl Fn(std::io::Error) -> Error {
    let what = format!("{what} of {name}");
    move |e| Error::io(what.clone(), e)
}

fn read(storage: &dyn Storage, offset: u64, len: usize, name: &str) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    storage
        .read_exact_at(&mut buf, offset)
        .map_err(io(name, "reading"))?;
    Ok(buf)
}

fn footer_at(storage: &dyn Storage, offset: u64, name: &str) -> Result<[u8; FOOTER_SIZE]> {
    let mut out = [0u8; FOOTER_SIZE];
    out.copy_from_slice(&read(storage, offset, FOOTER_SIZE, name)?);
    Ok(out)
}

/// The image in the overlay, opened read-only on its own.
fn open(overlay: &Overlay, name: &str) -> Result<Image> {
    OpenOptions::new()
        .skip_parent(true)
        .resolver(ParentResolver::deny_all())
        .open_storage(Box::new(overlay.clone()), name)
}

/// Makes the writes of one fix on `storage` (the overlay); returns what
/// was done, or `None` when the finding turns out to need nothing (a leak
/// that is not at the end).
fn apply(plan: Plan, storage: &mut Overlay, f: &Located, name: &str) -> Result<Option<String>> {
    let len = storage.len().map_err(io(name, "reading the length"))?;
    Ok(Some(match plan {
        Plan::ShortFooter => {
            // The 511 bytes at the end and one zero: the footer's last,
            // reserved byte (the checksum does not change).
            storage
                .write_all_at(&[0], len)
                .map_err(io(name, "completing the footer"))?;
            storage.sync().map_err(io(name, "syncing"))?;
            format!(
                "the 511-byte footer at {:#x} made 512 bytes long (a zero byte appended)",
                len - 511
            )
        }
        Plan::RestoreTrailing => return restore_trailing(storage, len, name),
        Plan::FooterChecksum => {
            let at = len - FOOTER_SIZE as u64;
            let mut bytes = footer_at(storage, at, name)?;
            let fields = Footer::parse_ignoring_checksum(&bytes)
                .map(|ft| footer_fields(&ft))
                .unwrap_or_default();
            set_checksum(&mut bytes, FOOTER_CHECKSUM);
            write_field(
                storage,
                &bytes[FOOTER_CHECKSUM..FOOTER_CHECKSUM + 4],
                at + FOOTER_CHECKSUM as u64,
                name,
            )?;
            format!("the footer checksum at {at:#x} recomputed, trusting {fields}")
        }
        Plan::HeaderChecksum => {
            let Some(at) = f.finding.offset else {
                return Ok(None);
            };
            let mut bytes = [0u8; DYN_HEADER_SIZE];
            bytes.copy_from_slice(&read(storage, at, DYN_HEADER_SIZE, name)?);
            let fields = DynHeader::parse_ignoring_checksum(&bytes, at)
                .map(|h| header_fields(&h))
                .unwrap_or_default();
            set_checksum(&mut bytes, HEADER_CHECKSUM);
            write_field(
                storage,
                &bytes[HEADER_CHECKSUM..HEADER_CHECKSUM + 4],
                at + HEADER_CHECKSUM as u64,
                name,
            )?;
            format!("the dynamic header checksum at {at:#x} recomputed, trusting {fields}")
        }
        Plan::RestoreCopy => {
            let Ok(img) = open(storage, name) else {
                return Ok(None);
            };
            let bytes = img.trailing_footer_raw()?;
            drop(img);
            storage
                .write_all_at(&bytes, 0)
                .map_err(io(name, "writing the footer copy"))?;
            storage.sync().map_err(io(name, "syncing"))?;
            "the footer copy at offset 0 restored from the trailing footer".to_string()
        }
        Plan::ClearPastEnd => return clear_past_end(storage, name),
        Plan::CutTail => return cut_tail(storage, f, len, name),
    }))
}

/// Writes a checksum field (four bytes inside one sector) and syncs.
fn write_field(storage: &mut Overlay, bytes: &[u8], at: u64, name: &str) -> Result<()> {
    storage
        .write_all_at(bytes, at)
        .map_err(io(name, "writing a checksum"))?;
    storage.sync().map_err(io(name, "syncing"))
}

/// FTR-TRAILING: the copy at offset 0 written as the trailing footer. In
/// place when the last 512 bytes hold a damaged footer (its cookie) past
/// every structure; else after the end of the file, at a sector boundary
/// (whatever lies at the end stays, and a later fix may cut it).
fn restore_trailing(storage: &mut Overlay, len: u64, name: &str) -> Result<Option<String>> {
    let copy = footer_at(storage, 0, name)?;
    let Ok(img) = open(storage, name) else {
        return Ok(None);
    };
    let structures_end = img
        .layout_regions()?
        .iter()
        .map(|r| r.end)
        .max()
        .unwrap_or(0);
    drop(img);
    let last = len.checked_sub(FOOTER_SIZE as u64);
    let damaged_footer = match last {
        Some(at) if at >= structures_end => footer_at(storage, at, name)?[..8] == FOOTER_COOKIE,
        _ => false,
    };
    let (at, bytes) = match last {
        Some(at) if damaged_footer => (at, copy.to_vec()),
        _ => {
            let at = sector_ceil(len);
            let mut bytes = vec![0u8; (at - len) as usize];
            bytes.extend_from_slice(&copy);
            (at, bytes)
        }
    };
    let write_at = at + FOOTER_SIZE as u64 - bytes.len() as u64;
    storage
        .write_all_at(&bytes, write_at)
        .map_err(io(name, "writing the trailing footer"))?;
    storage.sync().map_err(io(name, "syncing"))?;
    Ok(Some(if damaged_footer {
        format!("the damaged trailing footer at {at:#x} replaced by the copy at offset 0")
    } else {
        format!(
            "the trailing footer restored from the copy at offset 0, at {at:#x} after the end of the file"
        )
    }))
}

/// BMP-PAST-END: the bits of sectors past the end of the disk cleared in
/// the last block's bitmap (one write of the bytes that change, sync).
fn clear_past_end(storage: &mut Overlay, name: &str) -> Result<Option<String>> {
    let Ok(img) = open(storage, name) else {
        return Ok(None);
    };
    let (Some(block_size), Some(bat)) = (img.block_size(), img.bat()) else {
        return Ok(None);
    };
    let block_size = u64::from(block_size);
    let last = bat.len().saturating_sub(1);
    let Some(start) = img.block_offset(last)? else {
        return Ok(None);
    };
    let in_disk = img.size() - last as u64 * block_size;
    let bits = img.read_bitmap(last)?;
    drop(img);
    let mut cleared = bits.clone();
    let first = in_disk.div_ceil(SECTOR_SIZE);
    for s in first..block_size / SECTOR_SIZE {
        if bitmap::get(&cleared, s)
            && let Some(b) = cleared.get_mut((s / 8) as usize)
        {
            *b &= !(0x80u8 >> (s % 8));
        }
    }
    let Some(lo) = bits.iter().zip(&cleared).position(|(a, b)| a != b) else {
        return Ok(None);
    };
    let hi = bits
        .iter()
        .zip(&cleared)
        .rposition(|(a, b)| a != b)
        .unwrap_or(lo);
    storage
        .write_all_at(&cleared[lo..=hi], start + lo as u64)
        .map_err(io(name, "writing a bitmap"))?;
    storage.sync().map_err(io(name, "syncing"))?;
    Ok(Some(format!(
        "the bits of sectors {first} and up of block {last} (past the end of the disk) cleared"
    )))
}

/// FILE-TAIL, FILE-LEAK at the end, FTR-FIXED-SLACK: the footer moved
/// down to right after the last structure (zeros up to the sector
/// boundary first), the file cut after it.
fn cut_tail(storage: &mut Overlay, f: &Located, len: u64, name: &str) -> Result<Option<String>> {
    let Ok(img) = open(storage, name) else {
        return Ok(None);
    };
    let footer = img.trailing_footer_raw()?;
    let current = img.footer_offset();
    let (from, to) = if img.disk_type() == DiskType::Fixed {
        (img.size(), img.size())
    } else {
        let Some(start) = f.finding.offset else {
            return Ok(None);
        };
        let end = start + f.finding.length.unwrap_or(0);
        if end != current {
            // A leak inside the file: compact's work.
            return Ok(None);
        }
        (start, sector_ceil(start))
    };
    drop(img);
    if from < to.min(current) {
        let zeros = vec![0u8; (to.min(current) - from) as usize];
        storage
            .write_all_at(&zeros, from)
            .map_err(io(name, "zeroing the tail"))?;
        storage.sync().map_err(io(name, "syncing"))?;
    }
    if to < current {
        cut_to(storage, &footer, current, len, to, name)?;
        return Ok(Some(format!(
            "{} bytes after the last structure cut off (the footer now at {to:#x})",
            current - from
        )));
    }
    Ok(Some(format!(
        "{} bytes after the last structure zeroed",
        to.min(current) - from
    )))
}

/// The footer fields a recomputed checksum would vouch for.
fn footer_fields(f: &Footer) -> String {
    let g = f.disk_geometry;
    format!(
        "type {}, current size {}, original size {}, data offset {:#x}, geometry {}/{}/{}, unique ID {}, time stamp {}, creator {:?} {:?}",
        f.disk_type.name(),
        f.current_size,
        f.original_size,
        f.data_offset,
        g.cylinders,
        g.heads,
        g.sectors_per_track,
        f.unique_id,
        f.time_stamp.to_rfc3339(),
        f.creator_application_str(),
        f.creator_host_os_str()
    )
}

/// The header fields a recomputed checksum would vouch for.
fn header_fields(h: &DynHeader) -> String {
    let name = h
        .parent_name()
        .map(|n| n.unwrap_or_else(|lossy| lossy))
        .unwrap_or_default();
    format!(
        "table offset {:#x}, max table entries {}, block size {}, parent unique ID {}, parent name {name:?}",
        h.table_offset, h.max_table_entries, h.block_size, h.parent_unique_id
    )
}

/// Why an error is left.
fn refusal(f: &Located, overlay: &Overlay, fix_checksums: bool) -> String {
    match f.finding.rule {
        Rule::FtrChecksum if !fix_checksums => {
            let fields = overlay
                .len()
                .ok()
                .and_then(|len| len.checked_sub(FOOTER_SIZE as u64))
                .and_then(|at| footer_at(overlay, at, "").ok())
                .and_then(|b| Footer::parse_ignoring_checksum(&b).ok())
                .map_or_else(
                    || "fields that do not parse".into(),
                    |ft| footer_fields(&ft),
                );
            format!(
                "recomputing the checksum would trust {fields}; run again with --fix-checksums if they are right"
            )
        }
        Rule::HdrChecksum if !fix_checksums => {
            let fields = f
                .finding
                .offset
                .and_then(|at| {
                    let b = read(overlay, at, DYN_HEADER_SIZE, "").ok()?;
                    let mut bytes = [0u8; DYN_HEADER_SIZE];
                    bytes.copy_from_slice(&b);
                    DynHeader::parse_ignoring_checksum(&bytes, at).ok()
                })
                .map_or_else(|| "fields that do not parse".into(), |h| header_fields(&h));
            format!(
                "recomputing the checksum would trust {fields}; run again with --fix-checksums if they are right"
            )
        }
        rule => format!("no safe repair for {rule}: fixing it would mean guessing"),
    }
}

/// Why a warning is left.
fn leave_reason(rule: Rule) -> String {
    match rule {
        Rule::FileLeak => {
            "leaked space inside the file is left as it is; vhd compact reclaims it".into()
        }
        _ => format!("{rule} has no repair: the image reads correctly as it is"),
    }
}
