//! The hard disk footer (512 bytes, big-endian), at the end of every image
//! and, for dynamic and differencing images, copied at offset 0.

use uuid::Uuid;
use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Result, escape_cookie};
use crate::format::checksum::checksum;
use crate::format::geometry::{Geometry, chs_rounded};
use crate::format::timestamp::Timestamp;
use crate::format::{FOOTER_SIZE, SECTOR_SIZE};
use crate::rules::{self, Finding, Rule};

/// The footer cookie.
pub const FOOTER_COOKIE: [u8; 8] = *b"conectix";
/// The file format version this crate reads and writes (1.0).
pub const FILE_FORMAT_VERSION: u32 = 0x0001_0000;
/// The reserved feature bit that the spec says is always set.
pub const FEATURE_RESERVED: u32 = 0x0000_0002;
/// The temporary-disk feature bit.
pub const FEATURE_TEMPORARY: u32 = 0x0000_0001;
/// The data offset of a fixed image: no next structure.
pub const NO_DATA_OFFSET: u64 = u64::MAX;
/// Offset of the checksum field in the footer.
pub const CHECKSUM_OFFSET: usize = 64;
/// Offset of the reserved bytes at the end of the footer.
pub const RESERVED_OFFSET: usize = 85;

/// The footer exactly as on disk.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawFooter {
    /// `conectix`.
    pub cookie: [u8; 8],
    /// Feature bits.
    pub features: U32,
    /// File format version.
    pub file_format_version: U32,
    /// Offset of the dynamic header, or all ones.
    pub data_offset: U64,
    /// Creation time.
    pub time_stamp: U32,
    /// Creator application.
    pub creator_application: [u8; 4],
    /// Creator version.
    pub creator_version: U32,
    /// Creator host OS.
    pub creator_host_os: [u8; 4],
    /// Size at creation.
    pub original_size: U64,
    /// Guest size.
    pub current_size: U64,
    /// Cylinders.
    pub cylinders: U16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
    /// Disk type.
    pub disk_type: U32,
    /// Checksum.
    pub checksum: U32,
    /// Unique ID.
    pub unique_id: [u8; 16],
    /// Saved state flag.
    pub saved_state: u8,
    /// Reserved, zero.
    pub reserved: [u8; 427],
}

const _: () = assert!(size_of::<RawFooter>() == FOOTER_SIZE);
const _: () = assert!(std::mem::offset_of!(RawFooter, checksum) == CHECKSUM_OFFSET);
const _: () = assert!(std::mem::offset_of!(RawFooter, reserved) == RESERVED_OFFSET);

/// The kind of image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskType {
    /// Data then footer.
    Fixed,
    /// Footer copy, dynamic header, BAT, blocks, footer.
    Dynamic,
    /// A dynamic layout whose unwritten sectors come from a parent.
    Differencing,
}

impl DiskType {
    /// The on-disk code.
    pub fn code(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
        }
    }

    /// The type with the on-disk code, if known.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            2 => Some(DiskType::Fixed),
            3 => Some(DiskType::Dynamic),
            4 => Some(DiskType::Differencing),
            _ => None,
        }
    }

    /// Whether the image has a dynamic header and BAT.
    pub fn is_sparse(self) -> bool {
        self != DiskType::Fixed
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// A footer that passed the hard rules (cookie, checksum, version, disk
/// type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Feature bits.
    pub features: u32,
    /// File format version.
    pub file_format_version: u32,
    /// Offset of the dynamic header (all ones for fixed images).
    pub data_offset: u64,
    /// Creation time.
    pub time_stamp: Timestamp,
    /// Creator application, e.g. `vpc `, `win `, `qemu`.
    pub creator_application: [u8; 4],
    /// Creator version (major in the high 16 bits).
    pub creator_version: u32,
    /// Creator host OS, e.g. `Wi2k`, `Mac `.
    pub creator_host_os: [u8; 4],
    /// Size at creation.
    pub original_size: u64,
    /// The guest size in bytes.
    pub current_size: u64,
    /// CHS geometry.
    pub disk_geometry: Geometry,
    /// Kind of image.
    pub disk_type: DiskType,
    /// Unique ID of this image.
    pub unique_id: Uuid,
    /// Saved state flag.
    pub saved_state: bool,
}

