//! Rebase: give a differencing image another parent.
//!
//! * [`RebaseMode::Safe`] keeps what the child reads: every sector the
//!   child does not hold itself, where the old chain and the new parent
//!   differ, is first copied into the child from the old chain (as
//!   `qemu-img rebase` does for formats that support it); then the parent
//!   fields and locators switch.
//! * [`RebaseMode::Unsafe`] only switches the parent fields (unique ID,
//!   time stamp, name) and the locators, for a parent that was moved or
//!   copied (as `vhd-util modify -p` and `Set-VHD -ParentPath` do). The old
//!   parent need not exist.
//!
//! Both refuse a new parent of another size, and write a `W2ru` (relative
//! to the child) and a `W2ku` (absolute) locator; the other locators are
//! cleared.
//!
//! # Write order
//!
//! 1. (safe) the differing sectors, through the driver's own write path
//!    (data; then on flush the bitmaps, sync, the BAT entries, sync): the
//!    child reads the same through the old parent before and after;
//! 2. the locator data, into space nothing references (after the BAT,
//!    before the first block; blocks in the way first move past the end of
//!    the file: copy, sync, switch, sync), sync;
//! 3. the new header, through a copy switched by the trailing footer
//!    ([`Image::write_header`](crate::Image)): before the switch the child
//!    names the old parent, after it the new one, and both read the same;
//! 4. if the old locators' space, now free, joins free space next to it
//!    into a hole a block span long, the last block of the file moves into
//!    it (copy, sync, switch, sync) and the file is cut after the last
//!    structure (footer there, sync, cut, sync), as compact does.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::locator::{LOCATOR_COUNT, encode_utf16le};
use crate::format::{
    DiskType, DynHeader, FOOTER_SIZE, LocatorEntry, Platform, SECTOR_SIZE, UNALLOCATED, bitmap,
};
use crate::image::maintenance::{Use, sector_ceil};
use crate::image::{Image, OpenOptions, ParentSource};

use super::WINDOW;

/// How a rebase treats the child's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebaseMode {
    /// Copy into the child what would change, then switch: the child
    /// reads the same.
    Safe,
    /// Only switch the parent fields and locators.
    Unsafe,
}

/// How the child will name its new parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParentRef {
    /// The parent's file name, for the header's parent name.
    pub name: String,
    /// The `W2ru` locator: a path relative to the child's directory, with
    /// Windows separators (`.\base.vhd`).
    pub relative: Option<String>,
    /// The `W2ku` locator: an absolute path.
    pub absolute: Option<String>,
}

impl ParentRef {
    /// The names of the parent file `parent` as seen from the child file
    /// `child`: its file name, the path relative to the child's directory
    /// (when they share a root) and the absolute path.
    pub fn for_files(child: &Path, parent: &Path) -> Result<ParentRef> {
        let abs =
            std::path::absolute(parent).map_err(|e| Error::io("resolving the parent path", e))?;
        let child_abs =
            std::path::absolute(child).map_err(|e| Error::io("resolving the child path", e))?;
        let child_dir = child_abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let name = abs.file_name().map_or_else(
            || parent.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(ParentRef {
            name,
            relative: crate::image::relative_windows_path(&child_dir, &abs),
            absolute: Some(abs.display().to_string()),
        })
    }

    /// A parent named only by a path relative to the child (for images
    /// that are not files, such as ones in memory).
    pub fn relative(path: &str) -> ParentRef {
        ParentRef {
            name: path.rsplit(['/', '\\']).next().unwrap_or(path).to_string(),
            relative: Some(path.replace('/', "\\")),
            absolute: None,
        }
    }
}

/// One locator a rebase wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocatorText {
    /// `W2ru` or `W2ku`.
    pub platform: String,
    /// The path it holds.
    pub text: String,
    /// Where its data lies in the file.
    pub offset: u64,
}

/// What a rebase did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebaseReport {
    /// The child.
    pub path: String,
    /// The mode.
    pub mode: RebaseMode,
    /// The name the child gave its parent before (from its header).
    pub old_parent_name: Option<String>,
    /// The new parent (as opened).
    pub new_parent: String,
    /// The new parent's unique ID, now in the child's header.
    pub new_parent_id: uuid::Uuid,
    /// Guest bytes copied into the child from the old chain.
    pub bytes_copied: u64,
    /// Blocks the child had to allocate for them.
    pub blocks_allocated: u64,
    /// Blocks moved: past the end of the file to make room for the
    /// locators, and back into a hole the switch left.
    pub blocks_moved: u64,
    /// The locators written.
    pub locators: Vec<LocatorText>,
}

