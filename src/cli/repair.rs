//! `vhd repair`: renders `crate::ops::repair`, rule by rule, with the
//! checker's findings before and after.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use crate::check::{Report, Verdict};
use crate::ops::{RepairOptions, RepairReport};

use super::CmdResult;
use super::args::Output;
use super::info::severity_name;
use super::output::{Failure, escape, print, print_json};

/// Fix what can be fixed without guessing, and say what was done, rule by
/// rule, with the checker's findings before and after.
///
/// Repaired: a lost or damaged trailing footer (from the copy at offset
/// 0) and a damaged copy (from the trailing footer); a 511-byte footer
/// made 512; leaked space or stray bytes at the end of the file cut off,
/// and the slack of a fixed image; bitmap bits past the end of the disk
/// cleared. Footer and header checksums are recomputed only with
/// --fix-checksums (the fields they would vouch for are shown first).
/// Leaked blocks inside the file are left (vhd compact reclaims them).
/// Any other error is refused with its rule, and then nothing is written.
/// With --dry-run, or when the image is open elsewhere, nothing is
/// written. Exit status: 0 when no error is left (or would be left), 2
/// when an error is refused, 1 when the image could not be repaired at
/// all.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd repair disk.vhd --dry-run\n  vhd repair disk.vhd\n  vhd repair disk.vhd --fix-checksums"
)]
pub struct RepairArgs {
    /// The image.
    pub image: PathBuf,
    /// Say what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Recompute footer and header checksums, trusting their fields.
    #[arg(long)]
    pub fix_checksums: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}

/// Runs `vhd repair`.
pub fn run(args: &RepairArgs) -> CmdResult {
    let path = &args.image;
    let options = RepairOptions::new()
        .dry_run(args.dry_run)
        .fix_checksums(args.fix_checksums);
    let r = crate::ops::repair(path, &options).map_err(|e| Failure::image(path, &e))?;
    let code = if r.has_errors() { 2 } else { 0 };
    match args.output {
        Output::Json => print_json(&to_json(&r, code))?,
        Output::Human => print(&human(&r))?,
    }
    Ok(code)
}

fn counts(report: &Report) -> String {
    match report.verdict() {
        Verdict::Clean => "clean".to_string(),
        _ => format!(
            "{}, {}",
            crate::error::count(report.errors() as u64, "error", "errors"),
            crate::error::count(report.warnings() as u64, "warning", "warnings")
        ),
    }
}

fn human(r: &RepairReport) -> String {
    let name = escape(&r.path);
    let mut out = format!("{name}: before: {}\n", counts(&r.before));
    for f in r.before.findings.iter().filter(|f| f.depth == 0) {
        let _ = writeln!(
            out,
            "  {:<7}  {}  {}",
            severity_name(f.finding.severity),
            f.finding.rule.id(),
            escape(&f.finding.message)
        );
    }
    let done = if r.written {
        "repaired"
    } else {
        "would repair"
    };
    for f in &r.fixes {
        let _ = writeln!(out, "  {done}  {}  {}", f.rule.id(), escape(&f.action));
    }
    for n in &r.refused {
        let _ = writeln!(
            out,
            "  refused  {}  {}: {}",
            n.rule.id(),
            escape(&n.message),
            escape(&n.reason)
        );
    }
    for n in &r.left {
        let _ = writeln!(out, "  left  {}  {}", n.rule.id(), escape(&n.reason));
    }
    let why = if r.in_use {
        " (the image is open elsewhere: nothing written)"
    } else if r.dry_run {
        " (dry run: nothing written)"
    } else if !r.refused.is_empty() {
        " (an error is refused: nothing written)"
    } else {
        ""
    };
    let when = if r.written || r.fixes.is_empty() {
        "after"
    } else {
        "after the repairs"
    };
    let _ = writeln!(out, "{name}: {when}: {}{why}", counts(&r.after));
    out
}

fn findings(report: &Report) -> Vec<Value> {
    report
        .findings
        .iter()
        .map(|f| {
            json!({
                "rule": f.finding.rule.id(),
                "severity": severity_name(f.finding.severity),
                "message": f.finding.message,
                "offset": f.finding.offset,
                "length": f.finding.length,
            })
        })
        .collect()
}

/// The JSON document (schema version 1).
fn to_json(r: &RepairReport, code: i32) -> Value {
    let left = |v: &[crate::ops::repair::NotRepaired]| -> Vec<Value> {
        v.iter()
            .map(|n| json!({"rule": n.rule.id(), "severity": severity_name(n.severity), "message": n.message, "reason": n.reason}))
            .collect()
    };
    json!({
        "schema_version": 1,
        "path": r.path,
        "exit_code": code,
        "dry_run": r.dry_run,
        "in_use": r.in_use,
        "written": r.written,
        "fixes": r.fixes.iter().map(|f| json!({"rule": f.rule.id(), "action": f.action})).collect::<Vec<_>>(),
        "refused": left(&r.refused),
        "left": left(&r.left),
        "before": findings(&r.before),
        "after": findings(&r.after),
    })
}
