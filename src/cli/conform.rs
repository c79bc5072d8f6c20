//! `vhd conform`: runs another implementation's reader over the corpus
//! and its writer over generated raw disks, and renders the library's
//! verdicts (`crate::conform`) as text, JSON or `JUnit` XML.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::DiskType;
use crate::conform::{
    self, CaseResult, CommandTemplate, ConformError, Corpus, Glob, Outcome, PeerCommand, Reader,
    Selection, Suite, Summary, VhdrefReader, VhdrefWriter, Writer,
};

use super::CmdResult;
use super::output::{Failure, escape, print, print_json, write_stdout, xml};

/// Judge another implementation against the corpus: run its reader over
/// every corpus case, or its writer over generated raw disks, and report
/// case by case.
///
/// --reader 'CMD {image} {raw}': {image} is replaced by the path of the
/// case's image (its parents beside it, as in corpora/), {raw} by the
/// path where the reader must write the guest contents. A valid case (or
/// one with only warnings) passes when the reader exits 0 and {raw} holds
/// exactly the expected contents; a case that breaks an error rule passes
/// when the reader refuses it (exits non-zero, or writes nothing; exit 126
/// or 127 means the shell could not run the command, which is no refusal).
///
/// --writer 'CMD {raw} {image}': the writer must turn the raw disk {raw}
/// into a VHD at {image}. The image passes when `vhd check` finds no
/// error (and none of the warnings under which other readers see other
/// contents) and it reads as the input; a size rounded up (CHS sizing) is
/// reported and passes if the added bytes are zeros. The disk of 0 bytes
/// may be refused.
///
/// Commands run under `sh -c`, with paths shell-quoted, each case with a
/// time limit, in a scratch directory that is removed afterwards. The
/// environment variable VHD names this vhd for adapters that call it.
/// Exit status: 0 every case passed, 2 some case failed (or was
/// unsupported, without --allow-unsupported), 1 nothing could be run,
/// 130 interrupted (SIGINT or SIGTERM: the running command and what it
/// started are killed, the scratch directory removed, and the report
/// covers the cases that finished; a second signal ends vhd at once).
#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)] // independent command-line switches
#[command(
    after_help = "Example:\n  vhd conform --reader 'qemu-img convert -f vpc -O raw {image} {raw}' --skip-differencing\n  vhd conform --writer 'qemu-img convert -f raw -O vpc {raw} {image}' --cases 'chs-*'\n  vhd conform --reader 'scripts/conform/read-7zip.sh {image} {raw}' --output junit > conform.xml\n  vhd conform --self"
)]
pub struct ConformArgs {
    /// A reader to judge: a command with {image} and {raw}.
    #[arg(long, value_name = "CMD")]
    pub reader: Option<String>,
    /// A writer to judge: a command with {raw} and {image}.
    #[arg(long, value_name = "CMD")]
    pub writer: Option<String>,
    /// Judge vhdref's own reader and its writers (fixed and dynamic), in
    /// this process.
    #[arg(long = "self")]
    pub vhdref: bool,
    /// The peer's name in reports (default: the command's program name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The corpus directory (with manifest.json). Default: corpora/ of the
    /// source tree this vhd was built from, if it is still there.
    #[arg(long, value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    /// Run only the cases whose name matches (shell pattern: *, ?, [..]);
    /// may be given more than once.
    #[arg(long, value_name = "GLOB")]
    pub cases: Vec<String>,
    /// Declare that the reader does not read differencing images: those
    /// cases are not run and count as unsupported.
    #[arg(long)]
    pub skip_differencing: bool,
    /// Declare the cases whose name matches unsupported by the peer; may
    /// be given more than once.
    #[arg(long, value_name = "GLOB")]
    pub unsupported: Vec<String>,
    /// Exit 0 even if some cases are unsupported (failures still count).
    #[arg(long)]
    pub allow_unsupported: bool,
    /// Time limit for each case, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// List the cases that would run (name and what it is) and exit.
    #[arg(long)]
    pub list: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: ConformOutput,
}

