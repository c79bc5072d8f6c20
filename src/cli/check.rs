//! `vhd check`: judge an image against the rules and name each rule it
//! breaks. For now the findings are those of opening the image: every
//! warning found on the way, and the error that made open refuse it.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::{Error, ErrorKind, Finding, Image, Rule, Severity};

use super::CmdResult;
use super::args::ParentArgs;
use super::info::severity_name;
use super::output::{Failure, escape, print, print_json, report};

/// Check an image against the rules of the format and list every finding
/// with its rule ID.
///
/// Exit status: 0 clean, 2 errors (corruption or a spec violation), 3 only
/// warnings (2 with --strict), 1 could not check (not a VHD, I/O error).
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd check disk.vhd\n  vhd check disk.vhd --output junit > check.xml"
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
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
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

/// A finding and the image of the chain it is about.
struct Located {
    image: String,
    finding: Finding,
}

/// The outcome of a check.
enum Outcome {
    /// The image was judged.
    Checked(Vec<Located>),
    /// The image could not be judged (not a VHD, I/O error, in use).
    NotChecked(Error),
}

/// Runs `vhd check`.
pub fn run(args: &CheckArgs) -> CmdResult {
    let path = &args.image;
    let name = path.display().to_string();
    let chain_findings = |img: &Image| -> Vec<Located> {
        img.chain()
            .iter()
            .flat_map(|i| {
                i.findings().iter().map(|f| Located {
                    image: i.name().to_string(),
                    finding: f.clone(),
                })
            })
            .collect()
    };
    let outcome = match args.parent.open_options().open(path) {
        Ok(img) => Outcome::Checked(chain_findings(&img)),
        // A broken chain: judge the child on its own, and report why its
        // parent could not be used.
        Err(e) if e.kind() == ErrorKind::Parent => {
            match args.parent.open_options().skip_parent(true).open(path) {
                Ok(img) => {
                    let mut found = chain_findings(&img);
                    found.extend(e.to_finding().map(|finding| Located {
                        image: name.clone(),
                        finding,
                    }));
                    Outcome::Checked(found)
                }
                Err(_) => Outcome::Checked(vec![Located {
                    image: name.clone(),
                    finding: e
                        .to_finding()
                        .unwrap_or_else(|| Finding::new(Rule::ParNotFound, e.to_string())),
                }]),
            }
        }
        Err(e) => match (e.kind(), e.to_finding()) {
            (ErrorKind::NotVhd | ErrorKind::Io, _) | (_, None) => Outcome::NotChecked(e),
            (_, Some(finding)) => Outcome::Checked(vec![Located {
                image: name.clone(),
                finding,
            }]),
        },
    };
    let code = match &outcome {
        Outcome::NotChecked(_) => 1,
        Outcome::Checked(found) => {
            let errors = found.iter().any(|f| f.finding.severity == Severity::Error);
            match (errors, found.is_empty(), args.strict) {
                (true, _, _) | (false, false, true) => 2,
                (false, false, false) => 3,
                (false, true, _) => 0,
            }
        }
    };
    match args.output {
        CheckOutput::Human => print(&human(&name, &outcome))?,
        CheckOutput::Json => print_json(&to_json(&name, &outcome, code))?,
        CheckOutput::Junit => print(&junit(&name, &outcome))?,
    }
    if let Outcome::NotChecked(e) = &outcome {
        report(&Failure::image(path, e));
    }
    Ok(code)
}

fn counts(found: &[Located]) -> (usize, usize) {
    let errors = found
        .iter()
        .filter(|f| f.finding.severity == Severity::Error)
        .count();
    (errors, found.len() - errors)
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn human(name: &str, outcome: &Outcome) -> String {
    let name = &escape(name);
    let Outcome::Checked(found) = outcome else {
        // The error line on stderr says it all.
        return String::new();
    };
    if found.is_empty() {
        return format!("{name}: clean, no findings\n");
    }
    let (errors, warnings) = counts(found);
    let mut out = format!(
        "{name}: {}, {}\n",
        plural(errors, "error"),
        plural(warnings, "warning")
    );
    for f in found {
        let whose = if escape(&f.image) == *name {
            String::new()
        } else {
            format!("{}: ", escape(&f.image))
        };
        let _ = writeln!(
            out,
            "  {:<7}  {}  {whose}{}",
            severity_name(f.finding.severity),
            f.finding.rule.id(),
            escape(&f.finding.message)
        );
    }
    out
}

fn to_json(name: &str, outcome: &Outcome, code: i32) -> Value {
    match outcome {
        Outcome::NotChecked(e) => json!({
            "schema_version": 1,
            "path": name,
            "verdict": "not_checked",
            "exit_code": code,
            "error": e.to_string(),
            "rule": e.rule().map(Rule::id),
            "errors": 0,
            "warnings": 0,
            "findings": [],
        }),
        Outcome::Checked(found) => {
            let (errors, warnings) = counts(found);
            let verdict = if errors > 0 {
                "errors"
            } else if warnings > 0 {
                "warnings"
            } else {
                "clean"
            };
            json!({
                "schema_version": 1,
                "path": name,
                "verdict": verdict,
                "exit_code": code,
                "errors": errors,
                "warnings": warnings,
                "findings": found.iter().map(|f| json!({
                    "rule": f.finding.rule.id(),
                    "severity": severity_name(f.finding.severity),
                    "message": f.finding.message,
                    "image": f.image,
                })).collect::<Vec<_>>(),
            })
        }
    }
}

/// Escapes text for XML attributes and content (control characters
/// first become visible escapes: XML 1.0 cannot hold most of them at all).
fn xml(text: &str) -> String {
    let text = escape(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t') => {
                let _ = write!(out, "&#x{:x};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `JUnit` XML: a test suite named after the image with one test case per
/// rule of [`Rule::ALL`]; a broken rule is a `<failure>` whose type is its
/// severity. An image that could not be checked is one test case `open`
/// with an `<error>`.
fn junit(name: &str, outcome: &Outcome) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite_name = xml(&format!("vhd check {name}"));
    match outcome {
        Outcome::NotChecked(e) => {
            let _ = write!(
                out,
                "<testsuites tests=\"1\" failures=\"0\" errors=\"1\">\n  <testsuite name=\"{suite_name}\" tests=\"1\" failures=\"0\" errors=\"1\">\n    <testcase classname=\"vhd.check\" name=\"open\">\n      <error message=\"{}\"/>\n    </testcase>\n  </testsuite>\n</testsuites>\n",
                xml(&e.to_string())
            );
        }
        Outcome::Checked(found) => {
            let broken: Vec<Rule> = Rule::ALL
                .iter()
                .copied()
                .filter(|r| found.iter().any(|f| f.finding.rule == *r))
                .collect();
            let (tests, failures) = (Rule::ALL.len(), broken.len());
            let _ = write!(
                out,
                "<testsuites tests=\"{tests}\" failures=\"{failures}\" errors=\"0\">\n  <testsuite name=\"{suite_name}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\">\n"
            );
            for rule in Rule::ALL {
                let mine: Vec<&Located> =
                    found.iter().filter(|f| f.finding.rule == *rule).collect();
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
                    .map(|f| xml(&format!("{}: {}", f.image, f.finding.message)))
                    .collect();
                let _ = write!(
                    out,
                    "{head}>\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>\n",
                    severity_name(rule.severity()),
                    xml(rule.summary()),
                    text.join("\n")
                );
            }
            out.push_str("  </testsuite>\n</testsuites>\n");
        }
    }
    out
}
