//! Every fast path of `convert` gives the bytes the plain path gives.
//!
//! * The overlapped copy (a reader thread and a writer thread) makes the
//!   same writes, in the same order, with the same bytes, as the plain copy
//!   (one chunk at a time in one thread), and both give the output the
//!   source reads as: over generated fixed and dynamic images and chains
//!   of depth 1 to 3, with fragmented bitmaps, zero pieces inside data, and
//!   sizes and block sizes that do not line up with the copy's chunks.
//! * `-t unsafe` (no sync) writes the same file as the durable default.
//! * A failure on either side stops the overlapped copy and is reported
//!   with its side, as in the plain copy.

mod builder;
mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use builder::{Bits, DataSpace, Platform, VhdBuilder};
use common::{MIB, Rng, SECTOR, cmd, run_ok, temp_dir};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use uuid::Uuid;
use vhdref::convert::{self, CopyStats, Durability, Mode, OutputFile, RawSink, Side, Sink, Source};
use vhdref::storage::{FaultStorage, FileStorage, Mutation, SharedWrite, Storage};
use vhdref::{CreateOptions, DiskType, Error, Image, OpenOptions, Timestamp};

const VHD: &str = env!("CARGO_BIN_EXE_vhd");

/// An allocated block of a generated layer.
#[derive(Debug, Clone)]
struct BlockSpec {
    /// Chooses the block (modulo the number of blocks).
    pick: u32,
    bits: BitsSpec,
    seed: u64,
}

/// Which sectors of a block the bitmap marks.
#[derive(Debug, Clone)]
enum BitsSpec {
    All,
    None,
    /// Every sector whose index modulo `period` is below `run`: many short
    /// runs (a fragmented bitmap).
    Striped {
        period: u64,
        run: u64,
    },
    /// A few sectors, chosen by the seed.
    Scattered(u8),
}

/// A generated source disk.
#[derive(Debug, Clone)]
enum SourceSpec {
    Fixed {
        sectors: u64,
        seed: u64,
    },
    /// A dynamic image and, on top of it, `layers.len() - 1` differencing
    /// children (the last is the top).
    Chain {
        sectors: u64,
        block_size: u32,
        layers: Vec<Vec<BlockSpec>>,
    },
}

fn bits_spec() -> impl Strategy<Value = BitsSpec> {
    prop_oneof![
        Just(BitsSpec::All),
        Just(BitsSpec::None),
        (2u64..40, 1u64..20).prop_map(|(period, run)| BitsSpec::Striped {
            period,
            run: run.min(period - 1)
        }),
        any::<u8>().prop_map(BitsSpec::Scattered),
    ]
}

fn block_spec() -> impl Strategy<Value = BlockSpec> {
    (any::<u32>(), bits_spec(), any::<u64>()).prop_map(|(pick, bits, seed)| BlockSpec {
        pick,
        bits,
        seed,
    })
}

fn source_spec() -> impl Strategy<Value = SourceSpec> {
    // Up to 7 MiB: several 2 MiB chunks, and a last chunk cut short.
    let sectors = 1u64..=7 * 2048;
    prop_oneof![
        (sectors.clone(), any::<u64>())
            .prop_map(|(sectors, seed)| SourceSpec::Fixed { sectors, seed }),
        (
            sectors,
            prop::sample::select(vec![4096u32, 65536, 512 * 1024, 2 * 1024 * 1024]),
            prop::collection::vec(prop::collection::vec(block_spec(), 0..8), 1..=4),
        )
            .prop_map(|(sectors, block_size, layers)| SourceSpec::Chain {
                sectors,
                block_size,
                layers
            }),
    ]
}

/// `len` bytes of data in 4 KiB pages, about a third of them zeros (so
/// zero pieces show up inside allocated data).
fn page_data(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for page in out.chunks_mut(4096) {
        if rng.below(3) != 0 {
            rng.fill(page);
        }
    }
    // Whole 64 KiB runs of zeros too, now and then.
    if len >= 256 * 1024 && rng.below(2) == 0 {
        let at = rng.below((len - 128 * 1024) as u64) as usize;
        out[at..at + 128 * 1024].fill(0);
    }
    out
}

