//! Finding and checking the parent of a differencing image.
//!
//! # Resolution order
//!
//! 1. a parent the caller gives (`OpenOptions::parent`, `--parent`);
//! 2. `W2ru` (and the old `Wi2r`) locators: a relative path, taken
//!    relative to the child's directory;
//! 3. `W2ku` (and the old `Wi2k`) locators: an absolute path;
//! 4. `MacX` locators: a `file://` URL (`Mac ` aliases cannot be decoded
//!    and are skipped);
//! 5. the file name of the header's parent name, in the child's directory.
//!
//! Windows paths become paths of this system where that makes sense: `\`
//! separators become `/`, `.\dir\p.vhd` is relative; a drive-letter or UNC
//! path cannot name a file here and is skipped, said in the error if no
//! parent is found. With `OpenOptions::allow_parent_dirs`, a candidate
//! outside those directories is skipped the same way: never followed
//! silently. The first candidate that opens and whose unique ID matches the
//! child's record wins; every candidate tried is listed in PAR-NOT-FOUND.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::locator::{MAX_LOCATOR_DATA, decode_locator};
use crate::format::{Platform, SECTOR_SIZE};
use crate::rules::{Finding, Rule};

use super::open::{MAX_CHAIN_DEPTH, OpenOptions};
use super::{Image, Layout};

/// How the parent of a differencing image was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
// Adjacently tagged: an internally tagged enum cannot serialize the
// newtype variants holding a string (serde errors at run time).
#[serde(tag = "via", content = "detail", rename_all = "snake_case")]
pub enum ParentSource {
    /// Given by the caller.
    Caller(String),
    /// Through a parent locator.
    Locator {
        /// Platform code, e.g. `W2ru`.
        platform: String,
        /// The locator's text.
        locator: String,
        /// The path opened.
        path: String,
    },
    /// Through the parent name in the child's directory.
    Name(String),
}

impl std::fmt::Display for ParentSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParentSource::Caller(p) => write!(f, "given by the caller: {p}"),
            ParentSource::Locator {
                platform,
                locator,
                path,
            } => {
                write!(f, "{platform} locator {locator:?} -> {path}")
            }
            ParentSource::Name(p) => write!(f, "parent name in the child's directory: {p}"),
        }
    }
}

/// Images already open in this chain, to refuse loops and bound depth.
#[derive(Debug, Default)]
pub(crate) struct ChainGuard {
    seen: Vec<PathBuf>,
}

impl ChainGuard {
    pub(crate) fn enter(&mut self, path: &Path) -> Result<()> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.seen.contains(&canonical) {
            return Err(Error::ParentLoop {
                path: path.display().to_string(),
            });
        }
        if self.seen.len() >= MAX_CHAIN_DEPTH {
            return Err(Error::ParentDepth {
                limit: MAX_CHAIN_DEPTH,
            });
        }
        self.seen.push(canonical);
        Ok(())
    }
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

/// One place a parent may be.
struct Candidate {
    path: PathBuf,
    source: ParentSource,
}

