//! The checker: judges an image (and every layer of its chain) against
//! every rule of `spec/rules.md` and reports all findings, not just the
//! first error.
//!
//! Where `open` stops at the first error, the checker goes on wherever what
//! remains can still be read: a footer or header whose checksum is wrong
//! still describes a BAT that can be judged; one bad BAT entry does not
//! hide the next. It stops only where nothing further can be located (no
//! cookie, an unknown disk type or version, a header or BAT outside the
//! file).
//!
//! Every error the checker reports is one that makes `open` refuse the
//! image, and every image it calls clean opens and reads as the model
//! says: both read the same rule checks (the predicates in
//! `image::open`), the checker only keeps going where `open` returns.
//!
//! Memory and time are bounded by the metadata, not by the disk: the BAT
//! is read 64 KiB at a time, bitmaps one block at a time, data (for
//! BMP-CLEAR-DATA and FILE-TAIL) in windows of 1 MiB, and each rule
//! reports at most [`CheckOptions::max_findings_per_rule`] findings per
//! image, then one that counts the rest.
//!
//! ```
//! use vhdref::check::{CheckOptions, Verdict, check_storage};
//! use vhdref::storage::MemStorage;
//! use vhdref::{CreateOptions, DiskType};
//!
//! let mem = MemStorage::new();
//! CreateOptions::new(DiskType::Dynamic, 8 << 20)
//!     .create_in(Box::new(mem.clone()), "disk.vhd", None)?
//!     .close()?;
//! let report = check_storage(&mem, "disk.vhd", &CheckOptions::new());
//! assert_eq!(report.verdict(), Verdict::Clean);
//! # Ok::<(), vhdref::Error>(())
//! ```

mod layer;
mod space;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, ErrorKind};
use crate::format::DiskType;
use crate::image::{Image, OpenOptions, ParentResolver};
use crate::rules::{Finding, Rule, Severity};
use crate::storage::{FileStorage, Storage};

/// What to check and how.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    parent: Option<PathBuf>,
    ignore_parent_id: bool,
    resolver: ParentResolver,
    follow_parents: bool,
    data_checks: bool,
    max_findings_per_rule: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            parent: None,
            ignore_parent_id: false,
            resolver: ParentResolver::new(),
            follow_parents: true,
            data_checks: true,
            max_findings_per_rule: 32,
        }
    }
}

impl CheckOptions {
    /// Every check, parents found through their locators.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this file as the parent of a differencing image.
    #[must_use]
    pub fn parent(mut self, path: impl Into<PathBuf>) -> Self {
        self.parent = Some(path.into());
        self
    }

    /// Accept a parent whose unique ID differs from the child's record:
    /// PAR-UNIQUE-ID is then reported as a warning.
    #[must_use]
    pub fn ignore_parent_id(mut self, ignore: bool) -> Self {
        self.ignore_parent_id = ignore;
        self
    }

    /// The policy for following parent references (see [`ParentResolver`]).
    #[must_use]
    pub fn resolver(mut self, resolver: ParentResolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// Judge the parents of a differencing image too (the default).
    #[must_use]
    pub fn follow_parents(mut self, follow: bool) -> Self {
        self.follow_parents = follow;
        self
    }

    /// Read the data of allocated blocks where the bitmap says there is
    /// none (BMP-CLEAR-DATA) and the bytes before the trailing footer
    /// (FILE-TAIL). On by default; the cost is at most the allocated data.
    #[must_use]
    pub fn data_checks(mut self, on: bool) -> Self {
        self.data_checks = on;
        self
    }

    /// At most this many findings of one rule per image are listed; the
    /// rest are counted in one more finding (default 32).
    #[must_use]
    pub fn max_findings_per_rule(mut self, n: usize) -> Self {
        self.max_findings_per_rule = n.max(1);
        self
    }

    fn open_options(&self) -> OpenOptions {
        let mut o = OpenOptions::new()
            .ignore_parent_id(self.ignore_parent_id)
            .resolver(self.resolver.clone());
        if let Some(p) = &self.parent {
            o = o.parent(p.clone());
        }
        o.parent_layer_only = true;
        o
    }
}

/// A finding and the image of the chain it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Located {
    /// The image (its path as given or found).
    pub image: String,
    /// Its depth in the chain (0 is the image checked).
    pub depth: usize,
    /// What is wrong.
    #[serde(flatten)]
    pub finding: Finding,
}