fn bits(spec: &BitsSpec, sectors_per_block: u64) -> Bits {
    match spec {
        BitsSpec::All => Bits::All,
        BitsSpec::None => Bits::None,
        BitsSpec::Striped { period, run } => Bits::Sectors(
            (0..sectors_per_block)
                .filter(|s| s % period < *run)
                .collect(),
        ),
        BitsSpec::Scattered(seed) => {
            let mut rng = Rng::new(u64::from(*seed));
            Bits::Sectors(
                (0..8)
                    .map(|_| rng.below(sectors_per_block))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            )
        }
    }
}

/// The source, built: opened in memory, with what it must read as.
fn build(spec: &SourceSpec) -> (Image, Vec<u8>) {
    match spec {
        SourceSpec::Fixed { sectors, seed } => {
            let size = sectors * SECTOR;
            let data = page_data(&mut Rng::new(*seed), size as usize);
            let b = VhdBuilder::fixed(size).data(&data);
            let img = OpenOptions::new()
                .open_storage(Box::new(FaultStorage::from_bytes(b.build())), "in.vhd")
                .expect("open the fixed source");
            (img, b.expected(&[]))
        }
        SourceSpec::Chain {
            sectors,
            block_size,
            layers,
        } => {
            let size = sectors * SECTOR;
            let blocks = size.div_ceil(u64::from(*block_size));
            let per_block = u64::from(*block_size) / SECTOR;
            let mut below: Option<(Image, VhdBuilder)> = None;
            let mut expected = Vec::new();
            for (depth, layer) in layers.iter().enumerate() {
                let mut b = if depth == 0 {
                    VhdBuilder::dynamic(size)
                } else {
                    let (_, parent) = below.as_ref().expect("a parent below");
                    VhdBuilder::differencing(size)
                        .parent_id(parent.id())
                        .parent_time_stamp(parent.stamp())
                        .parent_name("parent.vhd")
                        .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes)
                }
                .block_size(*block_size)
                .unique_id(Uuid::from_u128(depth as u128 + 1));
                for block in layer {
                    let index = (u64::from(block.pick) % blocks) as u32;
                    let data = page_data(&mut Rng::new(block.seed), *block_size as usize);
                    b = b.block(index, bits(&block.bits, per_block), &data);
                }
                expected = b.expected(&expected);
                let mut options = OpenOptions::new();
                if let Some((parent, _)) = below.take() {
                    options = options.parent_image(parent);
                }
                let img = options
                    .open_storage(Box::new(FaultStorage::from_bytes(b.build())), "in.vhd")
                    .expect("open a generated layer");
                below = Some((img, b));
            }
            (below.expect("at least one layer").0, expected)
        }
    }
}

/// What a copy is written into.
#[derive(Debug, Clone, Copy)]
enum Out {
    Raw,
    Fixed,
    Dynamic(u32),
}

/// Creates the sink of kind `out` for a disk of `size` bytes in `storage`
/// (deterministic: fixed unique ID and time stamp).
fn sink(out: Out, storage: Box<dyn Storage>, size: u64) -> Box<dyn FinishSink> {
    let options = |t| {
        CreateOptions::new(t, size)
            .unique_id(Uuid::from_u128(77))
            .time_stamp(Timestamp(1234))
    };
    match out {
        Out::Raw => {
            let mut storage = storage;
            storage.set_len(size).expect("size the raw output");
            Box::new(RawSink::new(storage, "out.raw"))
        }
        Out::Fixed => Box::new(
            options(DiskType::Fixed)
                .create_in(storage, "out.vhd", None)
                .expect("create a fixed output"),
        ),
        Out::Dynamic(bs) => Box::new(
            options(DiskType::Dynamic)
                .block_size(bs)
                .create_in(storage, "out.vhd", None)
                .expect("create a dynamic output"),
        ),
    }
}

/// A sink that can be finished (made durable) once the copy is done.
trait FinishSink: Sink {
    fn finish_box(self: Box<Self>) -> vhdref::Result<()>;
    fn as_sink(&mut self) -> &mut dyn Sink;
}

impl FinishSink for RawSink {
    fn finish_box(self: Box<Self>) -> vhdref::Result<()> {
        self.finish().map(drop)
    }
    fn as_sink(&mut self) -> &mut dyn Sink {
        self
    }
}

impl FinishSink for Image {
    fn finish_box(self: Box<Self>) -> vhdref::Result<()> {
        self.close()
    }
    fn as_sink(&mut self) -> &mut dyn Sink {
        self
    }
}

