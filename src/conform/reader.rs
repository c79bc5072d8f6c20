//! Reader runs: a peer reads every corpus case into a raw file, which is
//! judged against the manifest.

use std::path::Path;
use std::time::Instant;

use super::command::{Peer, PeerCommand, Run, Status};
use super::compare::{first_difference, raw_source, sha256_file};
use super::corpus::{Corpus, CorpusCase};
use super::{CaseResult, ConformError, Outcome, Selection, Suite, SuiteKind, place, scratch};
use crate::Image;
use crate::convert::{self, RawSink};
use crate::storage::{FileStorage, Storage};

/// An implementation that reads a VHD (with its parents, found beside
/// it or through its locators) and writes its guest contents as a raw
/// file.
pub trait Reader: Peer {
    /// Reads `image` and writes its guest contents to `raw` (which does
    /// not exist yet). A refusal is a run that does not exit 0.
    fn read(&mut self, image: &Path, raw: &Path) -> Run;
}

impl Reader for PeerCommand {
    fn read(&mut self, image: &Path, raw: &Path) -> Run {
        self.template().run(image, raw)
    }
}

/// vhdref's own reader, in this process: `Image::open` (parents through
/// their locators) and a sparse copy of the guest contents.
#[derive(Debug, Clone, Copy, Default)]
pub struct VhdrefReader;

impl Peer for VhdrefReader {
    fn name(&self) -> String {
        "vhdref".into()
    }

    fn command(&self) -> Option<String> {
        None
    }
}

impl Reader for VhdrefReader {
    fn read(&mut self, image: &Path, raw: &Path) -> Run {
        let start = Instant::now();
        match read_to_raw(image, raw) {
            Ok(()) => Run::done(start.elapsed()),
            Err(e) => Run::failed(e.to_string(), start.elapsed()),
        }
    }
}

fn read_to_raw(image: &Path, raw: &Path) -> crate::Result<()> {
    let mut img = Image::open(image)?;
    let size = img.size();
    let mut storage = FileStorage::create_new(raw).map_err(|e| match e {
        crate::storage::OpenError::Io(e) => {
            crate::Error::io(format!("creating {}", raw.display()), e)
        }
        crate::storage::OpenError::Locked(_) => crate::Error::io(
            format!("creating {}", raw.display()),
            std::io::Error::other("locked"),
        ),
    })?;
    storage
        .set_len(size)
        .map_err(|e| crate::Error::io(format!("sizing {}", raw.display()), e))?;
    let mut sink = RawSink::new(Box::new(storage), raw.display().to_string());
    convert::copy(&mut img, &mut sink, size, &mut |_| {}).map_err(|e| e.error)?;
    sink.finish().map(drop)
}

/// Runs `reader` over the cases of `corpus` that `selection` picks;
/// `progress` sees each result as it is made.
pub fn run_reader(
    corpus: &Corpus,
    reader: &mut dyn Reader,
    selection: &Selection,
    progress: &mut dyn FnMut(&CaseResult),
) -> Result<Suite, ConformError> {
    let mut suite = Suite {
        kind: SuiteKind::Reader,
        peer: reader.name(),
        command: reader.command(),
        cases: Vec::new(),
    };
    for case in corpus.cases() {
        if !selection.selects(&case.name) {
            continue;
        }
        if selection.stopped() {
            break;
        }
        let start = Instant::now();
        let mut result = match selection.unsupported_reason(&case.name, case.is_differencing()) {
            Some(why) => CaseResult::new(&case.name, Outcome::Unsupported, why),
            None => run_case(corpus, case, reader)?,
        };
        if selection.stopped() {
            // Interrupted in the middle of this case: it has no verdict.
            break;
        }
        result.seconds = start.elapsed().as_secs_f64();
        progress(&result);
        suite.cases.push(result);
    }
    Ok(suite)
}

/// Copies one case to a scratch directory, runs the reader and judges it.
fn run_case(
    corpus: &Corpus,
    case: &CorpusCase,
    reader: &mut dyn Reader,
) -> Result<CaseResult, ConformError> {
    let dir = scratch()?;
    let image = case.materialize(corpus, &dir.path().join("case"))?;
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).map_err(|e| ConformError::Io {
        path: out_dir.clone(),
        message: format!("cannot create it: {e}"),
    })?;
    let raw = out_dir.join(format!("{}.raw", case.name));
    let run = reader.read(&image, &raw).without_dir(dir.path());
    let mut result = if case.open {
        judge_read(case, &image, &raw, &run)
    } else {
        judge_refusal(case, &raw, &run)
    }
    .with_run(&run);
    result.expected_size = case.current_size.filter(|_| case.open);
    if let Some(note) = &case.peer_notes {
        result.notes.push(format!("corpus note: {note}"));
    }
    Ok(result)
}

