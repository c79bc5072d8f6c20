//! Parent locator entries of a differencing image's dynamic header, and the
//! encodings of the paths they point at.

use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::format::SECTOR_SIZE;

/// Entries in the header.
pub const LOCATOR_COUNT: usize = 8;
/// The largest locator data this crate reads (64 KiB); longer is PAR-LOCATOR-BOUNDS.
pub const MAX_LOCATOR_DATA: u32 = 64 * 1024;

/// A locator entry exactly as on disk (24 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawLocatorEntry {
    /// Platform code.
    pub platform_code: U32,
    /// Room reserved for the data: sectors per the spec, bytes in practice.
    pub platform_data_space: U32,
    /// Bytes of locator data.
    pub platform_data_length: U32,
    /// Reserved.
    pub reserved: U32,
    /// Absolute offset of the data.
    pub platform_data_offset: U64,
}

const _: () = assert!(size_of::<RawLocatorEntry>() == 24);

/// A platform code of a locator entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Platform {
    /// No locator (code 0).
    None,
    /// `Wi2r`: deprecated Windows relative path.
    Wi2r,
    /// `Wi2k`: deprecated Windows absolute path.
    Wi2k,
    /// `W2ru`: Windows relative path, UTF-16LE.
    W2ru,
    /// `W2ku`: Windows absolute path, UTF-16LE.
    W2ku,
    /// `Mac `: Mac OS alias blob.
    Mac,
    /// `MacX`: file URL, UTF-8.
    MacX,
    /// Anything else.
    Unknown(u32),
}

impl Platform {
    /// The platform of an on-disk code.
    pub fn from_code(code: u32) -> Platform {
        match &code.to_be_bytes() {
            [0, 0, 0, 0] => Platform::None,
            b"Wi2r" => Platform::Wi2r,
            b"Wi2k" => Platform::Wi2k,
            b"W2ru" => Platform::W2ru,
            b"W2ku" => Platform::W2ku,
            b"Mac " => Platform::Mac,
            b"MacX" => Platform::MacX,
            _ => Platform::Unknown(code),
        }
    }

    /// The on-disk code.
    pub fn code(self) -> u32 {
        let bytes: &[u8; 4] = match self {
            Platform::None => return 0,
            Platform::Unknown(code) => return code,
            Platform::Wi2r => b"Wi2r",
            Platform::Wi2k => b"Wi2k",
            Platform::W2ru => b"W2ru",
            Platform::W2ku => b"W2ku",
            Platform::Mac => b"Mac ",
            Platform::MacX => b"MacX",
        };
        u32::from_be_bytes(*bytes)
    }

    /// The four-character name, e.g. `W2ru`.
    pub fn name(self) -> String {
        match self {
            Platform::None => "none".to_string(),
            other => other.code().to_be_bytes().escape_ascii().to_string(),
        }
    }
}

/// One parent locator entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocatorEntry {
    /// Platform code as stored.
    pub platform_code: u32,
    /// Data space as stored (sectors or bytes, see [`LocatorEntry::data_space_bytes`]).
    pub platform_data_space: u32,
    /// Bytes of data.
    pub platform_data_length: u32,
    /// Absolute offset of the data.
    pub platform_data_offset: u64,
}

impl LocatorEntry {
    pub(crate) fn from_raw(raw: &RawLocatorEntry) -> Self {
        LocatorEntry {
            platform_code: raw.platform_code.get(),
            platform_data_space: raw.platform_data_space.get(),
            platform_data_length: raw.platform_data_length.get(),
            platform_data_offset: raw.platform_data_offset.get(),
        }
    }

    pub(crate) fn to_raw(self) -> RawLocatorEntry {
        let mut raw = RawLocatorEntry::new_zeroed();
        raw.platform_code.set(self.platform_code);
        raw.platform_data_space.set(self.platform_data_space);
        raw.platform_data_length.set(self.platform_data_length);
        raw.platform_data_offset.set(self.platform_data_offset);
        raw
    }

    /// The platform.
    pub fn platform(&self) -> Platform {
        Platform::from_code(self.platform_code)
    }

    /// Whether the entry is in use.
    pub fn is_used(&self) -> bool {
        self.platform() != Platform::None
    }

    /// The room reserved for the data, in bytes. The spec counts it in
    /// sectors; Hyper-V and others store bytes. A non-zero value that is at
    /// least the data length is taken as bytes (a writer counting sectors
    /// would be reserving 512 times the room it needs), anything else as
    /// sectors (see spec/errata.md, "locator data space"). Where both
    /// readings fit, this picks the smaller region, so an overlap check
    /// built on it never reports a false overlap.
    pub fn data_space_bytes(&self) -> u64 {
        let space = u64::from(self.platform_data_space);
        if space >= u64::from(self.platform_data_length) && space > 0 {
            space
        } else {
            space * SECTOR_SIZE
        }
    }
}

/// Decodes locator data: UTF-16LE for `W2ru`/`W2ku`, UTF-8 for `MacX`,
/// `Wi2r`/`Wi2k` (old, byte strings), trailing NULs dropped. `None` for
/// data that is not text in the platform's encoding, or for `Mac ` aliases.
pub fn decode_locator(platform: Platform, data: &[u8]) -> Option<String> {
    let text = match platform {
        Platform::W2ru | Platform::W2ku => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()?
        }
        Platform::MacX | Platform::Wi2r | Platform::Wi2k => {
            String::from_utf8(data.to_vec()).ok()?
        }
        Platform::Mac | Platform::None | Platform::Unknown(_) => return None,
    };
    let text = text.trim_end_matches('\0').to_string();
    if text.is_empty() || text.contains('\0') {
        None
    } else {
        Some(text)
    }
}

/// Encodes a path for a `W2ru`/`W2ku` locator: UTF-16LE.
pub fn encode_utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}
