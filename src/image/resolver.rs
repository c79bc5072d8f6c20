//! Finding the parent of a differencing image: the one place that looks at
//! the file system for parents, and the policy it follows.
//!
//! The candidates come from pure code (`super::locators`); this module
//! decides which of them may be opened ([`ParentResolver`]: everywhere,
//! only inside some directories, or nowhere), guards the chain against
//! loops and excessive depth (by file identity, so a hard link or a
//! symbolic link to an image already in the chain is a loop), tries each
//! file once, and decides which file an error names:
//!
//! * a candidate that exists but is not a usable image gives PAR-INVALID,
//!   naming that file and the rule it breaks itself;
//! * a candidate that is a valid image of another identity gives
//!   PAR-UNIQUE-ID;
//! * a candidate that is locked, unreadable or can only be read (when it
//!   is to be written) gives that error, naming the file;
//! * an error deeper in the chain (a parent's parent) passes through as it
//!   is: it already names its own files;
//! * when nothing is found, PAR-NOT-FOUND lists every place tried, once.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::rules::{self, Rule};

use super::Image;
use super::locators::{Candidate, Origin};
use super::open::{MAX_CHAIN_DEPTH, OpenOptions};
use super::parent::ParentSource;

/// Which files a differencing image's references may lead to.
///
/// ```
/// use vhdref::image::ParentResolver;
/// let anywhere = ParentResolver::new();
/// let only_here = ParentResolver::new().allow_dirs(vec!["/srv/images".into()]);
/// let nowhere = ParentResolver::deny_all();
/// # let _ = (anywhere, only_here, nowhere);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ParentResolver {
    allowed_dirs: Option<Vec<PathBuf>>,
    deny_all: bool,
}

impl ParentResolver {
    /// Follows locators to any file the caller can open.
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows no locator and no parent name: a differencing image then
    /// needs its parent given by the caller (for images in memory, or
    /// files whose references must not be trusted at all).
    pub fn deny_all() -> Self {
        ParentResolver {
            allowed_dirs: None,
            deny_all: true,
        }
    }

    /// Follows locators only to files inside these directories; a
    /// reference to anywhere else is skipped and named in the error.
    #[must_use]
    pub fn allow_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.allowed_dirs = Some(dirs);
        self
    }

    fn allows(&self, path: &Path) -> bool {
        let Some(dirs) = &self.allowed_dirs else {
            return true;
        };
        let Ok(canonical) = path.canonicalize() else {
            return false;
        };
        dirs.iter()
            .any(|d| d.canonicalize().is_ok_and(|d| canonical.starts_with(d)))
    }
}

/// What identifies a file: device and inode where the system has them,
/// else the canonical path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileId {
    /// Device and inode.
    #[cfg_attr(not(unix), allow(dead_code))]
    Inode(u64, u64),
    /// Canonical path.
    #[cfg_attr(unix, allow(dead_code))]
    Path(PathBuf),
}

/// The identity of the file at `path` whose metadata is `meta`.
pub(crate) fn file_id(path: &Path, meta: &std::fs::Metadata) -> FileId {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = path;
        FileId::Inode(meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        FileId::Path(path.canonicalize().unwrap_or_else(|_| path.to_path_buf()))
    }
}

/// The images already open in a chain, to refuse loops and bound depth.
#[derive(Debug, Default, Clone)]
pub(crate) struct ChainGuard {
    seen: Vec<Option<FileId>>,
}

impl ChainGuard {
    /// Enters the image named `name` (identity `id`, if it is a file):
    /// PAR-LOOP if it is already in the chain, PAR-DEPTH if the chain would
    /// grow past the bound.
    pub(crate) fn enter(&mut self, id: Option<FileId>, name: &str) -> Result<()> {
        if id.is_some() && self.seen.contains(&id) && !rules::disabled(Rule::ParLoop) {
            return Err(Error::ParentLoop {
                path: name.to_string(),
            });
        }
        if self.seen.len() >= MAX_CHAIN_DEPTH && !rules::disabled(Rule::ParDepth) {
            return Err(Error::ParentDepth {
                limit: MAX_CHAIN_DEPTH,
            });
        }
        self.seen.push(id);
        Ok(())
    }

    /// Enters the image file at `path` (its identity from the file system).
    pub(crate) fn enter_file(&mut self, path: &Path) -> Result<()> {
        let meta = image_metadata(path, true)?;
        self.enter(Some(file_id(path, &meta)), &path.display().to_string())
    }

    /// How many images are in the chain so far.
    pub(crate) fn depth(&self) -> usize {
        self.seen.len()
    }
}

/// The metadata of a path that should hold an image: a regular file, or
/// a block device when `devices` allows it.
pub(crate) fn image_metadata(path: &Path, devices: bool) -> Result<std::fs::Metadata> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    if meta.is_file() || (devices && is_block_device(&meta)) {
        Ok(meta)
    } else {
        Err(Error::NotAFile {
            path: path.display().to_string(),
        })
    }
}