/// What the peer said last, as ` (exit 1: message)`.
fn said(run: &Run) -> String {
    match run.last_words() {
        Some(words) => format!(" ({}: {words})", run.status.describe()),
        None => format!(" ({})", run.status.describe()),
    }
}

/// A case that must open: exit 0 and exactly the manifest's contents.
fn judge_read(case: &CorpusCase, image: &Path, raw: &Path, run: &Run) -> CaseResult {
    let name = &case.name;
    let expected_size = case.current_size.unwrap_or(0);
    let expected_sha = case.sha256.as_deref().unwrap_or("");
    match &run.status {
        Status::Exited(0) => {}
        Status::TimedOut => {
            return CaseResult::new(name, Outcome::Fail, "timed out reading a valid image");
        }
        _ => {
            return CaseResult::new(
                name,
                Outcome::Fail,
                format!("refused a readable image{}", said(run)),
            );
        }
    }
    let (sha, size) = match sha256_file(raw) {
        Ok(x) => x,
        Err(e) => {
            return CaseResult::new(
                name,
                Outcome::Fail,
                format!("exited 0 but left no readable raw file: {e}"),
            );
        }
    };
    let mut result = if size == expected_size && sha == expected_sha {
        CaseResult::new(
            name,
            Outcome::Pass,
            format!("read the expected {size} bytes"),
        )
    } else {
        let detail = locate_difference(image, raw, size, expected_size);
        let mut r = CaseResult::new(name, Outcome::Fail, detail.text);
        r.offset = detail.offset;
        r
    };
    result.size = Some(size);
    result
}

struct Located {
    text: String,
    offset: Option<u64>,
}

/// Says how the raw output (`size` bytes) differs from the case as
/// vhdref reads it (`expected` bytes).
fn locate_difference(image: &Path, raw: &Path, size: u64, expected: u64) -> Located {
    let sizes = if size == expected {
        String::new()
    } else {
        format!("{size} bytes, expected {expected}; ")
    };
    let common = size.min(expected);
    let found = Image::open(image).and_then(|mut img| {
        let mut got = raw_source(raw)?;
        first_difference(&mut got, &mut img, common)
    });
    match found {
        Ok(Some(d)) => Located {
            text: format!(
                "{sizes}differs from offset {}: {:#04x}, expected {:#04x}",
                place(d.offset),
                d.got,
                d.expected
            ),
            offset: Some(d.offset),
        },
        Ok(None) if size != expected => Located {
            text: format!("{sizes}the first {common} bytes are right"),
            offset: Some(common),
        },
        Ok(None) => Located {
            text: "differs from the manifest's sha256 but equals what vhdref reads: \
                   the corpus and vhdref disagree"
                .into(),
            offset: None,
        },
        Err(e) => Located {
            text: format!(
                "{sizes}contents differ from the manifest's sha256 (vhdref could not locate \
                 the difference: {e})"
            ),
            offset: None,
        },
    }
}

/// A case that breaks an error rule: the reader must refuse it.
fn judge_refusal(case: &CorpusCase, raw: &Path, run: &Run) -> CaseResult {
    let name = &case.name;
    let rules = case.error_rules();
    let broken = if rules.is_empty() {
        "an error rule".to_string()
    } else {
        rules.join(", ")
    };
    let mut result = match &run.status {
        status if status.did_not_run() => CaseResult::new(
            name,
            Outcome::Fail,
            format!("the command did not run{}", said(run)),
        ),
        Status::Exited(0) => {
            let written = std::fs::metadata(raw).map_or(0, |m| m.len());
            if written == 0 {
                CaseResult::new(
                    name,
                    Outcome::Pass,
                    "refused it: exited 0 but wrote nothing",
                )
            } else {
                let mut r = CaseResult::new(
                    name,
                    Outcome::Fail,
                    format!("read {written} bytes from an image that breaks {broken}"),
                );
                r.size = Some(written);
                r
            }
        }
        Status::Exited(_) => {
            CaseResult::new(name, Outcome::Pass, format!("refused it{}", said(run)))
        }
        Status::Killed(_) => CaseResult::new(
            name,
            Outcome::Fail,
            format!("crashed on an image that breaks {broken}{}", said(run)),
        ),
        Status::TimedOut => CaseResult::new(
            name,
            Outcome::Fail,
            format!("timed out on an image that breaks {broken}"),
        ),
        Status::NotStarted(why) => {
            CaseResult::new(name, Outcome::Fail, format!("could not start: {why}"))
        }
        Status::Interrupted => CaseResult::new(name, Outcome::Fail, "interrupted"),
    };
    result.rules = rules;
    result
}