/// Copies `spec`'s disk into a fresh `out` in `mode`; returns the output
/// storage and what the copy reported.
fn copy_into(spec: &SourceSpec, out: Out, mode: Mode) -> (FaultStorage, CopyStats) {
    let (mut source, _) = build(spec);
    let size = source.size();
    let storage = FaultStorage::new();
    let mut sink = sink(out, Box::new(storage.clone()), size);
    let mut covered = 0u64;
    let stats = convert::copy_with(mode, &mut source, sink.as_sink(), size, &mut |n| {
        covered += n;
    })
    .unwrap_or_else(|e| panic!("{mode:?} copy into {out:?} failed: {:?}", e.error));
    assert_eq!(
        covered, size,
        "{mode:?} into {out:?}: the progress covers the disk once"
    );
    sink.finish_box().expect("finish the output");
    (storage, stats)
}

/// What the output in `storage` reads as.
fn output_contents(out: Out, storage: &FaultStorage, size: u64) -> Vec<u8> {
    match out {
        Out::Raw => storage.bytes(),
        Out::Fixed | Out::Dynamic(_) => {
            let mut img = OpenOptions::new()
                .open_storage(Box::new(storage.clone()), "out.vhd")
                .expect("the output opens");
            let mut buf = vec![0u8; size as usize];
            img.read_at(0, &mut buf).expect("the output reads");
            buf
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_copy_mode_writes_what_the_plain_copy_writes(spec in source_spec()) {
        let (_, expected) = build(&spec);
        for out in [Out::Raw, Out::Fixed, Out::Dynamic(512 * 1024), Out::Dynamic(2 * 1024 * 1024)] {
            let (plain, plain_stats) = copy_into(&spec, out, Mode::Plain);
            let (fast, fast_stats) = copy_into(&spec, out, Mode::Overlapped);
            prop_assert_eq!(plain_stats.written, fast_stats.written, "{:?}", out);
            prop_assert_eq!((plain_stats.mode, fast_stats.mode), (Mode::Plain, Mode::Overlapped));
            // The same write calls, in the same order, with the same bytes.
            let (p, f) = (plain.log(), fast.log());
            prop_assert!(p == f, "{:?}: {} changes plainly, {} overlapped; first difference at change {:?}",
                out, p.len(), f.len(), p.iter().zip(&f).position(|(a, b)| a != b));
            prop_assert!(plain.bytes() == fast.bytes(), "{:?}: files differ", out);
            let got = output_contents(out, &fast, expected.len() as u64);
            prop_assert!(got == expected, "{:?}: the output does not read as the source", out);
            // The parallel copy: the same bytes and the same count written,
            // in other calls (raw and fixed); a dynamic output falls back
            // to the overlapped copy, call for call.
            let (par, par_stats) = copy_into(&spec, out, Mode::Parallel);
            prop_assert_eq!(plain_stats.written, par_stats.written, "{:?}", out);
            let ran = if let Out::Dynamic(_) = out { Mode::Overlapped } else { Mode::Parallel };
            prop_assert_eq!(par_stats.mode, ran, "{:?}", out);
            prop_assert!(plain.bytes() == par.bytes(), "{:?}: the parallel copy's file differs", out);
            if let Out::Dynamic(_) = out {
                prop_assert!(par.log() == p, "{:?}: not the overlapped copy's writes", out);
            }
        }
    }
}

#[test]
fn a_copy_of_a_disk_spanning_many_chunks_writes_only_pieces_with_data() {
    // 9 MiB + 3 sectors, data in the first and the last chunk only.
    let spec = SourceSpec::Chain {
        sectors: 9 * 2048 + 3,
        block_size: 2 * 1024 * 1024,
        layers: vec![vec![
            BlockSpec {
                pick: 0,
                bits: BitsSpec::All,
                seed: 1,
            },
            BlockSpec {
                pick: 4,
                bits: BitsSpec::Striped { period: 9, run: 4 },
                seed: 2,
            },
        ]],
    };
    let (_, expected) = build(&spec);
    let (storage, stats) = copy_into(&spec, Out::Raw, Mode::Overlapped);
    assert_eq!(storage.bytes(), expected);
    let written: u64 = storage
        .log()
        .iter()
        .map(|m| match m {
            Mutation::Write { data, .. } => data.len() as u64,
            _ => 0,
        })
        .sum();
    assert_eq!(written, stats.written);
    assert!(
        stats.written < 4 * MIB,
        "{} bytes written for 2 blocks of data",
        stats.written
    );
}

/// A source that reads as `0x5A` everywhere (with `striped`, only in
/// every other 64 KiB piece, so that each chunk is written in several
/// calls) and fails at `fail_at`. With `slow_reads`, each read takes a
/// millisecond before it succeeds or fails.
struct FailingSource {
    size: u64,
    fail_at: u64,
    reads_after_failure: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: bool,
    striped: bool,
    slow_reads: bool,
}

impl FailingSource {
    /// `size` bytes of `0x5A` that fail at `fail_at`, and the count of
    /// reads made after the failure.
    fn new(size: u64, fail_at: u64) -> (Self, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let after = std::sync::Arc::default();
        let source = FailingSource {
            size,
            fail_at,
            reads_after_failure: std::sync::Arc::clone(&after),
            failed: false,
            striped: false,
            slow_reads: false,
        };
        (source, after)
    }

    fn striped(self) -> Self {
        FailingSource {
            striped: true,
            ..self
        }
    }

    fn slow_reads(self) -> Self {
        FailingSource {
            slow_reads: true,
            ..self
        }
    }
}

/// Runs a copy in `mode` that must fail, and returns its error.
fn failed_copy(
    mode: Mode,
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    size: u64,
) -> convert::CopyError {
    convert::copy_with(mode, source, sink, size, &mut |_| {}).expect_err("the copy fails")
}

/// Asserts that `err` is the planned read failure of a [`FailingSource`]
/// and that nothing was read after it.
fn assert_read_failure(err: &convert::CopyError, after: &std::sync::atomic::AtomicU64, what: &str) {
    assert_eq!(err.side, Side::Source, "{what}");
    assert!(err.error.to_string().contains("test source"), "{what}");
    assert_eq!(
        after.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "{what}: a read after the failure"
    );
}

impl Source for FailingSource {
    fn size(&self) -> u64 {
        self.size
    }
    fn next_data(&mut self, offset: u64) -> vhdref::Result<Option<u64>> {
        Ok((offset < self.size).then_some(offset))
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> vhdref::Result<()> {
        if self.slow_reads {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if self.failed {
            self.reads_after_failure
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if (offset..offset + buf.len() as u64).contains(&self.fail_at) {
            self.failed = true;
            return Err(Error::io(
                "reading the test source",
                std::io::Error::other("planned read failure"),
            ));
        }
        buf.fill(0x5A);
        if self.striped {
            const PIECE: u64 = 64 * 1024;
            for (i, byte) in buf.iter_mut().enumerate() {
                if (offset + i as u64) / PIECE % 2 == 1 {
                    *byte = 0;
                }
            }
        }
        Ok(())
    }
}

/// A sink that fails its `fail_on`-th write (from 0) and counts writes.
struct FailingSink {
    writes: u64,
    fail_on: u64,
}

impl Sink for FailingSink {
    fn write_at(&mut self, _offset: u64, _data: &[u8]) -> vhdref::Result<()> {
        self.writes += 1;
        if self.writes - 1 == self.fail_on {
            return Err(Error::io(
                "writing the test sink",
                std::io::Error::other("planned write failure"),
            ));
        }
        Ok(())
    }
}

#[test]
fn a_failed_read_is_the_sources_error_in_both_modes_and_stops_the_reader() {
    for mode in [Mode::Plain, Mode::Overlapped] {
        let (mut source, after) = FailingSource::new(32 * MIB, 9 * MIB + 5);
        let mut sink = FailingSink {
            writes: 0,
            fail_on: u64::MAX,
        };
        let err = failed_copy(mode, &mut source, &mut sink, 32 * MIB);
        assert_read_failure(&err, &after, &format!("{mode:?}"));
        // Every chunk before the failing one was written.
        assert_eq!(sink.writes, 4, "{mode:?}");
    }
}

#[test]
fn a_failed_write_is_the_sinks_error_in_both_modes_and_nothing_is_written_after_it() {
    for mode in [Mode::Plain, Mode::Overlapped] {
        let mut source = FailingSource::new(64 * MIB, u64::MAX).0;
        let mut sink = FailingSink {
            writes: 0,
            fail_on: 3,
        };
        let err = failed_copy(mode, &mut source, &mut sink, 64 * MIB);
        assert_eq!(err.side, Side::Sink, "{mode:?}");
        assert!(err.error.to_string().contains("test sink"), "{mode:?}");
        assert_eq!(sink.writes, 4, "{mode:?}: the copy stopped at the failure");
    }
}

/// A raw sink over a fault-injecting storage of `size` bytes, which
/// several threads may write.
fn shared_raw_sink(size: u64) -> (FaultStorage, RawSink) {
    let storage = FaultStorage::new();
    let mut boxed: Box<dyn Storage> = Box::new(storage.clone());
    boxed.set_len(size).expect("size the raw output");
    (storage, RawSink::new(boxed, "out.raw"))
}

/// A storage whose writes take a millisecond each, so that a worker of a
/// parallel copy is still writing its chunk (of several pieces) when
/// another one reads the next.
struct Slow(FaultStorage);

impl Storage for Slow {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.write_shared(buf, offset)
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.0.sync()
    }
    fn shared_writer(&self) -> Option<&dyn SharedWrite> {
        Some(self)
    }
}

impl SharedWrite for Slow {
    fn write_shared(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        std::thread::sleep(std::time::Duration::from_millis(1));
        self.0.write_shared(buf, offset)
    }
}

#[test]
fn a_failed_read_stops_every_parallel_worker_and_what_was_read_before_it_is_written() {
    // Twenty times: where the other worker is at the moment of the
    // failure is a matter of timing (most often in the middle of writing
    // the chunk before, which it must finish).
    for round in 0..20 {
        let (source, after) = FailingSource::new(32 * MIB, 9 * MIB + 5);
        let mut source = source.striped();
        let storage = FaultStorage::new();
        let mut boxed: Box<dyn Storage> = Box::new(Slow(storage.clone()));
        boxed.set_len(32 * MIB).expect("size the output");
        let mut sink = RawSink::new(boxed, "out.raw");
        assert!(sink.shared().is_some(), "the parallel copy is taken");
        let err = failed_copy(Mode::Parallel, &mut source, &mut sink, 32 * MIB);
        assert_read_failure(&err, &after, &format!("round {round}"));
        let bytes = storage.bytes();
        let missing = (0..9 * MIB as usize)
            .step_by(64 * 1024)
            .filter(|&at| at / (64 * 1024) % 2 == 0 && bytes[at] != 0x5A)
            .count();
        assert_eq!(
            missing, 0,
            "round {round}: pieces read before the failure were not written"
        );
    }
}

#[test]
fn a_parallel_worker_waiting_for_the_source_reads_nothing_after_a_failed_read() {
    // Slow reads and quick writes: the other worker is most often waiting
    // for the source when the read fails.
    for round in 0..20 {
        let (source, after) = FailingSource::new(32 * MIB, 5 * MIB + 5);
        let mut source = source.slow_reads();
        let (_, mut sink) = shared_raw_sink(32 * MIB);
        let err = failed_copy(Mode::Parallel, &mut source, &mut sink, 32 * MIB);
        assert_read_failure(&err, &after, &format!("round {round}"));
    }
}

#[test]
fn after_a_failed_parallel_write_only_a_write_already_started_by_another_worker_follows() {
    for round in 0..20 {
        let mut source = FailingSource::new(64 * MIB, u64::MAX).0.striped();
        let (storage, mut sink) = shared_raw_sink(64 * MIB);
        let before = storage.counts().0;
        storage.plan(
            vhdref::storage::Op::Write,
            before + 5,
            vhdref::storage::Fault::Eio,
        );
        let err = failed_copy(Mode::Parallel, &mut source, &mut sink, 64 * MIB);
        assert_eq!(err.side, Side::Sink, "round {round}");
        let attempts = storage.counts().0 - before;
        // Five before the failed one, the failed one, and at most one write
        // per other worker that was under way. Each chunk has eight
        // pieces, so a worker that went on would write many more.
        assert!(
            attempts <= 6 + (convert::WORKERS as u64 - 1),
            "round {round}: {attempts} write calls"
        );
    }
}

#[test]
fn raw_and_fixed_sinks_can_be_written_from_several_threads_and_dynamic_or_read_only_ones_cannot() {
    let (_, mut raw) = shared_raw_sink(4 * MIB);
    assert!(raw.shared().is_some(), "raw");
    let create = |t| {
        CreateOptions::new(t, 4 * MIB)
            .create_in(Box::new(vhdref::storage::MemStorage::new()), "x.vhd", None)
            .expect("create")
    };
    assert!(create(DiskType::Fixed).shared().is_some(), "fixed");
    assert!(create(DiskType::Dynamic).shared().is_none(), "dynamic");
    let mut read_only = OpenOptions::new()
        .open_storage(
            create(DiskType::Fixed).into_storage().expect("storage"),
            "x.vhd",
        )
        .expect("open read-only");
    assert!(read_only.shared().is_none(), "read-only");
}

#[test]
fn a_fixed_images_shared_writer_stops_at_its_footer() {
    let storage = FaultStorage::new();
    let mut img = CreateOptions::new(DiskType::Fixed, 4 * MIB)
        .create_in(Box::new(storage.clone()), "x.vhd", None)
        .expect("create");
    let footer = storage.bytes()[(4 * MIB) as usize..].to_vec();
    let shared = img.shared().expect("a fixed image can be shared");
    shared
        .write_at(4 * MIB - 512, &[7u8; 512])
        .expect("the last sector is the disk's");
    let err = shared
        .write_at(4 * MIB - 512, &[7u8; 513])
        .expect_err("one byte into the footer");
    assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
    assert!(
        shared.write_at(u64::MAX - 1, &[1, 2]).is_err(),
        "an offset that overflows"
    );
    img.close().expect("close");
    assert_eq!(
        storage.bytes()[(4 * MIB) as usize..],
        footer[..],
        "the footer is untouched"
    );
}

#[test]
fn an_image_whose_sync_failed_has_no_shared_writer() {
    let storage = FaultStorage::new();
    let mut img = CreateOptions::new(DiskType::Fixed, 4 * MIB)
        .create_in(Box::new(storage.clone()), "x.vhd", None)
        .expect("create");
    let syncs = storage.counts().1;
    storage.plan(
        vhdref::storage::Op::Sync,
        syncs,
        vhdref::storage::Fault::Eio,
    );
    img.write_at(0, &[1u8; 512]).expect("write");
    img.flush().expect_err("the sync fails");
    assert!(img.is_failed());
    assert!(
        img.shared().is_none(),
        "writes after a failed sync must be refused"
    );
}

/// Converts `spec`'s disk with the library into a real file through an
/// [`OutputFile`] of the given durability; returns the file's bytes.
fn convert_to_file(dir: &Path, name: &str, spec: &SourceSpec, out: Out, d: Durability) -> Vec<u8> {
    let (mut source, _) = build(spec);
    let size = source.size();
    let path = dir.join(name);
    let file = FileStorage::create_new(&path).expect("create the output file");
    let mut sink = sink(out, Box::new(OutputFile::new(file, d)), size);
    convert::copy(&mut source, sink.as_sink(), size, &mut |_| {}).expect("copy");
    sink.finish_box().expect("finish");
    std::fs::read(&path).expect("read the output back")
}

#[test]
fn an_unsafe_output_file_holds_the_same_bytes_as_a_durable_one() {
    let dir = temp_dir();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for case in 0..12 {
        let spec = source_spec()
            .new_tree(&mut runner)
            .expect("a generated source")
            .current();
        for (k, out) in [Out::Raw, Out::Fixed, Out::Dynamic(2 * 1024 * 1024)]
            .into_iter()
            .enumerate()
        {
            let durable = convert_to_file(
                dir.path(),
                &format!("d{case}-{k}"),
                &spec,
                out,
                Durability::Durable,
            );
            let unsafe_ = convert_to_file(
                dir.path(),
                &format!("u{case}-{k}"),
                &spec,
                out,
                Durability::Unsafe,
            );
            assert!(durable == unsafe_, "case {case} {out:?}: {spec:?}");
        }
    }
}

#[test]
fn convert_with_cache_unsafe_writes_the_same_raw_file_and_the_same_image_contents() {
    let dir = temp_dir();
    let d = dir.path();
    let mut rng = Rng::new(99);
    let mut data = vec![0u8; (5 * MIB + 4096) as usize];
    for page in data.chunks_mut(8192).step_by(3) {
        rng.fill(page);
    }
    std::fs::write(d.join("in.raw"), &data).unwrap();
    for (to, a, b) in [
        ("raw", "durable.raw", "unsafe.raw"),
        ("dynamic", "durable.vhd", "unsafe.vhd"),
        ("fixed", "durablef.vhd", "unsafef.vhd"),
    ] {
        run_ok(cmd(VHD, ["convert", "in.raw", a, "--to", to]).current_dir(d));
        run_ok(cmd(VHD, ["convert", "in.raw", b, "--to", to, "-t", "unsafe"]).current_dir(d));
        let (x, y) = (
            std::fs::read(d.join(a)).unwrap(),
            std::fs::read(d.join(b)).unwrap(),
        );
        if to == "raw" {
            assert!(x == data && y == data, "raw outputs hold the input");
        } else {
            // Same layout; only the unique ID, time stamp and checksums of
            // a freshly created image differ.
            assert_eq!(x.len(), y.len(), "{to}");
            let differing = x.iter().zip(&y).filter(|(p, q)| p != q).count();
            assert!(differing <= 2 * 32, "{to}: {differing} bytes differ");
            run_ok(cmd(VHD, ["compare", a, b]).current_dir(d));
            run_ok(cmd(VHD, ["compare", a, "in.raw"]).current_dir(d));
        }
    }
}

/// A raw [`Sink`] over an [`OutputFile`] the test keeps, to ask it after
/// the copy how it wrote.
struct KeptFileSink<'a>(&'a OutputFile);

impl Sink for KeptFileSink<'_> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> vhdref::Result<()> {
        self.0
            .write_shared(data, offset)
            .map_err(|e| Error::io("writing the output", e))
    }

    fn shared(&mut self) -> Option<convert::SharedSink<'_>> {
        Some(convert::SharedSink::new(self.0, "out.raw", u64::MAX))
    }
}

