//! The driver: open, create, read, write, flush and close fixed, dynamic
//! and differencing images. It decides what bytes go where; a
//! [`Storage`] moves them.

mod commit;
mod create;
mod cursor;
mod guarded;
mod locators;
pub(crate) mod maintenance;
mod map;
mod open;
mod parent;
mod resolver;
mod sparse;

pub use commit::CommitStats;
pub(crate) use create::relative_windows_path;
pub use create::{CreateOptions, SizeRule};
pub use cursor::Cursor;
pub(crate) use guarded::Guarded;
pub(crate) use locators::decode as decode_locators;
pub use locators::windows_path_to_local;
pub(crate) use open::file_open_error;
pub use open::{OpenOptions, probe};
pub use parent::ParentSource;
pub use resolver::ParentResolver;
/// The rule checks of `open`, shared with the checker.
pub(crate) mod rules {
    pub(crate) use super::open::{
        check_block_clear_of_metadata, check_block_in_file, check_header_place,
        check_table_aligned, check_table_clear_of_header, check_table_clear_of_locators,
        check_table_entries, check_table_in_file, locate_footer, metadata_regions, overlap,
        read_bat,
    };
}
pub(crate) use resolver::{ChainGuard, image_metadata};

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{DiskType, DynHeader, FOOTER_SIZE, Footer, SECTOR_SIZE};
use crate::rules::Finding;
use crate::storage::Storage;
use sparse::{Source, Sparse};

/// The unit a differencing image's writes are widened to (8 sectors, one
/// byte of a sector bitmap), as Windows writes children.
pub const COPY_UP_UNIT: u64 = 4096;

/// Guest bytes handled per step when a block's bitmap is walked: one step
/// holds at most this many bytes' worth of runs (2048 for 1 MiB), so
/// reading and mapping take bounded memory however fragmented a bitmap is.
const RUN_WINDOW: u64 = 1 << 20;

/// How the data of an image is laid out.
#[derive(Debug)]
enum Layout {
    /// Guest bytes at the same offsets in the file.
    Fixed,
    /// Dynamic or differencing: header, BAT, blocks.
    Sparse(Box<Sparse>),
}

/// An open VHD image (with its parent chain, for a differencing image).
///
/// Reads and writes take guest byte offsets; any alignment works. Writes
/// reach the file at once; metadata (BAT, bitmaps) is written by
/// [`Image::flush`], which [`Image::close`] and dropping also do.
pub struct Image {
    storage: Guarded,
    name: String,
    path: Option<PathBuf>,
    footer: Footer,
    footer_bytes: [u8; FOOTER_SIZE],
    /// Offset of the trailing footer (for fixed images, where data ends).
    footer_offset: u64,
    /// The footer in use is the copy at offset 0 (FTR-TRAILING).
    from_copy: bool,
    /// A differencing image writes exactly the sectors asked, without
    /// widening them to copy-up groups.
    exact_sectors: bool,
    layout: Layout,
    parent: Option<Box<Image>>,
    parent_source: Option<ParentSource>,
    writable: bool,
    findings: Vec<Finding>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("name", &self.name)
            .field("disk_type", &self.footer.disk_type)
            .field("size", &self.footer.current_size)
            .field("writable", &self.writable)
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

/// One extent of a [`Image::map`]: a guest range and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Extent {
    /// Guest offset.
    pub offset: u64,
    /// Bytes.
    pub length: u64,
    /// `true` if some image of the chain holds data here; `false` reads as zeros.
    pub data: bool,
    /// Depth in the chain of the image holding the data (0 = this image).
    pub depth: Option<usize>,
    /// Offset in that image's file.
    pub file_offset: Option<u64>,
}

impl Image {
    /// Opens an image read-only with a shared lock (parents found through
    /// their locators). See [`OpenOptions`] for more control.
    pub fn open(path: impl AsRef<Path>) -> Result<Image> {
        OpenOptions::new().open(path)
    }

    /// Opens an image for reading and writing with an exclusive lock.
    pub fn open_rw(path: impl AsRef<Path>) -> Result<Image> {
        OpenOptions::new().write(true).open(path)
    }

    /// Creates a new image at `path` (which must not exist) as `options`
    /// say, open for writing. The same as `options.create(path)`.
    pub fn create(path: impl AsRef<Path>, options: &CreateOptions) -> Result<Image> {
        options.create(path)
    }

