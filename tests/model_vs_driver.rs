//! The driver against the pure model: random sequences of writes, reads,
//! flushes, reopens, new children and commits, run on images in memory and
//! on `vhdref::model::Disk`; every read must agree. Failures shrink to a
//! minimal sequence (proptest prints it).
//!
//! Chains are a state machine (`proptest-state-machine`): the reference is
//! the model disk with its layers, each step is drawn from those the
//! current chain allows (a commit needs a parent, children stop at a depth
//! of 6), and shrinking keeps every sequence valid.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use uuid::Uuid;
use vhdref::format::bat::serialize_bat;
use vhdref::format::dyn_header::{DynHeader, HEADER_VERSION};
use vhdref::format::footer::{FEATURE_RESERVED, FILE_FORMAT_VERSION};
use vhdref::format::{LocatorEntry, UNALLOCATED};
use vhdref::model::Disk;
use vhdref::storage::{FaultStorage, MemStorage, Storage};
use vhdref::{CreateOptions, DiskType, Footer, Geometry, Image, OpenOptions, Timestamp};

const SECTOR: u64 = 512;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

// ------------------------------------------------------------- the inputs

/// Guest sizes: tiny, not a multiple of any block size, a partial last
/// block, whole blocks.
const SIZES: &[u64] = &[
    512,
    KIB,
    3 * SECTOR,
    4 * KIB,
    700 * KIB,
    MIB,
    MIB + SECTOR,
    2 * MIB - SECTOR,
    3 * MIB + 7 * SECTOR,
    5 * MIB + 3 * SECTOR,
    8 * MIB,
];

/// Block sizes: the ones `create` makes, and small ones (which the reader
/// accepts) in images built by hand.
const BLOCK_SIZES: &[u32] = &[512, 4096, 64 * 1024, 512 * 1024, 1 << 20, 2 << 20];

/// The smallest block size `create` makes.
const MIN_CREATE_BLOCK: u32 = 512 * 1024;

/// The bottom image of a disk.
#[derive(Debug, Clone, Copy)]
struct BaseSpec {
    disk_type: DiskType,
    size: u64,
    block_size: u32,
}

fn base_spec() -> impl Strategy<Value = BaseSpec> {
    (
        prop_oneof![Just(DiskType::Dynamic), Just(DiskType::Fixed)],
        proptest::sample::select(SIZES),
        proptest::sample::select(BLOCK_SIZES),
    )
        .prop_map(|(disk_type, size, block_size)| BaseSpec {
            disk_type,
            size,
            block_size,
        })
}

fn block_size() -> impl Strategy<Value = u32> {
    proptest::sample::select(BLOCK_SIZES)
}

/// Where a range starts, resolved against the disk at run time so that a
/// shrunk case still lands somewhere meaningful.
#[derive(Debug, Clone, Copy)]
enum Pos {
    /// `n % size`.
    Anywhere(u64),
    /// `back` bytes before the end of block `block` (modulo the blocks).
    BlockEdge { block: u16, back: u16 },
    /// `back` bytes before the end of the disk.
    End { back: u32 },
}

/// A guest range: a start and a length, clamped to the disk.
#[derive(Debug, Clone, Copy)]
struct Span {
    pos: Pos,
    len: u32,
}

impl Span {
    /// `(offset, len)` inside a disk of `size` bytes with blocks of
    /// `block_size` bytes; never empty.
    fn resolve(self, size: u64, block_size: u64) -> (u64, u64) {
        let offset = match self.pos {
            Pos::Anywhere(n) => n % size,
            Pos::BlockEdge { block, back } => {
                let blocks = size.div_ceil(block_size);
                let edge = ((u64::from(block) % blocks + 1) * block_size).min(size);
                edge.saturating_sub(u64::from(back))
            }
            Pos::End { back } => size.saturating_sub(u64::from(back)),
        }
        .min(size - 1);
        let len = u64::from(self.len).clamp(1, size - offset);
        (offset, len)
    }
}

fn span() -> impl Strategy<Value = Span> {
    let pos = prop_oneof![
        3 => any::<u64>().prop_map(Pos::Anywhere),
        2 => (any::<u16>(), 0u16..1200).prop_map(|(block, back)| Pos::BlockEdge { block, back }),
        1 => (1u32..5000).prop_map(|back| Pos::End { back }),
    ];
    let len = prop_oneof![
        3 => 1u32..=20,
        4 => 1u32..=1100,
        3 => 1u32..=9000,
        1 => 1u32..=300_000,
    ];
    (pos, len).prop_map(|(pos, len)| Span { pos, len })
}

