//! The dynamic disk header ("cxsparse", 1024 bytes, big-endian) of dynamic
//! and differencing images, with the parent fields and locator entries.

use uuid::Uuid;
use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Result, escape_cookie};
use crate::format::DYN_HEADER_SIZE;
use crate::format::checksum::checksum;
use crate::format::locator::{LOCATOR_COUNT, LocatorEntry, RawLocatorEntry};
use crate::format::timestamp::Timestamp;
use crate::rules::{self, Finding, Rule};

/// The dynamic header cookie.
pub const HEADER_COOKIE: [u8; 8] = *b"cxsparse";
/// The header version this crate reads and writes (1.0).
pub const HEADER_VERSION: u32 = 0x0001_0000;
/// Offset of the checksum field in the header.
pub const CHECKSUM_OFFSET: usize = 36;
/// The default block size: 2 MiB.
pub const DEFAULT_BLOCK_SIZE: u32 = 2 * 1024 * 1024;
/// The smallest block size the reader accepts.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// The largest block size the reader accepts (1 GiB).
pub const MAX_BLOCK_SIZE: u32 = 1 << 30;
/// Bytes of the parent unicode name field.
pub const PARENT_NAME_SIZE: usize = 512;

/// The dynamic header exactly as on disk.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawDynHeader {
    /// `cxsparse`.
    pub cookie: [u8; 8],
    /// Unused, all ones.
    pub data_offset: U64,
    /// Absolute offset of the BAT.
    pub table_offset: U64,
    /// Header version.
    pub header_version: U32,
    /// Entries in the BAT.
    pub max_table_entries: U32,
    /// Bytes of data per block.
    pub block_size: U32,
    /// Checksum.
    pub checksum: U32,
    /// Parent's unique ID (differencing).
    pub parent_unique_id: [u8; 16],
    /// Parent's modification time stamp (differencing).
    pub parent_time_stamp: U32,
    /// Reserved.
    pub reserved1: U32,
    /// Parent file name, UTF-16 big-endian.
    pub parent_unicode_name: [u8; PARENT_NAME_SIZE],
    /// Parent locators.
    pub parent_locator_entries: [RawLocatorEntry; LOCATOR_COUNT],
    /// Reserved.
    pub reserved2: [u8; 256],
}

const _: () = assert!(size_of::<RawDynHeader>() == DYN_HEADER_SIZE);
const _: () = assert!(std::mem::offset_of!(RawDynHeader, checksum) == CHECKSUM_OFFSET);
const _: () = assert!(std::mem::offset_of!(RawDynHeader, reserved1) == 60);
const _: () = assert!(std::mem::offset_of!(RawDynHeader, reserved2) == 768);

/// A dynamic header that passed its own hard rules (cookie, checksum,
/// version, block size). Rules that need the footer or the file length are
/// checked by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynHeader {
    /// The header's own data offset (unused; all ones).
    pub data_offset: u64,
    /// Absolute byte offset of the BAT.
    pub table_offset: u64,
    /// Header version.
    pub header_version: u32,
    /// Entries in the BAT.
    pub max_table_entries: u32,
    /// Bytes of data per block: a power of two in the accepted range.
    pub block_size: u32,
    /// Parent's unique ID.
    pub parent_unique_id: Uuid,
    /// Parent's time stamp.
    pub parent_time_stamp: Timestamp,
    /// Parent unicode name, raw UTF-16BE bytes (512).
    pub parent_unicode_name: [u8; PARENT_NAME_SIZE],
    /// The eight locator entries.
    pub parent_locators: [LocatorEntry; LOCATOR_COUNT],
}

