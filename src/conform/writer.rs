//! Writer runs: a peer turns generated raw disks into VHDs, which are
//! judged by the checker and compared with the input.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use super::command::{Peer, PeerCommand, Run, Status};
use super::compare::{first_difference, first_nonzero, raw_source};
use super::{CaseResult, ConformError, Outcome, Selection, Suite, SuiteKind, place, scratch};
use crate::check::{self, CheckOptions, Verdict};
use crate::convert::{self, Source};
use crate::format::geometry::{MAX_CHS_SECTORS, chs_rounded_size};
use crate::format::{Footer, Geometry, SECTOR_SIZE};
use crate::rules::{Finding, Rule, Severity};
use crate::storage::{FileStorage, Storage};
use crate::{CreateOptions, DiskType, Image};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// An implementation that turns a raw disk into a VHD.
pub trait Writer: Peer {
    /// Writes a VHD at `image` (which does not exist yet) holding the
    /// guest contents of the raw file `raw`. A refusal is a run that does
    /// not exit 0.
    fn write(&mut self, raw: &Path, image: &Path) -> Run;
}

impl Writer for PeerCommand {
    fn write(&mut self, raw: &Path, image: &Path) -> Run {
        // The placeholders are {image} and {raw} whatever the direction;
        // a writer reads {raw} and writes {image}.
        self.template().run(image, raw)
    }
}

/// vhdref's own writer, in this process: what `vhd convert --to fixed`
/// or `--to dynamic` does (a raw input not a whole number of sectors is
/// padded with zeros; a disk of 0 bytes is refused).
#[derive(Debug, Clone, Copy)]
pub struct VhdrefWriter {
    disk_type: DiskType,
}

impl VhdrefWriter {
    /// Writes fixed or dynamic images.
    pub fn new(disk_type: DiskType) -> Self {
        VhdrefWriter { disk_type }
    }
}

impl Peer for VhdrefWriter {
    fn name(&self) -> String {
        format!("vhdref-{}", self.disk_type.name())
    }

    fn command(&self) -> Option<String> {
        None
    }
}

impl Writer for VhdrefWriter {
    fn write(&mut self, raw: &Path, image: &Path) -> Run {
        let start = Instant::now();
        match write_image(raw, image, self.disk_type) {
            Ok(()) => Run::done(start.elapsed()),
            Err(e) => Run::failed(e.to_string(), start.elapsed()),
        }
    }
}

fn write_image(raw: &Path, image: &Path, disk_type: DiskType) -> crate::Result<()> {
    let mut source = raw_source(raw)?;
    let size = source.size();
    if size == 0 {
        return Err(crate::Error::InvalidArgument(
            "the input is a disk of 0 bytes; a VHD holds at least one sector".into(),
        ));
    }
    let out_size = size.div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
    let mut img = CreateOptions::new(disk_type, out_size).create(image)?;
    convert::copy(&mut source, &mut img, out_size, &mut |_| {}).map_err(|e| e.error)?;
    img.close()
}

/// What fills a stretch of a generated raw disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Each sector starts with `vhd conform <case> sector <n>` and goes on
    /// with bytes that depend on their offset (never zero): a shift,
    /// a swap or a lost sector shows.
    Stamp,
    /// All `0xFF`.
    Ones,
    /// Pseudo-random bytes from a seed and the offset.
    Noise(u64),
    /// One value.
    Byte(u8),
}

/// One raw disk a writer is given.
#[derive(Debug, Clone)]
pub struct WriterCase {
    /// Unique name.
    pub name: String,
    /// Size of the raw disk in bytes.
    pub size: u64,
    /// What the case is about.
    pub description: String,
    /// Whether a writer may refuse it (the disk of 0 bytes).
    pub may_refuse: bool,
    /// The stretches that hold data; the rest is a hole.
    extents: Vec<(u64, u64, Fill)>,
}

impl WriterCase {
    fn new(name: impl Into<String>, size: u64, description: impl Into<String>) -> Self {
        WriterCase {
            name: name.into(),
            size,
            description: description.into(),
            may_refuse: false,
            extents: Vec::new(),
        }
    }

