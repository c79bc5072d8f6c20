//! The conformance corpus as `vhd conform` uses it: `manifest.json`
//! (schema 2, documented in `corpora/README.md`) and a way to copy a case
//! somewhere a peer may do what it likes with it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use serde::Deserialize;

use super::ConformError;
use crate::rules::{Rule, Severity};

/// The manifest schema this code reads.
pub const MANIFEST_SCHEMA: u64 = 2;

/// The corpus of the source tree this crate was built from, if it is
/// still there (`corpora/` beside `Cargo.toml`).
pub fn default_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora");
    dir.join("manifest.json").is_file().then_some(dir)
}

/// The corpus: its directory and its cases, in manifest order.
#[derive(Debug, Clone)]
pub struct Corpus {
    root: PathBuf,
    cases: Vec<CorpusCase>,
}

/// The verdict the manifest gives a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// No rule broken.
    Valid,
    /// Only warning rules broken: the image opens and reads right.
    Warnings,
    /// An error rule broken: a reader must refuse the image.
    Errors,
}

impl Expected {
    /// `valid`, `warnings` or `errors`, as the manifest spells it.
    pub fn name(self) -> &'static str {
        match self {
            Expected::Valid => "valid",
            Expected::Warnings => "warnings",
            Expected::Errors => "errors",
        }
    }
}

/// One image of a chain, as the manifest lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Layer {
    /// Path relative to the corpus (may end in `.gz`).
    pub file: String,
}

/// The `info` fields of a case that opens (only those conform needs).
#[derive(Debug, Clone, Deserialize)]
pub struct CaseInfo {
    /// `fixed`, `dynamic` or `differencing`.
    #[serde(rename = "type")]
    pub disk_type: String,
}

/// One case of the manifest (the fields conform uses; the others are
/// ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct CorpusCase {
    /// Unique name, the file stem or the chain's directory.
    pub name: String,
    /// The image to open, relative to the corpus; may end in `.gz`.
    pub file: String,
    /// Valid, warnings or errors.
    pub verdict: Expected,
    /// Every rule ID the case breaks.
    #[serde(default)]
    pub rules: Vec<String>,
    /// For `PAR-INVALID` cases: what the invalid parent breaks on its own.
    #[serde(default)]
    pub parent_rules: Vec<String>,
    /// Whether a reader must open it and read `sha256`.
    pub open: bool,
    /// Guest size in bytes (what the footer claims; none without a footer).
    pub current_size: Option<u64>,
    /// SHA-256 of the guest contents, for cases that open.
    pub sha256: Option<String>,
    /// The chain, top child first (chains only).
    #[serde(default)]
    pub layers: Option<Vec<Layer>>,
    /// `vhd info` fields, for cases that open.
    #[serde(default)]
    pub info: Option<CaseInfo>,
    /// Known disagreements of peers on this case.
    #[serde(default)]
    pub peer_notes: Option<String>,
    /// What the case is.
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Deserialize)]
struct Manifest {
    schema_version: u64,
    cases: Vec<CorpusCase>,
}

impl Corpus {
    /// Reads `DIR/manifest.json`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Corpus, ConformError> {
        let root = dir.as_ref().to_path_buf();
        let path = root.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| ConformError::Corpus {
            path: path.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| ConformError::Corpus {
            path: path.clone(),
            message: format!("not a corpus manifest: {e}"),
        })?;
        if manifest.schema_version != MANIFEST_SCHEMA {
            return Err(ConformError::Corpus {
                path,
                message: format!(
                    "manifest schema version {} (this vhd reads version {MANIFEST_SCHEMA})",
                    manifest.schema_version
                ),
            });
        }
        for case in &manifest.cases {
            if let Some(problem) = case.problem() {
                return Err(ConformError::Corpus {
                    path,
                    message: format!("case {:?}: {problem}", case.name),
                });
            }
        }
        Ok(Corpus {
            root,
            cases: manifest.cases,
        })
    }

    /// The corpus directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every case, in manifest order.
    pub fn cases(&self) -> &[CorpusCase] {
        &self.cases
    }
}

