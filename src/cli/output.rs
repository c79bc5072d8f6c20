//! Everything the tool prints: the one error line, humanized sizes,
//! aligned tables, JSON, progress bars, and stdout that may be a closed pipe.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Error;

/// A command failed: what to print (and with which exit status).
#[derive(Debug)]
pub struct Failure {
    /// The file the error is about, as given on the command line.
    pub file: Option<String>,
    /// What is wrong; empty for a failure already reported (or to be silent).
    pub message: String,
    /// Exit status.
    pub code: i32,
}

impl Failure {
    /// A failure about `file` with exit status 1.
    pub fn new(file: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Failure {
            file: Some(file.as_ref().display().to_string()),
            message: message.into(),
            code: 1,
        }
    }

    /// A failure about no file in particular.
    pub fn plain(message: impl Into<String>) -> Self {
        Failure {
            file: None,
            message: message.into(),
            code: 1,
        }
    }

    /// A library error about the image `file` named on the command line.
    pub fn image(file: impl AsRef<Path>, error: &Error) -> Self {
        let file = file.as_ref().display().to_string();
        let message = describe(&file, error);
        Failure {
            file: Some(file),
            message,
            code: 1,
        }
    }

    /// An I/O error about `file` while doing `what`.
    pub fn io(file: impl AsRef<Path>, what: &str, error: &io::Error) -> Self {
        Failure::new(file, format!("{what}: {error}"))
    }

    /// The same failure with another exit status.
    #[must_use]
    pub fn with_code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }
}

/// The message for a library error about `file`, without repeating the
/// file name where the library's message already starts with it.
pub fn describe(file: &str, error: &Error) -> String {
    match error {
        Error::Locked { path, reason } if path == file => format!("in use: {reason}"),
        Error::Io { context, source } if context == &format!("opening {file}") => {
            format!("cannot open: {source}")
        }
        _ => {
            let text = error.to_string();
            match text.strip_prefix(file).and_then(|t| t.strip_prefix(": ")) {
                Some(rest) => rest.to_string(),
                None => text,
            }
        }
    }
}

/// Text from an image (or a path, or anything else the tool did not make
/// itself) made safe to print on a terminal: control characters (which
/// include newlines and ESC) and the Unicode characters that reorder text
/// become visible escapes such as `\x1b` or `\u{202e}`, so an image
/// cannot forge an output line, clear the screen or retitle the terminal.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() && (c as u32) < 0x100 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else if c.is_control() || bidi {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Escapes text for XML attributes and content (control characters
/// first become visible escapes: XML 1.0 cannot hold most of them at all).
pub fn xml(text: &str) -> String {
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

/// Prints a failure as one line on stderr and returns its exit status.
/// The file name and the message are escaped: the line is always one line.
pub fn report(failure: &Failure) -> i32 {
    if !failure.message.is_empty() {
        let line = match &failure.file {
            Some(f) => format!("vhd: {}: {}\n", escape(f), escape(&failure.message)),
            None => format!("vhd: {}\n", escape(&failure.message)),
        };
        // Nothing sensible is left to do if stderr is gone.
        let _ = io::stderr().write_all(line.as_bytes());
    }
    failure.code
}

/// A warning line on stderr (`vhd: <file>: warning: ...`), escaped.
pub fn warn(file: impl AsRef<Path>, message: &str) {
    let line = format!(
        "vhd: {}: {}\n",
        escape(&file.as_ref().display().to_string()),
        escape(message)
    );
    let _ = io::stderr().write_all(line.as_bytes());
}

/// Writes `text` to stdout. A closed pipe (`vhd ... | head`) ends the
/// command quietly with status 1; other errors are reported.
pub fn print(text: &str) -> Result<(), Failure> {
    write_stdout(&mut io::stdout().lock(), text.as_bytes())
}

/// Writes bytes to a stdout handle, with the closed-pipe rule of [`print`].
pub fn write_stdout(out: &mut impl Write, bytes: &[u8]) -> Result<(), Failure> {
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| stdout_error(&e))
}

/// The failure for an error writing to standard output (quiet for a
/// closed pipe).
pub fn stdout_error(e: &io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::plain("")
    } else {
        Failure::plain(format!("writing to standard output: {e}"))
    }
}

/// Prints a JSON value, pretty, with a final newline.
pub fn print_json(value: &serde_json::Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::plain(format!("encoding JSON: {e}")))?;
    print(&format!("{text}\n"))
}

const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];

/// `10.0 MiB`, or `512 bytes` under 1 KiB.
pub fn short_size(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    #[allow(clippy::cast_precision_loss)] // one decimal is shown
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `10.0 MiB (10485760 bytes)`, or `512 bytes` under 1 KiB.
pub fn human_size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{} ({bytes} bytes)", short_size(bytes))
    }
}

/// Label/value lines with the values aligned.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a row; the value is escaped (it may come from an image).
    pub fn row(&mut self, label: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.rows.push((label.into(), escape(&value.into())));
        self
    }

    /// The rows as text, each `label:` padded to the widest label.
    pub fn render(&self, indent: &str) -> String {
        let width = self
            .rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0)
            + 1;
        let mut out = String::new();
        for (label, value) in &self.rows {
            let label = format!("{label}:");
            let _ = writeln!(out, "{indent}{label:<width$} {value}");
        }
        out
    }
}

/// Columns with aligned widths (first row: the headings); every cell is
/// escaped.
pub fn columns(rows: &[Vec<String>], indent: &str) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape(c)).collect())
        .collect();
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(indent);
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A progress bar of `total` bytes on stderr, hidden unless stderr is a
/// terminal (so never in tests or pipes).
pub fn progress(total: u64, message: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_humanized_with_the_exact_bytes() {
        assert_eq!(human_size(10 << 20), "10.0 MiB (10485760 bytes)");
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(short_size(3 << 40), "3.0 TiB");
    }

    #[test]
    fn errors_do_not_repeat_the_file_name() {
        let e = Error::Locked {
            path: "a.vhd".into(),
            reason: "it is open elsewhere".into(),
        };
        assert_eq!(describe("a.vhd", &e), "in use: it is open elsewhere");
        let e = Error::FooterChecksum {
            stored: 1,
            computed: 2,
        };
        assert!(describe("a.vhd", &e).ends_with("(FTR-CHECKSUM)"));
    }

    #[test]
    fn tables_align_their_values() {
        let mut t = Table::new();
        t.row("type", "dynamic").row("block size", "2.0 MiB");
        assert_eq!(t.render(""), "type:       dynamic\nblock size: 2.0 MiB\n");
    }
}