    fn with(mut self, offset: u64, len: u64, fill: Fill) -> Self {
        debug_assert!(
            offset + len <= self.size,
            "{}: extent past the end",
            self.name
        );
        self.extents.push((offset, len, fill));
        self
    }

    /// Data in the first and the last sector (or the whole disk if it is
    /// smaller than two sectors).
    fn ends(self) -> Self {
        let size = self.size;
        if size <= 2 * SECTOR_SIZE {
            return self.with(0, size, Fill::Stamp);
        }
        self.with(0, SECTOR_SIZE, Fill::Stamp)
            .with(size - SECTOR_SIZE, SECTOR_SIZE, Fill::Stamp)
    }

    /// Bytes of data the case holds.
    pub fn data_bytes(&self) -> u64 {
        self.extents.iter().map(|e| e.1).sum()
    }

    /// Writes the raw disk at `path` (a sparse file: holes where no data
    /// is).
    pub fn make_raw(&self, path: &Path) -> crate::Result<()> {
        let io = |what: &str, e| crate::Error::io(format!("{what} {}", path.display()), e);
        let mut storage = FileStorage::create_new(path).map_err(|e| match e {
            crate::storage::OpenError::Io(e) => io("creating", e),
            crate::storage::OpenError::Locked(_) => io("creating", std::io::Error::other("locked")),
        })?;
        storage.set_len(self.size).map_err(|e| io("sizing", e))?;
        let mut buf = vec![0u8; usize::try_from(MIB).unwrap_or(1 << 20)];
        for &(offset, len, fill) in &self.extents {
            let mut pos = offset;
            while pos < offset + len {
                let n = (offset + len - pos).min(MIB) as usize;
                self.fill(fill, pos, &mut buf[..n]);
                storage
                    .write_all_at(&buf[..n], pos)
                    .map_err(|e| io("writing", e))?;
                pos += n as u64;
            }
        }
        storage.sync().map_err(|e| io("syncing", e))
    }

    fn fill(&self, fill: Fill, offset: u64, buf: &mut [u8]) {
        match fill {
            Fill::Ones => buf.fill(0xFF),
            Fill::Byte(b) => buf.fill(b),
            Fill::Noise(seed) => {
                for (i, b) in buf.iter_mut().enumerate() {
                    let p = offset + i as u64;
                    *b = (mix(seed ^ (p / 8)) >> (8 * (p % 8))) as u8;
                }
            }
            Fill::Stamp => {
                let mut sector = u64::MAX;
                let mut stamp = String::new();
                for (i, b) in buf.iter_mut().enumerate() {
                    let p = offset + i as u64;
                    if p / SECTOR_SIZE != sector {
                        sector = p / SECTOR_SIZE;
                        stamp.clear();
                        let _ = writeln!(stamp, "vhd conform {} sector {sector}", self.name);
                    }
                    let within = (p % SECTOR_SIZE) as usize;
                    *b = match stamp.as_bytes().get(within) {
                        Some(&c) => c,
                        None => (mix(p) as u8) | 1,
                    };
                }
            }
        }
    }
}

/// splitmix64's finalizer: a well-mixed 64-bit value from `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Every sector count where the spec's geometry algorithm changes
/// regime, with what changes there.
fn chs_switches() -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for heads in 4..=16u64 {
        out.push((
            17 * 1024 * heads,
            format!("17 sectors per track and {heads} heads give way to 31 and 16 heads"),
        ));
        if heads < 16 {
            out.push((
                17 * (1024 * heads + 1),
                format!(
                    "31 sectors per track and 16 heads give way to 17 and {} heads",
                    heads + 1
                ),
            ));
        }
    }
    out.push((31 * 16 * 1024, "31 sectors per track give way to 63".into()));
    out.push((
        65535 * 16 * 63,
        "63 sectors per track give way to 255".into(),
    ));
    out.push((
        MAX_CHS_SECTORS,
        "the largest geometry, 65535/16/255: past it only current_size sizes a disk".into(),
    ));
    out
}