/// What a write writes.
#[derive(Debug, Clone, Copy)]
enum Fill {
    Zeros,
    Byte(u8),
    Random(u64),
}

impl Fill {
    fn bytes(self, len: u64) -> Vec<u8> {
        match self {
            Fill::Zeros => vec![0; len as usize],
            Fill::Byte(b) => vec![b; len as usize],
            Fill::Random(seed) => {
                let mut state = seed;
                (0..len)
                    .map(|_| {
                        // splitmix64
                        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                        let mut z = state;
                        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                        (z ^ (z >> 31)) as u8
                    })
                    .collect()
            }
        }
    }
}

fn fill() -> impl Strategy<Value = Fill> {
    prop_oneof![
        1 => Just(Fill::Zeros),
        2 => (1u8..=255).prop_map(Fill::Byte),
        3 => any::<u64>().prop_map(Fill::Random),
    ]
}

/// How an image is closed and opened again.
#[derive(Debug, Clone, Copy)]
enum Reopen {
    /// `into_storage`, then open that storage.
    IntoStorage,
    /// `close`, then open a clone of the memory.
    Close,
    /// Drop (which flushes), then open a clone of the memory.
    Drop,
}

/// One step on a single image.
#[derive(Debug, Clone)]
enum Op {
    Write(Span, Fill),
    Read(Span),
    /// Seek, then `write_all` through [`Image::cursor`] (from the end if set).
    CursorWrite(Span, Fill, bool),
    /// Seek, then `read_exact` through [`Image::cursor`].
    CursorRead(Span),
    /// A write that runs `over` bytes past the end: refused, nothing written.
    WritePastEnd {
        back: u16,
        over: u16,
    },
    Flush,
    Reopen(Reopen),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (span(), fill()).prop_map(|(s, f)| Op::Write(s, f)),
        3 => span().prop_map(Op::Read),
        1 => (span(), fill(), any::<bool>()).prop_map(|(s, f, e)| Op::CursorWrite(s, f, e)),
        1 => span().prop_map(Op::CursorRead),
        1 => (any::<u16>(), 1u16..).prop_map(|(back, over)| Op::WritePastEnd { back, over }),
        1 => Just(Op::Flush),
        1 => prop_oneof![Just(Reopen::IntoStorage), Just(Reopen::Close), Just(Reopen::Drop)]
            .prop_map(Op::Reopen),
    ]
}

/// One step on a chain; writes go to the top.
#[derive(Debug, Clone)]
enum ChainOp {
    Write(Span, Fill),
    Read(Span),
    Flush,
    Reopen,
    PushChild(u32),
    CommitTop,
}

/// The deepest chain the state machine builds (the base and 5 children).
const MAX_DEPTH: usize = 6;

/// What a chain should hold: the reference state of the state machine.
#[derive(Debug, Clone)]
struct ChainModel {
    base: BaseSpec,
    /// The disk, one layer per image.
    disk: Disk,
    /// The block size of the top image (where spans near block edges go).
    top_block_size: u32,
}

/// The chain as a state machine over [`ChainModel`].
struct ChainMachine;

impl ReferenceStateMachine for ChainMachine {
    type State = ChainModel;
    type Transition = ChainOp;

    fn init_state() -> BoxedStrategy<ChainModel> {
        base_spec()
            .prop_map(|base| ChainModel {
                base,
                disk: Disk::new(base.size),
                top_block_size: base.block_size,
            })
            .boxed()
    }

    fn transitions(state: &ChainModel) -> BoxedStrategy<ChainOp> {
        let mut steps: Vec<(u32, BoxedStrategy<ChainOp>)> = vec![
            (
                6,
                (span(), fill())
                    .prop_map(|(s, f)| ChainOp::Write(s, f))
                    .boxed(),
            ),
            (3, span().prop_map(ChainOp::Read).boxed()),
            (1, Just(ChainOp::Flush).boxed()),
            (1, Just(ChainOp::Reopen).boxed()),
        ];
        if state.disk.depth() < MAX_DEPTH {
            steps.push((2, block_size().prop_map(ChainOp::PushChild).boxed()));
        }
        if state.disk.depth() > 1 {
            steps.push((1, Just(ChainOp::CommitTop).boxed()));
        }
        proptest::strategy::Union::new_weighted(steps).boxed()
    }