/// The sources of the direct-write tests: ten from the generator, then a
/// fixed disk (data from `seed`) whose last sector holds data and whose
/// size is not a multiple of 4 KiB (its last piece has a short tail).
fn direct_write_sources(seed: u64) -> Vec<SourceSpec> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut specs: Vec<SourceSpec> = (0..10)
        .map(|_| {
            source_spec()
                .new_tree(&mut runner)
                .expect("a source")
                .current()
        })
        .collect();
    specs.push(SourceSpec::Fixed {
        sectors: 5 * 2048 + 3,
        seed,
    });
    specs
}

/// An [`OutputFile`] an image writes through while the test keeps a hand
/// on it (to count its direct writes after).
struct HeldOutput(Arc<Mutex<OutputFile>>);

impl HeldOutput {
    fn file(&self) -> std::sync::MutexGuard<'_, OutputFile> {
        self.0.lock().expect("not poisoned")
    }
}

impl Storage for HeldOutput {
    fn len(&self) -> std::io::Result<u64> {
        self.file().len()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file().read_exact_at(buf, offset)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file().write_all_at(buf, offset)
    }

    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.file().set_len(len)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file().sync()
    }
}

/// Whether files in `dir` take direct writes (`O_DIRECT`); if not, says
/// why the caller skips.
fn direct_writes_work(dir: &Path, test: &str) -> bool {
    let probe = FileStorage::create_new(&dir.join("probe")).expect("create a probe file");
    let works = probe.open_direct().is_some();
    if !works {
        common::skip::skip(&format!(
            "{test}: the file system of {} refuses O_DIRECT, so there is no direct path to test",
            dir.display()
        ));
    }
    works
}

