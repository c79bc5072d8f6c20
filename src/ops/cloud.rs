//! Images for cloud services: sizes they accept, and a checker profile
//! that says what such a service would refuse.
//!
//! # Azure
//!
//! Azure takes uploaded disks only as fixed VHDs whose disk size is a whole
//! number of MiB, the file being that size plus the 512-byte footer
//! (`Add-AzVhd`: "in size N * MiB + 512 bytes"). A managed disk made by
//! direct upload is between 20 MiB and 32 TiB (the `UploadSizeBytes` of
//! the Azure compute API must lie between 20972032 and 35183298347520
//! bytes: 20 MiB and 32 TiB, each plus the footer). Both are from
//! Microsoft Learn: the `Add-AzVhd` reference and
//! `DiskCreationData.UploadSizeBytes`. (A VHD uploaded into a page blob
//! of a storage account is bounded by the page blob's limit of 8 TiB, the
//! older path; and vhdref itself makes VHDs of at most 2040 GiB.)
//!
//! The profile's rules are not rules of the format: an image that breaks
//! them is a valid VHD, which the service would still refuse. They are
//! reported only when asked for (`vhd check --profile azure`) and are not
//! in [`crate::Rule::ALL`].

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result, count};
use crate::format::{DiskType, FOOTER_SIZE, SECTOR_SIZE};
use crate::storage::{FileStorage, Storage};

/// The unit Azure wants disk sizes in: 1 MiB.
pub const AZURE_ALIGN: u64 = 1 << 20;
/// The smallest disk Azure takes by direct upload: 20 MiB.
pub const AZURE_MIN_SIZE: u64 = 20 << 20;
/// The largest disk Azure takes by direct upload: 32 TiB.
pub const AZURE_MAX_SIZE: u64 = 32 << 40;

/// `size` rounded up to a multiple of `align` (a power of two, at least
/// 512): the size `vhd create --align` and `vhd convert --align` give a
/// disk.
pub fn aligned_size(size: u64, align: u64) -> Result<u64> {
    if !align.is_power_of_two() || align < SECTOR_SIZE {
        return Err(Error::InvalidArgument(format!(
            "alignment {align} is not a power of two of at least 512 bytes"
        )));
    }
    size.div_ceil(align).checked_mul(align).ok_or_else(|| {
        Error::InvalidArgument(format!("size {size} rounded up to {align} overflows"))
    })
}

/// A rule of the Azure profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AzureRule {
    /// `AZURE-FIXED`: the image is a fixed VHD.
    Fixed,
    /// `AZURE-SIZE-MIB`: the disk size is a whole number of MiB and the
    /// file is exactly that plus a 512-byte footer.
    SizeMib,
    /// `AZURE-SIZE-RANGE`: the disk is between 20 MiB and 32 TiB.
    SizeRange,
}

impl AzureRule {
    /// Every rule of the profile.
    pub const ALL: [AzureRule; 3] = [AzureRule::Fixed, AzureRule::SizeMib, AzureRule::SizeRange];

    /// The stable ID, e.g. `AZURE-FIXED`.
    pub fn id(self) -> &'static str {
        match self {
            AzureRule::Fixed => "AZURE-FIXED",
            AzureRule::SizeMib => "AZURE-SIZE-MIB",
            AzureRule::SizeRange => "AZURE-SIZE-RANGE",
        }
    }

    /// One line saying what the rule demands.
    pub fn summary(self) -> &'static str {
        match self {
            AzureRule::Fixed => "Azure takes only fixed VHDs",
            AzureRule::SizeMib => {
                "the disk size is a whole number of MiB, and the file is that plus the 512-byte footer"
            }
            AzureRule::SizeRange => "the disk is at least 20 MiB and at most 32 TiB",
        }
    }
}

impl std::fmt::Display for AzureRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for AzureRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// Something a service would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileFinding {
    /// The rule of the profile.
    pub rule: AzureRule,
    /// What exactly, with the numbers.
    pub message: String,
}

impl std::fmt::Display for ProfileFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.rule.id())
    }
}

/// What Azure would refuse in the image file at `path` (read under a
/// shared lock). An image whose footer cannot be found is an error (the
/// checker says why).
pub fn check_azure(path: impl AsRef<Path>) -> Result<Vec<ProfileFinding>> {
    let path = path.as_ref();
    crate::image::image_metadata(path, true)?;
    let storage =
        FileStorage::open(path, false).map_err(|e| crate::image::file_open_error(path, e))?;
    check_azure_storage(&storage)
}

/// What Azure would refuse in the image held by `storage`.
pub fn check_azure_storage(storage: &dyn Storage) -> Result<Vec<ProfileFinding>> {
    let located = crate::image::rules::locate_footer(storage, &mut Vec::new())?;
    let footer = &located.footer;
    let len = storage
        .len()
        .map_err(|e| Error::io("reading the file length", e))?;
    let size = footer.current_size;
    let mut out = Vec::new();
    if footer.disk_type != DiskType::Fixed {
        out.push(ProfileFinding {
            rule: AzureRule::Fixed,
            message: format!(
                "the image is {}, not fixed (vhd convert --to fixed --align 1M makes one)",
                footer.disk_type.name()
            ),
        });
    }
    if !size.is_multiple_of(AZURE_ALIGN) {
        out.push(ProfileFinding {
            rule: AzureRule::SizeMib,
            message: format!(
                "the disk size {size} is not a whole number of MiB (the next is {})",
                size.div_ceil(AZURE_ALIGN) * AZURE_ALIGN
            ),
        });
    } else if footer.disk_type == DiskType::Fixed && len != size + FOOTER_SIZE as u64 {
        out.push(ProfileFinding {
            rule: AzureRule::SizeMib,
            message: format!(
                "the file is {}, not the disk size plus a 512-byte footer ({}); vhd repair cuts slack and completes a 511-byte footer",
                count(len, "byte", "bytes"),
                size + FOOTER_SIZE as u64
            ),
        });
    }
    if size < AZURE_MIN_SIZE {
        out.push(ProfileFinding {
            rule: AzureRule::SizeRange,
            message: format!("the disk is {size} bytes, less than 20 MiB"),
        });
    } else if size > AZURE_MAX_SIZE {
        out.push(ProfileFinding {
            rule: AzureRule::SizeRange,
            message: format!("the disk is {size} bytes, more than 32 TiB"),
        });
    }
    Ok(out)
}