impl Footer {
    /// Parses 512 footer bytes, checking the hard rules in order: cookie,
    /// checksum, version, disk type.
    pub fn parse(bytes: &[u8; FOOTER_SIZE]) -> Result<Footer> {
        let raw = raw_footer(bytes)?;
        check_cookie(raw)?;
        check_checksum(bytes)?;
        Self::parse_ignoring_checksum(bytes)
    }

    /// Parses 512 footer bytes with every hard rule but the checksum: for
    /// a checker that has reported a checksum mismatch and goes on to judge
    /// what the fields describe.
    pub fn parse_ignoring_checksum(bytes: &[u8; FOOTER_SIZE]) -> Result<Footer> {
        let raw = raw_footer(bytes)?;
        check_cookie(raw)?;
        let footer = Footer::from_raw(raw);
        check_version(raw)?;
        // Off, an unknown type is taken for a fixed disk.
        let disk_type = DiskType::from_code(raw.disk_type.get())
            .or_else(|| rules::disabled(Rule::FtrDiskType).then_some(DiskType::Fixed))
            .ok_or(Error::FooterDiskType {
                found: raw.disk_type.get(),
            })?;
        Ok(Footer {
            disk_type,
            ..footer
        })
    }

    /// Whether the reserved bytes at the end of `bytes` (a footer of 512,
    /// or 511 for an old writer's short one) are all zero (FTR-RESERVED).
    pub fn reserved_is_zero(bytes: &[u8]) -> bool {
        bytes
            .get(RESERVED_OFFSET..)
            .unwrap_or_default()
            .iter()
            .all(|&b| b == 0)
    }

    fn from_raw(raw: &RawFooter) -> Footer {
        Footer {
            features: raw.features.get(),
            file_format_version: raw.file_format_version.get(),
            data_offset: raw.data_offset.get(),
            time_stamp: Timestamp(raw.time_stamp.get()),
            creator_application: raw.creator_application,
            creator_version: raw.creator_version.get(),
            creator_host_os: raw.creator_host_os,
            original_size: raw.original_size.get(),
            current_size: raw.current_size.get(),
            disk_geometry: Geometry {
                cylinders: raw.cylinders.get(),
                heads: raw.heads,
                sectors_per_track: raw.sectors_per_track,
            },
            disk_type: DiskType::Fixed,
            unique_id: Uuid::from_bytes(raw.unique_id),
            saved_state: raw.saved_state != 0,
        }
    }

    /// The 512 bytes of this footer, checksum filled in.
    pub fn to_bytes(&self) -> [u8; FOOTER_SIZE] {
        let mut raw = RawFooter::new_zeroed();
        raw.cookie = FOOTER_COOKIE;
        raw.features.set(self.features);
        raw.file_format_version.set(self.file_format_version);
        raw.data_offset.set(self.data_offset);
        raw.time_stamp.set(self.time_stamp.0);
        raw.creator_application = self.creator_application;
        raw.creator_version.set(self.creator_version);
        raw.creator_host_os = self.creator_host_os;
        raw.original_size.set(self.original_size);
        raw.current_size.set(self.current_size);
        raw.cylinders.set(self.disk_geometry.cylinders);
        raw.heads = self.disk_geometry.heads;
        raw.sectors_per_track = self.disk_geometry.sectors_per_track;
        raw.disk_type.set(self.disk_type.code());
        raw.unique_id = *self.unique_id.as_bytes();
        raw.saved_state = u8::from(self.saved_state);
        let mut bytes = [0u8; FOOTER_SIZE];
        bytes.copy_from_slice(raw.as_bytes());
        let sum = checksum(&bytes, CHECKSUM_OFFSET);
        bytes[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&sum.to_be_bytes());
        bytes
    }