#[cfg(unix)]
fn is_block_device(meta: &std::fs::Metadata) -> bool {
    std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type())
}

#[cfg(not(unix))]
fn is_block_device(_meta: &std::fs::Metadata) -> bool {
    false
}

/// The best reason found so far for not having a parent.
#[derive(Default)]
struct Verdicts {
    /// Exists but cannot be used now (locked, unreadable, read-only).
    blocked: Option<Error>,
    /// A valid image with another unique ID.
    mismatch: Option<Error>,
    /// Exists but is not a usable image.
    invalid: Option<Error>,
}

impl ParentResolver {
    /// Opens the parent the caller named (`--parent`): PAR-NOT-FOUND if it
    /// does not exist, PAR-INVALID if it is not a usable image.
    pub(crate) fn open_given(
        child: &Image,
        path: &Path,
        options: &OpenOptions,
        guard: &mut ChainGuard,
    ) -> Result<(Image, ParentSource)> {
        let of = of_child(child, guard);
        let shown = path.display().to_string();
        // Off, the parent's own error is reported as the child's.
        let invalid = |cause: Error| {
            if rules::disabled(Rule::ParInvalid) {
                return cause;
            }
            Error::ParentInvalid {
                parent: shown.clone(),
                of: of.clone(),
                cause: Box::new(cause),
                tried: None,
            }
        };
        let meta = match image_metadata(path, true) {
            Ok(m) => m,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::ParentNotFound {
                    of,
                    tried: format!("{shown} (given): no such file"),
                });
            }
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => return Err(invalid(e)),
        };
        guard.enter(Some(file_id(path, &meta)), &shown)?;
        let mut popts = options.clone_for_parent();
        let mut image = match popts.open_layer_file(path) {
            Ok(image) => image,
            Err(e) if is_blocking(&e) => return Err(e),
            Err(e) => return Err(invalid(e)),
        };
        popts.attach_parent(&mut image, guard)?;
        popts.check_writable(&image)?;
        Ok((image, ParentSource::Caller(shown)))
    }

    /// Finds the parent of `child` through its references, in order.
    pub(crate) fn find(
        &self,
        child: &mut Image,
        options: &OpenOptions,
        guard: &mut ChainGuard,
    ) -> Result<(Image, ParentSource)> {
        let decoded = child.decode_locators();
        child.findings.extend(decoded.findings);
        let mut search = Search {
            of: of_child(child, guard),
            expected: child
                .dyn_header()
                .map(|h| h.parent_unique_id)
                .unwrap_or_default(),
            tried: decoded.skipped,
            ids: Vec::new(),
            missing: Vec::new(),
            verdicts: Verdicts::default(),
        };
        if self.deny_all {
            search
                .tried
                .push("parent lookups are disabled; give the parent explicitly".into());
            return Err(search.not_found());
        }
        let child_dir = child
            .path()
            .and_then(Path::parent)
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        for Candidate { path, origin } in decoded.candidates {
            let path = if path.is_absolute() {
                path
            } else {
                child_dir.join(path)
            };
            if let Some(found) = search.try_candidate(self, &path, origin, options, guard)? {
                return Ok(found);
            }
        }
        Err(search.verdict())
    }
}

/// The state of one search for a parent.
struct Search {
    /// The child, when it is not the image opened.
    of: Option<String>,
    /// The unique ID the child records.
    expected: uuid::Uuid,
    /// Every place looked at, with why it was not used.
    tried: Vec<String>,
    /// Files already tried (by identity).
    ids: Vec<FileId>,
    /// Missing files already listed (by absolute spelling).
    missing: Vec<PathBuf>,
    verdicts: Verdicts,
}

