//! `vhd check`: renders the library checker's report (`crate::check`) as
//! text, JSON or `JUnit` XML; every judgement is the library's.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::Rule;
use crate::check::{self, CheckOptions, Located, Report, Verdict};
use crate::image::ParentResolver;

use super::CmdResult;
use super::args::ParentArgs;
use super::info::severity_name;
use super::output::{Failure, escape, print, print_json, report as report_failure, xml};

/// Check an image (and every image of its chain) against the rules of the
/// format and list every finding with its rule ID, the image and the
/// place in its file.
///
/// The checker goes on past errors wherever the rest can still be read,
/// so one run lists everything wrong. Exit status: 0 clean, 2 errors
/// (corruption or a spec violation; `open` refuses such an image), 3 only
/// warnings (2 with --strict), 1 could not check (not a VHD, unreadable,
/// in use by a writer). With --profile, also what a service would refuse
/// in an otherwise valid image (its findings count as errors).
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd check disk.vhd\n  vhd check disk.vhd --output junit > check.xml\n  vhd check child.vhd --output json | jq '.findings[].rule'\n  vhd check upload.vhd --profile azure"
)]
pub struct CheckArgs {
    /// The image.
    pub image: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: CheckOutput,
    /// Treat warnings as errors (exit 2 instead of 3).
    #[arg(long)]
    pub strict: bool,
    /// Judge only the metadata: skip reading data where bitmaps say there
    /// is none (BMP-CLEAR-DATA) and before the trailing footer (FILE-TAIL).
    #[arg(long)]
    pub metadata_only: bool,
    /// Judge this image only, not its parents.
    #[arg(long)]
    pub no_parents: bool,
    /// Also report what this service would refuse (rules of the profile,
    /// e.g. AZURE-FIXED; not rules of the format).
    #[arg(long, value_enum, value_name = "SERVICE")]
    pub profile: Option<Profile>,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
}

/// Services `check --profile` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// Azure: fixed VHDs, a whole number of MiB, 20 MiB to 32 TiB.
    Azure,
}

/// Output formats of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum CheckOutput {
    /// Text for people.
    #[default]
    Human,
    /// JSON with a top-level `schema_version`.
    Json,
    /// `JUnit` XML: one test case per rule.
    Junit,
}

/// The checker's options from the command line.
fn options(args: &CheckArgs) -> CheckOptions {
    let p = &args.parent;
    let mut o = CheckOptions::new()
        .ignore_parent_id(p.ignore_parent_id)
        .follow_parents(!args.no_parents)
        .data_checks(!args.metadata_only);
    if !p.allow_parent_dir.is_empty() {
        o = o.resolver(ParentResolver::new().allow_dirs(p.allow_parent_dir.clone()));
    }
    if let Some(parent) = &p.parent {
        o = o.parent(parent.clone());
    }
    o
}

