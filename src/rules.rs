//! The rules an image is judged by, each with a stable ID.
//!
//! `spec/rules.md` is the prose for every rule listed here; a test keeps the
//! two lists equal. A rule has one severity: an [`Severity::Error`] makes
//! `open` refuse the image (or the part of it, such as one parent locator),
//! a [`Severity::Warning`] is reported and the image is still usable.

use serde::Serialize;

/// How bad breaking a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The image is still read correctly; something is unusual or leaks space.
    Warning,
    /// Corruption or a violation of the format: the image (or this part of
    /// it) cannot be trusted.
    Error,
}

macro_rules! rules {
    ($( $(#[$doc:meta])* $variant:ident => $id:literal, $sev:ident, $summary:literal; )*) => {
        /// A rule of the format, named by its stable ID (see `spec/rules.md`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Rule {
            $( $(#[$doc])* $variant, )*
        }

        impl Rule {
            /// Every rule, in the order of `spec/rules.md`.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant,)*];

            /// The stable ID, e.g. `FTR-CHECKSUM`.
            pub fn id(self) -> &'static str {
                match self { $(Rule::$variant => $id,)* }
            }

            /// Whether breaking the rule is an error or a warning.
            pub fn severity(self) -> Severity {
                match self { $(Rule::$variant => Severity::$sev,)* }
            }

            /// One line saying what the rule demands.
            pub fn summary(self) -> &'static str {
                match self { $(Rule::$variant => $summary,)* }
            }

            /// Looks a rule up by its ID.
            pub fn from_id(id: &str) -> Option<Rule> {
                Rule::ALL.iter().copied().find(|r| r.id() == id)
            }
        }
    };
}

rules! {
    /// The file must be long enough to hold a footer.
    FtrSize => "FTR-SIZE", Error, "the file holds at least one 512-byte footer";
    /// The footer cookie is `conectix`.
    FtrCookie => "FTR-COOKIE", Error, "the footer starts with the cookie \"conectix\"";
    /// The footer checksum matches.
    FtrChecksum => "FTR-CHECKSUM", Error, "the footer checksum is the ones' complement of the byte sum of the footer without its checksum field";
    /// The file format version is 1.x.
    FtrVersion => "FTR-VERSION", Error, "the file format version has major version 1";
    /// The disk type is fixed, dynamic or differencing.
    FtrDiskType => "FTR-DISK-TYPE", Error, "the disk type is 2 (fixed), 3 (dynamic) or 4 (differencing)";
    /// The current size is a whole number of sectors.
    FtrCurrentSize => "FTR-CURRENT-SIZE", Warning, "the current size is a multiple of 512 bytes";
    /// A dynamic or differencing footer points at a dynamic header inside the file.
    FtrDataOffset => "FTR-DATA-OFFSET", Error, "the data offset of a dynamic or differencing footer points at a dynamic header that lies inside the file, after the footer copy and before the trailing footer";
    /// The data offset of a fixed image is all ones.
    FtrFixedDataOffset => "FTR-FIXED-DATA-OFFSET", Warning, "the data offset of a fixed footer is 0xFFFFFFFFFFFFFFFF";
    /// A fixed image holds its whole data area.
    FtrFixedLength => "FTR-FIXED-LENGTH", Error, "a fixed image holds current_size bytes of data before its footer";
    /// A fixed image has nothing between the data and the footer.
    FtrFixedSlack => "FTR-FIXED-SLACK", Warning, "a fixed image has no bytes between the end of its data and its footer";
    /// The footer is 512 bytes long.
    Ftr511 => "FTR-511", Warning, "the trailing footer is 512 bytes (some old writers left 511)";
    /// The trailing footer is present and valid.
    FtrTrailing => "FTR-TRAILING", Warning, "a dynamic or differencing image ends with a valid footer (if only the copy at offset 0 is valid, the image opens read-only)";
    /// The footer copy equals the trailing footer.
    FtrCopyMismatch => "FTR-COPY-MISMATCH", Warning, "the footer copy at offset 0 of a dynamic or differencing image equals the trailing footer";
    /// The reserved feature bit is set.
    FtrFeatures => "FTR-FEATURES", Warning, "the features field has the reserved bit 0x2 set and no unknown bits";
    /// The image is not in a saved state.
    FtrSavedState => "FTR-SAVED-STATE", Warning, "the saved-state flag is clear";
    /// The unique ID is not all zeros.
    FtrUniqueId => "FTR-UNIQUE-ID", Warning, "the unique ID is not all zeros";
    /// The reserved bytes of the footer are zero.
    FtrReserved => "FTR-RESERVED", Warning, "the 427 reserved bytes at the end of the footer are zero";
    /// The stored geometry is what the spec algorithm gives for `current_size`.
    GeoAlgorithm => "GEO-ALGORITHM", Warning, "the disk geometry is the one the spec algorithm computes from current_size";
    /// The dynamic header cookie is `cxsparse`.
    HdrCookie => "HDR-COOKIE", Error, "the dynamic header starts with the cookie \"cxsparse\"";
    /// The dynamic header checksum matches.
    HdrChecksum => "HDR-CHECKSUM", Error, "the dynamic header checksum is the ones' complement of the byte sum of the header without its checksum field";
    /// The dynamic header version is 1.0.
    HdrVersion => "HDR-VERSION", Error, "the dynamic header version has major version 1";
    /// The dynamic header's own data offset is unused.
    HdrDataOffset => "HDR-DATA-OFFSET", Warning, "the data offset of the dynamic header is 0xFFFFFFFFFFFFFFFF";
    /// The reserved fields of the dynamic header are zero.
    HdrReserved => "HDR-RESERVED", Warning, "the reserved fields of the dynamic header (4 bytes at 0x3C, the last 256 bytes) are zero";
    /// The block size is a power of two within the accepted range.
    HdrBlockSize => "HDR-BLOCK-SIZE", Error, "the block size is a power of two from 512 bytes to 1 GiB";
    /// The BAT has an entry for every block of the disk, within bounds.
    HdrMaxTableEntries => "HDR-MAX-TABLE-ENTRIES", Error, "max_table_entries covers current_size and the disk has at most 2^26 blocks";
    /// The BAT lies inside the file, apart from the header and footers.
    HdrTableOffset => "HDR-TABLE-OFFSET", Error, "the BAT lies inside the file, sector aligned, and overlaps neither the footers nor the dynamic header";
    /// Every allocated block lies inside the file.
    BatEntryBeyondEof => "BAT-ENTRY-BEYOND-EOF", Error, "every allocated block (bitmap and data) ends before the trailing footer";
    /// Allocated blocks overlap nothing.
    BatEntryOverlap => "BAT-ENTRY-OVERLAP", Error, "no allocated block overlaps another block, the dynamic header, the BAT or a footer";
    /// BAT entries past the end of the disk are unallocated.
    BatEntryUnused => "BAT-ENTRY-UNUSED", Warning, "BAT entries for blocks past current_size are unallocated (0xFFFFFFFF)";
    /// Bitmap bits over non-zero data are set.
    BmpClearData => "BMP-CLEAR-DATA", Warning, "in a dynamic image, every sector of an allocated block whose bitmap bit is clear holds only zeros";
    /// Bitmap bits past the end of the disk are clear.
    BmpPastEnd => "BMP-PAST-END", Warning, "the bitmap bits of sectors past current_size (in the last block) are clear";
    /// No block-sized space in the file is unreferenced.
    FileLeak => "FILE-LEAK", Warning, "no region of the file between the metadata and the trailing footer that one more block fits in (its data on a 4 KiB boundary when every block's data is) is referenced by nothing";
    /// Nothing but zeros between the last structure and the trailing footer.
    FileTail => "FILE-TAIL", Warning, "the bytes between the last block or metadata structure and the trailing footer (too few for a block) are zeros";
    /// Metadata comes before the blocks.
    FileOrder => "FILE-ORDER", Warning, "the dynamic header, the BAT and the parent locator data lie before the first block";
    /// Parent locators lie inside the file.
    ParLocatorBounds => "PAR-LOCATOR-BOUNDS", Warning, "a parent locator's data lies inside the file and is at most 64 KiB";
    /// Parent locators use a known platform code.
    ParLocatorPlatform => "PAR-LOCATOR-PLATFORM", Warning, "a parent locator's platform code is W2ru, W2ku, Wi2r, Wi2k, Mac , MacX or none";
    /// Parent locator data decodes as text.
    ParLocatorEncoding => "PAR-LOCATOR-ENCODING", Warning, "a parent locator's data is UTF-16LE (W2ru, W2ku) or UTF-8 (Mac, MacX) text";
    /// The parent name decodes as UTF-16.
    ParName => "PAR-NAME", Warning, "the parent unicode name is valid UTF-16 big-endian";
    /// Locator data overlaps no other structure.
    ParLocatorOverlap => "PAR-LOCATOR-OVERLAP", Warning, "a parent locator's data overlaps neither another locator's data, the footer copy, the dynamic header nor the BAT";
    /// A locator's data space holds its data.
    ParLocatorSpace => "PAR-LOCATOR-SPACE", Warning, "a parent locator's data space (in bytes or in sectors) is at least its data length";
    /// A differencing image has a locator with a path.
    ParLocatorMissing => "PAR-LOCATOR-MISSING", Warning, "a differencing image has at least one locator with a path (W2ru, W2ku, Wi2r, Wi2k or MacX)";
    /// A differencing image's parent can be found.
    ParNotFound => "PAR-NOT-FOUND", Error, "the parent of a differencing image can be found through the caller, its locators or its name";
    /// The parent found is a valid image.
    ParInvalid => "PAR-INVALID", Error, "the parent that the caller or a locator names is a valid VHD image";
    /// The parent is the image the child was made from.
    ParUniqueId => "PAR-UNIQUE-ID", Error, "the parent's unique ID equals the parent unique ID in the child's header";
    /// The parent was not changed since the child was made.
    ParTimestamp => "PAR-TIMESTAMP", Warning, "the parent's footer time stamp equals the parent time stamp in the child's header";
    /// The parent found has the name the child records.
    ParNameMismatch => "PAR-NAME-MISMATCH", Warning, "the file name in parent_unicode_name is the file name of the parent found";
    /// Parent and child have the same size.
    ParSize => "PAR-SIZE", Error, "a differencing image has the same current_size as its parent";
    /// A chain does not loop.
    ParLoop => "PAR-LOOP", Error, "no image is its own ancestor";
    /// A chain is not deeper than the bound.
    ParDepth => "PAR-DEPTH", Error, "a chain has at most 64 images";
}

/// Whether the check of `rule` is switched off. Always `false` in a
/// normal build; with the cargo feature `rule-mutants` it is `true` for
/// the rule whose ID is in the environment variable `VHDREF_DISABLE_RULE`.
///
/// `scripts/rule-mutants.sh` uses it to show that the tests cited for each
/// rule in `spec/rules.md` fail when that rule is not enforced. Every place
/// that enforces a rule asks it, in the same way: an error rule whose
/// check is off lets the image through as if the check had passed, and a
/// warning rule whose check is off is not reported.
#[cfg(not(feature = "rule-mutants"))]
#[inline]
pub(crate) const fn disabled(_rule: Rule) -> bool {
    false
}

/// Whether the check of `rule` is switched off: the rule whose ID is in
/// `VHDREF_DISABLE_RULE` (read once). See the normal build's `disabled`.
#[cfg(feature = "rule-mutants")]
pub(crate) fn disabled(rule: Rule) -> bool {
    static OFF: std::sync::OnceLock<Option<Rule>> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| {
        let id = std::env::var("VHDREF_DISABLE_RULE")
            .ok()
            .filter(|id| !id.is_empty())?;
        let rule = Rule::from_id(&id);
        assert!(rule.is_some(), "VHDREF_DISABLE_RULE={id} is no rule");
        rule
    }) == Some(rule)
}