    fn preconditions(state: &ChainModel, op: &ChainOp) -> bool {
        match op {
            ChainOp::PushChild(_) => state.disk.depth() < MAX_DEPTH,
            ChainOp::CommitTop => state.disk.depth() > 1,
            _ => true,
        }
    }

    fn apply(mut state: ChainModel, op: &ChainOp) -> ChainModel {
        match *op {
            ChainOp::Write(span, fill) => {
                let (offset, len) = span.resolve(state.base.size, u64::from(state.top_block_size));
                state.disk.write(offset, &fill.bytes(len));
            }
            ChainOp::PushChild(block_size) => {
                state.disk.push_child();
                state.top_block_size = block_size;
            }
            ChainOp::CommitTop => state.disk.commit_top(),
            ChainOp::Read(_) | ChainOp::Flush | ChainOp::Reopen => {}
        }
        state
    }
}

impl StateMachineTest for ChainMachine {
    type SystemUnderTest = Chain;
    type Reference = ChainMachine;

    fn init_test(model: &ChainModel) -> Chain {
        Chain::new(model.base)
    }

    fn apply(mut chain: Chain, _model: &ChainModel, op: ChainOp) -> Chain {
        let done = match op {
            ChainOp::Write(span, fill) => chain.write(span, fill),
            ChainOp::Read(span) => chain.read(span),
            ChainOp::Flush => chain
                .top()
                .flush()
                .map_err(|e| fail("flush", &e))
                .and_then(|()| chain.check_below_unchanged("after a flush")),
            ChainOp::Reopen => chain
                .reopen()
                .and_then(|()| chain.check_below_unchanged("after a reopen")),
            ChainOp::PushChild(block_size) => chain.push_child(block_size),
            ChainOp::CommitTop => chain.commit_top(),
        };
        if let Err(e) = done {
            panic!("{op:?}: {e}");
        }
        chain
    }

    fn check_invariants(chain: &Chain, model: &ChainModel) {
        assert_eq!(
            chain.layers.len(),
            model.disk.depth(),
            "images in the chain"
        );
        assert!(
            chain.disk == model.disk,
            "the chain's model left the reference"
        );
    }

    fn teardown(mut chain: Chain, model: ChainModel) {
        let done = check_whole_disk(chain.top(), &model.disk, "at the end")
            .and_then(|()| chain.reopen())
            .and_then(|()| chain.check_below_unchanged("at the end"));
        if let Err(e) = done {
            panic!("{e}");
        }
    }
}

// ----------------------------------------------------------------- checks

/// `cases` cases, or `PROPTEST_CASES` from the environment for a deeper
/// run (e.g. `PROPTEST_CASES=5000 cargo test --test model_vs_driver`).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// The bytes the model holds at `offset..offset + len`, sector by sector
/// (fast enough for whole-disk comparisons).
fn model_bytes(disk: &Disk, offset: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize);
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        let sector = disk.sector(pos / SECTOR);
        let start = (pos % SECTOR) as usize;
        let n = (SECTOR as usize - start).min((end - pos) as usize);
        out.extend_from_slice(&sector[start..start + n]);
        pos += n as u64;
    }
    out
}

/// The first differing sector of two equal-length byte runs, for messages.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn read(img: &mut Image, offset: u64, len: u64) -> Result<Vec<u8>, TestCaseError> {
    let mut buf = vec![0xA5; len as usize];
    img.read_at(offset, &mut buf)
        .map_err(|e| TestCaseError::fail(format!("read {len} at {offset}: {e}")))?;
    Ok(buf)
}

/// Every byte of the disk agrees with the model.
fn check_whole_disk(img: &mut Image, disk: &Disk, when: &str) -> Result<(), TestCaseError> {
    let got = read(img, 0, disk.size())?;
    let want = model_bytes(disk, 0, disk.size());
    if let Some(i) = first_difference(&got, &want) {
        return Err(TestCaseError::fail(format!(
            "{when}: the disk differs from the model at byte {i} (driver {:#04x}, model {:#04x})",
            got[i], want[i]
        )));
    }
    Ok(())
}

