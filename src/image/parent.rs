//! The parent of a differencing image: how it was found, and the checks
//! of a parent against its child. Finding it is `super::resolver`'s job,
//! decoding the references `super::locators`'.

use crate::error::{Error, Result};
use crate::rules::{self, Finding, Rule};
use crate::storage::Storage;

use super::locators::{self, Decoded};
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

impl Image {
    /// Decodes this image's parent references into candidates (reading
    /// the locator data from the file).
    pub(crate) fn decode_locators(&mut self) -> Decoded {
        let Layout::Sparse(sparse) = &self.layout else {
            return Decoded::default();
        };
        let storage = &self.storage;
        let mut read = |offset: u64, len: u32| -> std::result::Result<Vec<u8>, String> {
            let mut data = vec![0u8; len as usize];
            storage
                .read_exact_at(&mut data, offset)
                .map(|()| data)
                .map_err(|e| e.to_string())
        };
        locators::decode(&sparse.header, self.footer_offset, &mut read)
    }
}

/// Checks a parent against its child: unique ID (error, or a warning when
/// ignored), size (error), time stamp (warning).
pub(crate) fn check_parent(child: &mut Image, parent: &Image, ignore_id: bool) -> Result<()> {
    let Some(header) = child.dyn_header().cloned() else {
        return Ok(());
    };
    let found = parent.footer().unique_id;
    if found != header.parent_unique_id && !rules::disabled(Rule::ParUniqueId) {
        let e = Error::ParentUniqueId {
            parent: parent.name().to_string(),
            expected: header.parent_unique_id,
            found,
        };
        if !ignore_id {
            return Err(e);
        }
        child.findings.push(
            Finding::new(
                Rule::ParUniqueId,
                format!("{}; accepted as asked", e.text_without_rule()),
            )
            .as_warning(),
        );
    }
    if parent.size() != child.size() && !rules::disabled(Rule::ParSize) {
        return Err(Error::ParentSize {
            parent: parent.name().to_string(),
            parent_size: parent.size(),
            child_size: child.size(),
        });
    }
    if let Some(f) = name_mismatch(&header, parent) {
        child.findings.push(f);
    }
    let stamp = header.parent_time_stamp;
    let mtime_matches = parent
        .path()
        .and_then(|p| p.metadata().ok())
        .and_then(|m| m.modified().ok())
        .is_some_and(|t| crate::format::Timestamp::from_system_time(t) == stamp);
    if stamp != parent.footer().time_stamp && !mtime_matches && !rules::disabled(Rule::ParTimestamp)
    {
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

/// PAR-NAME-MISMATCH: the file name the child records for its parent (the
/// part of `parent_unicode_name` after the last separator) is the file
/// name of the parent found, compared without case as Windows does. Only
/// for a parent opened from a file and a name that decodes.
pub(crate) fn name_mismatch(header: &crate::format::DynHeader, parent: &Image) -> Option<Finding> {
    let Some(Ok(name)) = header.parent_name() else {
        return None;
    };
    let recorded = name.rsplit(['\\', '/']).next().unwrap_or(&name);
    let actual = parent.path()?.file_name()?.to_string_lossy();
    if recorded.is_empty()
        || recorded.to_lowercase() == actual.to_lowercase()
        || rules::disabled(Rule::ParNameMismatch)
    {
        return None;
    }
    Some(Finding::new(
        Rule::ParNameMismatch,
        format!("the child names its parent {recorded:?}, but the parent found is {actual:?}"),
    ))
}