/// Whether a stored file is gzip-compressed (its name ends in `.gz`).
fn is_gz(name: &str) -> bool {
    Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// The stored name without `.gz`.
fn unpacked(name: &str) -> &str {
    if is_gz(name) {
        &name[..name.len() - 3]
    } else {
        name
    }
}

/// Whether a relative path from the manifest stays inside the corpus: no
/// root, no `..`.
fn stays_inside(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

impl CorpusCase {
    /// Why the entry cannot be used, if it cannot.
    fn problem(&self) -> Option<String> {
        if !stays_inside(&self.file) {
            return Some(format!("file {:?} leaves the corpus directory", self.file));
        }
        if self.open && (self.sha256.is_none() || self.current_size.is_none()) {
            return Some("a case that opens needs sha256 and current_size".into());
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            return Some("a name is one path component".into());
        }
        None
    }

    /// Whether the image to open is a differencing image (a chain).
    pub fn is_differencing(&self) -> bool {
        self.layers.is_some()
            || self
                .info
                .as_ref()
                .is_some_and(|i| i.disk_type == "differencing")
    }

    /// The error rules the case breaks (what a reader should have seen),
    /// its invalid parent's included.
    pub fn error_rules(&self) -> Vec<String> {
        self.rules
            .iter()
            .chain(&self.parent_rules)
            .filter(|id| Rule::from_id(id).is_none_or(|r| r.severity() == Severity::Error))
            .cloned()
            .collect()
    }

    /// The directory of the case relative to the corpus (a chain's own
    /// directory), or `None` for a single image at the top level.
    fn dir(&self) -> Option<&str> {
        self.file.rsplit_once('/').map(|(dir, _)| dir)
    }

    /// Copies the case (its whole directory for a chain) from `corpus`
    /// into `into`, gunzipping `.gz` files and keeping the layout, so that
    /// parent locators resolve. Runs of zeros become holes. Returns the
    /// path of the image to open.
    pub fn materialize(&self, corpus: &Corpus, into: &Path) -> Result<PathBuf, ConformError> {
        let src = corpus.root();
        let files = match self.dir() {
            Some(dir) => {
                let mut files = Vec::new();
                list_files(&src.join(dir), dir, &mut files).map_err(|e| ConformError::Corpus {
                    path: src.join(dir),
                    message: format!("cannot list it: {e}"),
                })?;
                files
            }
            None => vec![self.file.clone()],
        };
        for f in &files {
            let to = into.join(unpacked(f));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| ConformError::Io {
                    path: parent.to_path_buf(),
                    message: format!("cannot create it: {e}"),
                })?;
            }
            copy_unpacked(&src.join(f), &to).map_err(|e| ConformError::Corpus {
                path: src.join(f),
                message: format!("cannot copy it: {e}"),
            })?;
        }
        Ok(into.join(unpacked(&self.file)))
    }
}

/// Every file under `dir` (whose name relative to the corpus is `rel`),
/// as corpus-relative names.
fn list_files(dir: &Path, rel: &str, out: &mut Vec<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let rel_name = format!("{rel}/{name}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            list_files(&entry.path(), &rel_name, out)?;
        } else if kind.is_file() {
            out.push(rel_name);
        }
    }
    Ok(())
}

/// Copies `from` to `to`, gunzipping it if its name ends in `.gz`; runs
/// of zeros are skipped with a seek, so a huge empty block costs no space.
fn copy_unpacked(from: &Path, to: &Path) -> io::Result<()> {
    let file = File::open(from)?;
    let mut reader: Box<dyn Read> = if is_gz(&from.to_string_lossy()) {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut out = File::create(to)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if crate::convert::is_zero(&buf[..n]) {
            out.seek(SeekFrom::Current(
                i64::try_from(n).map_err(io::Error::other)?,
            ))?;
        } else {
            out.write_all(&buf[..n])?;
        }
        len += n as u64;
    }
    out.set_len(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_must_stay_inside_the_corpus() {
        assert!(stays_inside("a.vhd"));
        assert!(stays_inside("chain/child.vhd.gz"));
        assert!(!stays_inside("../etc/passwd"));
        assert!(!stays_inside("/etc/passwd"));
        assert!(!stays_inside("chain/../../x"));
        assert!(!stays_inside(""));
    }

    #[test]
    fn gz_names_lose_their_suffix_when_unpacked() {
        assert_eq!(unpacked("a/b.vhd.gz"), "a/b.vhd");
        assert_eq!(unpacked("a/b.vhd"), "a/b.vhd");
        assert_eq!(unpacked("b.VHD.GZ"), "b.VHD");
    }
}