#[test]
fn a_durable_output_file_takes_the_parallel_copy_around_the_page_cache_and_an_unsafe_one_does_not()
{
    // On the disk that holds the build, not in /tmp, which may be a tmpfs
    // (no direct writes there).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    if !direct_writes_work(dir.path(), "direct writes of the parallel copy") {
        return;
    }
    for (case, spec) in direct_write_sources(7).iter().enumerate() {
        for durability in [Durability::Durable, Durability::Unsafe] {
            let (mut source, expected) = build(spec);
            let size = source.size();
            let path = dir.path().join(format!("out{case}-{durability:?}"));
            let mut file = FileStorage::create_new(&path).expect("create the output");
            file.set_len(size).expect("size the output");
            let mut out = OutputFile::new(file, durability);
            let stats = convert::copy_with(
                Mode::Parallel,
                &mut source,
                &mut KeptFileSink(&out),
                size,
                &mut |_| {},
            )
            .expect("copy");
            out.sync().expect("sync");
            let direct = out.direct_written();
            match durability {
                Durability::Durable => assert!(
                    stats.written - direct < vhdref::storage::DIRECT_ALIGN as u64,
                    "case {case}: only a short tail may go through the page cache: \
                     {direct} of {} bytes went around it; {spec:?}",
                    stats.written
                ),
                Durability::Unsafe => assert_eq!(direct, 0, "case {case}: unsafe output"),
            }
            let got = std::fs::read(&path).expect("read the output back");
            assert!(got == expected, "case {case} {durability:?}: {spec:?}");
        }
    }
}