/// Reads the locators of `child` and lists the candidates in resolution
/// order; unusable locators are noted in `tried` and as findings.
fn candidates(child: &mut Image, child_dir: &Path, tried: &mut Vec<String>) -> Vec<Candidate> {
    let Layout::Sparse(sparse) = &child.layout else {
        return Vec::new();
    };
    let header = sparse.header.clone();
    let file_len = child.footer_offset;
    let mut by_rank: Vec<(u8, Candidate)> = Vec::new();
    let mut findings = Vec::new();
    for (i, loc) in header.parent_locators.iter().enumerate() {
        let platform = loc.platform();
        let rank = match platform {
            Platform::None => continue,
            Platform::W2ru | Platform::Wi2r => 2,
            Platform::W2ku | Platform::Wi2k => 3,
            Platform::MacX => 4,
            Platform::Mac => {
                tried.push(format!("locator {i} (Mac alias: cannot be decoded)"));
                continue;
            }
            Platform::Unknown(code) => {
                findings.push(Finding::new(
                    Rule::ParLocatorPlatform,
                    format!("parent locator {i} has unknown platform code {code:#010x}"),
                ));
                continue;
            }
        };
        let len = loc.platform_data_length;
        let offset = loc.platform_data_offset;
        let in_file = offset
            .checked_add(u64::from(len))
            .is_some_and(|end| end <= file_len && offset >= SECTOR_SIZE);
        if len == 0 || len > MAX_LOCATOR_DATA || !in_file {
            findings.push(Finding::new(
                Rule::ParLocatorBounds,
                format!("parent locator {i} ({}) has {len} bytes at offset {offset:#x}, not inside the file or over 64 KiB", platform.name()),
            ));
            tried.push(format!(
                "locator {i} ({}): data out of bounds",
                platform.name()
            ));
            continue;
        }
        let mut data = vec![0u8; len as usize];
        if let Err(e) = child.storage.read_exact_at(&mut data, offset) {
            tried.push(format!("locator {i} ({}): {e}", platform.name()));
            continue;
        }
        let Some(text) = decode_locator(platform, &data) else {
            findings.push(Finding::new(
                Rule::ParLocatorEncoding,
                format!(
                    "parent locator {i} ({}) is not text in its encoding",
                    platform.name()
                ),
            ));
            tried.push(format!("locator {i} ({}): not text", platform.name()));
            continue;
        };
        let local = if platform == Platform::MacX {
            file_url_to_local(&text)
        } else {
            windows_path_to_local(&text)
        };
        match local {
            Ok(p) => {
                let path = if p.is_absolute() {
                    p
                } else {
                    child_dir.join(p)
                };
                by_rank.push((
                    rank,
                    Candidate {
                        source: ParentSource::Locator {
                            platform: platform.name(),
                            locator: text,
                            path: path.display().to_string(),
                        },
                        path,
                    },
                ));
            }
            Err(why) => tried.push(format!("locator {i} ({}): {why}", platform.name())),
        }
    }
    match header.parent_name() {
        Some(Ok(name)) => {
            let file = name.rsplit(['\\', '/']).next().unwrap_or(&name).to_string();
            if !file.is_empty() {
                let path = child_dir.join(&file);
                by_rank.push((
                    5,
                    Candidate {
                        source: ParentSource::Name(path.display().to_string()),
                        path,
                    },
                ));
            }
        }
        Some(Err(lossy)) => findings.push(Finding::new(
            Rule::ParName,
            format!("parent name is not valid UTF-16: {lossy:?}"),
        )),
        None => {}
    }
    child.findings.extend(findings);
    by_rank.sort_by_key(|(rank, _)| *rank);
    by_rank.into_iter().map(|(_, c)| c).collect()
}

fn is_allowed(path: &Path, allowed: Option<&Vec<PathBuf>>) -> bool {
    let Some(dirs) = allowed else { return true };
    let Ok(canonical) = path.canonicalize() else {
        return false;
    };
    dirs.iter()
        .any(|d| d.canonicalize().is_ok_and(|d| canonical.starts_with(d)))
}