    /// The soft rules of the footer on its own (warnings).
    pub fn lint(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        if (self.features & FEATURE_RESERVED == 0
            || self.features & !(FEATURE_RESERVED | FEATURE_TEMPORARY) != 0)
            && !rules::disabled(Rule::FtrFeatures)
        {
            out.push(Finding::new(
                Rule::FtrFeatures,
                format!(
                    "features field is {:#010x}, expected the reserved bit 0x2 and no unknown bits",
                    self.features
                ),
            ));
        }
        if !self.current_size.is_multiple_of(SECTOR_SIZE) && !rules::disabled(Rule::FtrCurrentSize)
        {
            out.push(Finding::new(
                Rule::FtrCurrentSize,
                format!(
                    "current size {} is not a multiple of 512 bytes; the disk is read as exactly that many bytes",
                    self.current_size
                ),
            ));
        }
        if self.saved_state && !rules::disabled(Rule::FtrSavedState) {
            out.push(Finding::new(
                Rule::FtrSavedState,
                "the image is marked as being in a saved state",
            ));
        }
        if self.unique_id.is_nil() && !rules::disabled(Rule::FtrUniqueId) {
            out.push(Finding::new(
                Rule::FtrUniqueId,
                "the unique ID is all zeros",
            ));
        }
        if self.disk_type == DiskType::Fixed
            && self.data_offset != NO_DATA_OFFSET
            && !rules::disabled(Rule::FtrFixedDataOffset)
        {
            out.push(Finding::new(
                Rule::FtrFixedDataOffset,
                format!(
                    "fixed image has data offset {:#x}, expected 0xffffffffffffffff",
                    self.data_offset
                ),
            ));
        }
        // The algorithm's geometry, or, for a size that CHS rounding
        // gives, the geometry the rounding found for it (QEMU's `create`
        // and `--size-rule chs` just below a switch of the algorithm).
        // Nothing else, even a geometry whose capacity equals the size.
        let expected = Geometry::for_size(self.current_size);
        let found_by_rounding = || {
            chs_rounded(self.current_size).is_some_and(|(size, found)| {
                size == self.current_size && found == self.disk_geometry
            })
        };
        if self.disk_geometry != expected
            && !found_by_rounding()
            && !rules::disabled(Rule::GeoAlgorithm)
        {
            let g = self.disk_geometry;
            out.push(Finding::new(
                Rule::GeoAlgorithm,
                format!(
                    "geometry {}/{}/{} differs from {}/{}/{} computed from current size {}",
                    g.cylinders,
                    g.heads,
                    g.sectors_per_track,
                    expected.cylinders,
                    expected.heads,
                    expected.sectors_per_track,
                    self.current_size
                ),
            ));
        }
        out
    }

    /// Creator application as text (trailing spaces and NULs kept visible
    /// only as escapes).
    pub fn creator_application_str(&self) -> String {
        fourcc(&self.creator_application)
    }

    /// Creator host OS as text.
    pub fn creator_host_os_str(&self) -> String {
        fourcc(&self.creator_host_os)
    }
}

/// Four bytes of a creator field as text.
pub fn fourcc(bytes: &[u8; 4]) -> String {
    bytes.escape_ascii().to_string()
}

fn raw_footer(bytes: &[u8; FOOTER_SIZE]) -> Result<&RawFooter> {
    RawFooter::ref_from_bytes(bytes.as_slice()).map_err(|_| Error::FooterSize {
        len: bytes.len() as u64,
    })
}

fn check_cookie(raw: &RawFooter) -> Result<()> {
    if raw.cookie == FOOTER_COOKIE || rules::disabled(Rule::FtrCookie) {
        Ok(())
    } else {
        Err(Error::FooterCookie {
            found: escape_cookie(&raw.cookie),
            copy: String::new(),
        })
    }
}

fn check_checksum(bytes: &[u8; FOOTER_SIZE]) -> Result<()> {
    let computed = checksum(bytes, CHECKSUM_OFFSET);
    let mut field = [0u8; 4];
    field.copy_from_slice(&bytes[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4]);
    let stored = u32::from_be_bytes(field);
    if stored == computed || rules::disabled(Rule::FtrChecksum) {
        Ok(())
    } else {
        Err(Error::FooterChecksum { stored, computed })
    }
}

fn check_version(raw: &RawFooter) -> Result<()> {
    let found = raw.file_format_version.get();
    if found >> 16 == 1 || rules::disabled(Rule::FtrVersion) {
        Ok(())
    } else {
        Err(Error::FooterVersion { found })
    }
}