fn check_no_findings(img: &Image) -> Result<(), TestCaseError> {
    for image in img.chain() {
        prop_assert!(
            image.findings().is_empty(),
            "{} has findings after a clean close: {:?}",
            image.name(),
            image.findings()
        );
    }
    Ok(())
}

fn fail(what: &str, e: &vhdref::Error) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {e}"))
}

fn io_fail(what: &str, e: &io::Error) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {e}"))
}

// ------------------------------------------------------------ single image

fn create(mem: &MemStorage, spec: BaseSpec, name: &str) -> Image {
    if spec.disk_type == DiskType::Dynamic && spec.block_size < MIN_CREATE_BLOCK {
        mem.clone()
            .write_all_at(&handmade_sparse(spec.size, spec.block_size, None), 0)
            .expect("memory");
        return OpenOptions::new()
            .write(true)
            .open_storage(Box::new(mem.clone()), name)
            .expect("open a handmade image");
    }
    CreateOptions::new(spec.disk_type, spec.size)
        .block_size(spec.block_size)
        .create_in(Box::new(mem.clone()), name, None)
        .expect("create an image in memory")
}

/// An empty dynamic image, or with `parent` a differencing one (without
/// locators: the parent is given when opening), built by hand for block
/// sizes `create` does not make.
fn handmade_sparse(size: u64, block_size: u32, parent: Option<&Image>) -> Vec<u8> {
    static NEXT_ID: AtomicUsize = AtomicUsize::new(1);
    let blocks = u32::try_from(size.div_ceil(u64::from(block_size))).expect("small disks");
    let table_offset = 1536;
    let bat = serialize_bat(&vec![UNALLOCATED; blocks as usize]);
    let footer = Footer {
        features: FEATURE_RESERVED,
        file_format_version: FILE_FORMAT_VERSION,
        data_offset: 512,
        time_stamp: Timestamp(0x2000_0000),
        creator_application: *b"test",
        creator_version: 1,
        creator_host_os: *b"Wi2k",
        original_size: size,
        current_size: size,
        disk_geometry: Geometry::for_size(size),
        disk_type: if parent.is_some() {
            DiskType::Differencing
        } else {
            DiskType::Dynamic
        },
        unique_id: Uuid::from_u128(0x7e57 << 64 | NEXT_ID.fetch_add(1, Ordering::SeqCst) as u128),
        saved_state: false,
    };
    let header = DynHeader {
        data_offset: u64::MAX,
        table_offset,
        header_version: HEADER_VERSION,
        max_table_entries: blocks,
        block_size,
        parent_unique_id: parent.map_or(Uuid::nil(), |p| p.footer().unique_id),
        parent_time_stamp: parent.map_or(Timestamp(0), |p| p.footer().time_stamp),
        parent_unicode_name: DynHeader::encode_parent_name(parent.map_or("", |p| p.name()))
            .expect("a short name"),
        parent_locators: [LocatorEntry::default(); 8],
    };
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&footer.to_bytes());
    bytes.extend_from_slice(&header.to_bytes());
    bytes.extend_from_slice(&bat);
    bytes.extend_from_slice(&footer.to_bytes());
    bytes
}

/// Closes `image` as `how` says and opens it again for writing; it must
/// open clean and read the model.
fn reopen_single(
    image: Image,
    how: Reopen,
    mem: &MemStorage,
    disk: &Disk,
    step: usize,
) -> Result<Image, TestCaseError> {
    let storage: Box<dyn Storage> = match how {
        Reopen::IntoStorage => image.into_storage().map_err(|e| fail("into_storage", &e))?,
        Reopen::Close => {
            image.close().map_err(|e| fail("close", &e))?;
            Box::new(mem.clone())
        }
        Reopen::Drop => {
            drop(image);
            Box::new(mem.clone())
        }
    };
    let mut reopened = OpenOptions::new()
        .write(true)
        .open_storage(storage, "disk.vhd")
        .map_err(|e| fail(&format!("step {step}: reopen"), &e))?;
    check_no_findings(&reopened)?;
    check_whole_disk(&mut reopened, disk, &format!("step {step}: after reopen"))?;
    Ok(reopened)
}