/// Runs `vhd check`.
pub fn run(args: &CheckArgs) -> CmdResult {
    let report = check::check(&args.image, &options(args));
    let mut code = report.exit_code(args.strict);
    // The profile judges what the footer says; an image the checker could
    // not judge has no profile findings (the error line says why).
    let profile = match args.profile {
        Some(Profile::Azure) if report.not_checked.is_none() => {
            crate::ops::check_azure(&args.image).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    if !profile.is_empty() && code != 1 {
        code = 2;
    }
    match args.output {
        CheckOutput::Human => {
            let mut text = human(&report);
            if args.profile.is_some() && report.not_checked.is_none() {
                text.push_str(&human_profile(&profile));
            }
            print(&text)?;
        }
        CheckOutput::Json => {
            let mut doc = to_json(&report, code);
            if let (Some(_), Some(obj)) = (args.profile, doc.as_object_mut()) {
                obj.insert(
                    "profile".into(),
                    json!({
                        "name": "azure",
                        "findings": profile.iter().map(|f| json!({
                            "rule": f.rule.id(),
                            "message": f.message,
                        })).collect::<Vec<_>>(),
                    }),
                );
            }
            print_json(&doc)?;
        }
        CheckOutput::Junit => print(&junit(&report, args.profile.map(|_| profile.as_slice())))?,
    }
    if let Some(why) = &report.not_checked {
        // The library's message may start with the path; say it once.
        let shown = args.image.display().to_string();
        let message = why
            .message
            .strip_prefix(&format!("{shown}: "))
            .unwrap_or(&why.message);
        report_failure(&Failure::new(&args.image, message));
    }
    Ok(code)
}

fn plural(n: u64, word: &str) -> String {
    crate::error::count(n, word, &format!("{word}s"))
}

/// Where a finding is, for people: ` (at 0x200, 1024 bytes)`.
fn place(f: &Located) -> String {
    match (f.finding.offset, f.finding.length) {
        (Some(o), Some(l)) => format!(" (at {o:#x}, {})", plural(l, "byte")),
        (Some(o), None) => format!(" (at {o:#x})"),
        _ => String::new(),
    }
}

fn human(report: &Report) -> String {
    let name = escape(&report.path);
    let found = &report.findings;
    let mut out = match report.verdict() {
        Verdict::Clean => format!("{name}: clean, no findings\n"),
        // The error line on stderr says it all.
        Verdict::NotChecked => return String::new(),
        _ => format!(
            "{name}: {}, {}\n",
            plural(report.errors() as u64, "error"),
            plural(report.warnings() as u64, "warning")
        ),
    };
    for f in found {
        let whose = if f.depth == 0 {
            String::new()
        } else {
            format!("{}: ", escape(&f.image))
        };
        let _ = writeln!(
            out,
            "  {:<7}  {}  {whose}{}{}",
            severity_name(f.finding.severity),
            f.finding.rule.id(),
            escape(&f.finding.message),
            place(f)
        );
    }
    if report.layers.len() > 1 {
        let chain: Vec<String> = report.layers.iter().map(|l| escape(&l.path)).collect();
        let _ = writeln!(out, "  chain: {}", chain.join(" -> "));
    }
    out
}

/// The profile's findings, for people: one line each, after the report.
fn human_profile(found: &[crate::ops::ProfileFinding]) -> String {
    let mut out = if found.is_empty() {
        "  profile azure: nothing the service would refuse\n".to_string()
    } else {
        format!(
            "  profile azure: the service would refuse it ({})\n",
            crate::error::count(found.len() as u64, "finding", "findings")
        )
    };
    for f in found {
        let _ = writeln!(
            out,
            "  {:<7}  {}  {}",
            "profile",
            f.rule.id(),
            escape(&f.message)
        );
    }
    out
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Clean => "clean",
        Verdict::Warnings => "warnings",
        Verdict::Errors => "errors",
        Verdict::NotChecked => "not_checked",
    }
}

/// The JSON document (schema version 1): `path`, `verdict` (`clean`,
/// `warnings`, `errors`, `not_checked`), `exit_code`, `errors`,
/// `warnings`, `error` (why it could not be checked, or null), `layers`
/// (`depth`, `path`, `type`) and `findings` (`rule`, `severity`,
/// `message`, `image`, `depth`, `offset`, `length`).
fn to_json(report: &Report, code: i32) -> Value {
    json!({
        "schema_version": 1,
        "path": report.path,
        "verdict": verdict_name(report.verdict()),
        "exit_code": code,
        "errors": report.errors(),
        "warnings": report.warnings(),
        "error": report.not_checked.as_ref().map(|n| &n.message),
        "rule": report.not_checked.as_ref().and_then(|n| n.rule).map(Rule::id),
        "layers": report.layers.iter().map(|l| json!({
            "depth": l.depth,
            "path": l.path,
            "type": l.disk_type.map(crate::DiskType::name),
        })).collect::<Vec<_>>(),
        "findings": report.findings.iter().map(|f| json!({
            "rule": f.finding.rule.id(),
            "severity": severity_name(f.finding.severity),
            "message": f.finding.message,
            "image": f.image,
            "depth": f.depth,
            "offset": f.finding.offset,
            "length": f.finding.length,
        })).collect::<Vec<_>>(),
    })
}

/// `JUnit` XML: a test suite named after the image with one test case per
/// rule of [`Rule::ALL`]; a broken rule is a `<failure>` whose type is its
/// severity. An image that could not be checked is one test case `open`
/// with an `<error>`.
fn junit(report: &Report, profile: Option<&[crate::ops::ProfileFinding]>) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite_name = xml(&format!("vhd check {}", report.path));
    if let Some(why) = &report.not_checked {
        let _ = write!(
            out,
            "<testsuites tests=\"1\" failures=\"0\" errors=\"1\">\n  <testsuite name=\"{suite_name}\" tests=\"1\" failures=\"0\" errors=\"1\">\n    <testcase classname=\"vhd.check\" name=\"open\">\n      <error message=\"{}\"/>\n    </testcase>\n  </testsuite>\n</testsuites>\n",
            xml(&why.message)
        );
        return out;
    }
    let found = &report.findings;
    let broken: Vec<Rule> = Rule::ALL
        .iter()
        .copied()
        .filter(|r| found.iter().any(|f| f.finding.rule == *r))
        .collect();
    let profile_rules: &[crate::ops::AzureRule] = if profile.is_some() {
        &crate::ops::AzureRule::ALL
    } else {
        &[]
    };
    let profile = profile.unwrap_or_default();
    let profile_broken = profile_rules
        .iter()
        .filter(|r| profile.iter().any(|f| f.rule == **r))
        .count();
    let (tests, failures) = (
        Rule::ALL.len() + profile_rules.len(),
        broken.len() + profile_broken,
    );
    let _ = write!(
        out,
        "<testsuites tests=\"{tests}\" failures=\"{failures}\" errors=\"0\">\n  <testsuite name=\"{suite_name}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\">\n"
    );
    for rule in Rule::ALL {
        let mine: Vec<&Located> = found.iter().filter(|f| f.finding.rule == *rule).collect();
        let head = format!(
            "    <testcase classname=\"vhd.check\" name=\"{}\"",
            xml(rule.id())
        );
        if mine.is_empty() {
            let _ = writeln!(out, "{head}/>");
            continue;
        }
        let text: Vec<String> = mine
            .iter()
            .map(|f| xml(&format!("{}: {}{}", f.image, f.finding.message, place(f))))
            .collect();
        let severity = mine
            .iter()
            .map(|f| f.finding.severity)
            .max()
            .unwrap_or(rule.severity());
        let _ = write!(
            out,
            "{head}>\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>\n",
            severity_name(severity),
            xml(rule.summary()),
            text.join("\n")
        );
    }
    for rule in profile_rules {
        let head = format!(
            "    <testcase classname=\"vhd.check.profile\" name=\"{}\"",
            xml(rule.id())
        );
        let mine: Vec<String> = profile
            .iter()
            .filter(|f| f.rule == *rule)
            .map(|f| xml(&f.message))
            .collect();
        if mine.is_empty() {
            let _ = writeln!(out, "{head}/>");
        } else {
            let _ = write!(
                out,
                "{head}>\n      <failure type=\"error\" message=\"{}\">{}</failure>\n    </testcase>\n",
                xml(rule.summary()),
                mine.join("\n")
            );
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}
