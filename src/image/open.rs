//! Opening an image: find the footer, validate every size, offset and
//! count against the file before using it, load the BAT, resolve the parent.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, count};
use crate::format::bat::{UNALLOCATED, bat_size_on_disk, parse_bat};
use crate::format::{
    DYN_HEADER_SIZE, DiskType, DynHeader, FOOTER_SIZE, Footer, MAX_BLOCKS, SECTOR_SIZE,
};
use crate::rules::{self, Finding, Rule};
use crate::storage::{FileStorage, LockMode, OpenError, Storage};

use super::parent::{self, ParentSource};
use super::resolver::{ChainGuard, ParentResolver, file_id, image_metadata};
use super::sparse::{DEFAULT_BITMAP_CACHE_BYTES, Sparse};
use super::{Image, Layout};

/// How deep a chain may be (PAR-DEPTH).
pub const MAX_CHAIN_DEPTH: usize = 64;

/// Options for opening an image.
///
/// ```no_run
/// use vhdref::OpenOptions;
/// let mut img = OpenOptions::new().write(true).open("disk.vhd")?;
/// img.write_at(0, &[1, 2, 3])?;
/// img.close()?;
/// # Ok::<(), vhdref::Error>(())
/// ```
#[derive(Default)]
#[allow(clippy::struct_excessive_bools)] // independent switches of a builder
pub struct OpenOptions {
    pub(crate) write: bool,
    pub(crate) parent_path: Option<PathBuf>,
    pub(crate) parent_image: Option<Image>,
    pub(crate) ignore_parent_id: bool,
    pub(crate) resolver: ParentResolver,
    pub(crate) parent_writable: bool,
    pub(crate) skip_parent: bool,
    pub(crate) bitmap_cache_bytes: Option<u64>,
    /// Open each parent as a layer of its own, without its chain (the
    /// checker walks the chain one link at a time).
    pub(crate) parent_layer_only: bool,
    /// Read only what the parent references need (footer, header), not
    /// the BAT: for the checker, to walk the chain of an image whose own
    /// blocks are broken. Such an image cannot be read.
    pub(crate) references_only: bool,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("write", &self.write)
            .field("parent_path", &self.parent_path)
            .field("ignore_parent_id", &self.ignore_parent_id)
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

impl OpenOptions {
    /// Read-only, parents found through locators, IDs checked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Open for writing (exclusive lock) instead of reading (shared lock).
    #[must_use]
    pub fn write(mut self, write: bool) -> Self {
        self.write = write;
        self
    }

    /// Use this file as the parent of a differencing image, before any
    /// locator (step 1 of the resolution order).
    #[must_use]
    pub fn parent(mut self, path: impl Into<PathBuf>) -> Self {
        self.parent_path = Some(path.into());
        self
    }

    /// Use this already-open image as the parent (for images in memory).
    #[must_use]
    pub fn parent_image(mut self, parent: Image) -> Self {
        self.parent_image = Some(parent);
        self
    }

    /// Accept a parent whose unique ID differs from the one the child
    /// records (PAR-UNIQUE-ID becomes a warning). For people who know better.
    #[must_use]
    pub fn ignore_parent_id(mut self, ignore: bool) -> Self {
        self.ignore_parent_id = ignore;
        self
    }

    /// Follow locators only to files inside these directories. By default
    /// a locator may point anywhere the caller could open; with this set,
    /// a locator outside is reported in the PAR-NOT-FOUND error, never
    /// followed silently. The same as
    /// `resolver(ParentResolver::new().allow_dirs(dirs))`.
    #[must_use]
    pub fn allow_parent_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.resolver = ParentResolver::new().allow_dirs(dirs);
        self
    }