#[test]
fn a_durable_dynamic_output_writes_its_block_data_around_the_page_cache() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    if !direct_writes_work(dir.path(), "direct writes of a dynamic output") {
        return;
    }
    for (case, spec) in direct_write_sources(9).iter().enumerate() {
        for durability in [Durability::Durable, Durability::Unsafe] {
            let (mut source, expected) = build(spec);
            let size = source.size();
            let path = dir.path().join(format!("out{case}-{durability:?}.vhd"));
            let file = FileStorage::create_new(&path).expect("create the output");
            let out = Arc::new(Mutex::new(OutputFile::new(file, durability)));
            let mut img = CreateOptions::new(DiskType::Dynamic, size)
                .create_in(Box::new(HeldOutput(Arc::clone(&out))), "out.vhd", None)
                .expect("create the image");
            // The default mode: a dynamic sink takes the overlapped copy.
            let stats = convert::copy(&mut source, &mut img, size, &mut |_| {}).expect("copy");
            img.close().expect("close");
            let direct = out.lock().expect("not poisoned").direct_written();
            drop(out); // and with it the file's write lock
            match durability {
                Durability::Durable => assert!(
                    stats.written - direct < vhdref::storage::DIRECT_ALIGN as u64,
                    "case {case}: all block data but a short tail goes around the page cache: \
                     {direct} of {} bytes did; {spec:?}",
                    stats.written
                ),
                Durability::Unsafe => assert_eq!(direct, 0, "case {case}: unsafe output"),
            }
            let mut back = Image::open(&path).expect("open the output");
            let mut got = vec![0u8; expected.len()];
            back.read_at(0, &mut got).expect("read the output");
            assert!(got == expected, "case {case} {durability:?}: {spec:?}");
            let report = vhdref::check::check(&path, &vhdref::check::CheckOptions::new());
            assert_eq!(
                report.verdict(),
                vhdref::check::Verdict::Clean,
                "case {case} {durability:?}: {:?}",
                report.findings
            );
        }
    }
}

