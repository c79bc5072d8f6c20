//! The one error type of the crate: a variant per broken rule (carrying the
//! rule ID in its message and through [`Error::rule`]), plus the few errors
//! that are not about the image's bytes (I/O, locking, bad arguments).

use std::io;

use crate::rules::{Finding, Rule};

/// Everything that can go wrong opening, reading, writing or creating an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error from the storage, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. "reading the BAT".
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// FTR-SIZE.
    #[error("file is {}, too small to hold a 512-byte footer (FTR-SIZE)", count(*.len, "byte", "bytes"))]
    FooterSize {
        /// Length of the file.
        len: u64,
    },
    /// FTR-COOKIE.
    #[error(
        "not a VHD: no footer cookie \"conectix\" in the last 512 bytes (found {found}){copy} (FTR-COOKIE)"
    )]
    FooterCookie {
        /// The eight bytes found, escaped.
        found: String,
        /// What the copy at offset 0 is, when it was looked at (starts with
        /// `; ` or is empty).
        copy: String,
    },
    /// FTR-CHECKSUM.
    #[error(
        "footer checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (FTR-CHECKSUM)"
    )]
    FooterChecksum {
        /// Checksum in the footer.
        stored: u32,
        /// Checksum of the footer's bytes.
        computed: u32,
    },
    /// FTR-VERSION.
    #[error(
        "unsupported file format version {found:#010x}, expected major version 1 (FTR-VERSION)"
    )]
    FooterVersion {
        /// The version field.
        found: u32,
    },
    /// FTR-DISK-TYPE.
    #[error("disk type {found} is not fixed (2), dynamic (3) or differencing (4) (FTR-DISK-TYPE)")]
    FooterDiskType {
        /// The disk type field.
        found: u32,
    },
    /// FTR-DATA-OFFSET.
    #[error("footer data offset {offset:#x} {reason} (FTR-DATA-OFFSET)")]
    FooterDataOffset {
        /// The data offset field.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// FTR-FIXED-LENGTH.
    #[error(
        "fixed image is truncated: current size is {current_size} bytes but only {} precede the footer (FTR-FIXED-LENGTH)", count(*.data_len, "byte", "bytes")
    )]
    FixedLength {
        /// Guest size from the footer.
        current_size: u64,
        /// Bytes before the footer.
        data_len: u64,
    },
    /// HDR-COOKIE.
    #[error(
        "no dynamic header at offset {offset:#x}: cookie is {found}, expected \"cxsparse\" (HDR-COOKIE)"
    )]
    HeaderCookie {
        /// Where the header was looked for.
        offset: u64,
        /// The eight bytes found, escaped.
        found: String,
    },
    /// HDR-CHECKSUM.
    #[error(
        "dynamic header checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (HDR-CHECKSUM)"
    )]
    HeaderChecksum {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the header's bytes.
        computed: u32,
    },
    /// HDR-VERSION.
    #[error(
        "unsupported dynamic header version {found:#010x}, expected major version 1 (HDR-VERSION)"
    )]
    HeaderVersion {
        /// The version field.
        found: u32,
    },
    /// HDR-BLOCK-SIZE.
    #[error("block size {size} is not a power of two from 512 bytes to 1 GiB (HDR-BLOCK-SIZE)")]
    BlockSize {
        /// The block size field.
        size: u32,
    },
    /// HDR-MAX-TABLE-ENTRIES.
    #[error("max table entries {entries}: {reason} (HDR-MAX-TABLE-ENTRIES)")]
    MaxTableEntries {
        /// The field.
        entries: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// HDR-TABLE-OFFSET.
    #[error("BAT at offset {offset:#x}: {reason} (HDR-TABLE-OFFSET)")]
    TableOffset {
        /// The table offset field.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// BAT-ENTRY-BEYOND-EOF.
    #[error(
        "block {block} at sector {sector:#x} ends at byte {end:#x}, past the end of the data area at {limit:#x} (BAT-ENTRY-BEYOND-EOF)"
    )]
    BatEntryBeyondEof {
        /// Block index.
        block: u32,
        /// BAT entry.
        sector: u32,
        /// Where the block ends.
        end: u64,
        /// Where the trailing footer starts.
        limit: u64,
    },
    /// BAT-ENTRY-OVERLAP.
    #[error("block {block} at sector {sector:#x} overlaps {other} (BAT-ENTRY-OVERLAP)")]
    BatEntryOverlap {
        /// Block index.
        block: u32,
        /// BAT entry.
        sector: u32,
        /// What it overlaps.
        other: String,
    },
    /// PAR-NOT-FOUND.
    #[error("parent{} not found; tried: {tried} (PAR-NOT-FOUND)", of_child(.of.as_deref()))]
    ParentNotFound {
        /// The image whose parent is missing, when it is not the image
        /// opened (a parent deeper in the chain).
        of: Option<String>,
        /// Every place looked at, in order, each once, with why it was not used.
        tried: String,
    },
    /// PAR-INVALID.
    #[error("{}{} (PAR-INVALID)", parent_invalid_text(.parent, .of.as_deref(), .cause), tried_list(.tried.as_deref()))]
    ParentInvalid {
        /// The parent's path.
        parent: String,
        /// The image whose parent this is, when it is not the image opened.
        of: Option<String>,
        /// What is wrong with the parent.
        cause: Box<Error>,
        /// Every place looked at, when there was more than this one.
        tried: Option<String>,
    },
    /// PAR-UNIQUE-ID.
    #[error(
        "parent {parent} has unique ID {found}, but the child expects {expected} (PAR-UNIQUE-ID)"
    )]
    ParentUniqueId {
        /// The parent's path.
        parent: String,
        /// ID recorded in the child.
        expected: uuid::Uuid,
        /// ID of the parent found.
        found: uuid::Uuid,
    },
    /// PAR-SIZE.
    #[error(
        "parent {parent} is {parent_size} bytes but the child is {child_size} bytes (PAR-SIZE)"
    )]
    ParentSize {
        /// The parent's path.
        parent: String,
        /// Size of the parent.
        parent_size: u64,
        /// Size of the child.
        child_size: u64,
    },
    /// PAR-LOOP.
    #[error("parent chain loops: {path} is its own ancestor (PAR-LOOP)")]
    ParentLoop {
        /// The image met twice.
        path: String,
    },
    /// PAR-DEPTH.
    #[error("parent chain is deeper than {limit} images (PAR-DEPTH)")]
    ParentDepth {
        /// The bound.
        limit: usize,
    },
    /// A path that names something other than a regular file or a block
    /// device (a directory, a FIFO, a character device such as /dev/zero).
    #[error("{path}: not a regular file or block device")]
    NotAFile {
        /// The path.
        path: String,
    },
    /// A sync of the image failed earlier. After a failed sync the system
    /// may have dropped written data without saying which, so the image
    /// refuses every later write, flush and close until it is reopened.
    #[error(
        "{name} is in a failed state: an earlier sync failed ({cause}); writes since the last successful flush may be lost, so it refuses to write or flush until it is reopened"
    )]
    Failed {
        /// The image.
        name: String,
        /// The error of the failed sync.
        cause: String,
    },
    /// Another process holds a conflicting lock on the image.
    #[error("{path} is in use: {reason}")]
    Locked {
        /// The image.
        path: String,
        /// Which lock conflicted.
        reason: String,
    },
    /// A write to an image opened read-only (or opened read-only because of damage).
    #[error("image is read-only: {reason}")]
    ReadOnly {
        /// Why.
        reason: String,
    },
    /// A guest access past the end of the disk.
    #[error("access of {} at offset {offset} is beyond the disk size {size}", count(*.len, "byte", "bytes"))]
    OutOfRange {
        /// Start of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Guest size.
        size: u64,
    },
    /// A size the format (or the chosen block size) cannot address.
    #[error("size {requested} is too large: {reason}; the limit is {limit} bytes")]
    SizeLimit {
        /// Requested size.
        requested: u64,
        /// The limit.
        limit: u64,
        /// Where the limit comes from.
        reason: String,
    },
    /// An argument the caller gave is not usable.
    #[error("{0}")]
    InvalidArgument(String),
    /// A maintenance operation (see `crate::ops`) that would lose data or
    /// cannot be done safely, refused before anything was written.
    #[error("{operation} refused: {reason}")]
    Refused {
        /// The operation, e.g. `resize`.
        operation: String,
        /// Why, with what would be lost.
        reason: String,
    },
}