/// Output formats of `conform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ConformOutput {
    /// A line per case as it is judged, then the summary.
    #[default]
    Human,
    /// JSON with a top-level `schema_version`.
    Json,
    /// `JUnit` XML: a test suite per peer, a test case per case.
    Junit,
}

/// What to run.
enum Peer {
    Reader(Box<dyn Reader>),
    Writer(Box<dyn Writer>),
}

/// Runs `vhd conform`.
pub fn run(args: &ConformArgs) -> CmdResult {
    if args.reader.is_none() && args.writer.is_none() && !args.vhdref {
        return Err(Failure::plain(
            "conform: give --reader CMD, --writer CMD or --self (see vhd conform --help)",
        )
        .with_code(2));
    }
    let stop = Arc::new(AtomicBool::new(false));
    super::serve::register_signals(&stop)?;
    let selection = selection(args).stop_on(Arc::clone(&stop));
    let peers = peers(args, &stop)?;
    let corpus = if peers.iter().any(|p| matches!(p, Peer::Reader(_))) {
        Some(load_corpus(args)?)
    } else {
        None
    };
    if args.list {
        return list(&peers, corpus.as_ref(), &selection);
    }
    let human = args.output == ConformOutput::Human;
    let mut suites = Vec::new();
    for peer in peers {
        let mut shown = |r: &CaseResult| {
            if human {
                // A closed stdout ends the output, not the run.
                let _ = print(&case_line(r));
            }
        };
        let suite = match peer {
            Peer::Reader(mut reader) => {
                if human {
                    print(&suite_head("reader", &reader.name(), reader.command()))?;
                }
                let corpus = corpus.as_ref().ok_or_else(|| Failure::plain("no corpus"))?;
                conform::run_reader(corpus, reader.as_mut(), &selection, &mut shown)
            }
            Peer::Writer(mut writer) => {
                if human {
                    print(&suite_head("writer", &writer.name(), writer.command()))?;
                }
                conform::run_writer(writer.as_mut(), &selection, &mut shown)
            }
        }
        .map_err(|e| failure(&e))?;
        if human && suites.len() + 1 < args_suites(args) {
            print(&format!(
                "{} {}: {}\n\n",
                suite.kind.name(),
                suite.peer,
                suite.summary().line()
            ))?;
        }
        suites.push(suite);
        if selection.stopped() {
            break;
        }
    }
    let total = suites
        .iter()
        .fold(Summary::default(), |t, s| t.plus(s.summary()));
    let interrupted = selection.stopped();
    if interrupted && total.total() == 0 {
        return Err(Failure::plain("conform: interrupted before any case finished").with_code(130));
    }
    if total.total() == 0 {
        return Err(Failure::plain(format!(
            "conform: no case matches --cases {}",
            args.cases.join(" --cases ")
        )));
    }
    let code = if interrupted {
        130
    } else if total.all_passed(args.allow_unsupported) {
        0
    } else {
        2
    };
    match args.output {
        ConformOutput::Human => {
            if suites.len() > 1 {
                let last = &suites[suites.len() - 1];
                print(&format!(
                    "{} {}: {}\n",
                    last.kind.name(),
                    last.peer,
                    last.summary().line()
                ))?;
            }
            print(&format!("{}\n", total.line()))?;
        }
        ConformOutput::Json => print_json(&to_json(&suites, corpus.as_ref(), total, code))?,
        ConformOutput::Junit => {
            write_stdout(&mut std::io::stdout().lock(), junit(&suites).as_bytes())?;
        }
    }
    if interrupted {
        let n = total.total();
        let cases = if n == 1 { "case" } else { "cases" };
        eprintln!("vhd: conform: interrupted; the report covers the {n} {cases} that finished");
    }
    Ok(code)
}

