//! Conformance runs of other implementations: the work of `vhd conform`.
//!
//! A **reader** run copies each case of the corpus (`corpora/`, see
//! [`Corpus`]) into a scratch directory, runs the reader on it and judges
//! what it wrote:
//!
//! * a case that must open (verdict valid or warnings) passes when the
//!   reader exits 0 and its raw output has the manifest's size and
//!   SHA-256; otherwise the report says where the output first differs
//!   from what vhdref reads (which is the manifest's contents: the corpus
//!   test holds vhdref to them);
//! * a case that breaks an error rule passes when the reader refuses it:
//!   a non-zero exit, or no output at all (but not exit 126 or 127: the
//!   shell could not run the command). A reader that reads it fails the
//!   case, and the report names the rule it should have seen.
//!
//! A **writer** run makes raw disks ([`writer_cases`]: sizes at every
//! switch of the CHS geometry algorithm, one sector, unaligned sizes,
//! data patterns, holes, disks of gigabytes to 2040 GiB that are mostly
//! holes, and a disk of 0 bytes), runs the writer on each, judges the
//! image with the checker ([`crate::check`]: errors fail, and so do the
//! warnings under which other readers see other contents) and compares
//! what vhdref reads from it with the input. A writer may round the size
//! up (CHS sizing) if the extra reads as zeros; the report says so. The
//! disk of 0 bytes may be refused.
//!
//! Peers are [`Reader`]s and [`Writer`]s: a command ([`PeerCommand`]: a
//! name and a [`CommandTemplate`], run by the shell with a time limit) or vhdref
//! itself in this process ([`VhdrefReader`], [`VhdrefWriter`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use vhdref::conform::{CommandTemplate, Corpus, PeerCommand, Selection, run_reader};
//!
//! let corpus = Corpus::load("corpora")?;
//! let template = CommandTemplate::new(
//!     "qemu-img convert -f vpc -O raw {image} {raw}",
//!     Duration::from_secs(60),
//! )?;
//! let mut reader = PeerCommand::new("qemu", template);
//! let suite = run_reader(&corpus, &mut reader, &Selection::new(), &mut |_| {})?;
//! println!("{}", suite.summary().line());
//! # Ok::<(), vhdref::conform::ConformError>(())
//! ```

mod command;
mod compare;
mod corpus;
mod glob;
mod reader;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

pub use command::{CommandTemplate, Peer, PeerCommand, Run, Status};
pub use compare::{Difference, first_difference, first_nonzero, raw_source, sha256_file};
pub use corpus::{CaseInfo, Corpus, CorpusCase, Expected, Layer, MANIFEST_SCHEMA, default_dir};
pub use glob::Glob;
pub use reader::{Reader, VhdrefReader, run_reader};
pub use writer::{
    VhdrefWriter, Writer, WriterCase, contents_changing_warning, run_writer, writer_cases,
};

/// Why a conformance run could not be made at all (a case that fails is
/// not an error: it is a result).
#[derive(Debug, thiserror::Error)]
pub enum ConformError {
    /// The corpus or its manifest is missing or unusable.
    #[error("{}: {message}", path.display())]
    Corpus {
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Scratch files could not be made.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The caller asked for something that cannot be done.
    #[error("{0}")]
    Usage(String),
}

/// The verdict on one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The peer did what the case demands.
    Pass,
    /// It did not.
    Fail,
    /// The peer declares it does not handle such images; the case was
    /// not run.
    Unsupported,
}

impl Outcome {
    /// `pass`, `fail` or `unsupported`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Unsupported => "unsupported",
        }
    }
}

/// What happened on one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Pass, fail or unsupported.
    pub outcome: Outcome,
    /// One line: what the peer did, and for a failure what was expected
    /// (the rule it broke or missed, or where the contents first differ).
    pub detail: String,
    /// Rule IDs the verdict is about: those an error case breaks (which a
    /// reader should have seen), or those a writer's image breaks.
    pub rules: Vec<String>,
    /// The first guest offset where the contents differ, if they do.
    pub offset: Option<u64>,
    /// Bytes the peer produced (raw output, or the image's disk size).
    pub size: Option<u64>,
    /// Bytes expected.
    pub expected_size: Option<u64>,
    /// Other things worth knowing: warnings of the checker, size rounding,
    /// the corpus's notes on known peer disagreements.
    pub notes: Vec<String>,
    /// How the peer's run ended (`exit 0`, `timed out`, ...).
    pub status: Option<String>,
    /// The end of the peer's standard error (then standard output).
    pub output: String,
    /// How long the case took, in seconds.
    pub seconds: f64,
}

impl CaseResult {
    fn new(name: &str, outcome: Outcome, detail: impl Into<String>) -> CaseResult {
        CaseResult {
            name: name.to_string(),
            outcome,
            detail: detail.into(),
            rules: Vec::new(),
            offset: None,
            size: None,
            expected_size: None,
            notes: Vec::new(),
            status: None,
            output: String::new(),
            seconds: 0.0,
        }
    }

