//! `vhd info`: what an image is (type, sizes, geometry, creator, IDs,
//! blocks, warnings, parent chain), as aligned text or JSON.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use crate::format::SECTOR_SIZE;
use crate::format::geometry::MAX_CHS_SECTORS;
use crate::{ErrorKind, Finding, Image, ParentSource};

use super::CmdResult;
use super::args::{Output, ParentArgs};
use super::output::{Failure, Table, columns, escape, human_size, print, print_json, short_size};
use crate::error::count;

/// Show what an image is: type, sizes, geometry, creator, unique ID,
/// blocks, warnings and the parent chain.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd info disk.vhd\n  vhd info child.vhd --parent base.vhd --output json"
)]
pub struct InfoArgs {
    /// The image.
    pub image: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
}

/// Runs `vhd info`.
pub fn run(args: &InfoArgs) -> CmdResult {
    // A child whose parent cannot be used is still shown (without its
    // chain), and the parent error is reported after it: exit status 1.
    let (img, parent_error) = match args.parent.open_options().open(&args.image) {
        Ok(img) => (img, None),
        Err(e) if e.kind() == ErrorKind::Parent => {
            let img = args
                .parent
                .open_options()
                .skip_parent(true)
                .open(&args.image)
                .map_err(|_| Failure::image(&args.image, &e))?;
            (img, Some(e))
        }
        Err(e) => return Err(Failure::image(&args.image, &e)),
    };
    match args.output {
        Output::Json => print_json(&info_json(&img))?,
        Output::Human => print(&info_human(&img))?,
    }
    match parent_error {
        Some(e) => Err(Failure::image(&args.image, &e)),
        None => Ok(0),
    }
}

/// The JSON document of `vhd info --output json` (schema version 1). It
/// depends only on the image: no clock, no current directory.
///
/// Keys: `schema_version`, `path`, `type`, `current_size`, `original_size`,
/// `geometry` (`cylinders`, `heads`, `sectors_per_track`, `capacity`),
/// `creator` (`application`, `version`, `version_code`, `host_os`),
/// `file_format_version`, `features`, `unique_id`, `time_stamp` (RFC 3339),
/// `time_stamp_seconds` (since 2000-01-01), `saved_state`, `footer_offset`,
/// `sparse` (null for fixed images; else `block_size`, `bat_entries`,
/// `max_table_entries`, `allocated_blocks`, `header_offset`,
/// `table_offset`), `parent` (null unless differencing; else what the
/// child records: `unique_id`, `time_stamp`, `name`), `warnings` (`rule`,
/// `severity`, `message`) and `chain` (this image first: `depth`, `path`,
/// `type`, `unique_id`, `current_size`, `time_stamp`, `parent_source`,
/// `warnings`).
pub fn info_json(image: &Image) -> Value {
    let f = image.footer();
    let g = f.disk_geometry;
    let sparse = match (image.dyn_header(), image.block_counts()) {
        (Some(h), Some((blocks, allocated))) => json!({
            "block_size": h.block_size,
            "bat_entries": blocks,
            "max_table_entries": h.max_table_entries,
            "allocated_blocks": allocated,
            "header_offset": image.dyn_header_offset(),
            "table_offset": h.table_offset,
        }),
        _ => Value::Null,
    };
    let parent = match image.dyn_header() {
        Some(h) if image.disk_type() == crate::DiskType::Differencing => json!({
            "unique_id": h.parent_unique_id.to_string(),
            "time_stamp": h.parent_time_stamp.to_rfc3339(),
            "name": h.parent_name().map(|n| n.unwrap_or_else(|lossy| lossy)),
        }),
        _ => Value::Null,
    };
    let chain: Vec<Value> = image
        .chain()
        .iter()
        .enumerate()
        .map(|(depth, img)| {
            json!({
                "depth": depth,
                "path": img.name(),
                "type": img.disk_type().name(),
                "unique_id": img.footer().unique_id.to_string(),
                "current_size": img.size(),
                "time_stamp": img.footer().time_stamp.to_rfc3339(),
                "parent_source": img.parent_source().map(parent_source_json),
                "warnings": findings_json(img.findings()),
            })
        })
        .collect();
    json!({
        "schema_version": 1,
        "path": image.name(),
        "type": image.disk_type().name(),
        "current_size": f.current_size,
        "original_size": f.original_size,
        "geometry": {
            "cylinders": g.cylinders,
            "heads": g.heads,
            "sectors_per_track": g.sectors_per_track,
            "capacity": g.capacity(),
        },
        "creator": {
            "application": f.creator_application_str(),
            "version": creator_version(f.creator_version),
            "version_code": f.creator_version,
            "host_os": f.creator_host_os_str(),
        },
        "file_format_version": creator_version(f.file_format_version),
        "features": f.features,
        "unique_id": f.unique_id.to_string(),
        "time_stamp": f.time_stamp.to_rfc3339(),
        "time_stamp_seconds": f.time_stamp.0,
        "saved_state": f.saved_state,
        "footer_offset": image.footer_offset(),
        "sparse": sparse,
        "parent": parent,
        "warnings": findings_json(image.findings()),
        "chain": chain,
    })
}

/// How a parent was found, as JSON: `via` (`caller`, `locator`, `name`),
/// `path`, and for a locator its `platform` and `locator` text.
pub fn parent_source_json(source: &ParentSource) -> Value {
    match source {
        ParentSource::Caller(path) => json!({ "via": "caller", "path": path }),
        ParentSource::Locator {
            platform,
            locator,
            path,
        } => json!({
            "via": "locator",
            "platform": platform,
            "locator": locator,
            "path": path,
        }),
        ParentSource::Name(path) => json!({ "via": "name", "path": path }),
    }
}