    /// The guest size in bytes (`current_size`).
    pub fn size(&self) -> u64 {
        self.footer.current_size
    }

    /// The footer in use.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The kind of image.
    pub fn disk_type(&self) -> DiskType {
        self.footer.disk_type
    }

    /// The dynamic header, for dynamic and differencing images.
    pub fn dyn_header(&self) -> Option<&DynHeader> {
        match &self.layout {
            Layout::Sparse(s) => Some(&s.header),
            Layout::Fixed => None,
        }
    }

    /// Offset of the dynamic header in the file.
    pub fn dyn_header_offset(&self) -> Option<u64> {
        match &self.layout {
            Layout::Sparse(s) => Some(s.header_offset),
            Layout::Fixed => None,
        }
    }

    /// Block size for dynamic and differencing images.
    pub fn block_size(&self) -> Option<u32> {
        self.dyn_header().map(|h| h.block_size)
    }

    /// Number of blocks covering the disk and how many are allocated.
    pub fn block_counts(&self) -> Option<(usize, usize)> {
        match &self.layout {
            Layout::Sparse(s) => Some((s.bat.len(), s.allocated_blocks())),
            Layout::Fixed => None,
        }
    }

    /// The BAT entries covering the disk (dynamic and differencing).
    pub fn bat(&self) -> Option<&[u32]> {
        match &self.layout {
            Layout::Sparse(s) => Some(&s.bat),
            Layout::Fixed => None,
        }
    }

    /// The name used in messages (the path as given).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path the image was opened from, if it came from a file.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The parent of a differencing image.
    pub fn parent(&self) -> Option<&Image> {
        self.parent.as_deref()
    }

    /// How the parent was found.
    pub fn parent_source(&self) -> Option<&ParentSource> {
        self.parent_source.as_ref()
    }

    /// The images of the chain, this one first.
    pub fn chain(&self) -> Vec<&Image> {
        let mut out = vec![self];
        let mut cur = self;
        while let Some(p) = cur.parent() {
            out.push(p);
            cur = p;
        }
        out
    }

    /// Whether writes are allowed.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Warnings found when opening (rules of severity warning), this image only.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The storage the image reads (for the checker).
    pub(crate) fn storage(&self) -> &dyn Storage {
        &self.storage
    }

    /// Offset of the trailing footer in the file.
    pub fn footer_offset(&self) -> u64 {
        self.footer_offset
    }

