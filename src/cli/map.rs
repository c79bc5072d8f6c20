//! `vhd map`: the extents of a disk, which image of the chain holds each
//! and where in its file. Extents are printed as they are found, so a map
//! of any disk takes bounded memory, however many extents it has.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::Extent;

use super::CmdResult;
use super::args::{Output, ParentArgs};
use super::output::{Failure, escape, short_size, stdout_error};

/// List the extents of a disk: runs of guest bytes that hold data (with the
/// image of the chain that holds them and the offset in its file) or read
/// as zeros (unallocated).
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  vhd map disk.vhd\n  vhd map child.vhd --output json")]
pub struct MapArgs {
    /// The image.
    pub image: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
}

/// Column widths of the human output, known before the first extent.
struct Widths {
    offset: usize,
    length: usize,
    depth: usize,
    file_offset: usize,
}

/// Runs `vhd map`.
pub fn run(args: &MapArgs) -> CmdResult {
    let path = &args.image;
    let mut img = args.parent.open(path, false)?;
    let names: Vec<String> = img.chain().iter().map(|i| i.name().to_string()).collect();
    let name_of = |depth: Option<usize>| depth.and_then(|d| names.get(d)).cloned();
    let size = img.size();
    let mut out = BufWriter::new(io::stdout().lock());
    // An error of the output stops the walk; it is reported as such below.
    let mut output_error: Option<io::Error> = None;
    let result = match args.output {
        Output::Json => {
            let head = json!({
                "schema_version": 1,
                "path": img.name(),
                "size": size,
                "chain": names.iter().enumerate().map(|(d, n)| json!({ "depth": d, "path": n })).collect::<Vec<_>>(),
            });
            // The document is the head object with "extents" added last,
            // written one extent at a time.
            let head = head.to_string();
            let open = format!("{},\"extents\":[", head.trim_end_matches('}'));
            let mut result = out
                .write_all(open.as_bytes())
                .map_err(|err| stop(&mut output_error, err));
            if result.is_ok() {
                let mut first = true;
                let mut emit = |e: Extent| -> crate::Result<()> {
                    let item = json!({
                        "offset": e.offset,
                        "length": e.length,
                        "data": e.data,
                        "depth": e.depth,
                        "path": name_of(e.depth),
                        "file_offset": e.file_offset,
                    });
                    let sep = if first { "\n" } else { ",\n" };
                    first = false;
                    write!(out, "{sep}{item}").map_err(|err| stop(&mut output_error, err))
                };
                result = img.map_each(0, size, &mut emit);
            }
            result.and_then(|()| {
                out.write_all(b"\n]}\n")
                    .map_err(|err| stop(&mut output_error, err))
            })
        }
        Output::Human => {
            let widths = widths(&img);
            let heading = row(
                &widths,
                [
                    "offset",
                    "length",
                    "",
                    "kind",
                    "depth",
                    "file offset",
                    "file",
                ],
            );
            let written = out
                .write_all(heading.as_bytes())
                .map_err(|err| stop(&mut output_error, err));
            let mut emit = |e: Extent| -> crate::Result<()> {
                let line = row(
                    &widths,
                    [
                        &e.offset.to_string(),
                        &e.length.to_string(),
                        &format!("({})", short_size(e.length)),
                        if e.data { "data" } else { "zero" },
                        &e.depth.map_or_else(|| "-".to_string(), |d| d.to_string()),
                        &e.file_offset
                            .map_or_else(|| "-".to_string(), |o| o.to_string()),
                        &name_of(e.depth).map_or_else(|| "-".to_string(), |n| escape(&n)),
                    ],
                );
                out.write_all(line.as_bytes())
                    .map_err(|err| stop(&mut output_error, err))
            };
            written.and_then(|()| img.map_each(0, size, &mut emit))
        }
    };
    let flushed = out.flush();
    if let Some(e) = output_error {
        return Err(stdout_error(&e));
    }
    flushed.map_err(|e| stdout_error(&e))?;
    result.map_err(|e| Failure::image(path, &e))?;
    Ok(0)
}

/// Remembers an output error and turns it into a library error that ends
/// the walk (the output error is what gets reported).
fn stop(slot: &mut Option<io::Error>, err: io::Error) -> crate::Error {
    let e = crate::Error::io(
        "writing the map",
        io::Error::new(err.kind(), err.to_string()),
    );
    slot.get_or_insert(err);
    e
}

/// Widths of the numeric columns: as wide as the largest value that can
/// appear (the disk size, the longest file of the chain, the chain depth).
fn widths(img: &crate::Image) -> Widths {
    let digits = |n: u64| n.to_string().len();
    let longest_file = img
        .chain()
        .iter()
        .map(|i| i.footer_offset() + 512)
        .max()
        .unwrap_or(0);
    let size = img.size();
    Widths {
        offset: digits(size).max("offset".len()),
        length: digits(size).max("length".len()),
        depth: digits(img.chain().len() as u64).max("depth".len()),
        file_offset: digits(longest_file).max("file offset".len()),
    }
}

/// One line of the human table.
fn row(w: &Widths, cells: [&str; 7]) -> String {
    let [offset, length, human, kind, depth, file_offset, file] = cells;
    let line = format!(
        "{offset:<ow$}  {length:<lw$}  {human:<12}  {kind:<4}  {depth:<dw$}  {file_offset:<fw$}  {file}",
        ow = w.offset,
        lw = w.length,
        dw = w.depth,
        fw = w.file_offset,
    );
    format!("{}\n", line.trim_end())
}