impl DynHeader {
    /// Parses 1024 header bytes read at `offset` (used in messages),
    /// checking cookie, checksum, version and block size.
    pub fn parse(bytes: &[u8; DYN_HEADER_SIZE], offset: u64) -> Result<DynHeader> {
        check_header_cookie(bytes, offset)?;
        let computed = checksum(bytes, CHECKSUM_OFFSET);
        let stored = u32::from_be_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]);
        if stored != computed && !rules::disabled(Rule::HdrChecksum) {
            return Err(Error::HeaderChecksum { stored, computed });
        }
        Self::parse_ignoring_checksum(bytes, offset)
    }

    /// Parses with every hard rule but the checksum: for a checker that
    /// has reported a checksum mismatch and goes on to judge the BAT the
    /// fields describe.
    pub fn parse_ignoring_checksum(
        bytes: &[u8; DYN_HEADER_SIZE],
        offset: u64,
    ) -> Result<DynHeader> {
        check_header_cookie(bytes, offset)?;
        let raw =
            RawDynHeader::ref_from_bytes(bytes.as_slice()).map_err(|_| Error::HeaderCookie {
                offset,
                found: String::new(),
            })?;
        let header_version = raw.header_version.get();
        if header_version >> 16 != 1 && !rules::disabled(Rule::HdrVersion) {
            return Err(Error::HeaderVersion {
                found: header_version,
            });
        }
        let block_size = raw.block_size.get();
        check_block_size(block_size)?;
        let mut parent_locators = [LocatorEntry::default(); LOCATOR_COUNT];
        for (dst, src) in parent_locators.iter_mut().zip(&raw.parent_locator_entries) {
            *dst = LocatorEntry::from_raw(src);
        }
        Ok(DynHeader {
            data_offset: raw.data_offset.get(),
            table_offset: raw.table_offset.get(),
            header_version,
            max_table_entries: raw.max_table_entries.get(),
            block_size,
            parent_unique_id: Uuid::from_bytes(raw.parent_unique_id),
            parent_time_stamp: Timestamp(raw.parent_time_stamp.get()),
            parent_unicode_name: raw.parent_unicode_name,
            parent_locators,
        })
    }

    /// Whether the reserved fields of `bytes` (4 bytes at 0x3C and the last
    /// 256 bytes) are all zero (HDR-RESERVED).
    pub fn reserved_is_zero(bytes: &[u8; DYN_HEADER_SIZE]) -> bool {
        bytes[60..64].iter().all(|&b| b == 0) && bytes[768..].iter().all(|&b| b == 0)
    }

    /// The 1024 bytes of this header, checksum filled in.
    pub fn to_bytes(&self) -> [u8; DYN_HEADER_SIZE] {
        let mut raw = RawDynHeader::new_zeroed();
        raw.cookie = HEADER_COOKIE;
        raw.data_offset.set(self.data_offset);
        raw.table_offset.set(self.table_offset);
        raw.header_version.set(self.header_version);
        raw.max_table_entries.set(self.max_table_entries);
        raw.block_size.set(self.block_size);
        raw.parent_unique_id = *self.parent_unique_id.as_bytes();
        raw.parent_time_stamp.set(self.parent_time_stamp.0);
        raw.parent_unicode_name = self.parent_unicode_name;
        for (dst, src) in raw
            .parent_locator_entries
            .iter_mut()
            .zip(&self.parent_locators)
        {
            *dst = src.to_raw();
        }
        let mut bytes = [0u8; DYN_HEADER_SIZE];
        bytes.copy_from_slice(raw.as_bytes());
        let sum = checksum(&bytes, CHECKSUM_OFFSET);
        bytes[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&sum.to_be_bytes());
        bytes
    }

    /// Bytes of the sector bitmap in front of each block.
    pub fn bitmap_size(&self) -> u64 {
        crate::format::bitmap::bitmap_size(self.block_size)
    }

    /// The parent name decoded from UTF-16BE up to the first NUL, or `None`
    /// when it is empty; an invalid sequence gives `Err` with what decoded.
    pub fn parent_name(&self) -> Option<std::result::Result<String, String>> {
        let units: Vec<u16> = self
            .parent_unicode_name
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        if units.is_empty() {
            return None;
        }
        Some(String::from_utf16(&units).map_err(|_| String::from_utf16_lossy(&units)))
    }

    /// Encodes `name` as the UTF-16BE parent name field; `None` if it does
    /// not fit in 256 code units.
    pub fn encode_parent_name(name: &str) -> Option<[u8; PARENT_NAME_SIZE]> {
        let mut out = [0u8; PARENT_NAME_SIZE];
        let units: Vec<u16> = name.encode_utf16().collect();
        if units.len() * 2 > PARENT_NAME_SIZE {
            return None;
        }
        for (dst, unit) in out.chunks_exact_mut(2).zip(units) {
            dst.copy_from_slice(&unit.to_be_bytes());
        }
        Some(out)
    }

    /// Soft rules of the header on its own (warnings).
    pub fn lint(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        if self.data_offset != u64::MAX && !rules::disabled(Rule::HdrDataOffset) {
            out.push(Finding::new(
                Rule::HdrDataOffset,
                format!(
                    "dynamic header data offset is {:#x}, expected 0xffffffffffffffff",
                    self.data_offset
                ),
            ));
        }
        out
    }
}

fn check_header_cookie(bytes: &[u8; DYN_HEADER_SIZE], offset: u64) -> Result<()> {
    if bytes[..8] == HEADER_COOKIE || rules::disabled(Rule::HdrCookie) {
        Ok(())
    } else {
        Err(Error::HeaderCookie {
            offset,
            found: escape_cookie(&bytes[..8]),
        })
    }
}

/// HDR-BLOCK-SIZE: a power of two from [`MIN_BLOCK_SIZE`] to [`MAX_BLOCK_SIZE`].
pub fn check_block_size(size: u32) -> Result<()> {
    if size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&size)
        || rules::disabled(Rule::HdrBlockSize)
    {
        Ok(())
    } else {
        Err(Error::BlockSize { size })
    }
}
