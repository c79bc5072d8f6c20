//! Creating fixed, dynamic and differencing images.
//!
//! Layout of a new dynamic or differencing image (the layout QEMU,
//! Hyper-V and Virtual PC use): footer copy at 0, dynamic header at 512,
//! BAT at 1536 (padded to a sector), then for a differencing image the
//! data of its parent locators, then the trailing footer. Blocks are
//! appended where the trailing footer is, as they are first written.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::format::bat::{bat_size_on_disk, serialize_bat};
use crate::format::dyn_header::{DEFAULT_BLOCK_SIZE, HEADER_VERSION};
use crate::format::footer::{FEATURE_RESERVED, FILE_FORMAT_VERSION, NO_DATA_OFFSET};
use crate::format::geometry::{MAX_CHS_SECTORS, chs_rounded};
use crate::format::locator::{LOCATOR_COUNT, encode_utf16le};
use crate::format::{
    DYN_HEADER_SIZE, DiskType, DynHeader, FOOTER_SIZE, Footer, Geometry, LocatorEntry,
    MAX_BLOCK_FILE_OFFSET, MAX_DISK_SIZE, Platform, SECTOR_SIZE, Timestamp, bitmap,
};
use crate::storage::{FileStorage, Storage};

use super::Image;
use super::open::{OpenOptions, file_open_error};

/// The smallest block size `create` makes (512 KiB).
pub const MIN_CREATE_BLOCK_SIZE: u32 = 512 * 1024;
/// The largest block size `create` makes (256 MiB).
pub const MAX_CREATE_BLOCK_SIZE: u32 = 256 * 1024 * 1024;
/// Creator application written into new images.
pub const CREATOR_APPLICATION: [u8; 4] = *b"vhdr";
/// Creator version written into new images (0.1).
pub const CREATOR_VERSION: u32 = 0x0000_0001;
/// Creator host OS written into new images: `Wi2k`, the value every
/// reader knows (see spec/errata.md).
pub const CREATOR_HOST_OS: [u8; 4] = *b"Wi2k";

/// How the requested size becomes `current_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SizeRule {
    /// `current_size` is the requested size (a multiple of 512); the
    /// geometry is the spec algorithm's, which may describe a little less.
    #[default]
    Exact,
    /// The size is rounded up to the nearest size a spec geometry describes
    /// exactly, as `qemu-img create -f vpc` does. At most about 127 GiB.
    Chs,
}

/// What to create.
///
/// ```no_run
/// use vhdref::{CreateOptions, DiskType};
/// let mut img = CreateOptions::new(DiskType::Dynamic, 64 << 20).create("disk.vhd")?;
/// img.write_at(4096, b"hello")?;
/// img.close()?;
/// # Ok::<(), vhdref::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CreateOptions {
    disk_type: DiskType,
    size: u64,
    block_size: u32,
    size_rule: SizeRule,
    unique_id: Option<Uuid>,
    time_stamp: Option<Timestamp>,
    parent: Option<PathBuf>,
}

/// What a child needs to know of its parent.
struct ParentInfo {
    size: u64,
    geometry: Geometry,
    unique_id: Uuid,
    time_stamp: Timestamp,
    name: String,
    relative: Option<String>,
    absolute: Option<String>,
}

impl CreateOptions {
    /// A fixed or dynamic image of `size` bytes (for a differencing image
    /// use [`CreateOptions::differencing`]).
    pub fn new(disk_type: DiskType, size: u64) -> Self {
        CreateOptions {
            disk_type,
            size,
            block_size: DEFAULT_BLOCK_SIZE,
            size_rule: SizeRule::Exact,
            unique_id: None,
            time_stamp: None,
            parent: None,
        }
    }

    /// A differencing child of the image at `parent` (its size and geometry
    /// come from the parent).
    pub fn differencing(parent: impl Into<PathBuf>) -> Self {
        CreateOptions {
            parent: Some(parent.into()),
            ..Self::new(DiskType::Differencing, 0)
        }
    }