/// The raw disks every writer is given: a disk of 0 bytes; one sector;
/// sizes that are not a whole number of sectors; data patterns (all
/// ones, noise, single sectors and bytes at block edges, holes); one
/// sector below and at every switch of the CHS geometry algorithm; and
/// large disks that are mostly holes (6 GiB, 200 GiB past the CHS limit,
/// and 2040 GiB, the largest VHD).
pub fn writer_cases() -> Vec<WriterCase> {
    let mut cases = pattern_cases();
    cases.extend(switch_cases());
    cases.extend(large_cases());
    cases
}

/// The small cases: 0 bytes, one sector, unaligned sizes, patterns, holes.
fn pattern_cases() -> Vec<WriterCase> {
    vec![
        WriterCase {
            may_refuse: true,
            ..WriterCase::new(
                "empty",
                0,
                "a disk of 0 bytes: an image of 0 bytes, or a refusal",
            )
        },
        WriterCase::new("one-sector", SECTOR_SIZE, "the smallest disk: one sector").ends(),
        WriterCase::new(
            "unaligned-1000",
            1000,
            "1000 bytes, not a whole number of sectors",
        )
        .with(0, 1000, Fill::Noise(1)),
        WriterCase::new(
            "unaligned-3m-plus-1000",
            3 * MIB + 1000,
            "3 MiB + 1000 bytes: a partial last block and a partial last sector",
        )
        .with(0, 4 * KIB, Fill::Stamp)
        .with(3 * MIB, 1000, Fill::Noise(2)),
        WriterCase::new("ones-4m", 4 * MIB, "4 MiB of 0xFF: every bit set").with(
            0,
            4 * MIB,
            Fill::Ones,
        ),
        WriterCase::new(
            "noise-5m",
            5 * MIB,
            "5 MiB of pseudo-random bytes (zero bytes among them)",
        )
        .with(0, 5 * MIB, Fill::Noise(3)),
        WriterCase::new(
            "sectors-8m",
            8 * MIB,
            "single sectors and bytes at block edges of 8 MiB: the first sector, a sector \
             on each side of the 2 MiB edge, the last sector of the second block, one byte \
             inside a sector and the very last byte",
        )
        .with(0, SECTOR_SIZE, Fill::Stamp)
        .with(2 * MIB - SECTOR_SIZE, 2 * SECTOR_SIZE, Fill::Stamp)
        .with(4 * MIB - SECTOR_SIZE, SECTOR_SIZE, Fill::Stamp)
        .with(5 * MIB + 4 * KIB + 100, 1, Fill::Byte(0x01))
        .with(8 * MIB - 1, 1, Fill::Byte(0x80)),
        WriterCase::new(
            "holes-16m",
            16 * MIB,
            "16 MiB of data runs and holes that start and end off block and sector edges",
        )
        .with(0, 100_000, Fill::Stamp)
        .with(
            3 * MIB + SECTOR_SIZE,
            2 * MIB - 2 * SECTOR_SIZE,
            Fill::Noise(4),
        )
        .with(9 * MIB, 64 * KIB, Fill::Ones)
        .with(16 * MIB - 4 * KIB, 4 * KIB, Fill::Stamp),
    ]
}

/// One sector below and at every switch of the CHS algorithm, with data
/// in the first and the last sector.
fn switch_cases() -> Vec<WriterCase> {
    let g = |g: Geometry| format!("{}/{}/{}", g.cylinders, g.heads, g.sectors_per_track);
    let mut cases = Vec::new();
    for (sectors, what) in chs_switches() {
        let below = Geometry::from_total_sectors(sectors - 1);
        let at = Geometry::from_total_sectors(sectors);
        cases.push(
            WriterCase::new(
                format!("chs-{sectors}-below"),
                (sectors - 1) * SECTOR_SIZE,
                format!(
                    "{} sectors, one below a switch of the CHS algorithm ({what}); geometry {}",
                    sectors - 1,
                    g(below)
                ),
            )
            .ends(),
        );
        cases.push(
            WriterCase::new(
                format!("chs-{sectors}-at"),
                sectors * SECTOR_SIZE,
                format!(
                    "{sectors} sectors, at a switch of the CHS algorithm ({what}); geometry {}",
                    g(at)
                ),
            )
            .ends(),
        );
    }
    cases
}