/// How many suites the arguments ask for.
fn args_suites(args: &ConformArgs) -> usize {
    usize::from(args.reader.is_some())
        + usize::from(args.writer.is_some())
        + if args.vhdref { 3 } else { 0 }
}

fn failure(e: &ConformError) -> Failure {
    match e {
        ConformError::Corpus { path, message } | ConformError::Io { path, message } => {
            Failure::new(path, message.clone())
        }
        ConformError::Usage(message) => Failure::plain(format!("conform: {message}")).with_code(2),
    }
}

fn selection(args: &ConformArgs) -> Selection {
    let mut s = Selection::new().skip_differencing(args.skip_differencing);
    for g in &args.cases {
        s = s.cases(Glob::new(g));
    }
    for g in &args.unsupported {
        s = s.unsupported(Glob::new(g));
    }
    s
}

/// The peers to judge, in the order reader, writer, vhdref.
fn peers(args: &ConformArgs, stop: &Arc<AtomicBool>) -> Result<Vec<Peer>, Failure> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let template = |cmd: &str| -> Result<CommandTemplate, Failure> {
        let mut t = CommandTemplate::new(cmd, timeout)
            .map_err(|e| failure(&e))?
            .stop_on(Arc::clone(stop));
        // Adapters that call vhd find this one, unless told otherwise.
        if std::env::var_os("VHD").is_none()
            && let Ok(exe) = std::env::current_exe()
        {
            t = t.env("VHD", exe);
        }
        Ok(t)
    };
    let mut peers = Vec::new();
    if let Some(cmd) = &args.reader {
        let t = template(cmd)?;
        let name = args.name.clone().unwrap_or_else(|| t.program_name());
        peers.push(Peer::Reader(Box::new(PeerCommand::new(name, t))));
    }
    if let Some(cmd) = &args.writer {
        let t = template(cmd)?;
        let name = args.name.clone().unwrap_or_else(|| t.program_name());
        peers.push(Peer::Writer(Box::new(PeerCommand::new(name, t))));
    }
    if args.vhdref {
        peers.push(Peer::Reader(Box::new(VhdrefReader)));
        peers.push(Peer::Writer(Box::new(VhdrefWriter::new(DiskType::Dynamic))));
        peers.push(Peer::Writer(Box::new(VhdrefWriter::new(DiskType::Fixed))));
    }
    Ok(peers)
}

fn load_corpus(args: &ConformArgs) -> Result<Corpus, Failure> {
    let dir = match &args.corpus {
        Some(d) => d.clone(),
        None => conform::default_dir().ok_or_else(|| {
            Failure::plain(
                "conform: no corpus: the source tree this vhd was built from has no corpora/ \
                 any more; pass --corpus DIR (a directory with manifest.json)",
            )
        })?,
    };
    Corpus::load(&dir).map_err(|e| failure(&e))
}

/// `--list`: the cases that would run.
fn list(peers: &[Peer], corpus: Option<&Corpus>, selection: &Selection) -> CmdResult {
    let mut out = String::new();
    let mut any = false;
    if let Some(corpus) = corpus {
        for case in corpus.cases().iter().filter(|c| selection.selects(&c.name)) {
            any = true;
            let _ = writeln!(
                out,
                "reader  {}  {}  {}",
                case.name,
                case.verdict.name(),
                escape(case.description.as_deref().unwrap_or(""))
            );
        }
    }
    if peers.iter().any(|p| matches!(p, Peer::Writer(_))) {
        for case in conform::writer_cases()
            .iter()
            .filter(|c| selection.selects(&c.name))
        {
            any = true;
            let _ = writeln!(
                out,
                "writer  {}  {} bytes  {}",
                case.name, case.size, case.description
            );
        }
    }
    print(&out)?;
    Ok(i32::from(!any))
}

fn suite_head(kind: &str, name: &str, command: Option<String>) -> String {
    match command {
        Some(c) => format!("{kind} {}: {}\n", escape(name), escape(&c)),
        None => format!("{kind} {} (in this process)\n", escape(name)),
    }
}