/// Rebases the differencing image `child` onto `new_parent`. `open` finds
/// the old parent (safe mode; it is not looked for in unsafe mode).
pub fn rebase(
    child: impl AsRef<Path>,
    new_parent: impl AsRef<Path>,
    mode: RebaseMode,
    open: OpenOptions,
) -> Result<RebaseReport> {
    let (child, new_parent) = (child.as_ref(), new_parent.as_ref());
    let parent = open_new_parent(new_parent)?;
    let canonical = child.canonicalize().ok();
    let in_chain: Vec<PathBuf> = parent
        .chain()
        .iter()
        .filter_map(|i| i.path().and_then(|p| p.canonicalize().ok()))
        .collect();
    if canonical.as_ref().is_some_and(|c| in_chain.contains(c)) {
        return Err(Error::ParentLoop {
            path: child.display().to_string(),
        });
    }
    let reference = ParentRef::for_files(child, new_parent)?;
    let open = match mode {
        RebaseMode::Safe => open.write(true),
        RebaseMode::Unsafe => open.write(true).skip_parent(true),
    };
    let mut img = open.open(child)?;
    let report = rebase_image(&mut img, parent, &reference, mode)?;
    img.close()?;
    Ok(report)
}

/// Opens the new parent read-only with its own chain; an error names it.
fn open_new_parent(path: &Path) -> Result<Image> {
    Image::open(path).map_err(|e| match e {
        Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::ParentNotFound {
                of: None,
                tried: format!(
                    "{} (given as the new parent) does not exist",
                    path.display()
                ),
            }
        }
        Error::Locked { .. } | Error::Io { .. } | Error::NotAFile { .. } => e,
        other => Error::ParentInvalid {
            parent: path.display().to_string(),
            of: None,
            cause: Box::new(other),
            tried: None,
        },
    })
}

/// Rebases `child` (open for writing; with its old parent for the safe
/// mode) onto `new_parent`, which it names as `reference` says. On
/// success the child reads through `new_parent`.
pub fn rebase_image(
    child: &mut Image,
    mut new_parent: Image,
    reference: &ParentRef,
    mode: RebaseMode,
) -> Result<RebaseReport> {
    if child.disk_type() != DiskType::Differencing {
        return Err(Error::InvalidArgument(format!(
            "a {} image; only a differencing image has a parent to change",
            child.disk_type().name()
        )));
    }
    if new_parent.size() != child.size() {
        return Err(Error::ParentSize {
            parent: new_parent.name().to_string(),
            parent_size: new_parent.size(),
            child_size: child.size(),
        });
    }
    let locators = locator_data(reference)?;
    let old_parent_name = child
        .dyn_header()
        .and_then(DynHeader::parent_name)
        .map(|n| n.unwrap_or_else(|lossy| lossy));
    let mut report = RebaseReport {
        path: child.name().to_string(),
        mode,
        old_parent_name,
        new_parent: new_parent.name().to_string(),
        new_parent_id: new_parent.footer().unique_id,
        bytes_copied: 0,
        blocks_allocated: 0,
        blocks_moved: 0,
        locators: Vec::new(),
    };
    if mode == RebaseMode::Safe {
        if child.parent().is_none() {
            return Err(Error::InvalidArgument(
                "a safe rebase reads the old parent, which was not opened".into(),
            ));
        }
        let allocated = |img: &Image| img.block_counts().map_or(0, |c| c.1 as u64);
        let before = allocated(child);
        report.bytes_copied = copy_differences(child, &mut new_parent)?;
        child.flush()?;
        report.blocks_allocated = allocated(child) - before;
    }
    child.prepare_maintenance()?;

    // Step 2: the locator data, where nothing is.
    let need: u64 = locators.iter().map(|l| l.2.len() as u64).sum();
    let bat_before = child.bat().map(<[u32]>::to_vec).unwrap_or_default();
    let at = place(child, need)?;
    report.blocks_moved = bat_before
        .iter()
        .zip(child.bat().unwrap_or_default())
        .filter(|(a, b)| a != b)
        .count() as u64;
    let mut data = Vec::with_capacity(need as usize);
    let mut entries = [LocatorEntry::default(); LOCATOR_COUNT];
    for (slot, (platform, text, padded, len)) in locators.iter().enumerate() {
        let offset = at + data.len() as u64;
        entries[slot] = LocatorEntry {
            platform_code: platform.code(),
            platform_data_space: u32::try_from(padded.len()).unwrap_or(u32::MAX),
            platform_data_length: *len,
            platform_data_offset: offset,
        };
        report.locators.push(LocatorText {
            platform: platform.name(),
            text: text.clone(),
            offset,
        });
        data.extend_from_slice(padded);
    }
    child.write_unreferenced(at, &data, None)?;

    // Step 3: the header.
    let mut header = child
        .dyn_header()
        .cloned()
        .ok_or_else(|| Error::InvalidArgument("a differencing image has a header".into()))?;
    header.parent_unique_id = new_parent.footer().unique_id;
    header.parent_time_stamp = new_parent.footer().time_stamp;
    header.parent_unicode_name = DynHeader::encode_parent_name(&reference.name)
        .or_else(|| {
            DynHeader::encode_parent_name(&reference.name.chars().take(255).collect::<String>())
        })
        .unwrap_or([0; crate::format::dyn_header::PARENT_NAME_SIZE]);
    header.parent_locators = entries;
    child.write_header(&header)?;
    // Step 4: a hole a block span long that the switch left (the old
    // locators' space next to what was cleared for the new ones) takes
    // the last block, and the file is cut.
    report.blocks_moved += super::compact::fill_holes_and_cut(child)?;
    let source = ParentSource::Caller(new_parent.name().to_string());
    child.set_parent(new_parent, source);
    Ok(report)
}