/// Disks of gigabytes that are mostly holes.
fn large_cases() -> Vec<WriterCase> {
    let four_g = 4 * GIB;
    vec![
        WriterCase::new(
            "large-6g",
            6 * GIB,
            "6 GiB, mostly holes: data at the start, across the 4 GiB mark and at the end",
        )
        .with(0, 64 * KIB, Fill::Stamp)
        .with(four_g - 4 * KIB, 8 * KIB, Fill::Stamp)
        .with(6 * GIB - MIB, MIB, Fill::Noise(5)),
        WriterCase::new(
            "beyond-chs-200g",
            200 * GIB,
            "200 GiB, past what a CHS geometry can describe: only current_size sizes it",
        )
        .with(0, SECTOR_SIZE, Fill::Stamp)
        .with(four_g - SECTOR_SIZE, 2 * SECTOR_SIZE, Fill::Stamp)
        .with(200 * GIB - SECTOR_SIZE, SECTOR_SIZE, Fill::Stamp),
        WriterCase::new(
            "largest-2040g",
            crate::format::MAX_DISK_SIZE,
            "2040 GiB, the largest disk Microsoft's tools make in this format",
        )
        .ends(),
    ]
}

/// Whether a warning of the checker means that other readers see other
/// contents than vhdref does (or refuse the image), so that a writer
/// which causes it fails its case. Each of these is a divergence recorded
/// in `spec/divergences.md`:
///
/// * BMP-CLEAR-DATA: qemu and dissect return the data of clear sectors,
///   vhdref and libvhdi zeros, 7-Zip fails (D2);
/// * FTR-CURRENT-SIZE: qemu reads a size not a whole number of sectors as
///   one sector short of the rest (D12);
/// * FTR-TRAILING: libvhdi and 7-Zip refuse, dissect reads 0 bytes (D4);
/// * FTR-511: libvhdi and 7-Zip refuse (D1);
/// * FTR-COPY-MISMATCH: qemu uses the copy at offset 0, or refuses (D5);
/// * GEO-ALGORITHM, only where qemu sizes the disk by its geometry
///   (creators `vpc ` and `qemu`, geometry not 65535/16/255) and the
///   geometry does not describe `current_size` (D6).
///
/// Returns why, or `None` for a warning every careful reader reads alike.
pub fn contents_changing_warning(finding: &Finding, footer: &Footer) -> Option<&'static str> {
    match finding.rule {
        Rule::BmpClearData => {
            Some("qemu and dissect read the data of clear sectors, vhdref and libvhdi zeros (D2)")
        }
        Rule::FtrCurrentSize => Some("qemu floors the size to whole sectors (D12)"),
        Rule::FtrTrailing => Some("libvhdi and 7-Zip refuse it, dissect reads 0 bytes (D4)"),
        Rule::Ftr511 => Some("libvhdi and 7-Zip refuse a 511-byte footer (D1)"),
        Rule::FtrCopyMismatch => Some("qemu reads the footer copy at offset 0 (D5)"),
        Rule::GeoAlgorithm => {
            let g = footer.disk_geometry;
            let chs_sized = matches!(&footer.creator_application, b"vpc " | b"qemu")
                && (g.cylinders, g.heads, g.sectors_per_track) != (65535, 16, 255);
            (chs_sized && g.capacity() != footer.current_size)
                .then_some("qemu sizes this creator's disks by their geometry (D6)")
        }
        _ => None,
    }
}