/// Width of the case-name column: the longest name vhd knows of.
const NAME_WIDTH: usize = 40;

fn case_line(r: &CaseResult) -> String {
    let verdict = match r.outcome {
        Outcome::Pass => "pass",
        Outcome::Fail => "FAIL",
        Outcome::Unsupported => "unsupported",
    };
    format!(
        "  {verdict:<11}  {:<NAME_WIDTH$}  {}\n",
        escape(&r.name),
        escape(&r.detail)
    )
}

/// The JSON document (schema version 1): `corpus` (its directory, or
/// null when no reader ran), `exit_code`, `summary` (`passed`, `failed`,
/// `unsupported`) and `suites`, each with `kind` (`reader`, `writer`),
/// `peer`, `command`, `summary` and `cases` (`name`, `outcome` (`pass`,
/// `fail`, `unsupported`), `detail`, `rules`, `offset`, `size`,
/// `expected_size`, `notes`, `status`, `output`, `seconds`).
fn to_json(suites: &[Suite], corpus: Option<&Corpus>, total: Summary, code: i32) -> Value {
    json!({
        "schema_version": 1,
        "corpus": corpus.map(|c| c.root().display().to_string()),
        "exit_code": code,
        "summary": total,
        "suites": suites.iter().map(|s| json!({
            "kind": s.kind,
            "peer": s.peer,
            "command": s.command,
            "summary": s.summary(),
            "cases": s.cases,
        })).collect::<Vec<_>>(),
    })
}

/// Like [`xml`], but keeps line breaks (for element content).
fn xml_lines(text: &str) -> String {
    text.lines().map(xml).collect::<Vec<_>>().join("\n")
}

/// `JUnit` XML: one test suite per peer (`vhd conform reader NAME`), one
/// test case per case; a failure carries the detail as its message and
/// the notes and the peer's output as its text; an unsupported case is
/// `<skipped>`.
fn junit(suites: &[Suite]) -> String {
    let total = suites
        .iter()
        .fold(Summary::default(), |t, s| t.plus(s.summary()));
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"vhd conform\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\">",
        total.total(),
        total.failed,
        total.unsupported
    );
    for s in suites {
        let sum = s.summary();
        let seconds: f64 = s.cases.iter().map(|c| c.seconds).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{seconds:.3}\">",
            xml(&format!("vhd conform {} {}", s.kind.name(), s.peer)),
            sum.total(),
            sum.failed,
            sum.unsupported
        );
        let class = xml(&format!("vhd.conform.{}.{}", s.kind.name(), s.peer));
        for c in &s.cases {
            let head = format!(
                "    <testcase classname=\"{class}\" name=\"{}\" time=\"{:.3}\"",
                xml(&c.name),
                c.seconds
            );
            match c.outcome {
                Outcome::Pass => {
                    let _ = writeln!(out, "{head}/>");
                }
                Outcome::Unsupported => {
                    let _ = writeln!(
                        out,
                        "{head}>\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml(&c.detail)
                    );
                }
                Outcome::Fail => {
                    let mut text = c.notes.join("\n");
                    if let Some(status) = &c.status {
                        let _ = write!(text, "\npeer: {status}");
                    }
                    let _ = writeln!(
                        out,
                        "{head}>\n      <failure type=\"fail\" message=\"{}\">{}</failure>",
                        xml(&c.detail),
                        xml_lines(text.trim())
                    );
                    if !c.output.is_empty() {
                        let _ = writeln!(
                            out,
                            "      <system-err>{}</system-err>",
                            xml_lines(&c.output)
                        );
                    }
                    out.push_str("    </testcase>\n");
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_escapes_markup_and_control_characters() {
        assert_eq!(xml("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        assert_eq!(xml("bell\x07"), "bell\\x07");
        assert_eq!(xml_lines("one\ntwo<"), "one\ntwo&lt;");
    }
}
