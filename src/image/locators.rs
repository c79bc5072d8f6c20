//! Decoding a differencing image's parent references into candidate
//! paths, in resolution order. Pure code: the locator data is read by the
//! caller (through a closure) and nothing here touches the file system;
//! what to do with the candidates is the resolver's policy
//! (`super::resolver`).
//!
//! # Order
//!
//! 1. `W2ru` (and the old `Wi2r`) locators: a relative path;
//! 2. `W2ku` (and the old `Wi2k`) locators: an absolute path;
//! 3. `MacX` locators: a `file://` URL (`Mac ` aliases cannot be decoded);
//! 4. the file name in the header's parent name.
//!
//! Within a rank, locators keep their order in the header. Windows paths
//! become paths of this system where that makes sense: `\` separators
//! become `/`, `.\dir\p.vhd` is relative; a drive-letter or UNC path cannot
//! name a file here and is skipped with that reason.

use std::path::PathBuf;

use crate::error::count;
use crate::format::locator::{MAX_LOCATOR_DATA, decode_locator};
use crate::format::{DynHeader, Platform, SECTOR_SIZE};
use crate::rules::{self, Finding, Rule};

/// Where a candidate path came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A locator: its platform name (e.g. `W2ru`) and its decoded text.
    Locator {
        /// Platform code as text.
        platform: String,
        /// The locator's text.
        text: String,
    },
    /// The file name of the header's parent name.
    Name,
}

/// One place the parent may be: a path as the image spells it (relative
/// paths are relative to the child's directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The path, relative or absolute.
    pub path: PathBuf,
    /// Where it came from.
    pub origin: Origin,
}

/// The candidates of a header, what could not be used, and the warnings
/// broken on the way.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// In resolution order.
    pub candidates: Vec<Candidate>,
    /// Locators that name no usable path, each with why.
    pub skipped: Vec<String>,
    /// Warning rules broken by the locators or the name.
    pub findings: Vec<Finding>,
}

/// Decodes the parent references of `header`. `file_len` bounds where
/// locator data may lie; `read(offset, len)` reads locator data (only for
/// locators whose data lies inside the file and is at most 64 KiB).
pub(crate) fn decode(
    header: &DynHeader,
    file_len: u64,
    read: &mut dyn FnMut(u64, u32) -> Result<Vec<u8>, String>,
) -> Decoded {
    let mut out = Decoded::default();
    let mut ranked: Vec<(u8, Candidate)> = Vec::new();
    for (i, loc) in header.parent_locators.iter().enumerate() {
        let platform = loc.platform();
        let rank = match platform {
            Platform::None => continue,
            Platform::W2ru | Platform::Wi2r => 1,
            Platform::W2ku | Platform::Wi2k => 2,
            Platform::MacX => 3,
            Platform::Mac => {
                out.skipped
                    .push(format!("locator {i} (Mac alias): cannot be decoded"));
                continue;
            }
            Platform::Unknown(code) => {
                out.findings.extend(rules::enforced(Finding::new(
                    Rule::ParLocatorPlatform,
                    format!("parent locator {i} has unknown platform code {code:#010x}"),
                )));
                continue;
            }
        };
        let name = platform.name();
        let len = loc.platform_data_length;
        let offset = loc.platform_data_offset;
        let in_file = offset
            .checked_add(u64::from(len))
            .is_some_and(|end| end <= file_len && offset >= SECTOR_SIZE);
        if len == 0 || len > MAX_LOCATOR_DATA || !in_file {
            out.findings.extend(rules::enforced(Finding::new(
                Rule::ParLocatorBounds,
                format!(
                    "parent locator {i} ({name}) has {} at offset {offset:#x}, not inside the file or over 64 KiB",
                    count(u64::from(len), "byte", "bytes")
                ),
            )));
            out.skipped
                .push(format!("locator {i} ({name}): data out of bounds"));
            continue;
        }
        let data = match read(offset, len) {
            Ok(d) => d,
            Err(e) => {
                out.skipped.push(format!("locator {i} ({name}): {e}"));
                continue;
            }
        };
        let Some(text) = decode_locator(platform, &data) else {
            out.findings.extend(rules::enforced(Finding::new(
                Rule::ParLocatorEncoding,
                format!("parent locator {i} ({name}) is not text in its encoding"),
            )));
            out.skipped.push(format!("locator {i} ({name}): not text"));
            continue;
        };
        let local = if platform == Platform::MacX {
            file_url_to_local(&text)
        } else {
            windows_path_to_local(&text)
        };
        match local {
            Ok(path) => ranked.push((
                rank,
                Candidate {
                    path,
                    origin: Origin::Locator {
                        platform: name,
                        text,
                    },
                },
            )),
            Err(why) => out.skipped.push(format!("locator {i} ({name}): {why}")),
        }
    }
    match header.parent_name() {
        Some(Ok(name)) => {
            let file = name.rsplit(['\\', '/']).next().unwrap_or(&name);
            if !file.is_empty() && file != "." && file != ".." {
                ranked.push((
                    4,
                    Candidate {
                        path: PathBuf::from(file),
                        origin: Origin::Name,
                    },
                ));
            }
        }
        Some(Err(lossy)) => out.findings.extend(rules::enforced(Finding::new(
            Rule::ParName,
            format!("parent name is not valid UTF-16: {lossy:?}"),
        ))),
        None => {}
    }
    // A stable sort keeps the header's order within a rank.
    ranked.sort_by_key(|(rank, _)| *rank);
    out.candidates = ranked.into_iter().map(|(_, c)| c).collect();
    out
}