/// Broad classes of [`Error`] for callers that branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The storage failed.
    Io,
    /// The file is not a VHD at all.
    NotVhd,
    /// The image breaks a rule of the format.
    Corrupt,
    /// The parent chain cannot be resolved or is inconsistent.
    Parent,
    /// Another process holds a conflicting lock.
    Locked,
    /// A write was attempted on a read-only image.
    ReadOnly,
    /// A guest access beyond the disk size.
    OutOfRange,
    /// An argument was not acceptable.
    InvalidArgument,
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The rule this error breaks, if it is about the image's contents.
    pub fn rule(&self) -> Option<Rule> {
        Some(match self {
            Error::FooterSize { .. } => Rule::FtrSize,
            Error::FooterCookie { .. } => Rule::FtrCookie,
            Error::FooterChecksum { .. } => Rule::FtrChecksum,
            Error::FooterVersion { .. } => Rule::FtrVersion,
            Error::FooterDiskType { .. } => Rule::FtrDiskType,
            Error::FooterDataOffset { .. } => Rule::FtrDataOffset,
            Error::FixedLength { .. } => Rule::FtrFixedLength,
            Error::HeaderCookie { .. } => Rule::HdrCookie,
            Error::HeaderChecksum { .. } => Rule::HdrChecksum,
            Error::HeaderVersion { .. } => Rule::HdrVersion,
            Error::BlockSize { .. } => Rule::HdrBlockSize,
            Error::MaxTableEntries { .. } => Rule::HdrMaxTableEntries,
            Error::TableOffset { .. } => Rule::HdrTableOffset,
            Error::BatEntryBeyondEof { .. } => Rule::BatEntryBeyondEof,
            Error::BatEntryOverlap { .. } => Rule::BatEntryOverlap,
            Error::ParentNotFound { .. } => Rule::ParNotFound,
            Error::ParentInvalid { .. } => Rule::ParInvalid,
            Error::ParentUniqueId { .. } => Rule::ParUniqueId,
            Error::ParentSize { .. } => Rule::ParSize,
            Error::ParentLoop { .. } => Rule::ParLoop,
            Error::ParentDepth { .. } => Rule::ParDepth,
            Error::Io { .. }
            | Error::Locked { .. }
            | Error::NotAFile { .. }
            | Error::Failed { .. }
            | Error::ReadOnly { .. }
            | Error::OutOfRange { .. }
            | Error::SizeLimit { .. }
            | Error::InvalidArgument(_)
            | Error::Refused { .. } => return None,
        })
    }

    /// The broad class of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } | Error::Failed { .. } => ErrorKind::Io,
            Error::FooterSize { .. } | Error::FooterCookie { .. } => ErrorKind::NotVhd,
            Error::ParentNotFound { .. }
            | Error::ParentInvalid { .. }
            | Error::ParentUniqueId { .. }
            | Error::ParentSize { .. }
            | Error::ParentLoop { .. }
            | Error::ParentDepth { .. } => ErrorKind::Parent,
            Error::Locked { .. } => ErrorKind::Locked,
            Error::ReadOnly { .. } => ErrorKind::ReadOnly,
            Error::OutOfRange { .. } => ErrorKind::OutOfRange,
            Error::SizeLimit { .. }
            | Error::InvalidArgument(_)
            | Error::NotAFile { .. }
            | Error::Refused { .. } => ErrorKind::InvalidArgument,
            _ => ErrorKind::Corrupt,
        }
    }

    /// The error as a finding, for the checker; `None` for errors that are
    /// not about the image's contents.
    pub fn to_finding(&self) -> Option<Finding> {
        let rule = self.rule()?;
        Some(Finding::new(rule, self.text_without_rule()))
    }

    /// The message without its trailing ` (RULE-ID)`.
    pub fn text_without_rule(&self) -> String {
        let text = self.to_string();
        match self.rule() {
            Some(rule) => {
                let suffix = format!(" ({})", rule.id());
                text.strip_suffix(&suffix).unwrap_or(&text).to_string()
            }
            None => text,
        }
    }

    /// The innermost cause of a parent error: for PAR-INVALID, what is
    /// wrong with the parent itself (followed through nested parents).
    pub fn root_cause(&self) -> &Error {
        match self {
            Error::ParentInvalid { cause, .. } => cause.root_cause(),
            other => other,
        }
    }
}

/// ` of CHILD` for an error about a parent deeper in a chain.
fn of_child(of: Option<&str>) -> String {
    of.map_or_else(String::new, |c| format!(" of {c}"))
}

/// The text of PAR-INVALID: the parent, and the rule it breaks itself.
fn parent_invalid_text(parent: &str, of: Option<&str>, cause: &Error) -> String {
    let who = format!("parent {parent}{}", of_child(of));
    match cause.rule() {
        Some(rule) => format!("{who} breaks {rule}: {}", cause.text_without_rule()),
        None => format!("{who} cannot be used: {cause}"),
    }
}

/// `; tried: ...` when there is a list.
fn tried_list(tried: Option<&str>) -> String {
    tried.map_or_else(String::new, |t| format!("; tried: {t}"))
}

/// `1 block`, `2 blocks`: a count with its noun in the right number.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Escapes up to eight bytes of a cookie for an error message.
pub(crate) fn escape_cookie(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}