fn run_single(spec: BaseSpec, ops: &[Op]) -> Result<(), TestCaseError> {
    let mem = MemStorage::new();
    let mut img = Some(create(&mem, spec, "disk.vhd"));
    let mut disk = Disk::new(spec.size);
    let bs = u64::from(spec.block_size);
    for (step, op) in ops.iter().enumerate() {
        let image = img.as_mut().expect("the image is open between steps");
        match *op {
            Op::Write(span, fill) => {
                let (offset, len) = span.resolve(spec.size, bs);
                let data = fill.bytes(len);
                image
                    .write_at(offset, &data)
                    .map_err(|e| fail(&format!("step {step}: write {len} at {offset}"), &e))?;
                disk.write(offset, &data);
            }
            Op::Read(span) => {
                let (offset, len) = span.resolve(spec.size, bs);
                let got = read(image, offset, len)?;
                let want = disk.read(offset, len);
                prop_assert!(
                    got == want,
                    "step {step}: read {len} at {offset} differs from the model at byte {:?}",
                    first_difference(&got, &want).map(|i| offset + i as u64)
                );
            }
            Op::CursorWrite(span, fill, from_end) => {
                let (offset, len) = span.resolve(spec.size, bs);
                let data = fill.bytes(len);
                let mut cursor = image.cursor();
                let to = if from_end {
                    SeekFrom::End(-i64::try_from(spec.size - offset).expect("small"))
                } else {
                    SeekFrom::Start(offset)
                };
                prop_assert_eq!(cursor.seek(to).map_err(|e| io_fail("seek", &e))?, offset);
                cursor.write_all(&data).map_err(|e| {
                    io_fail(&format!("step {step}: cursor write {len} at {offset}"), &e)
                })?;
                prop_assert_eq!(cursor.position(), offset + len);
                disk.write(offset, &data);
            }
            Op::CursorRead(span) => {
                let (offset, len) = span.resolve(spec.size, bs);
                let mut got = vec![0xA5; len as usize];
                let mut cursor = image.cursor();
                cursor
                    .seek(SeekFrom::Start(offset))
                    .map_err(|e| io_fail("seek", &e))?;
                cursor.read_exact(&mut got).map_err(|e| {
                    io_fail(&format!("step {step}: cursor read {len} at {offset}"), &e)
                })?;
                // At the end of the disk a read gives nothing more.
                let mut more = [0u8; 1];
                if offset + len == spec.size {
                    prop_assert_eq!(cursor.read(&mut more).map_err(|e| io_fail("read", &e))?, 0);
                }
                prop_assert!(
                    got == disk.read(offset, len),
                    "step {step}: cursor read {len} at {offset} differs"
                );
            }
            Op::WritePastEnd { back, over } => {
                let offset = spec.size.saturating_sub(u64::from(back));
                let len = spec.size - offset + u64::from(over);
                let refused = image.write_at(offset, &vec![0xEE; len as usize]);
                prop_assert!(
                    refused
                        .as_ref()
                        .is_err_and(|e| e.kind() == vhdref::ErrorKind::OutOfRange),
                    "step {step}: a write of {len} at {offset} past the end gave {refused:?}"
                );
            }
            Op::Flush => image.flush().map_err(|e| fail("flush", &e))?,
            Op::Reopen(how) => {
                let image = img.take().expect("open");
                img = Some(reopen_single(image, how, &mem, &disk, step)?);
            }
        }
    }
    let mut image = img.take().expect("open");
    check_whole_disk(&mut image, &disk, "at the end")?;
    image.close().map_err(|e| fail("close", &e))?;
    let mut image = OpenOptions::new()
        .open_storage(Box::new(mem.clone()), "disk.vhd")
        .map_err(|e| fail("final reopen", &e))?;
    check_no_findings(&image)?;
    check_whole_disk(&mut image, &disk, "after the final reopen")
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn single_image_reads_what_the_model_reads(
        spec in base_spec(),
        ops in proptest::collection::vec(op(), 1..24),
    ) {
        run_single(spec, &ops)?;
    }
}

// ------------------------------------------------------------------ chains

/// One image of a chain, kept in memory.
struct Layer {
    mem: MemStorage,
    name: String,
}

/// A chain under test: the images bottom-up, the open top (with its
/// parents), and the model.
struct Chain {
    layers: Vec<Layer>,
    top: Option<Image>,
    disk: Disk,
    size: u64,
    block_size: u64,
    /// Bytes of every image below the top, as last changed on purpose.
    below: Vec<Vec<u8>>,
}