    /// Reads guest bytes at `offset` into `buf`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        self.read_inner(offset, buf)
    }

    /// Reads without the range check: also the tail of the last sector of
    /// a disk whose size is not a whole number of sectors (FTR-CURRENT-SIZE),
    /// which a partial-sector write must merge with.
    fn read_inner(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let Layout::Sparse(sparse) = &mut self.layout else {
            return self
                .storage
                .read_exact_at(buf, offset)
                .map_err(|e| Error::io(format!("reading {} at offset {offset}", self.name), e));
        };
        let block_size = sparse.block_size;
        let mut pos = 0usize;
        while pos < buf.len() {
            let guest = offset + pos as u64;
            let n = (block_size - guest % block_size)
                .min(RUN_WINDOW)
                .min((buf.len() - pos) as u64) as usize;
            let Some(chunk) = buf.get_mut(pos..pos + n) else {
                break;
            };
            let runs = sparse.runs(&mut self.storage, guest, n as u64)?;
            // Where the window lies in the file, if any of it is there.
            let window_at = runs.iter().find_map(|&(o, _, s)| match s {
                Source::File(at) => Some(at - (o - guest)),
                Source::Absent => None,
            });
            let whole = window_at.filter(|_| runs.len() > 1);
            if let Some(at) = whole {
                // Many runs: one read of the whole window from the block,
                // then the sectors it does not hold are filled below.
                self.storage.read_exact_at(chunk, at).map_err(|e| {
                    Error::io(format!("reading {} at file offset {at}", self.name), e)
                })?;
            }
            for (run_off, run_len, source) in runs {
                let start = (run_off - guest) as usize;
                let Some(dst) = chunk.get_mut(start..start + run_len as usize) else {
                    break;
                };
                match source {
                    Source::File(_) if whole.is_some() => {}
                    Source::File(at) => self.storage.read_exact_at(dst, at).map_err(|e| {
                        Error::io(format!("reading {} at file offset {at}", self.name), e)
                    })?,
                    Source::Absent => match &mut self.parent {
                        Some(p) => p.read_inner(run_off, dst)?,
                        None if self.footer.disk_type == DiskType::Differencing => {
                            return Err(Error::ParentNotFound {
                                of: None,
                                tried: format!("{} was opened without its parent", self.name),
                            });
                        }
                        None => dst.fill(0),
                    },
                }
            }
            pos += n;
        }
        Ok(())
    }

    /// Writes `data` at guest `offset`. Partial sectors are merged with what
    /// the disk reads there. A differencing image never writes its parent.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                reason: format!("{} was opened read-only", self.name),
            });
        }
        self.check_not_failed()?;
        self.check_range(offset, data.len() as u64)?;
        if matches!(self.layout, Layout::Fixed) {
            return self
                .storage
                .write_all_at(data, offset)
                .map_err(|e| Error::io(format!("writing {} at offset {offset}", self.name), e));
        }
        let mut pos = 0usize;
        while pos < data.len() {
            let guest = offset + pos as u64;
            let rest = &data[pos..];
            let in_sector = guest % SECTOR_SIZE;
            if in_sector != 0 || (rest.len() as u64) < SECTOR_SIZE {
                // A partial sector: read, merge, write back whole.
                let start = guest - in_sector;
                let mut sector = [0u8; SECTOR_SIZE as usize];
                self.read_inner(start, &mut sector)?;
                let n = ((SECTOR_SIZE - in_sector) as usize).min(rest.len());
                sector[in_sector as usize..in_sector as usize + n].copy_from_slice(&rest[..n]);
                self.write_sectors(start, &sector)?;
                pos += n;
            } else {
                let n = (rest.len() as u64 / SECTOR_SIZE * SECTOR_SIZE) as usize;
                self.write_sectors(guest, &rest[..n])?;
                pos += n;
            }
        }
        Ok(())
    }

    /// A handle for writing the guest disk from several threads at once
    /// (see [`crate::convert::Sink::shared`]): only a fixed image open
    /// for writing, whose guest bytes sit at the same offsets in its file,
    /// on a storage that allows it and whose syncs have not failed. The
    /// footer, which follows the guest bytes, is out of its reach.
    pub(crate) fn shared_sink(&mut self) -> Option<crate::convert::SharedSink<'_>> {
        if !self.writable || !matches!(self.layout, Layout::Fixed) {
            return None;
        }
        let limit = self.size();
        let writer = self.storage.shared_writer()?;
        Some(crate::convert::SharedSink::new(writer, &self.name, limit))
    }

    /// Whole sectors at a sector-aligned guest offset, block by block. In a
    /// differencing image each piece is first widened to whole groups of
    /// [`COPY_UP_UNIT`] bytes (see [`Image::set_exact_sectors`]).
    fn write_sectors(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let Layout::Sparse(sparse) = &self.layout else {
            return Err(Error::InvalidArgument(
                "write_sectors on a fixed image".into(),
            ));
        };
        let block_size = sparse.block_size;
        let copy_up = self.footer.disk_type == DiskType::Differencing && !self.exact_sectors;
        let mut pos = 0usize;
        while pos < data.len() {
            let guest = offset + pos as u64;
            let n = (block_size - guest % block_size).min((data.len() - pos) as u64) as usize;
            let piece = &data[pos..pos + n];
            if copy_up {
                self.write_copied_up(guest, piece)?;
            } else {
                self.write_block(guest, piece)?;
            }
            pos += n;
        }
        Ok(())
    }

    fn write_block(&mut self, guest: u64, data: &[u8]) -> Result<()> {
        let Layout::Sparse(sparse) = &mut self.layout else {
            return Err(Error::InvalidArgument(
                "write_block on a fixed image".into(),
            ));
        };
        let result = sparse.write_block(&mut self.storage, &self.footer_bytes, guest, data);
        // An allocation moved the trailing footer to the new end of file.
        if sparse.next_free > self.footer_offset {
            self.footer_offset = sparse.next_free;
        }
        result
    }

    /// Writes `data` (whole sectors inside one block) widened to whole
    /// copy-up groups: the sectors of the groups it only partly covers are
    /// written too, with what the disk reads there now (the parent's data,
    /// or this image's own), so the bitmap never holds part of a group.
    /// Readers that judge a group by its bitmap byte (libvhdi) then read
    /// the child right. The extra sectors keep their contents, so a crash
    /// leaves them old (which is also new).
    fn write_copied_up(&mut self, guest: u64, data: &[u8]) -> Result<()> {
        let Layout::Sparse(sparse) = &self.layout else {
            return self.write_block(guest, data);
        };
        let block_size = sparse.block_size;
        let block_start = guest - guest % block_size;
        let disk_end = self.size().div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
        let block_end = (block_start + block_size).min(disk_end);
        let end = guest + data.len() as u64;
        let start = (guest - guest % COPY_UP_UNIT).max(block_start);
        let stop = end
            .div_ceil(COPY_UP_UNIT)
            .saturating_mul(COPY_UP_UNIT)
            .min(block_end)
            .max(end);
        if start == guest && stop == end {
            return self.write_block(guest, data);
        }
        let len = usize::try_from(stop - start)
            .map_err(|_| Error::InvalidArgument("copy-up group too large".into()))?;
        let mut buf = vec![0u8; len];
        let head = (guest - start) as usize;
        let tail = (end - start) as usize;
        self.read_inner(start, &mut buf[..head])?;
        self.read_inner(end, &mut buf[tail..])?;
        buf[head..tail].copy_from_slice(data);
        self.write_block(start, &buf)
    }
    /// Makes every write so far durable, writing metadata in the documented
    /// order (see the `sparse` module). A no-op on read-only images.
    ///
    /// # Errors and retries
    ///
    /// A failed write (of data or metadata) leaves the metadata that was
    /// not written dirty in memory, so a later flush tries it again and a
    /// flush that returns `Ok` always means everything is durable. A
    /// failed *sync* is different: the system may have dropped written
    /// pages without saying which, so a later sync could succeed without
    /// them. After a failed sync the image is in a failed state: every
    /// later write, flush and close fails with [`Error::Failed`] until the
    /// image is reopened. What is on disk stays consistent by the write
    /// order (every sector reads its old or its new contents).
    pub fn flush(&mut self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        self.check_not_failed()?;
        let result = match &mut self.layout {
            Layout::Sparse(sparse) => sparse.write_metadata(&mut self.storage),
            Layout::Fixed => Ok(()),
        }
        .and_then(|()| {
            self.storage
                .sync()
                .map_err(|e| Error::io(format!("syncing {}", self.name), e))
        });
        match result {
            Err(_) if self.storage.failed().is_some() => Err(self.failed_error()),
            other => other,
        }
    }

    /// How a differencing image writes: by default each write is widened
    /// to whole groups of [`COPY_UP_UNIT`] bytes (the rest of a group is
    /// copied up from what the disk reads there), as Windows writes
    /// children, so that readers which judge a group by its bitmap byte
    /// read the child right (libvhdi, spec/divergences.md D3). With
    /// `exact`, only the sectors written are set, for building test cases.
    /// No effect on fixed and dynamic images.
    pub fn set_exact_sectors(&mut self, exact: bool) {
        self.exact_sectors = exact;
    }

    /// Whether a sync failed earlier (see [`Image::flush`]).
    pub fn is_failed(&self) -> bool {
        self.storage.failed().is_some()
    }

    fn check_not_failed(&self) -> Result<()> {
        if self.is_failed() {
            Err(self.failed_error())
        } else {
            Ok(())
        }
    }

    fn failed_error(&self) -> Error {
        Error::Failed {
            name: self.name.clone(),
            cause: self.storage.failed().unwrap_or_default().to_string(),
        }
    }

    /// Flushes and closes, reporting any error (dropping also flushes, but
    /// can only ignore errors).
    pub fn close(mut self) -> Result<()> {
        let result = self.flush();
        self.writable = false;
        result
    }

    /// Returns the storage (after a flush), for tests that reopen images
    /// kept in memory.
    pub fn into_storage(mut self) -> Result<Box<dyn Storage>> {
        self.flush()?;
        self.writable = false;
        let storage = std::mem::replace(
            &mut self.storage,
            Guarded::new(Box::new(crate::storage::MemStorage::new())),
        );
        Ok(storage.into_inner())
    }

    /// Takes the parent out of the image (used by commit and by tests).
    pub fn take_parent(&mut self) -> Option<Image> {
        self.parent.take().map(|b| *b)
    }

    /// A `Read + Write + Seek` view of the guest disk.
    pub fn cursor(&mut self) -> Cursor<'_> {
        Cursor::new(self)
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(Error::OutOfRange { offset, len, size }),
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if self.writable {
            // Best effort: callers who care about errors call close().
            let _ = self.flush();
        }
    }
}