    /// Block size of a dynamic or differencing image: a power of two from
    /// 512 KiB to 256 MiB (default 2 MiB).
    #[must_use]
    pub fn block_size(mut self, block_size: u32) -> Self {
        self.block_size = block_size;
        self
    }

    /// How the size is turned into `current_size`.
    #[must_use]
    pub fn size_rule(mut self, rule: SizeRule) -> Self {
        self.size_rule = rule;
        self
    }

    /// Fixes the unique ID (default: a fresh random one).
    #[must_use]
    pub fn unique_id(mut self, id: Uuid) -> Self {
        self.unique_id = Some(id);
        self
    }

    /// Fixes the time stamp (default: now).
    #[must_use]
    pub fn time_stamp(mut self, t: Timestamp) -> Self {
        self.time_stamp = Some(t);
        self
    }

    /// The `current_size` this would create, after the size rule and the
    /// limits: an error names the limit broken.
    pub fn effective_size(&self) -> Result<u64> {
        self.size_and_geometry().map(|(size, _)| size)
    }

    /// The size and the geometry this would write: under the exact rule
    /// the spec algorithm's geometry for the size, under the chs rule the
    /// geometry the rounding found (which describes the size exactly).
    fn size_and_geometry(&self) -> Result<(u64, Geometry)> {
        let (size, geometry) = match self.size_rule {
            SizeRule::Exact => {
                if !self.size.is_multiple_of(SECTOR_SIZE) {
                    return Err(Error::InvalidArgument(format!(
                        "size {} is not a multiple of 512 bytes (use --size-rule chs to round up)",
                        self.size
                    )));
                }
                (self.size, Geometry::for_size(self.size))
            }
            SizeRule::Chs => chs_rounded(self.size).ok_or_else(|| Error::SizeLimit {
                requested: self.size,
                limit: MAX_CHS_SECTORS * SECTOR_SIZE,
                reason: "the chs size rule can only describe 65535 x 16 x 255 sectors".into(),
            })?,
        };
        if size == 0 {
            return Err(Error::InvalidArgument(
                "size must be at least 512 bytes".into(),
            ));
        }
        if size > MAX_DISK_SIZE {
            return Err(Error::SizeLimit {
                requested: size,
                limit: MAX_DISK_SIZE,
                reason: "VHD images are limited to 2040 GiB".into(),
            });
        }
        if self.disk_type.is_sparse() {
            let bs = u64::from(self.block_size);
            let blocks = size.div_ceil(bs);
            // The last block starts after the metadata and every other block,
            // and its BAT entry is a 32-bit sector number.
            let metadata = 3 * SECTOR_SIZE
                + bat_size_on_disk(u32::try_from(blocks).unwrap_or(u32::MAX))
                + 64 * 1024;
            let last_start = metadata + (blocks - 1) * (bs + bitmap::bitmap_size(self.block_size));
            if last_start >= MAX_BLOCK_FILE_OFFSET {
                let per_block = bs + bitmap::bitmap_size(self.block_size);
                let limit = (MAX_BLOCK_FILE_OFFSET - metadata) / per_block * bs;
                return Err(Error::SizeLimit {
                    requested: size,
                    limit,
                    reason: format!(
                        "with {bs}-byte blocks the last block would start past 2 TiB, which a 32-bit BAT entry cannot address"
                    ),
                });
            }
        }
        Ok((size, geometry))
    }

    fn check_block_size(&self) -> Result<()> {
        if self.disk_type.is_sparse()
            && !(self.block_size.is_power_of_two()
                && (MIN_CREATE_BLOCK_SIZE..=MAX_CREATE_BLOCK_SIZE).contains(&self.block_size))
        {
            return Err(Error::InvalidArgument(format!(
                "block size {} is not a power of two from 512 KiB to 256 MiB",
                self.block_size
            )));
        }
        Ok(())
    }