/// One locator to write: platform, text, data padded to whole sectors,
/// data length.
type NewLocator = (Platform, String, Vec<u8>, u32);

/// The locators to write.
fn locator_data(reference: &ParentRef) -> Result<Vec<NewLocator>> {
    let mut out = Vec::new();
    for (platform, text) in [
        (Platform::W2ru, &reference.relative),
        (Platform::W2ku, &reference.absolute),
    ] {
        let Some(text) = text else { continue };
        let mut data = encode_utf16le(text);
        let len = u32::try_from(data.len())
            .ok()
            .filter(|&l| l > 0 && l <= crate::format::locator::MAX_LOCATOR_DATA)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the parent path {text:?} is empty or longer than a locator holds (64 KiB)"
                ))
            })?;
        data.resize(sector_ceil(data.len() as u64) as usize, 0);
        out.push((platform, text.clone(), data, len));
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument(
            "the new parent has neither a relative nor an absolute path for a locator".into(),
        ));
    }
    Ok(out)
}

/// Where `need` bytes of locator data go: the lowest gap at least that
/// long between the footer copy and the first block that nothing
/// references (the current locators' data stays as it is until the
/// switch); else right after the metadata, with the blocks there moved
/// past the end of the file first ([`Image::make_room`]).
fn place(img: &mut Image, need: u64) -> Result<u64> {
    let regions = img.layout_regions()?;
    let first_block = regions
        .iter()
        .filter(|r| !matches!(r.what, Use::Metadata(_)))
        .map(|r| r.start)
        .min()
        .unwrap_or(img.footer_offset());
    let mut covered = FOOTER_SIZE as u64;
    for r in regions.iter().filter(|r| r.start < first_block) {
        let lo = sector_ceil(covered);
        if r.start > lo && lo + need <= r.start {
            return Ok(lo);
        }
        covered = covered.max(r.end);
    }
    let lo = sector_ceil(covered);
    if lo + need > first_block || lo + need > img.footer_offset() {
        img.make_room(lo, lo + need)?;
    }
    Ok(lo)
}

/// Step 1 of a safe rebase: copies into the child, from the old chain,
/// every sector the child does not hold where the old chain and the new
/// parent differ. Returns the guest bytes copied.
fn copy_differences(child: &mut Image, new_parent: &mut Image) -> Result<u64> {
    let size = child.size();
    let block_size = u64::from(child.block_size().unwrap_or(1));
    let blocks = size.div_ceil(block_size);
    let mut old = Vec::new();
    let mut new = Vec::new();
    let mut copied = 0;
    for block in 0..blocks {
        let start = block * block_size;
        let end = (start + block_size).min(size);
        let old_parent = child
            .parent_mut()
            .ok_or_else(|| Error::InvalidArgument("the old parent is not open".into()))?;
        let old_data = old_parent.next_data(start)?;
        let new_data = new_parent.next_data(start)?;
        if old_data.is_none_or(|d| d >= end) && new_data.is_none_or(|d| d >= end) {
            continue;
        }
        let index = usize::try_from(block).unwrap_or(usize::MAX);
        let bits = match child.bat().and_then(|b| b.get(index)) {
            Some(&e) if e != UNALLOCATED => Some(child.read_bitmap(index)?),
            _ => None,
        };
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(WINDOW);
            old.resize(n as usize, 0);
            new.resize(n as usize, 0);
            if let Some(p) = child.parent_mut() {
                p.read_at(pos, &mut old)?;
            }
            new_parent.read_at(pos, &mut new)?;
            let mut run: Option<u64> = None;
            let mut k = 0;
            while k <= n {
                let differs = k < n && {
                    let sector = (pos + k - start) / SECTOR_SIZE;
                    let held = bits.as_deref().is_some_and(|b| bitmap::get(b, sector));
                    let to = (k + SECTOR_SIZE).min(n) as usize;
                    !held && old[k as usize..to] != new[k as usize..to]
                };
                match (differs, run) {
                    (true, None) => run = Some(k),
                    (false, Some(from)) => {
                        child.write_at(pos + from, &old[from as usize..k as usize])?;
                        copied += k - from;
                        run = None;
                    }
                    _ => {}
                }
                if k == n {
                    break;
                }
                k = (k + SECTOR_SIZE).min(n);
            }
            pos += n;
        }
    }
    Ok(copied)
}