/// Runs `writer` over the cases of [`writer_cases`] that `selection`
/// picks; `progress` sees each result as it is made.
pub fn run_writer(
    writer: &mut dyn Writer,
    selection: &Selection,
    progress: &mut dyn FnMut(&CaseResult),
) -> Result<Suite, ConformError> {
    let mut suite = Suite {
        kind: SuiteKind::Writer,
        peer: writer.name(),
        command: writer.command(),
        cases: Vec::new(),
    };
    for case in writer_cases() {
        if !selection.selects(&case.name) {
            continue;
        }
        if selection.stopped() {
            break;
        }
        let start = Instant::now();
        let mut result = match selection.unsupported_reason(&case.name, false) {
            Some(why) => CaseResult::new(&case.name, Outcome::Unsupported, why),
            None => run_case(&case, writer)?,
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

fn run_case(case: &WriterCase, writer: &mut dyn Writer) -> Result<CaseResult, ConformError> {
    let dir = scratch()?;
    let raw = dir.path().join(format!("{}.raw", case.name));
    case.make_raw(&raw).map_err(|e| ConformError::Io {
        path: raw.clone(),
        message: format!("cannot make the raw input: {e}"),
    })?;
    let image = dir.path().join(format!("{}.vhd", case.name));
    let run = writer.write(&raw, &image).without_dir(dir.path());
    let mut result = judge(case, &raw, &image, &run).with_run(&run);
    result.expected_size = Some(case.size);
    Ok(result)
}

/// What the peer said last, as ` (exit 1: message)`.
fn said(run: &Run) -> String {
    match run.last_words() {
        Some(words) => format!(" ({}: {words})", run.status.describe()),
        None => format!(" ({})", run.status.describe()),
    }
}

fn judge(case: &WriterCase, raw: &Path, image: &Path, run: &Run) -> CaseResult {
    let name = &case.name;
    let fail = |detail: String| CaseResult::new(name, Outcome::Fail, detail);
    match &run.status {
        Status::Exited(0) => {}
        status if status.did_not_run() => {
            return fail(format!("the command did not run{}", said(run)));
        }
        Status::Exited(_) if case.may_refuse => {
            return CaseResult::new(
                name,
                Outcome::Pass,
                format!("refused a disk of {} bytes{}", case.size, said(run)),
            );
        }
        Status::TimedOut => return fail("timed out".into()),
        _ => return fail(format!("failed{}", said(run))),
    }
    if !image.is_file() {
        return fail("exited 0 but wrote no image".into());
    }
    let report = check::check(image, &CheckOptions::new());
    if report.verdict() == Verdict::NotChecked {
        let why = report.not_checked.map_or_else(String::new, |n| n.message);
        return fail(format!("wrote no image the checker can read: {why}"));
    }
    let mut img = match Image::open(image) {
        Ok(img) => img,
        Err(e) => {
            let mut r = fail(format!("wrote an image vhdref cannot open: {e}"));
            r.rules = e.rule().map(|r| r.id().to_string()).into_iter().collect();
            return r;
        }
    };
    let errors: Vec<&Finding> = report
        .findings
        .iter()
        .map(|f| &f.finding)
        .filter(|f| f.severity == Severity::Error)
        .collect();
    let changing: Vec<(&Finding, &str)> = report
        .findings
        .iter()
        .map(|f| &f.finding)
        .filter(|f| f.severity == Severity::Warning)
        .filter_map(|f| contents_changing_warning(f, img.footer()).map(|why| (f, why)))
        .collect();
    let mut result = if let Some(first) = errors.first() {
        let mut r = fail(format!("breaks {}: {}", first.rule.id(), first.message));
        r.rules = errors.iter().map(|f| f.rule.id().to_string()).collect();
        r
    } else if let Some((first, why)) = changing.first() {
        let mut r = fail(format!(
            "{}: {}; other readers see other contents: {why}",
            first.rule.id(),
            first.message
        ));
        r.rules = changing
            .iter()
            .map(|(f, _)| f.rule.id().to_string())
            .collect();
        r
    } else {
        compare_contents(case, raw, &mut img)
    };
    result.size = Some(img.size());
    for f in &report.findings {
        if f.finding.severity == Severity::Warning {
            result.notes.push(format!(
                "warning {}: {}",
                f.finding.rule.id(),
                f.finding.message
            ));
        }
    }
    result
}

/// Compares the image's contents with the raw input: equal over the
/// input, and zeros in whatever the writer added by rounding up, which
/// may be at most what rounding up to a whole sector, or to the size of
/// a CHS geometry (as QEMU does without `force_size`), adds.
fn compare_contents(case: &WriterCase, raw: &Path, img: &mut Image) -> CaseResult {
    let name = &case.name;
    let fail = |detail: String, offset: Option<u64>| {
        let mut r = CaseResult::new(name, Outcome::Fail, detail);
        r.offset = offset;
        r
    };
    let (input, output) = (case.size, img.size());
    let found = raw_source(raw).and_then(|mut src| {
        let common = input.min(output);
        let diff = first_difference(img, &mut src, common)?;
        let extra = if output > input {
            first_nonzero(img, input, output)?
        } else {
            None
        };
        Ok((diff, extra))
    });
    let (diff, extra) = match found {
        Ok(x) => x,
        Err(e) => return fail(format!("reading it back failed: {e}"), None),
    };
    if output < input {
        let text = match diff {
            Some(d) => format!(
                "holds {output} bytes of the {input}-byte input, and differs from offset {}",
                place(d.offset)
            ),
            None => format!(
                "holds {output} bytes of the {input}-byte input ({} bytes lost)",
                input - output
            ),
        };
        return fail(text, Some(diff.map_or(output, |d| d.offset)));
    }
    if let Some(d) = diff {
        return fail(
            format!(
                "differs from the input at offset {}: {:#04x}, expected {:#04x}",
                place(d.offset),
                d.got,
                d.expected
            ),
            Some(d.offset),
        );
    }
    let sector_rounded = input.div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
    let chs = chs_rounded_size(input).unwrap_or(0);
    if output > sector_rounded.max(chs) {
        return fail(
            format!(
                "grew the disk from {input} to {output} bytes: more than rounding up to a \
                 sector ({sector_rounded}) or to a CHS geometry ({chs}) gives"
            ),
            Some(input),
        );
    }
    if let Some(at) = extra {
        return fail(
            format!(
                "rounded the size up from {input} to {output} bytes, but the added bytes \
                 are not zeros (at {})",
                place(at)
            ),
            Some(at),
        );
    }
    let kind = img.disk_type().name();
    let mut r = CaseResult::new(
        name,
        Outcome::Pass,
        format!("wrote a {kind} image that reads as the input ({input} bytes)"),
    );
    if output > input {
        r.detail = format!(
            "wrote a {kind} image that reads as the input, rounded up from {input} to {output} \
             bytes (+{}, zeros)",
            output - input
        );
        r.notes
            .push(format!("size rounded up by {} bytes", output - input));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_switch_changes_the_geometry_regime() {
        for (sectors, what) in chs_switches() {
            let below = Geometry::from_total_sectors(sectors - 1);
            let at = Geometry::from_total_sectors(sectors);
            assert!(
                (below.heads, below.sectors_per_track) != (at.heads, at.sectors_per_track)
                    || below.total_sectors() > at.total_sectors()
                    || sectors == MAX_CHS_SECTORS,
                "{sectors} ({what}): {below:?} then {at:?}"
            );
        }
    }

    #[test]
    fn case_names_are_unique_and_extents_lie_inside() {
        let cases = writer_cases();
        let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate writer case names");
        for c in &cases {
            for &(o, l, _) in &c.extents {
                assert!(
                    o + l <= c.size,
                    "{}: extent {o}+{l} past {}",
                    c.name,
                    c.size
                );
            }
        }
    }

    #[test]
    fn stamped_sectors_name_their_case_and_sector() {
        let case = WriterCase::new("x", 4096, "");
        let mut buf = vec![0u8; 1024];
        case.fill(Fill::Stamp, 512, &mut buf);
        assert!(buf.starts_with(b"vhd conform x sector 1\n"));
        assert!(buf[512..].starts_with(b"vhd conform x sector 2\n"));
        assert!(buf.iter().all(|&b| b != 0));
    }
}