/// A Windows path from a locator as a path of this system, or why not.
///
/// `.\a\b.vhd` and `a\b.vhd` are relative; `\a\b.vhd` and `/a/b.vhd` are
/// absolute. Drive-letter (`C:\...`) and UNC (`\\server\...`) paths name
/// nothing here (on Unix) and give `Err`.
pub fn windows_path_to_local(text: &str) -> std::result::Result<PathBuf, String> {
    let text = text.trim_end_matches('\0');
    if text.starts_with("\\\\") {
        return Err(format!("UNC path {text:?} cannot be opened on this system"));
    }
    let bytes = text.as_bytes();
    if cfg!(not(windows)) && bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic()
    {
        return Err(format!(
            "drive-letter path {text:?} cannot be opened on this system"
        ));
    }
    if cfg!(windows) {
        return Ok(PathBuf::from(text));
    }
    let unix = text.replace('\\', "/");
    let unix = unix.strip_prefix("./").unwrap_or(&unix).to_string();
    if unix.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(unix))
}

/// A `MacX` `file://` URL as a path; `file://./x` is relative.
fn file_url_to_local(text: &str) -> std::result::Result<PathBuf, String> {
    let rest = text
        .strip_prefix("file://")
        .ok_or_else(|| format!("{text:?} is not a file:// URL"))?;
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    let decoded = percent_decode(rest).ok_or_else(|| format!("{text:?} has a bad %-escape"))?;
    let path = decoded
        .strip_prefix("./")
        .map_or_else(|| decoded.clone(), str::to_string);
    if path.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(path))
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::LocatorEntry;
    use crate::format::locator::encode_utf16le;

    fn header_with(locators: &[(Platform, u64, u32)], name: &str) -> DynHeader {
        let mut bytes = [0u8; 1024];
        bytes[..8].copy_from_slice(b"cxsparse");
        bytes[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        bytes[32..36].copy_from_slice(&(2u32 << 20).to_be_bytes());
        let sum = crate::format::checksum::checksum(&bytes, 36);
        bytes[36..40].copy_from_slice(&sum.to_be_bytes());
        let mut h = DynHeader::parse(&bytes, 512).expect("a valid header");
        for (slot, &(platform, offset, len)) in h.parent_locators.iter_mut().zip(locators) {
            *slot = LocatorEntry {
                platform_code: platform.code(),
                platform_data_space: 512,
                platform_data_length: len,
                platform_data_offset: offset,
            };
        }
        h.parent_unicode_name = DynHeader::encode_parent_name(name).expect("short name");
        h
    }

    #[test]
    fn candidates_come_relative_first_then_absolute_then_url_then_name() {
        let h = header_with(
            &[
                (Platform::MacX, 4096, 16),
                (Platform::W2ku, 8192, 16),
                (Platform::W2ru, 12288, 16),
            ],
            "C:\\dir\\base.vhd",
        );
        let mut read = |offset: u64, _len: u32| -> Result<Vec<u8>, String> {
            Ok(match offset {
                4096 => b"file://./mac.vhd".to_vec(),
                8192 => encode_utf16le("/abs/p.vhd"),
                _ => encode_utf16le(".\\rel.vhd"),
            })
        };
        let d = decode(&h, 1 << 20, &mut read);
        let paths: Vec<_> = d.candidates.iter().map(|c| c.path.clone()).collect();
        assert_eq!(
            paths,
            ["rel.vhd", "/abs/p.vhd", "mac.vhd", "base.vhd"].map(PathBuf::from)
        );
        assert!(d.findings.is_empty() && d.skipped.is_empty());
    }

    #[test]
    fn a_locator_outside_the_file_is_skipped_with_par_locator_bounds() {
        let h = header_with(&[(Platform::W2ru, 1 << 20, 16)], "");
        let mut read = |_: u64, _: u32| -> Result<Vec<u8>, String> {
            unreachable!("data outside the file is never read")
        };
        let d = decode(&h, 1 << 20, &mut read);
        assert!(d.candidates.is_empty());
        assert_eq!(d.findings[0].rule, Rule::ParLocatorBounds);
        assert_eq!(d.skipped.len(), 1);
    }
}