impl Search {
    /// Tries one candidate: `Some` when it is the parent (with its chain
    /// attached), `None` to go on; an error that ends the search (a loop,
    /// too deep, or a problem deeper in the chain).
    fn try_candidate(
        &mut self,
        resolver: &ParentResolver,
        path: &Path,
        origin: Origin,
        options: &OpenOptions,
        guard: &mut ChainGuard,
    ) -> Result<Option<(Image, ParentSource)>> {
        let shown = path.display().to_string();
        let kind = origin_kind(&origin);
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // The same missing file by another reference is listed once.
                let spelled = std::path::absolute(path)
                    .map_or_else(|_| path.to_path_buf(), |p| p.components().collect());
                if !self.missing.contains(&spelled) {
                    self.missing.push(spelled);
                    self.tried.push(format!("{shown} ({kind}): no such file"));
                }
                return Ok(None);
            }
            Err(e) => {
                self.tried.push(format!("{shown} ({kind}): {e}"));
                self.verdicts
                    .blocked
                    .get_or_insert(Error::io(format!("opening {shown}"), e));
                return Ok(None);
            }
        };
        let id = file_id(path, &meta);
        if self.ids.contains(&id) {
            // The same file by another reference: tried once.
            return Ok(None);
        }
        self.ids.push(id.clone());
        if !resolver.allows(path) {
            self.tried.push(format!(
                "{shown} ({kind}): outside the allowed directories, not followed"
            ));
            return Ok(None);
        }
        // A reference comes from the file: never open a FIFO (which would
        // wait for a writer forever) or a device because an image says so.
        if !meta.is_file() {
            self.tried
                .push(format!("{shown} ({kind}): not a regular file, not opened"));
            let cause = Error::NotAFile {
                path: shown.clone(),
            };
            self.invalid(shown, cause);
            return Ok(None);
        }
        let mut sub = guard.clone();
        sub.enter(Some(id), &shown)?;
        let mut popts = options.clone_for_parent();
        let mut image = match popts.open_layer_file(path) {
            Ok(image) => image,
            Err(e) => {
                self.tried.push(format!("{shown} ({kind}): {e}"));
                if is_blocking(&e) {
                    self.verdicts.blocked.get_or_insert(e);
                } else {
                    self.invalid(shown, e);
                }
                return Ok(None);
            }
        };
        let found = image.footer().unique_id;
        let expected = self.expected;
        if found != expected && !options.ignore_parent_id && !rules::disabled(Rule::ParUniqueId) {
            self.tried.push(format!(
                "{shown} ({kind}): unique ID {found} is not the {expected} the child records"
            ));
            self.verdicts.mismatch.get_or_insert(Error::ParentUniqueId {
                parent: shown,
                expected,
                found,
            });
            return Ok(None);
        }
        popts.attach_parent(&mut image, &mut sub)?;
        popts.check_writable(&image)?;
        *guard = sub;
        let source = match origin {
            Origin::Locator { platform, text } => ParentSource::Locator {
                platform,
                locator: text,
                path: shown,
            },
            Origin::Name => ParentSource::Name(shown),
        };
        Ok(Some((image, source)))
    }

    /// Notes a candidate that exists but is not a usable image.
    fn invalid(&mut self, parent: String, cause: Error) {
        if rules::disabled(Rule::ParInvalid) {
            self.verdicts.invalid.get_or_insert(cause);
            return;
        }
        self.verdicts.invalid.get_or_insert(Error::ParentInvalid {
            parent,
            of: self.of.clone(),
            cause: Box::new(cause),
            tried: None,
        });
    }

    /// The error when no candidate was the parent, by precedence.
    fn verdict(mut self) -> Error {
        let verdicts = std::mem::take(&mut self.verdicts);
        match verdicts.blocked.or(verdicts.mismatch).or(verdicts.invalid) {
            Some(Error::ParentInvalid {
                parent, of, cause, ..
            }) => Error::ParentInvalid {
                parent,
                of,
                cause,
                tried: (self.tried.len() > 1).then(|| self.tried.join("; ")),
            },
            Some(e) => e,
            None => self.not_found(),
        }
    }

    fn not_found(mut self) -> Error {
        if self.tried.is_empty() {
            self.tried
                .push("the image has no usable locator and no parent name".into());
        }
        Error::ParentNotFound {
            of: self.of,
            tried: self.tried.join("; "),
        }
    }
}

/// The error of opening a parent the caller named, as an error about that
/// parent: PAR-NOT-FOUND if it does not exist, PAR-INVALID if it is not a
/// usable image; errors that already name a file (locks, I/O, problems
/// deeper in its chain) pass through.
pub(crate) fn given_parent_error(path: &Path, e: Error) -> Error {
    let shown = path.display().to_string();
    match e {
        Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::ParentNotFound {
                of: None,
                tried: format!("{shown} (given): no such file"),
            }
        }
        e if is_blocking(&e)
            || e.kind() == crate::ErrorKind::Parent
            || rules::disabled(Rule::ParInvalid) =>
        {
            e
        }
        e => Error::ParentInvalid {
            parent: shown,
            of: None,
            cause: Box::new(e),
            tried: None,
        },
    }
}

/// Errors that say a file is there but cannot be used right now: they are
/// reported as they are, naming the file.
fn is_blocking(e: &Error) -> bool {
    matches!(
        e,
        Error::Locked { .. } | Error::Io { .. } | Error::ReadOnly { .. }
    )
}

/// The child's name for messages about a parent deeper in the chain
/// (`None` for the image the caller opened).
fn of_child(child: &Image, guard: &ChainGuard) -> Option<String> {
    (guard.depth() > 1).then(|| child.name().to_string())
}

fn origin_kind(origin: &Origin) -> String {
    match origin {
        Origin::Locator { platform, .. } => format!("{platform} locator"),
        Origin::Name => "parent name".into(),
    }
}