    /// Records the peer's run: how it ended and what it said.
    fn with_run(mut self, run: &Run) -> CaseResult {
        self.status = Some(run.status.describe());
        let mut output = run.stderr.trim_end().to_string();
        if output.is_empty() {
            output = run.stdout.trim_end().to_string();
        }
        self.output = output;
        self
    }
}

/// Whether a suite judged a reader or a writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuiteKind {
    /// A reader over the corpus.
    Reader,
    /// A writer over generated raw disks.
    Writer,
}

impl SuiteKind {
    /// `reader` or `writer`.
    pub fn name(self) -> &'static str {
        match self {
            SuiteKind::Reader => "reader",
            SuiteKind::Writer => "writer",
        }
    }
}

/// The results of one peer over its cases.
#[derive(Debug, Clone, Serialize)]
pub struct Suite {
    /// Reader or writer.
    pub kind: SuiteKind,
    /// The peer's name.
    pub peer: String,
    /// Its command template (none for vhdref in this process).
    pub command: Option<String>,
    /// Every case run (or declared unsupported), in order.
    pub cases: Vec<CaseResult>,
}

impl Suite {
    /// Counts of passes, failures and unsupported cases.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.cases {
            s.count(c.outcome);
        }
        s
    }
}

/// Counts of outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Summary {
    /// Cases passed.
    pub passed: usize,
    /// Cases failed.
    pub failed: usize,
    /// Cases the peer does not support.
    pub unsupported: usize,
}

impl Summary {
    /// Adds one outcome.
    pub fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Pass => self.passed += 1,
            Outcome::Fail => self.failed += 1,
            Outcome::Unsupported => self.unsupported += 1,
        }
    }

    /// Both counts together.
    #[must_use]
    pub fn plus(self, other: Summary) -> Summary {
        Summary {
            passed: self.passed + other.passed,
            failed: self.failed + other.failed,
            unsupported: self.unsupported + other.unsupported,
        }
    }

    /// Cases counted.
    pub fn total(&self) -> usize {
        self.passed + self.failed + self.unsupported
    }

    /// Whether every case passed; unsupported cases count against it
    /// unless `allow_unsupported`.
    pub fn all_passed(&self, allow_unsupported: bool) -> bool {
        self.failed == 0 && (allow_unsupported || self.unsupported == 0)
    }

    /// `N passed, N failed, N unsupported`.
    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} unsupported",
            self.passed, self.failed, self.unsupported
        )
    }
}

/// Which cases to run, and which the peer declares it does not support.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    cases: Vec<Glob>,
    unsupported: Vec<Glob>,
    skip_differencing: bool,
    stop: Option<Arc<AtomicBool>>,
}

impl Selection {
    /// Every case, all supported.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs only cases whose name matches one of the patterns given (all
    /// cases when none is).
    #[must_use]
    pub fn cases(mut self, pattern: Glob) -> Self {
        self.cases.push(pattern);
        self
    }

    /// Declares the cases matching `pattern` unsupported by the peer.
    #[must_use]
    pub fn unsupported(mut self, pattern: Glob) -> Self {
        self.unsupported.push(pattern);
        self
    }

    /// Declares every corpus case whose image is a differencing image
    /// unsupported (for peers without differencing support).
    #[must_use]
    pub fn skip_differencing(mut self, skip: bool) -> Self {
        self.skip_differencing = skip;
        self
    }

    /// Ends the run before the next case once `flag` is set (by a signal
    /// handler, for instance); the case in progress is left out of the
    /// suite, and its scratch directory is removed.
    #[must_use]
    pub fn stop_on(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Whether the run was asked to stop ([`Selection::stop_on`]).
    pub fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// Whether the case named `name` is to be run (or reported).
    pub fn selects(&self, name: &str) -> bool {
        self.cases.is_empty() || self.cases.iter().any(|g| g.matches(name))
    }

    /// Why the peer does not support a case, if it is declared so.
    fn unsupported_reason(&self, name: &str, differencing: bool) -> Option<String> {
        if differencing && self.skip_differencing {
            return Some("a differencing image (declared unsupported: --skip-differencing)".into());
        }
        self.unsupported
            .iter()
            .find(|g| g.matches(name))
            .map(|g| format!("declared unsupported (--unsupported {})", g.as_str()))
    }
}

/// `0x1234 (sector 9)`.
fn place(offset: u64) -> String {
    format!(
        "{offset:#x} (sector {})",
        offset / crate::format::SECTOR_SIZE
    )
}

/// A scratch directory for one case.
fn scratch() -> Result<tempfile::TempDir, ConformError> {
    tempfile::Builder::new()
        .prefix("vhd-conform-")
        .tempdir()
        .map_err(|e| ConformError::Io {
            path: std::env::temp_dir(),
            message: format!("cannot make a scratch directory: {e}"),
        })
}