/// Opens `layers` bottom-up, each the parent of the next; `writable` says
/// which are opened for writing.
fn open_layers(layers: &[Layer], writable: impl Fn(usize) -> bool) -> Result<Image, TestCaseError> {
    let mut img: Option<Image> = None;
    for (i, layer) in layers.iter().enumerate() {
        let mut options = OpenOptions::new().write(writable(i));
        if let Some(parent) = img.take() {
            options = options.parent_image(parent);
        }
        let opened = options
            .open_storage(Box::new(layer.mem.clone()), layer.name.clone())
            .map_err(|e| fail(&format!("opening {}", layer.name), &e))?;
        img = Some(opened);
    }
    img.ok_or_else(|| TestCaseError::fail("an empty chain"))
}

impl Chain {
    fn new(base: BaseSpec) -> Chain {
        let mem = MemStorage::new();
        let top = create(&mem, base, "layer0.vhd");
        Chain {
            layers: vec![Layer {
                mem,
                name: "layer0.vhd".into(),
            }],
            top: Some(top),
            disk: Disk::new(base.size),
            size: base.size,
            block_size: u64::from(base.block_size),
            below: Vec::new(),
        }
    }

    fn top(&mut self) -> &mut Image {
        self.top.as_mut().expect("the top is open between steps")
    }

    fn close_top(&mut self) -> Result<(), TestCaseError> {
        if let Some(top) = self.top.take() {
            top.close().map_err(|e| fail("closing the top", &e))?;
        }
        Ok(())
    }

    fn remember_below(&mut self) {
        let n = self.layers.len() - 1;
        self.below = self.layers[..n].iter().map(|l| l.mem.to_vec()).collect();
    }

    /// No image below the top changed since it was last changed on purpose.
    fn check_below_unchanged(&self, when: &str) -> Result<(), TestCaseError> {
        for (layer, before) in self.layers.iter().zip(&self.below) {
            prop_assert!(
                layer.mem.to_vec() == *before,
                "{when}: parent {} changed under a write to its child",
                layer.name
            );
        }
        Ok(())
    }

    fn write(&mut self, span: Span, fill: Fill) -> Result<(), TestCaseError> {
        let (offset, len) = span.resolve(self.size, self.block_size);
        let data = fill.bytes(len);
        self.top()
            .write_at(offset, &data)
            .map_err(|e| fail(&format!("write {len} at {offset}"), &e))?;
        self.disk.write(offset, &data);
        Ok(())
    }

    fn read(&mut self, span: Span) -> Result<(), TestCaseError> {
        let (offset, len) = span.resolve(self.size, self.block_size);
        let got = read(self.top(), offset, len)?;
        let want = self.disk.read(offset, len);
        prop_assert!(
            got == want,
            "read {len} at {offset} differs from the model at byte {:?} (depth {})",
            first_difference(&got, &want).map(|i| offset + i as u64),
            self.layers.len()
        );
        Ok(())
    }

    /// Closes the chain and opens it again, the top writable.
    fn reopen(&mut self) -> Result<(), TestCaseError> {
        self.close_top()?;
        let last = self.layers.len() - 1;
        let mut top = open_layers(&self.layers, |i| i == last)?;
        check_no_findings(&top)?;
        check_whole_disk(&mut top, &self.disk, "after reopening the chain")?;
        self.top = Some(top);
        Ok(())
    }

    /// A new differencing child over the current top.
    fn push_child(&mut self, block_size: u32) -> Result<(), TestCaseError> {
        self.close_top()?;
        let parent = open_layers(&self.layers, |_| false)?;
        let parent_name = self.layers.last().expect("a base").name.clone();
        let name = format!("layer{}.vhd", self.layers.len());
        let mem = MemStorage::new();
        let child = if block_size < MIN_CREATE_BLOCK {
            let bytes = handmade_sparse(self.size, block_size, Some(&parent));
            mem.clone().write_all_at(&bytes, 0).expect("memory");
            OpenOptions::new()
                .write(true)
                .parent_image(parent)
                .open_storage(Box::new(mem.clone()), name.clone())
        } else {
            CreateOptions::new(DiskType::Differencing, 0)
                .block_size(block_size)
                .create_in(
                    Box::new(mem.clone()),
                    name.clone(),
                    Some((parent, parent_name.as_str())),
                )
        }
        .map_err(|e| fail("creating a child", &e))?;
        prop_assert_eq!(child.size(), self.size);
        self.layers.push(Layer { mem, name });
        self.top = Some(child);
        self.disk.push_child();
        self.block_size = u64::from(block_size);
        self.remember_below();
        check_whole_disk(
            self.top.as_mut().expect("just made"),
            &self.disk,
            "after a new child",
        )
    }