    /// The policy for following parent references (locators and the
    /// parent name): anywhere (the default), inside some directories, or
    /// nowhere ([`ParentResolver::deny_all`]).
    #[must_use]
    pub fn resolver(mut self, resolver: ParentResolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// Open a differencing image without looking for its parent, to
    /// inspect a child whose parent is missing or wrong. Reading a sector
    /// the child does not hold then fails with PAR-NOT-FOUND.
    #[must_use]
    pub fn skip_parent(mut self, skip: bool) -> Self {
        self.skip_parent = skip;
        self
    }

    /// Bytes of sector bitmaps to keep in memory (default 32 MiB, at least
    /// one bitmap is always kept). When the cache is full, dirty bitmaps and
    /// BAT entries are written in the flush order and the cache is emptied,
    /// so memory stays bounded on any image size.
    #[must_use]
    pub fn bitmap_cache_bytes(mut self, bytes: u64) -> Self {
        self.bitmap_cache_bytes = Some(bytes);
        self
    }

    /// Open the direct parent for writing too, with an exclusive lock
    /// (what commit does).
    #[must_use]
    pub fn parent_writable(mut self, yes: bool) -> Self {
        self.parent_writable = yes;
        self
    }

    /// Opens the image file at `path`, locking it.
    pub fn open(self, path: impl AsRef<Path>) -> Result<Image> {
        let path = path.as_ref();
        let meta = image_metadata(path, true)?;
        let mut guard = ChainGuard::default();
        guard.enter(Some(file_id(path, &meta)), &path.display().to_string())?;
        let image = self.open_layer_file(path)?;
        self.finish(image, &mut guard)
    }

    /// Opens an image held by any storage; `name` is used in messages.
    /// Relative parent references are taken relative to the current
    /// directory unless the parent is given with [`OpenOptions::parent`]
    /// or [`OpenOptions::parent_image`]; [`ParentResolver::deny_all`]
    /// turns lookups off.
    pub fn open_storage(self, storage: Box<dyn Storage>, name: impl Into<String>) -> Result<Image> {
        self.open_created(storage, name.into(), None)
    }

    /// Opens an image in `storage` that was made at `path` (if any).
    pub(crate) fn open_created(
        self,
        storage: Box<dyn Storage>,
        name: String,
        path: Option<PathBuf>,
    ) -> Result<Image> {
        let mut guard = ChainGuard::default();
        guard.enter(None, &name)?;
        let image = self.open_layer(storage, name, path)?;
        self.finish(image, &mut guard)
    }

    /// Attaches the parent chain, then refuses a write open that only the
    /// footer copy allows: every error that stops a read-only open comes
    /// first.
    fn finish(mut self, mut image: Image, guard: &mut ChainGuard) -> Result<Image> {
        self.attach_parent(&mut image, guard)?;
        self.check_writable(&image)?;
        Ok(image)
    }

    /// The options a parent of an image opened with these options is
    /// opened with: for writing only if `parent_writable`, the same
    /// resolver, parent ID policy and bitmap cache size.
    pub(crate) fn clone_for_parent(&self) -> OpenOptions {
        OpenOptions {
            write: self.parent_writable,
            ignore_parent_id: self.ignore_parent_id,
            resolver: self.resolver.clone(),
            skip_parent: self.parent_layer_only,
            parent_layer_only: self.parent_layer_only,
            bitmap_cache_bytes: self.bitmap_cache_bytes,
            ..OpenOptions::default()
        }
    }

    /// Opens one image file, its own rules only (no parent).
    pub(crate) fn open_layer_file(&self, path: &Path) -> Result<Image> {
        let storage = FileStorage::open(path, self.write).map_err(|e| file_open_error(path, e))?;
        self.open_layer(
            Box::new(storage),
            path.display().to_string(),
            Some(path.to_path_buf()),
        )
    }

    /// Finds and checks the parent of a differencing image (unless told
    /// to skip it).
    pub(crate) fn attach_parent(
        &mut self,
        image: &mut Image,
        guard: &mut ChainGuard,
    ) -> Result<()> {
        if image.footer.disk_type != DiskType::Differencing
            || (self.skip_parent && self.parent_image.is_none())
        {
            return Ok(());
        }
        let found = match (self.parent_image.take(), &self.parent_path) {
            (Some(p), _) => {
                let name = p.name().to_string();
                Ok((p, ParentSource::Caller(name)))
            }
            (None, Some(path)) => ParentResolver::open_given(image, path, self, guard),
            (None, None) => self.resolver.find(image, self, guard),
        };
        let (parent, source) = match found {
            // Off, a child whose parent is not found opens without it.
            Err(e) if e.rule() == Some(Rule::ParNotFound) && rules::disabled(Rule::ParNotFound) => {
                return Ok(());
            }
            found => found?,
        };
        parent::check_parent(image, &parent, self.ignore_parent_id)?;
        image.parent = Some(Box::new(parent));
        image.parent_source = Some(source);
        Ok(())
    }

    /// A write open of an image readable only through its footer copy is
    /// refused (FTR-TRAILING).
    pub(crate) fn check_writable(&self, image: &Image) -> Result<()> {
        if self.write && image.from_copy && !rules::disabled(Rule::FtrTrailing) {
            return Err(Error::ReadOnly {
                reason: format!(
                    "{}: the trailing footer is damaged and only the copy at offset 0 is valid (FTR-TRAILING); it can be opened read-only, or repaired",
                    image.name
                ),
            });
        }
        Ok(())
    }

    /// Opens the image in `storage` under its own rules: footer, header,
    /// BAT. The parent is left for [`OpenOptions::attach_parent`].
    pub(crate) fn open_layer(
        &self,
        storage: Box<dyn Storage>,
        name: String,
        path: Option<PathBuf>,
    ) -> Result<Image> {
        let mut findings = Vec::new();
        let located = locate_footer(&*storage, &mut findings)?;
        let footer = located.footer;
        findings.extend(footer.lint());
        let layout = match footer.disk_type {
            DiskType::Fixed => {
                let data_len = located.offset;
                if data_len < footer.current_size && !rules::disabled(Rule::FtrFixedLength) {
                    return Err(Error::FixedLength {
                        current_size: footer.current_size,
                        data_len,
                    });
                }
                if data_len > footer.current_size && !rules::disabled(Rule::FtrFixedSlack) {
                    findings.push(Finding::new(
                        Rule::FtrFixedSlack,
                        format!(
                            "{} between the end of the data ({}) and the footer",
                            count(data_len - footer.current_size, "byte lies", "bytes lie"),
                            footer.current_size
                        ),
                    ));
                }
                Layout::Fixed
            }
            DiskType::Dynamic | DiskType::Differencing if self.references_only => Layout::Sparse(
                Box::new(load_references(&*storage, &footer, located.offset)?),
            ),
            DiskType::Dynamic | DiskType::Differencing => Layout::Sparse(Box::new(load_sparse(
                self.bitmap_cache_bytes
                    .unwrap_or(DEFAULT_BITMAP_CACHE_BYTES),
                &*storage,
                &footer,
                located.offset,
                &mut findings,
            )?)),
        };
        Ok(Image {
            storage: super::Guarded::new(storage),
            name,
            path,
            footer_bytes: footer.to_bytes(),
            footer,
            footer_offset: located.offset,
            from_copy: located.from_copy,
            exact_sectors: false,
            layout,
            parent: None,
            parent_source: None,
            writable: self.write,
            findings,
        })
    }
}

/// What kind of VHD the bytes in `storage` are, judged by the footer
/// alone: `Some` when the last 512 bytes (or 511, for a fixed image) are a
/// valid footer or the copy at offset 0 is a valid dynamic or
/// differencing footer; `None` when no valid footer is where one belongs
/// (a raw disk). Nothing past the footer is read, so a VHD whose header,
/// BAT or parent is broken is still a VHD here, and opening it then says
/// what is wrong; tools that detect the format (`convert --from auto`)
/// must never take such a file for a raw disk.
pub fn probe(storage: &dyn Storage) -> Result<Option<DiskType>> {
    match locate_footer(storage, &mut Vec::new()) {
        Ok(located) => Ok(Some(located.footer.disk_type)),
        Err(e @ Error::Io { .. }) => Err(e),
        Err(_) => Ok(None),
    }
}

/// Turns a storage open failure into an error naming the image.
pub(crate) fn file_open_error(path: &Path, e: OpenError) -> Error {
    match e {
        OpenError::Io(e) => Error::io(format!("opening {}", path.display()), e),
        OpenError::Locked(mode) => Error::Locked {
            path: path.display().to_string(),
            reason: lock_name(mode).to_string(),
        },
    }
}

/// The footer in use and where it is.
pub(crate) struct Located {
    pub(crate) footer: Footer,
    /// Offset of the trailing footer (or where it should be).
    pub(crate) offset: u64,
    /// The footer came from the copy at offset 0.
    pub(crate) from_copy: bool,
}

/// Finds the footer: the last 512 bytes; else a 511-byte footer of an old
/// fixed image; else the copy at offset 0 of a dynamic or differencing
/// image (read-only, FTR-TRAILING). The first error is the one reported.
pub(crate) fn locate_footer(storage: &dyn Storage, findings: &mut Vec<Finding>) -> Result<Located> {
    let len = storage
        .len()
        .map_err(|e| Error::io("reading the file length", e))?;
    if len < FOOTER_SIZE as u64 - 1 && !rules::disabled(Rule::FtrSize) {
        return Err(Error::FooterSize { len });
    }
    let read = |offset: u64, n: usize| -> Result<[u8; FOOTER_SIZE]> {
        let mut buf = [0u8; FOOTER_SIZE];
        storage
            .read_exact_at(&mut buf[..n], offset)
            .map_err(|e| Error::io("reading the footer", e))?;
        Ok(buf)
    };
    let trailing = if len >= FOOTER_SIZE as u64 || rules::disabled(Rule::FtrSize) {
        Footer::parse(&read(len - FOOTER_SIZE as u64, FOOTER_SIZE)?)
    } else {
        Err(Error::FooterSize { len })
    };
    let first_error = match trailing {
        Ok(footer) => {
            let offset = len - FOOTER_SIZE as u64;
            if footer.disk_type.is_sparse() {
                let copy = Footer::parse(&read(0, FOOTER_SIZE)?);
                if copy.as_ref().ok() != Some(&footer) && !rules::disabled(Rule::FtrCopyMismatch) {
                    findings.push(Finding::new(
                        Rule::FtrCopyMismatch,
                        match copy {
                            Ok(_) => "the footer copy at offset 0 differs from the trailing footer"
                                .to_string(),
                            Err(e) => format!("the footer copy at offset 0 is not valid: {e}"),
                        },
                    ));
                }
            }
            return Ok(Located {
                footer,
                offset,
                from_copy: false,
            });
        }
        Err(e) => e,
    };
    // An old writer's 511-byte footer: the missing last byte is reserved.
    let short = Footer::parse(&read(len - (FOOTER_SIZE as u64 - 1), FOOTER_SIZE - 1)?);
    if let Ok(footer) = short
        && footer.disk_type == DiskType::Fixed
    {
        findings.extend(rules::enforced(Finding::new(
            Rule::Ftr511,
            "the footer is 511 bytes long",
        )));
        return Ok(Located {
            footer,
            offset: len - (FOOTER_SIZE as u64 - 1),
            from_copy: false,
        });
    }
    if len < FOOTER_SIZE as u64 * 2 {
        // No room for a copy at offset 0 besides the trailing footer.
        return Err(first_error);
    }
    let copy_note = match Footer::parse(&read(0, FOOTER_SIZE)?) {
        Ok(footer) if footer.disk_type.is_sparse() => {
            findings.extend(rules::enforced(Finding::new(
                Rule::FtrTrailing,
                format!(
                    "the trailing footer is not valid ({first_error}); using the copy at offset 0, read-only"
                ),
            )));
            return Ok(Located {
                footer,
                offset: len,
                from_copy: true,
            });
        }
        Ok(_) => "; offset 0 holds a valid fixed-disk footer, which belongs only at the end of a fixed image".to_string(),
        Err(Error::FooterCookie { .. }) => ", nor at offset 0".to_string(),
        Err(e) => format!("; the footer copy at offset 0 is not valid either: {}", e.text_without_rule()),
    };
    match first_error {
        Error::FooterCookie { found, .. } => Err(Error::FooterCookie {
            found,
            copy: copy_note,
        }),
        other => Err(other),
    }
}

/// Reads and validates the dynamic header and the BAT. Each rule is a
/// small check below, in the order they are applied.
fn load_sparse(
    cache_limit: u64,
    storage: &dyn Storage,
    footer: &Footer,
    footer_offset: u64,
    findings: &mut Vec<Finding>,
) -> Result<Sparse> {
    let header_offset = footer.data_offset;
    check_header_place(header_offset, footer_offset)?;
    let mut bytes = [0u8; DYN_HEADER_SIZE];
    storage
        .read_exact_at(&mut bytes, header_offset)
        .map_err(|e| Error::io("reading the dynamic header", e))?;
    let header = DynHeader::parse(&bytes, header_offset)?;
    findings.extend(header.lint());

    let used = check_table_entries(&header, footer.current_size)?;
    check_table_place(&header, header_offset, footer_offset)?;
    let mut bat = read_bat(storage, header.table_offset, used)?;
    let regions = metadata_regions(&header, header_offset, footer.disk_type, footer_offset);
    if footer.disk_type == DiskType::Differencing {
        check_table_clear_of_locators(&header)?;
    }
    let blocks_end = check_blocks(
        &mut bat,
        header.bitmap_size() + u64::from(header.block_size),
        &regions,
        footer_offset,
        &|| read_bat(storage, header.table_offset, used),
    )?;
    // New blocks go where the trailing footer is, past everything else.
    let next_free = regions
        .iter()
        .map(|r| r.1)
        .chain([footer_offset, blocks_end])
        .map(|end| end.div_ceil(SECTOR_SIZE) * SECTOR_SIZE)
        .max()
        .unwrap_or(footer_offset);
    Ok(Sparse::new(
        header,
        header_offset,
        bat,
        next_free,
        cache_limit,
    ))
}

/// The header of a dynamic or differencing image for its parent references
/// only (see `OpenOptions::references_only`): the header's place and its
/// hard rules but its checksum; no BAT (the image holds no block).
fn load_references(storage: &dyn Storage, footer: &Footer, footer_offset: u64) -> Result<Sparse> {
    let header_offset = footer.data_offset;
    check_header_place(header_offset, footer_offset)?;
    let mut bytes = [0u8; DYN_HEADER_SIZE];
    storage
        .read_exact_at(&mut bytes, header_offset)
        .map_err(|e| Error::io("reading the dynamic header", e))?;
    let header = DynHeader::parse_ignoring_checksum(&bytes, header_offset)?;
    Ok(Sparse::new(
        header,
        header_offset,
        Vec::new(),
        footer_offset,
        DEFAULT_BITMAP_CACHE_BYTES,
    ))
}

/// FTR-DATA-OFFSET: the header lies after the footer copy and before the
/// trailing footer.
pub(crate) fn check_header_place(header_offset: u64, footer_offset: u64) -> Result<()> {
    let header_end = header_offset.checked_add(DYN_HEADER_SIZE as u64);
    if (header_offset < FOOTER_SIZE as u64 || header_end.is_none_or(|end| end > footer_offset))
        && !rules::disabled(Rule::FtrDataOffset)
    {
        return Err(Error::FooterDataOffset {
            offset: header_offset,
            reason: format!(
                "does not leave room for a 1024-byte dynamic header between the footer copy and the trailing footer at {footer_offset:#x}"
            ),
        });
    }
    Ok(())
}

/// HDR-MAX-TABLE-ENTRIES: the table covers the disk, which has at most
/// [`MAX_BLOCKS`] blocks. Returns the number of blocks of the disk.
pub(crate) fn check_table_entries(header: &DynHeader, current_size: u64) -> Result<u64> {
    let block_size = u64::from(header.block_size);
    let used = current_size.div_ceil(block_size);
    if used > MAX_BLOCKS && !rules::disabled(Rule::HdrMaxTableEntries) {
        return Err(Error::MaxTableEntries {
            entries: header.max_table_entries,
            reason: format!(
                "the disk needs {used} blocks of {block_size} bytes, more than the bound of {MAX_BLOCKS}"
            ),
        });
    }
    if u64::from(header.max_table_entries) < used && !rules::disabled(Rule::HdrMaxTableEntries) {
        return Err(Error::MaxTableEntries {
            entries: header.max_table_entries,
            reason: format!(
                "current size {current_size} needs {} of {block_size} bytes",
                count(used, "block", "blocks")
            ),
        });
    }
    Ok(used)
}

/// HDR-TABLE-OFFSET: the whole table lies inside the file, sector aligned,
/// clear of the footers and the header. Checked before any of it is read,
/// so a huge `max_table_entries` costs nothing.
fn check_table_place(header: &DynHeader, header_offset: u64, footer_offset: u64) -> Result<()> {
    check_table_in_file(header, footer_offset)?;
    check_table_aligned(header)?;
    check_table_clear_of_header(header, header_offset)
}

/// HDR-TABLE-OFFSET, part 1: the table lies between the footer copy and
/// the trailing footer.
pub(crate) fn check_table_in_file(header: &DynHeader, footer_offset: u64) -> Result<()> {
    let table_offset = header.table_offset;
    let table_bytes = u64::from(header.max_table_entries) * 4;
    let table_end = table_offset.checked_add(table_bytes);
    if (table_offset < FOOTER_SIZE as u64 || table_end.is_none_or(|end| end > footer_offset))
        && !rules::disabled(Rule::HdrTableOffset)
    {
        return Err(Error::TableOffset {
            offset: table_offset,
            reason: format!(
                "a table of {} ({table_bytes} bytes) does not fit between the footer copy and the trailing footer at {footer_offset:#x}",
                count(u64::from(header.max_table_entries), "entry", "entries")
            ),
        });
    }
    Ok(())
}

/// HDR-TABLE-OFFSET, part 2: the table starts on a sector boundary.
pub(crate) fn check_table_aligned(header: &DynHeader) -> Result<()> {
    if header.table_offset.is_multiple_of(SECTOR_SIZE) || rules::disabled(Rule::HdrTableOffset) {
        Ok(())
    } else {
        Err(Error::TableOffset {
            offset: header.table_offset,
            reason: "is not sector aligned".to_string(),
        })
    }
}

/// HDR-TABLE-OFFSET, part 3: the table does not overlap the header.
pub(crate) fn check_table_clear_of_header(header: &DynHeader, header_offset: u64) -> Result<()> {
    let table_offset = header.table_offset;
    let table_end = table_offset.saturating_add(u64::from(header.max_table_entries) * 4);
    if table_offset < header_offset.saturating_add(DYN_HEADER_SIZE as u64)
        && header_offset < table_end
        && !rules::disabled(Rule::HdrTableOffset)
    {
        return Err(Error::TableOffset {
            offset: table_offset,
            reason: format!("overlaps the dynamic header at {header_offset:#x}"),
        });
    }
    Ok(())
}

/// HDR-TABLE-OFFSET: the BAT shares no byte with the data of a parent
/// locator (judged by the data length alone, so a doubtful data space
/// never makes a false overlap).
pub(crate) fn check_table_clear_of_locators(header: &DynHeader) -> Result<()> {
    let table = header.table_offset
        ..(header.table_offset).saturating_add(u64::from(header.max_table_entries) * 4);
    for (i, loc) in header.parent_locators.iter().enumerate() {
        let start = loc.platform_data_offset;
        let Some(end) = start.checked_add(u64::from(loc.platform_data_length)) else {
            continue;
        };
        if loc.is_used()
            && start < table.end
            && table.start < end
            && !rules::disabled(Rule::HdrTableOffset)
        {
            return Err(Error::TableOffset {
                offset: header.table_offset,
                reason: format!("overlaps the data of parent locator {i} at {start:#x}"),
            });
        }
    }
    Ok(())
}

/// The regions blocks must not overlap: the footer copy, the header, the
/// BAT and (differencing) the locator data that lies inside the file.
pub(crate) fn metadata_regions(
    header: &DynHeader,
    header_offset: u64,
    disk_type: DiskType,
    footer_offset: u64,
) -> Vec<(u64, u64, String)> {
    let table_offset = header.table_offset;
    let mut regions = vec![
        (0, FOOTER_SIZE as u64, "the footer copy".to_string()),
        (
            header_offset,
            header_offset + DYN_HEADER_SIZE as u64,
            "the dynamic header".to_string(),
        ),
        (
            table_offset,
            table_offset
                + bat_size_on_disk(header.max_table_entries).min(footer_offset - table_offset),
            "the BAT".to_string(),
        ),
    ];
    if disk_type == DiskType::Differencing {
        for (i, loc) in header.parent_locators.iter().enumerate() {
            if !loc.is_used() {
                continue;
            }
            let start = loc.platform_data_offset;
            let len = loc
                .data_space_bytes()
                .max(u64::from(loc.platform_data_length));
            if let Some(end) = start.checked_add(len).filter(|&end| end <= footer_offset) {
                regions.push((start, end, format!("parent locator {i}")));
            }
        }
    }
    regions
}

/// Reads `count` BAT entries at `offset`, 64 KiB at a time: memory is the
/// entries themselves and one small buffer.
pub(crate) fn read_bat(storage: &dyn Storage, offset: u64, count: u64) -> Result<Vec<u32>> {
    const CHUNK_ENTRIES: u64 = 16 * 1024;
    let mut bat = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut buf = Vec::new();
    let mut done = 0;
    while done < count {
        let n = CHUNK_ENTRIES.min(count - done);
        buf.resize(usize::try_from(n * 4).unwrap_or(0), 0);
        storage
            .read_exact_at(&mut buf, offset + done * 4)
            .map_err(|e| Error::io("reading the BAT", e))?;
        bat.extend(parse_bat(&buf));
        done += n;
    }
    Ok(bat)
}

/// BAT-ENTRY-BEYOND-EOF and BAT-ENTRY-OVERLAP for every allocated block
/// (bitmap and data, `span` bytes). Returns where the last block ends.
///
/// Memory stays at the BAT itself: blocks allocated in the order of their
/// index (the common case) are checked in one pass; otherwise the BAT is
/// sorted in place to find overlaps and then read again (`reread`), so no
/// second table of the size of the BAT is ever made.
fn check_blocks(
    bat: &mut Vec<u32>,
    span: u64,
    regions: &[(u64, u64, String)],
    footer_offset: u64,
    reread: &dyn Fn() -> Result<Vec<u32>>,
) -> Result<u64> {
    let block_at = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
    let mut in_order = true;
    let mut last: Option<(u64, u32, u32)> = None; // end, block, entry
    let mut blocks_end = 0;
    for (i, &entry) in bat.iter().enumerate() {
        if entry == UNALLOCATED {
            continue;
        }
        let start = u64::from(entry) * SECTOR_SIZE;
        let end = start + span;
        check_block_in_file(block_at(i), entry, span, footer_offset)?;
        check_block_clear_of_metadata(block_at(i), entry, span, regions)?;
        blocks_end = blocks_end.max(end);
        match last {
            Some((prev_end, prev_block, prev_entry)) if in_order => {
                if start < prev_end - span {
                    in_order = false;
                } else if start < prev_end && !rules::disabled(Rule::BatEntryOverlap) {
                    return Err(overlap(block_at(i), entry, prev_block, prev_entry));
                }
            }
            _ => {}
        }
        last = Some((end, block_at(i), entry));
    }
    if in_order {
        return Ok(blocks_end);
    }
    bat.sort_unstable();
    let pair = bat
        .windows(2)
        .find(|w| {
            w[1] != UNALLOCATED
                && u64::from(w[0]) * SECTOR_SIZE + span > u64::from(w[1]) * SECTOR_SIZE
        })
        .map(|w| (w[0], w[1]));
    *bat = reread()?;
    if let Some((first, second)) = pair.filter(|_| !rules::disabled(Rule::BatEntryOverlap)) {
        // Name the two blocks: the first index holding each entry (two
        // different indices when the entries are equal).
        let a = bat.iter().position(|&e| e == first).unwrap_or(0);
        let b = bat
            .iter()
            .enumerate()
            .position(|(i, &e)| e == second && i != a)
            .unwrap_or(0);
        let (a, b) = (a.min(b), a.max(b));
        let entry = |i: usize| bat.get(i).copied().unwrap_or(UNALLOCATED);
        return Err(overlap(block_at(b), entry(b), block_at(a), entry(a)));
    }
    Ok(blocks_end)
}

/// BAT-ENTRY-BEYOND-EOF for one allocated block: it ends before the
/// trailing footer.
pub(crate) fn check_block_in_file(
    block: u32,
    entry: u32,
    span: u64,
    footer_offset: u64,
) -> Result<()> {
    let end = u64::from(entry) * SECTOR_SIZE + span;
    if end > footer_offset && !rules::disabled(Rule::BatEntryBeyondEof) {
        return Err(Error::BatEntryBeyondEof {
            block,
            sector: entry,
            end,
            limit: footer_offset,
        });
    }
    Ok(())
}

/// BAT-ENTRY-OVERLAP for one allocated block against the metadata
/// `regions` (see [`metadata_regions`]).
pub(crate) fn check_block_clear_of_metadata(
    block: u32,
    entry: u32,
    span: u64,
    regions: &[(u64, u64, String)],
) -> Result<()> {
    let start = u64::from(entry) * SECTOR_SIZE;
    let end = start + span;
    match regions.iter().find(|(rs, re, _)| start < *re && *rs < end) {
        Some((_, _, what)) if !rules::disabled(Rule::BatEntryOverlap) => {
            Err(Error::BatEntryOverlap {
                block,
                sector: entry,
                other: what.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// BAT-ENTRY-OVERLAP between two blocks.
pub(crate) fn overlap(block: u32, sector: u32, other_block: u32, other_sector: u32) -> Error {
    Error::BatEntryOverlap {
        block,
        sector,
        other: format!("block {other_block} at sector {other_sector:#x}"),
    }
}

/// The lock mode name for messages.
pub(crate) fn lock_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Shared => {
            "it is open for writing elsewhere (a shared lock for reading was refused)"
        }
        LockMode::Exclusive => "it is open elsewhere (a writer needs an exclusive lock)",
    }
}