/// Findings as a JSON array of `{rule, severity, message}`.
pub fn findings_json(findings: &[Finding]) -> Value {
    Value::Array(
        findings
            .iter()
            .map(|f| {
                json!({
                    "rule": f.rule.id(),
                    "severity": severity_name(f.severity),
                    "message": f.message,
                })
            })
            .collect(),
    )
}

/// `error` or `warning`.
pub fn severity_name(s: crate::Severity) -> &'static str {
    match s {
        crate::Severity::Error => "error",
        crate::Severity::Warning => "warning",
    }
}

/// `major.minor` of a version field.
fn creator_version(v: u32) -> String {
    format!("{}.{}", v >> 16, v & 0xFFFF)
}

fn geometry_text(image: &Image) -> String {
    let g = image.footer().disk_geometry;
    let capacity = g.capacity();
    let size = image.size();
    let relation = match capacity.cmp(&size) {
        std::cmp::Ordering::Equal => "exactly the current size".to_string(),
        std::cmp::Ordering::Less if size / SECTOR_SIZE > MAX_CHS_SECTORS => {
            "the most a geometry can describe; the size comes from the current size".to_string()
        }
        std::cmp::Ordering::Less => {
            format!(
                "{} less than the current size",
                count(size - capacity, "byte", "bytes")
            )
        }
        std::cmp::Ordering::Greater => {
            format!(
                "{} more than the current size",
                count(capacity - size, "byte", "bytes")
            )
        }
    };
    format!(
        "{}/{}/{} (C/H/S), describes {} ({relation})",
        g.cylinders,
        g.heads,
        g.sectors_per_track,
        short_size(capacity)
    )
}

fn info_human(image: &Image) -> String {
    let f = image.footer();
    let mut t = Table::new();
    t.row("image", image.name())
        .row("type", image.disk_type().name())
        .row("current size", human_size(f.current_size))
        .row("original size", human_size(f.original_size))
        .row("geometry", geometry_text(image))
        .row(
            "creator",
            format!(
                "{} {} on {}",
                f.creator_application_str(),
                creator_version(f.creator_version),
                f.creator_host_os_str()
            ),
        )
        .row("unique id", f.unique_id.to_string())
        .row("time stamp", f.time_stamp.to_rfc3339())
        .row("saved state", if f.saved_state { "yes" } else { "no" });
    if let (Some(h), Some((blocks, allocated))) = (image.dyn_header(), image.block_counts()) {
        t.row("block size", human_size(u64::from(h.block_size)))
            .row(
                "BAT entries",
                format!("{blocks} (max table entries {})", h.max_table_entries),
            )
            .row(
                "allocated blocks",
                format!(
                    "{allocated} of {blocks} ({})",
                    short_size(allocated as u64 * u64::from(h.block_size))
                ),
            )
            .row(
                "header offset",
                image
                    .dyn_header_offset()
                    .map_or_else(String::new, |o| format!("{o} ({o:#x})")),
            )
            .row(
                "BAT offset",
                format!("{} ({:#x})", h.table_offset, h.table_offset),
            );
        if image.disk_type() == crate::DiskType::Differencing {
            t.row("parent unique id", h.parent_unique_id.to_string())
                .row("parent time stamp", h.parent_time_stamp.to_rfc3339());
            if let Some(name) = h.parent_name() {
                t.row("parent name", name.unwrap_or_else(|lossy| lossy));
            }
        }
    }
    t.row(
        "footer offset",
        format!("{} ({:#x})", image.footer_offset(), image.footer_offset()),
    );
    let mut out = t.render("");
    out.push_str(&chain_text(image));
    out
}

/// The warnings of every image of the chain, and the chain itself.
fn chain_text(image: &Image) -> String {
    let mut out = String::new();
    let warnings: Vec<(usize, &Image, &Finding)> = image
        .chain()
        .into_iter()
        .enumerate()
        .flat_map(|(d, img)| img.findings().iter().map(move |f| (d, img, f)))
        .collect();
    if warnings.is_empty() {
        out.push_str("warnings: none\n");
    } else {
        out.push_str("warnings:\n");
        for (depth, img, finding) in warnings {
            let whose = if depth == 0 {
                String::new()
            } else {
                format!("{}: ", escape(img.name()))
            };
            let _ = writeln!(
                out,
                "  {}  {whose}{}",
                finding.rule.id(),
                escape(&finding.message)
            );
        }
    }
    let chain = image.chain();
    if chain.len() > 1 {
        out.push_str("chain:\n");
        let mut rows = vec![vec![
            "depth".to_string(),
            "type".to_string(),
            "size".to_string(),
            "unique id".to_string(),
            "path".to_string(),
        ]];
        for (depth, img) in chain.iter().enumerate() {
            rows.push(vec![
                depth.to_string(),
                img.disk_type().name().to_string(),
                short_size(img.size()),
                img.footer().unique_id.to_string(),
                img.name().to_string(),
            ]);
        }
        out.push_str(&columns(&rows, "  "));
        for (depth, img) in chain.iter().enumerate() {
            if let Some(source) = img.parent_source() {
                let _ = writeln!(
                    out,
                    "  parent of {depth} found by {}",
                    escape(&source.to_string())
                );
            }
        }
    }
    out
}