    /// Commits the top into its parent, as `vhd commit` does: the parent
    /// opened for writing, the child read-only.
    fn commit_top(&mut self) -> Result<(), TestCaseError> {
        let n = self.layers.len();
        if n < 2 {
            return Ok(());
        }
        self.close_top()?;
        let parent = open_layers(&self.layers[..n - 1], |i| i == n - 2)?;
        let top = &self.layers[n - 1];
        let mut child = OpenOptions::new()
            .parent_image(parent)
            .open_storage(Box::new(top.mem.clone()), top.name.clone())
            .map_err(|e| fail("opening the child to commit", &e))?;
        child.commit_into_parent().map_err(|e| fail("commit", &e))?;
        self.disk.commit_top();
        check_whole_disk(&mut child, &self.disk, "the child after commit")?;
        let parent = child
            .take_parent()
            .ok_or_else(|| TestCaseError::fail("commit lost the parent"))?;
        parent
            .close()
            .map_err(|e| fail("closing the committed parent", &e))?;
        drop(child);
        // The images below the committed parent are untouched.
        let grandparents = self.below.len().saturating_sub(1);
        for (layer, before) in self.layers[..grandparents].iter().zip(&self.below) {
            prop_assert!(
                layer.mem.to_vec() == *before,
                "commit changed {}",
                layer.name
            );
        }
        // The parent alone now reads what the child read.
        let mut without_top = self.disk.clone();
        without_top.pop_child();
        let mut parent = open_layers(&self.layers[..n - 1], |_| false)?;
        check_no_findings(&parent)?;
        check_whole_disk(&mut parent, &without_top, "the parent alone after commit")?;
        drop(parent);
        self.remember_below();
        self.reopen()
    }
}

prop_state_machine! {
    #![proptest_config(config(64))]

    #[test]
    fn chain_reads_what_the_model_reads(sequential 1..30 => ChainMachine);
}

// ------------------------------------------------- parents and zero reads

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn writes_to_a_child_never_change_its_parents_bytes(
        base in base_spec(),
        parent_writes in proptest::collection::vec((span(), fill()), 0..4),
        child_block_size in block_size(),
        child_writes in proptest::collection::vec((span(), fill()), 1..12),
    ) {
        let mut chain = Chain::new(base);
        for (span, fill) in parent_writes {
            chain.write(span, fill)?;
        }
        chain.push_child(child_block_size)?;
        let parent_before = chain.layers[0].mem.to_vec();
        for (i, (span, fill)) in child_writes.into_iter().enumerate() {
            chain.write(span, fill)?;
            if i % 3 == 2 {
                chain.top().flush().map_err(|e| fail("flush", &e))?;
            }
        }
        chain.close_top()?;
        prop_assert!(chain.layers[0].mem.to_vec() == parent_before, "the parent's bytes changed");
        chain.reopen()?;
    }
}

/// A storage that counts the reads made through it: the shared fault
/// storage, with the bytes of `mem` and no fault planned.
fn counted(mem: &MemStorage) -> FaultStorage {
    FaultStorage::from_bytes(mem.to_vec())
}

#[test]
fn dynamic_image_reads_zeros_where_unallocated_without_reading_the_file() {
    let mem = MemStorage::new();
    let img = CreateOptions::new(DiskType::Dynamic, 3 * MIB + 3 * SECTOR)
        .block_size(1 << 20)
        .create_in(Box::new(mem.clone()), "fresh.vhd", None)
        .expect("create");
    img.close().expect("close");
    let storage = counted(&mem);
    let mut img = OpenOptions::new()
        .open_storage(Box::new(storage.clone()), "fresh.vhd")
        .expect("open");
    let after_open = storage.reads().0;
    let mut buf = vec![0xEE; img.size() as usize];
    img.read_at(0, &mut buf).expect("read");
    assert!(
        buf.iter().all(|&b| b == 0),
        "an empty dynamic image reads as zeros"
    );
    assert_eq!(
        storage.reads().0,
        after_open,
        "reading unallocated blocks read the file"
    );
}