#[test]
fn the_default_copy_is_parallel_exactly_where_the_output_is_written_around_the_page_cache() {
    let spec = SourceSpec::Fixed {
        sectors: 6 * 2048,
        seed: 3,
    };
    let copy_into = |dir: &Path, durability: Durability| {
        let (mut source, expected) = build(&spec);
        let size = source.size();
        let path = dir.join(format!("out-{durability:?}"));
        let mut file = FileStorage::create_new(&path).expect("create the output");
        file.set_len(size).expect("size the output");
        let mut out = OutputFile::new(file, durability);
        let stats =
            convert::copy(&mut source, &mut KeptFileSink(&out), size, &mut |_| {}).expect("copy");
        out.sync().expect("sync");
        assert!(
            std::fs::read(&path).expect("read back") == expected,
            "{path:?}"
        );
        stats.mode
    };
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    if direct_writes_work(disk.path(), "the default copy on a disk") {
        assert_eq!(copy_into(disk.path(), Durability::Durable), Mode::Parallel);
        assert_eq!(copy_into(disk.path(), Durability::Unsafe), Mode::Overlapped);
    }
    // A file in memory takes no direct writes: one writer.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let memory = tempfile::tempdir_in(shm).expect("a directory in /dev/shm");
        assert_eq!(
            copy_into(memory.path(), Durability::Durable),
            Mode::Overlapped
        );
    } else {
        common::skip::skip("the default copy in memory: no /dev/shm here");
    }
    // A sink in memory, and a dynamic image: one writer.
    let (mut source, expected) = build(&spec);
    let size = source.size();
    let mem = vhdref::storage::MemStorage::new();
    let mut sink = RawSink::new(Box::new(mem.clone()), "out.raw");
    let stats = convert::copy(&mut source, &mut sink, size, &mut |_| {}).expect("copy");
    assert_eq!(stats.mode, Mode::Overlapped);
    assert!(mem.to_vec() == expected);
    let (mut source, _) = build(&spec);
    let mut img = CreateOptions::new(DiskType::Dynamic, size)
        .create_in(
            Box::new(vhdref::storage::MemStorage::new()),
            "out.vhd",
            None,
        )
        .expect("create");
    let stats = convert::copy(&mut source, &mut img, size, &mut |_| {}).expect("copy");
    assert_eq!(stats.mode, Mode::Overlapped);
}