/// One image of the chain that was judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layer {
    /// Depth in the chain (0 is the image checked).
    pub depth: usize,
    /// The image's path as given or found.
    pub path: String,
    /// Its type, when its footer could be read.
    pub disk_type: Option<DiskType>,
}

/// The overall judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No finding.
    Clean,
    /// Only warnings.
    Warnings,
    /// At least one error: `open` refuses the image (or its chain).
    Errors,
    /// The file could not be judged at all: not a VHD, or unreadable.
    NotChecked,
}

/// Everything the checker found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The image checked.
    pub path: String,
    /// The images judged, this one first.
    pub layers: Vec<Layer>,
    /// Every finding, by layer, in the order found.
    pub findings: Vec<Located>,
    /// Why the image could not be judged at all.
    pub not_checked: Option<NotChecked>,
}

/// Why an image could not be judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotChecked {
    /// What is wrong, in one line (with the rule ID when there is one).
    pub message: String,
    /// The rule, when the file breaks one (FTR-SIZE, FTR-COOKIE: it is not
    /// a VHD at all).
    pub rule: Option<Rule>,
}

impl Report {
    fn new(path: &str) -> Self {
        Report {
            path: path.to_string(),
            layers: Vec::new(),
            findings: Vec::new(),
            not_checked: None,
        }
    }

    /// The overall judgement.
    pub fn verdict(&self) -> Verdict {
        if self.not_checked.is_some() {
            Verdict::NotChecked
        } else if self.errors() > 0 {
            Verdict::Errors
        } else if self.findings.is_empty() {
            Verdict::Clean
        } else {
            Verdict::Warnings
        }
    }

    /// Findings of severity error.
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.finding.severity == Severity::Error)
            .count()
    }

    /// Findings of severity warning.
    pub fn warnings(&self) -> usize {
        self.findings.len() - self.errors()
    }

    /// The exit status of `vhd check`: 0 clean, 2 errors (or warnings
    /// with `strict`), 3 only warnings, 1 not checked.
    pub fn exit_code(&self, strict: bool) -> i32 {
        match self.verdict() {
            Verdict::Clean => 0,
            Verdict::Errors => 2,
            Verdict::Warnings if strict => 2,
            Verdict::Warnings => 3,
            Verdict::NotChecked => 1,
        }
    }

    /// The rules broken by the image at `depth` of the chain.
    pub fn rules_at(&self, depth: usize) -> BTreeSet<Rule> {
        self.findings
            .iter()
            .filter(|f| f.depth == depth)
            .map(|f| f.finding.rule)
            .collect()
    }

    fn add(&mut self, image: &str, depth: usize, findings: Vec<Finding>) {
        self.findings
            .extend(findings.into_iter().map(|finding| Located {
                image: image.to_string(),
                depth,
                finding,
            }));
    }
}

/// Judges the image at `path` and, unless told otherwise, every image of
/// its chain. Never fails: an image that cannot be judged at all (not a
/// VHD, unreadable, in use by a writer) gives a report whose verdict is
/// [`Verdict::NotChecked`].
pub fn check(path: impl AsRef<Path>, options: &CheckOptions) -> Report {
    let path = path.as_ref();
    let name = path.display().to_string();
    let mut report = Report::new(&name);
    let storage = match crate::image::image_metadata(path, true).and_then(|_| {
        FileStorage::open(path, false).map_err(|e| crate::image::file_open_error(path, e))
    }) {
        Ok(s) => s,
        Err(e) => {
            report.not_checked = Some(NotChecked {
                message: e.to_string(),
                rule: e.rule(),
            });
            return report;
        }
    };
    let judged = judge(&mut report, &storage, &name, 0, options);
    if judged != Some(DiskType::Differencing) || !options.follow_parents {
        return report;
    }
    follow_chain(&mut report, Box::new(storage), path, options);
    report
}

/// Judges one image held by any storage, on its own (its parent, if any,
/// is not looked for).
pub fn check_storage(storage: &dyn Storage, name: &str, options: &CheckOptions) -> Report {
    let mut report = Report::new(name);
    judge(&mut report, storage, name, 0, options);
    report
}