proptest! {
    #![proptest_config(config(32))]

    /// After random writes, every block the BAT leaves unallocated reads as
    /// zeros, as the model says, and without any read of the file.
    #[test]
    fn unallocated_blocks_read_as_zeros_without_touching_the_file(
        size in proptest::sample::select(SIZES),
        bs in block_size(),
        writes in proptest::collection::vec((span(), fill()), 0..6),
    ) {
        let spec = BaseSpec { disk_type: DiskType::Dynamic, size, block_size: bs };
        let mem = MemStorage::new();
        let mut img = create(&mem, spec, "sparse.vhd");
        let mut disk = Disk::new(size);
        for (span, fill) in writes {
            let (offset, len) = span.resolve(size, u64::from(bs));
            let data = fill.bytes(len);
            img.write_at(offset, &data).map_err(|e| fail("write", &e))?;
            disk.write(offset, &data);
        }
        img.close().map_err(|e| fail("close", &e))?;
        let storage = counted(&mem);
        let mut img = OpenOptions::new()
            .open_storage(Box::new(storage.clone()), "sparse.vhd")
            .map_err(|e| fail("open", &e))?;
        let bat = img.bat().expect("dynamic").to_vec();
        let bs = u64::from(bs);
        for (block, entry) in bat.iter().enumerate() {
            if *entry != UNALLOCATED {
                continue;
            }
            let start = block as u64 * bs;
            let len = bs.min(size - start);
            for sector in start / SECTOR..(start + len) / SECTOR {
                prop_assert!(!disk.written_in(0, sector), "sector {} written but its block is unallocated", sector);
            }
            prop_assert!(model_bytes(&disk, start, len).iter().all(|&b| b == 0));
            let before = storage.reads().0;
            let got = read(&mut img, start, len)?;
            prop_assert!(got.iter().all(|&b| b == 0), "unallocated block {} does not read as zeros", block);
            prop_assert_eq!(storage.reads().0, before, "reading unallocated block {} read the file", block);
        }
        check_whole_disk(&mut img, &disk, "after the zero reads")?;
    }
}

#[test]
fn child_and_parent_both_unallocated_read_zeros_without_touching_either_file() {
    let parent_mem = MemStorage::new();
    let mut parent = CreateOptions::new(DiskType::Dynamic, 4 * MIB)
        .block_size(512 * 1024)
        .create_in(Box::new(parent_mem.clone()), "p.vhd", None)
        .expect("create parent");
    parent.write_at(0, &[7; 1000]).expect("write parent");
    parent.close().expect("close parent");
    let parent = OpenOptions::new()
        .open_storage(Box::new(parent_mem.clone()), "p.vhd")
        .expect("open parent");
    let child_mem = MemStorage::new();
    let mut child = CreateOptions::new(DiskType::Differencing, 0)
        .block_size(1 << 20)
        .create_in(
            Box::new(child_mem.clone()),
            "c.vhd",
            Some((parent, "p.vhd")),
        )
        .expect("create child");
    child.write_at(3 * MIB + 5, &[9; 700]).expect("write child");
    child.close().expect("close child");

    let (ps, cs) = (counted(&parent_mem), counted(&child_mem));
    let reads = || ps.reads().0 + cs.reads().0;
    let parent = OpenOptions::new()
        .open_storage(Box::new(ps.clone()), "p.vhd")
        .expect("open parent");
    let mut child = OpenOptions::new()
        .parent_image(parent)
        .open_storage(Box::new(cs.clone()), "c.vhd")
        .expect("open child");
    let before = reads();
    let mut buf = vec![0xEE; MIB as usize];
    child.read_at(MIB, &mut buf).expect("read");
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(
        reads(),
        before,
        "a read where no image holds data read a file"
    );
    // And where they do hold data, the chain reads it.
    let mut head = [0u8; 1000];
    child.read_at(0, &mut head).expect("read");
    assert_eq!(head, [7; 1000]);
    let mut tail = [0u8; 700];
    child.read_at(3 * MIB + 5, &mut tail).expect("read");
    assert_eq!(tail, [9; 700]);
}