/// `finding`, unless the check of its rule is switched off (see
/// [`disabled`]): `findings.extend(rules::enforced(Finding::new(..)))`.
pub(crate) fn enforced(finding: Finding) -> Option<Finding> {
    (!disabled(finding.rule)).then_some(finding)
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// One broken rule found in an image: what rule, how bad, where in the
/// file, and the details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule broken.
    pub rule: Rule,
    /// How bad it is here: the rule's severity, except where the caller
    /// asked to accept it (`--ignore-parent-id` makes PAR-UNIQUE-ID a
    /// warning).
    pub severity: Severity,
    /// What exactly is wrong, with the numbers.
    pub message: String,
    /// The byte offset in the file the finding is about, when it is about
    /// one place.
    pub offset: Option<u64>,
    /// How many bytes from `offset` it is about.
    pub length: Option<u64>,
}

impl Finding {
    /// A finding of `rule` with its own severity.
    pub fn new(rule: Rule, message: impl Into<String>) -> Self {
        Finding {
            rule,
            severity: rule.severity(),
            message: message.into(),
            offset: None,
            length: None,
        }
    }

    /// The same finding about `length` bytes at file offset `offset`.
    #[must_use]
    pub fn at(mut self, offset: u64, length: u64) -> Self {
        self.offset = Some(offset);
        self.length = Some(length);
        self
    }

    /// The same finding as a warning (a rule the caller chose to accept).
    #[must_use]
    pub fn as_warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.rule.id())
    }
}