/// Judges one layer into the report; returns its type when its footer
/// could be read.
fn judge(
    report: &mut Report,
    storage: &dyn Storage,
    name: &str,
    depth: usize,
    options: &CheckOptions,
) -> Option<DiskType> {
    let mut findings = layer::Findings::new(options.max_findings_per_rule);
    let outcome = layer::judge_layer(storage, options, &mut findings);
    let findings = findings.finish();
    let disk_type = match outcome {
        Ok(layer::Outcome::Judged(t)) => Some(t),
        Ok(layer::Outcome::Unusable) => None,
        Ok(layer::Outcome::NotAVhd) => {
            if depth == 0 {
                report.not_checked = findings.first().map(|f| NotChecked {
                    message: f.to_string(),
                    rule: Some(f.rule),
                });
            }
            None
        }
        Err(e) => {
            if depth == 0 {
                report.not_checked = Some(NotChecked {
                    message: e.to_string(),
                    rule: e.rule(),
                });
            }
            None
        }
    };
    report.layers.push(Layer {
        depth,
        path: name.to_string(),
        disk_type,
    });
    report.add(name, depth, findings);
    disk_type
}

/// Walks the chain one link at a time: the parent of each layer is found
/// (by the same resolver `open` uses), the link is checked (unique ID,
/// size, time stamp, name), then the parent is judged as a layer.
fn follow_chain(
    report: &mut Report,
    storage: Box<dyn Storage>,
    path: &Path,
    options: &CheckOptions,
) {
    // The child as `open` sees it, without its parent; if its own blocks
    // are broken, as much of it as its parent references need (its
    // findings are already in the report either way).
    let strict = options
        .open_options()
        .skip_parent(true)
        .open_storage_at(storage, path);
    let mut child = if let Ok(img) = strict {
        img
    } else {
        let Ok(storage) = FileStorage::open(path, false) else {
            return;
        };
        let mut lenient = options.open_options().skip_parent(true);
        lenient.references_only = true;
        let Ok(img) = lenient.open_storage_at(Box::new(storage), path) else {
            return;
        };
        img
    };
    let mut guard = crate::image::ChainGuard::default();
    if guard.enter_file(path).is_err() {
        return;
    }
    let mut depth = 0;
    let mut opts = options.open_options();
    loop {
        let before = child.findings().len();
        let child_name = child.name().to_string();
        match opts.attach_parent(&mut child, &mut guard) {
            Ok(()) => {}
            Err(e) => {
                link_error(report, &child_name, depth, &e, options);
                return;
            }
        }
        // What checking the link added to the child's findings.
        let link: Vec<Finding> = child.findings()[before..].to_vec();
        report.add(&child_name, depth, link);
        let Some(parent) = child.take_parent() else {
            return;
        };
        depth += 1;
        let parent_name = parent.name().to_string();
        let judged = judge(report, parent.storage(), &parent_name, depth, options);
        if judged != Some(DiskType::Differencing) {
            return;
        }
        child = parent;
        // Deeper links: parents are found through their own references.
        opts = options.open_options();
        opts.parent_path = None;
    }
}

/// A link of the chain that could not be made: the error is the child's
/// finding; a parent that exists but is not a usable image is judged as a
/// layer of its own (its findings are its own, not the child's).
fn link_error(report: &mut Report, child: &str, depth: usize, e: &Error, options: &CheckOptions) {
    match e.to_finding() {
        Some(finding) => report.add(child, depth, vec![finding]),
        None if e.kind() == ErrorKind::Locked || e.kind() == ErrorKind::Io => {
            report.add(
                child,
                depth,
                vec![Finding::new(
                    Rule::ParNotFound,
                    format!("the parent could not be read: {e}"),
                )],
            );
        }
        None => {}
    }
    if let Error::ParentInvalid {
        parent, of: None, ..
    } = e
    {
        let path = Path::new(parent);
        let opened = crate::image::image_metadata(path, true).and_then(|_| {
            FileStorage::open(path, false).map_err(|e| crate::image::file_open_error(path, e))
        });
        if let Ok(storage) = opened {
            judge(report, &storage, parent, depth + 1, options);
        }
    }
}

impl OpenOptions {
    /// Opens an image in `storage` that lives at `path` (for the checker,
    /// which already holds the file open).
    pub(crate) fn open_storage_at(
        self,
        storage: Box<dyn Storage>,
        path: &Path,
    ) -> crate::Result<Image> {
        self.open_created(
            storage,
            path.display().to_string(),
            Some(path.to_path_buf()),
        )
    }
}