/// Finds and opens the parent of `child` (read-only, shared lock, unless
/// the options say it is being committed into).
pub(crate) fn resolve(
    child: &mut Image,
    options: &OpenOptions,
    child_path: Option<&Path>,
    guard: &mut ChainGuard,
) -> Result<(Image, ParentSource)> {
    // The allowed directories bind every level of the chain, not just the
    // direct parent.
    let parent_options = || {
        let mut o = OpenOptions::new()
            .write(options.parent_writable)
            .ignore_parent_id(options.ignore_parent_id);
        o.allowed_dirs.clone_from(&options.allowed_dirs);
        o
    };
    if let Some(path) = &options.parent_path {
        let image = parent_options().open_path(path, guard)?;
        return Ok((image, ParentSource::Caller(path.display().to_string())));
    }
    let child_dir = child_path
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut tried = Vec::new();
    let mut mismatch: Option<Error> = None;
    let mut other: Option<Error> = None;
    // A candidate that is in use elsewhere exists but cannot be checked:
    // say it is locked rather than that no parent was found.
    let mut locked: Option<Error> = None;
    let expected = child
        .dyn_header()
        .map(|h| h.parent_unique_id)
        .unwrap_or_default();
    for cand in candidates(child, &child_dir, &mut tried) {
        let shown = cand.path.display().to_string();
        if !cand.path.exists() {
            tried.push(format!(
                "{shown} ({}): no such file",
                source_kind(&cand.source)
            ));
            continue;
        }
        // A locator comes from the file: never open a FIFO (which would
        // wait for a writer forever) or a device because an image says so.
        if !cand.path.metadata().is_ok_and(|m| m.is_file()) {
            tried.push(format!(
                "{shown} ({}): not a regular file, not opened",
                source_kind(&cand.source)
            ));
            continue;
        }
        if !is_allowed(&cand.path, options.allowed_dirs.as_ref()) {
            tried.push(format!(
                "{shown}: outside the allowed directories, not followed"
            ));
            continue;
        }
        let mut sub = ChainGuard {
            seen: guard.seen.clone(),
        };
        match parent_options().open_path(&cand.path, &mut sub) {
            Ok(image) => {
                let found = image.footer().unique_id;
                if found != expected && !options.ignore_parent_id {
                    tried.push(format!("{shown}: unique ID {found} does not match"));
                    mismatch.get_or_insert(Error::ParentUniqueId {
                        parent: shown,
                        expected,
                        found,
                    });
                    continue;
                }
                *guard = sub;
                return Ok((image, cand.source));
            }
            Err(e) => {
                tried.push(format!("{shown}: {e}"));
                if matches!(e, Error::ParentLoop { .. } | Error::ParentDepth { .. }) {
                    return Err(e);
                }
                if matches!(e, Error::Locked { .. }) {
                    locked.get_or_insert(e);
                } else {
                    other.get_or_insert(e);
                }
            }
        }
    }
    if let Some(e) = locked {
        return Err(e);
    }
    if let Some(e) = mismatch {
        return Err(e);
    }
    if let Some(e) = other
        && tried.len() == 1
    {
        return Err(e);
    }
    if tried.is_empty() {
        tried.push("the image has no usable locator and no parent name".into());
    }
    Err(Error::ParentNotFound {
        tried: tried.join("; "),
    })
}

fn source_kind(source: &ParentSource) -> String {
    match source {
        ParentSource::Caller(_) => "given".into(),
        ParentSource::Locator { platform, .. } => format!("{platform} locator"),
        ParentSource::Name(_) => "parent name".into(),
    }
}

/// Checks a parent against its child: unique ID (error, or a warning when
/// ignored), size (error), time stamp (warning).
pub(crate) fn check_parent(child: &mut Image, parent: &Image, ignore_id: bool) -> Result<()> {
    let Some(header) = child.dyn_header().cloned() else {
        return Ok(());
    };
    let found = parent.footer().unique_id;
    if found != header.parent_unique_id {
        let e = Error::ParentUniqueId {
            parent: parent.name().to_string(),
            expected: header.parent_unique_id,
            found,
        };
        if !ignore_id {
            return Err(e);
        }
        child.findings.push(Finding::new(
            Rule::ParUniqueId,
            format!("{e} (ignored on request)"),
        ));
    }
    if parent.size() != child.size() {
        return Err(Error::ParentSize {
            parent: parent.name().to_string(),
            parent_size: parent.size(),
            child_size: child.size(),
        });
    }
    let stamp = header.parent_time_stamp;
    let mtime_matches = parent
        .path()
        .and_then(|p| p.metadata().ok())
        .and_then(|m| m.modified().ok())
        .is_some_and(|t| crate::format::Timestamp::from_system_time(t) == stamp);
    if stamp != parent.footer().time_stamp && !mtime_matches {
        child.findings.push(Finding::new(
            Rule::ParTimestamp,
            format!(
                "the child records parent time stamp {} but the parent's footer says {}",
                stamp.to_rfc3339(),
                parent.footer().time_stamp.to_rfc3339()
            ),
        ));
    }
    Ok(())
}