    /// Creates the image file at `path` (which must not exist) and returns
    /// it open for writing.
    pub fn create(&self, path: impl AsRef<Path>) -> Result<Image> {
        let path = path.as_ref();
        self.check_block_size()?;
        let (parent, info) = match (&self.parent, self.disk_type) {
            (Some(parent_path), DiskType::Differencing) => {
                let parent = Image::open(parent_path)
                    .map_err(|e| super::resolver::given_parent_error(parent_path, e))?;
                let info = parent_info(&parent, Some(parent_path), Some(path))?;
                (Some(parent), Some(info))
            }
            (None, DiskType::Differencing) => {
                return Err(Error::InvalidArgument(
                    "a differencing image needs a parent".into(),
                ));
            }
            _ => (None, None),
        };
        // Every limit is checked before the file exists.
        let dims = self.dimensions(info.as_ref())?;
        let storage = FileStorage::create_new(path).map_err(|e| file_open_error(path, e))?;
        let result = self.finish(
            Box::new(storage),
            path.display().to_string(),
            Some(path.to_path_buf()),
            parent,
            info.as_ref(),
            dims,
        );
        if result.is_err() {
            // Leave nothing half-made behind; the file is ours, made above.
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// Creates an image in `storage` (which should be empty). A differencing
    /// image takes its already-open `parent`; its locators name
    /// `parent_name` (relative to the child).
    pub fn create_in(
        &self,
        storage: Box<dyn Storage>,
        name: impl Into<String>,
        parent: Option<(Image, &str)>,
    ) -> Result<Image> {
        self.check_block_size()?;
        let (parent, info) = match (parent, self.disk_type) {
            (Some((p, rel)), DiskType::Differencing) => {
                let mut info = parent_info(&p, None, None)?;
                info.relative = Some(rel.replace('/', "\\"));
                info.name = rel.rsplit(['/', '\\']).next().unwrap_or(rel).to_string();
                (Some(p), Some(info))
            }
            (None, DiskType::Differencing) => {
                return Err(Error::InvalidArgument(
                    "a differencing image needs a parent".into(),
                ));
            }
            _ => (None, None),
        };
        let dims = self.dimensions(info.as_ref())?;
        self.finish(storage, name.into(), None, parent, info.as_ref(), dims)
    }

    /// The size and geometry to write: the parent's for a child, else the
    /// size rule's (with every limit checked).
    fn dimensions(&self, info: Option<&ParentInfo>) -> Result<(u64, Geometry)> {
        match info {
            Some(i) => Ok((i.size, i.geometry)),
            None => self.size_and_geometry(),
        }
    }

    fn finish(
        &self,
        mut storage: Box<dyn Storage>,
        name: String,
        path: Option<PathBuf>,
        parent: Option<Image>,
        info: Option<&ParentInfo>,
        (size, geometry): (u64, Geometry),
    ) -> Result<Image> {
        let footer = Footer {
            features: FEATURE_RESERVED,
            file_format_version: FILE_FORMAT_VERSION,
            data_offset: if self.disk_type.is_sparse() {
                FOOTER_SIZE as u64
            } else {
                NO_DATA_OFFSET
            },
            time_stamp: self.time_stamp.unwrap_or_else(Timestamp::now),
            creator_application: CREATOR_APPLICATION,
            creator_version: CREATOR_VERSION,
            creator_host_os: CREATOR_HOST_OS,
            original_size: size,
            current_size: size,
            disk_geometry: geometry,
            disk_type: self.disk_type,
            unique_id: self.unique_id.unwrap_or_else(Uuid::new_v4),
            saved_state: false,
        };
        let io = |e| Error::io(format!("writing the new image {name}"), e);
        if self.disk_type == DiskType::Fixed {
            storage.set_len(size).map_err(io)?;
            storage.write_all_at(&footer.to_bytes(), size).map_err(io)?;
        } else {
            for (offset, bytes) in sparse_layout(&footer, self.block_size, info) {
                storage.write_all_at(&bytes, offset).map_err(io)?;
            }
        }
        storage.sync().map_err(io)?;
        let mut options = OpenOptions::new().write(true);
        if let Some(p) = parent {
            options = options.parent_image(p);
        }
        options.open_created(storage, name, path)
    }
}

fn parent_info(
    parent: &Image,
    parent_path: Option<&Path>,
    child_path: Option<&Path>,
) -> Result<ParentInfo> {
    let name = parent_path.and_then(Path::file_name).map_or_else(
        || parent.name().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (relative, absolute) = match (parent_path, child_path) {
        (Some(pp), Some(cp)) => {
            let abs =
                std::path::absolute(pp).map_err(|e| Error::io("resolving the parent path", e))?;
            let child_abs =
                std::path::absolute(cp).map_err(|e| Error::io("resolving the child path", e))?;
            let child_dir = child_abs
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            (
                relative_windows_path(&child_dir, &abs),
                Some(abs.display().to_string()),
            )
        }
        _ => (None, None),
    };
    Ok(ParentInfo {
        size: parent.size(),
        geometry: parent.footer().disk_geometry,
        unique_id: parent.footer().unique_id,
        time_stamp: parent.footer().time_stamp,
        name,
        relative,
        absolute,
    })
}

/// `.\x.vhd` or `..\dir\x.vhd`: `target` relative to `from_dir`, with
/// Windows separators as Hyper-V writes them.
pub(crate) fn relative_windows_path(from_dir: &Path, target: &Path) -> Option<String> {
    let from: Vec<_> = from_dir.components().collect();
    let to: Vec<_> = target.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    if from.len() == common {
        parts.push(".".into());
    }
    parts.extend(std::iter::repeat_n("..".to_string(), from.len() - common));
    parts.extend(
        to.iter()
            .skip(common)
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Some(parts.join("\\"))
}

/// The writes that make an empty dynamic or differencing image.
fn sparse_layout(
    footer: &Footer,
    block_size: u32,
    parent: Option<&ParentInfo>,
) -> Vec<(u64, Vec<u8>)> {
    let blocks =
        u32::try_from(footer.current_size.div_ceil(u64::from(block_size))).unwrap_or(u32::MAX);
    let table_offset = FOOTER_SIZE as u64 + DYN_HEADER_SIZE as u64;
    let bat_bytes = serialize_bat(&vec![crate::format::UNALLOCATED; blocks as usize]);
    let mut next = table_offset + bat_size_on_disk(blocks);
    let mut writes = vec![(table_offset, bat_bytes)];
    let mut header = DynHeader {
        data_offset: u64::MAX,
        table_offset,
        header_version: HEADER_VERSION,
        max_table_entries: blocks,
        block_size,
        parent_unique_id: Uuid::nil(),
        parent_time_stamp: Timestamp(0),
        parent_unicode_name: [0; crate::format::dyn_header::PARENT_NAME_SIZE],
        parent_locators: [LocatorEntry::default(); LOCATOR_COUNT],
    };
    if let Some(p) = parent {
        header.parent_unique_id = p.unique_id;
        header.parent_time_stamp = p.time_stamp;
        header.parent_unicode_name = DynHeader::encode_parent_name(&p.name)
            .or_else(|| {
                DynHeader::encode_parent_name(&p.name.chars().take(255).collect::<String>())
            })
            .unwrap_or([0; crate::format::dyn_header::PARENT_NAME_SIZE]);
        let mut slot = 0;
        for (platform, text) in [(Platform::W2ru, &p.relative), (Platform::W2ku, &p.absolute)] {
            let Some(text) = text else { continue };
            let data = encode_utf16le(text);
            let space = (data.len() as u64).div_ceil(SECTOR_SIZE).max(1) * SECTOR_SIZE;
            if let Some(entry) = header.parent_locators.get_mut(slot) {
                *entry = LocatorEntry {
                    platform_code: platform.code(),
                    platform_data_space: u32::try_from(space).unwrap_or(u32::MAX),
                    platform_data_length: u32::try_from(data.len()).unwrap_or(u32::MAX),
                    platform_data_offset: next,
                };
                let mut padded = data;
                padded.resize(space as usize, 0);
                writes.push((next, padded));
                next += space;
                slot += 1;
            }
        }
    }
    let footer_bytes = footer.to_bytes().to_vec();
    writes.push((0, footer_bytes.clone()));
    writes.push((FOOTER_SIZE as u64, header.to_bytes().to_vec()));
    writes.push((next, footer_bytes));
    writes
}
