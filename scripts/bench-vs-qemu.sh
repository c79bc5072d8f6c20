#!/usr/bin/env bash
# vhd against qemu-img, side by side on the very same files, and prints one
# table (markdown): case, file system, vhd median, qemu-img median, their
# ratio, the floor (`cp --sparse=always` of the same input, where a copy is
# what the case does) and vhd's time over it, the CPU time (user + system)
# and the peak RSS of each tool.
# spec/performance.md explains every row; the README shows the table.
#
#   bash scripts/bench-vs-qemu.sh              # everything (about 10 minutes)
#   REPS=3 bash scripts/bench-vs-qemu.sh       # fewer repetitions
#   ONLY=convert bash scripts/bench-vs-qemu.sh # only rows whose name has it
#   RUNS_LOG=runs.tsv bash scripts/bench-vs-qemu.sh  # also every single run
#
# RUNS_LOG names a file that gets one line per run (case, file system,
# repetition, tool, wall seconds, CPU seconds, peak RSS in KiB, and the
# KiB of free memory the guest handed back to its host during the run,
# from /sys/module/page_reporting/parameters/reported_kib where a virtual
# machine has free page reporting; "-" elsewhere). On such a machine a
# page the guest frees may be returned to the host, and the next process
# that gets it pays for the host's fault on first touch: that shows as
# system time in whatever copies into it, whichever tool that is.
#
# Method: every case runs REPS times (default 5; the large scaling rows 3);
# within a repetition the tools run one after the other, the order turning
# with each repetition (vhd, qemu-img, cp; then qemu-img, cp, vhd; ...),
# so a change of load hits all of them; the medians are printed. Before
# each run its input files are read once (outside the timing), so every
# tool starts with its input in the page cache.
# Each run is a whole process (start-up included), timed from fork to
# exit; peak RSS is the process's maxrss. Before each run its output is
# removed (or its starting image copied afresh) and `sync` runs, outside
# the timing: on this 2-core machine the write-back of what an earlier
# run (or the building of the inputs) left dirty would otherwise take a
# core from whichever tool runs next, tmpfs rows included.
#
# Where the files live: TMPFS (default /dev/shm) and DISK (default
# target/bench-disk in this repository, which is on the work disk). The
# inputs take about 4 GiB of memory in TMPFS and 3 GiB in DISK; the
# scaling rows up to 16 GiB of TMPFS (a row that would leave less than
# 8 GiB of memory to the rest of the machine is skipped, and says so);
# everything is removed at the end.
#
# Durability: on tmpfs nothing can be synced at a cost, so qemu-img runs
# with its default (cache=unsafe for convert, writeback for bench) and vhd
# with its default (durable: it syncs, which on tmpfs costs nothing). On
# the disk both make their output durable (vhd's default; qemu-img
# `-t writeback`, and `cp` followed by `sync FILE`), and separate rows
# compare the unsynced modes (`vhd -t unsafe`, qemu-img's default).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin vhd
vhd=$PWD/target/release/vhd
tmpfs=${TMPFS:-/dev/shm}
disk=${DISK:-$PWD/target/bench-disk}
mkdir -p "$disk"
t_dir=$(mktemp -d "$tmpfs/vhdbench.XXXXXX")
d_dir=$(mktemp -d "$disk/vhdbench.XXXXXX")
trap 'rm -rf "$t_dir" "$d_dir"' EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(uname -sr)"
echo "tmpfs: $tmpfs ($(df -T "$tmpfs" | awk 'NR==2 {print $2}')); disk: $disk ($(df -T "$disk" | awk 'NR==2 {print $2}'))"
echo "qemu-img: $(qemu-img --version | head -1); vhd: $($vhd --version)"
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

python3 - "$vhd" "$t_dir" "$d_dir" "${REPS:-5}" "${ONLY:-}" "${RUNS_LOG:-}" <<'PY'
import os, random, shutil, statistics, subprocess, sys, time

VHD, TDIR, DDIR, REPS, ONLY = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
RUNS_LOG = open(sys.argv[6], "w") if sys.argv[6] else None
if RUNS_LOG:
    RUNS_LOG.write("case\tfs\trep\ttool\twall_s\tcpu_s\trss_kib\treported_kib\n")
REPORTED = "/sys/module/page_reporting/parameters/reported_kib"


def reported_kib():
    """KiB of free memory handed back to the host so far, or None."""
    try:
        with open(REPORTED) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None
MIB, GIB = 1 << 20, 1 << 30
POOL = random.Random(1).randbytes(64 * MIB)  # data for allocated blocks


def sh(*argv, cwd, stdin=None):
    subprocess.run(argv, cwd=cwd, check=True, input=stdin, stdout=subprocess.DEVNULL)


RSS_FILE = os.path.join(TDIR, "rss")


def timed(argv, cwd):
    """Wall seconds, CPU seconds (user + system, all threads) and peak RSS
    (KiB) of one run of argv. GNU time starts
    it and reports its maxrss (a child forked from this Python would count
    Python's pages until its exec); the wall time is taken here, around
    the whole run (GNU time's own cost, about a millisecond, included for
    every tool alike)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", RSS_FILE, *argv], cwd=cwd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(argv)}\n{p.stderr.decode(errors='replace')}")
    with open(RSS_FILE) as f:
        user, system, rss = f.read().split()[-3:]
    return t, float(user) + float(system), int(rss)


def sparse_raw(path, size, blocks, seed):
    """A sparse raw disk of `size` bytes with `blocks` random 2 MiB blocks of data."""
    n = size // (2 * MIB)
    chosen = sorted(random.Random(seed).sample(range(n), blocks))
    with open(path, "wb") as f:
        f.truncate(size)
        for i, b in enumerate(chosen):
            f.seek(b * 2 * MIB)
            at = (i * 7 * MIB) % (len(POOL) - 2 * MIB)
            f.write(POOL[at:at + 2 * MIB])
    return chosen


def fmt_t(t):
    return "-" if t is None else (f"{t * 1000:.0f} ms" if t < 10 else f"{t:.1f} s")


def fmt_cpu(c):
    # GNU time counts in hundredths of a second.
    return "-" if c is None else f"{c:.2f} s"


def fmt_rss(k):
    return "-" if k is None else f"{k / 1024:.0f} MiB"


rows = []


def warm(cwd, argv):
    """Reads every existing input file named in argv, so that no tool
    finds its input out of the page cache because the one before it (or
    another process) pushed it out."""
    for a in (word for arg in argv for word in arg.split()):
        p = os.path.join(cwd, a)
        if a.endswith((".vhd", ".raw")) and os.path.isfile(p):
            with open(p, "rb") as f:
                while f.readinto(WARM_BUF):
                    pass


WARM_BUF = bytearray(8 * MIB)


def case(name, fs, cwd, ours, theirs=None, floor=None, setup=None, reps=None):
    """Runs one row: ours/theirs/floor are argv lists (or None). The order
    of the tools turns with each repetition."""
    if ONLY and ONLY not in name:
        return
    reps = reps or REPS
    res = {"vhd": [], "qemu": [], "floor": []}
    tools = [(k, a) for k, a in (("vhd", ours), ("qemu", theirs), ("floor", floor)) if a is not None]
    for rep in range(reps):
        for key, argv in tools[rep % len(tools):] + tools[:rep % len(tools)]:
            if setup:
                setup()
            warm(cwd, argv)
            # On either file system: no write-back of an earlier run's
            # output (or of the inputs just built) may run during this one.
            os.sync()
            before = reported_kib()
            res[key].append(timed(argv, cwd))
            if RUNS_LOG:
                after = reported_kib()
                gone = "-" if before is None or after is None else str(after - before)
                t, c, r = res[key][-1]
                RUNS_LOG.write(f"{name}\t{fs}\t{rep}\t{key}\t{t:.3f}\t{c:.2f}\t{r}\t{gone}\n")
                RUNS_LOG.flush()
    med = {k: (statistics.median(t for t, _, _ in v) if v else None) for k, v in res.items()}
    cpu = {k: (statistics.median(c for _, c, _ in v) if v else None) for k, v in res.items()}
    rss = {k: (max(r for _, _, r in v) if v else None) for k, v in res.items()}
    ratio = f"{med['vhd'] / med['qemu']:.2f}x" if med["qemu"] else "-"
    over_floor = f"{med['vhd'] / med['floor']:.2f}x" if med["floor"] else "-"
    row = (f"| {name} | {fs} | {fmt_t(med['vhd'])} | {fmt_t(med['qemu'])} | {ratio} | "
           f"{fmt_t(med['floor'])} | {over_floor} | {fmt_cpu(cpu['vhd'])} | {fmt_cpu(cpu['qemu'])} | "
           f"{fmt_rss(rss['vhd'])} | {fmt_rss(rss['qemu'])} |")
    rows.append(row)
    print(row, flush=True)
    return med


def rm(*paths):
    def go():
        for p in paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    return go


def fresh(template, target):
    def go():
        shutil.copyfile(template, target)
    return go


print("| case | fs | vhd | qemu-img | vhd / qemu-img | floor (cp) | vhd / floor | vhd CPU | qemu-img CPU | vhd RSS | qemu-img RSS |")
print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)

# ---------------------------------------------------------------- converts
# A 1 GiB disk, half full: 256 of its 512 blocks of 2 MiB hold random data.
for fs, d in (("tmpfs", TDIR), ("disk", DDIR)):
    sparse_raw(f"{d}/half.raw", GIB, 256, 7)
    sh(VHD, "convert", "half.raw", "half.vhd", cwd=d)
    sh(VHD, "convert", "half.raw", "hfix.vhd", "--to", "fixed", cwd=d)

CONVERTS = [
    # name, input, vhd target, qemu input format, qemu output args
    ("convert dynamic -> raw", "half.vhd", "raw", "vpc", ["-O", "raw"]),
    ("convert raw -> dynamic", "half.raw", "dynamic", "raw", ["-O", "vpc", "-o", "subformat=dynamic,force_size=on"]),
    ("convert raw -> fixed", "half.raw", "fixed", "raw", ["-O", "vpc", "-o", "subformat=fixed,force_size=on"]),
    ("convert dynamic -> fixed", "half.vhd", "fixed", "vpc", ["-O", "vpc", "-o", "subformat=fixed,force_size=on"]),
    ("convert fixed -> dynamic", "hfix.vhd", "dynamic", "vpc", ["-O", "vpc", "-o", "subformat=dynamic,force_size=on"]),
]
for name, src, to, qfmt, qout in CONVERTS:
    d = TDIR
    case(name, "tmpfs", d, [VHD, "convert", src, "out", "--to", to],
         ["qemu-img", "convert", "-f", qfmt, *qout, src, "out"],
         ["cp", "--sparse=always", src, "out"], setup=rm(f"{d}/out"))
for name, src, to, qfmt, qout in CONVERTS:
    d = DDIR
    case(name + " (durable)", "disk", d, [VHD, "convert", src, "out", "--to", to],
         ["qemu-img", "convert", "-t", "writeback", "-f", qfmt, *qout, src, "out"],
         ["sh", "-c", f"cp --sparse=always {src} out && sync out"], setup=rm(f"{d}/out"))
for name, src, to, qfmt, qout in CONVERTS:
    d = DDIR
    case(name + " (-t unsafe)", "disk", d, [VHD, "convert", "-t", "unsafe", src, "out", "--to", to],
         ["qemu-img", "convert", "-f", qfmt, *qout, src, "out"],
         ["cp", "--sparse=always", src, "out"], setup=rm(f"{d}/out"))

# ---------------------------------------------------------------- flatten
# A depth-3 chain holding 128 + 64 + 64 distinct blocks: 512 MiB, as much
# as half.vhd. qemu-img cannot read differencing VHDs; the comparison is
# vhd converting half.vhd (the same allocated bytes) in the same run.
d = TDIR
chosen = sparse_raw(f"{d}/base.raw", GIB, 256, 11)
with open(f"{d}/base.raw", "r+b") as f:  # keep only the first 128 in the base
    for b in chosen[128:]:
        f.seek(b * 2 * MIB)
        f.write(bytes(2 * MIB))
sh(VHD, "convert", "base.raw", "base.vhd", cwd=d)
os.unlink(f"{d}/base.raw")
for layer, blocks in (("mid.vhd", chosen[128:192]), ("top.vhd", chosen[192:])):
    parent = "base.vhd" if layer == "mid.vhd" else "mid.vhd"
    sh(VHD, "create", layer, "--parent", parent, cwd=d)
    for b in blocks:
        sh(VHD, "write", layer, "--offset", str(b * 2 * MIB), cwd=d, stdin=POOL[b * 4096:b * 4096 + 2 * MIB])
if not ONLY or "flatten" in ONLY:
    flat = case("flatten depth-3 chain -> raw (qemu-img column: vhd, dynamic -> raw of the same bytes)",
                "tmpfs", d, [VHD, "convert", "top.vhd", "out", "--to", "raw"],
                [VHD, "convert", "half.vhd", "out", "--to", "raw"],
                ["cp", "--sparse=always", "half.vhd", "out"], setup=rm(f"{d}/out"))

# ---------------------------------------------------------------- bench
# The same fresh 4 GiB dynamic image (made once by vhd create, copied
# before each run) for both tools; qemu-img at its default depth (64),
# vhd at depth 1.
for fs, d in (("tmpfs", TDIR), ("disk", DDIR)):
    sh(VHD, "create", "tpl.vhd", "4G", cwd=d)
    shutil.copyfile(f"{d}/tpl.vhd", f"{d}/read.vhd")
    sh(VHD, "bench", "read.vhd", "-w", "-c", "4096", "-S", "1M", "--pattern", "7", cwd=d)
    for name, args in (
        ("bench 4 KiB writes, one per 1 MiB (4096 writes, 2048 new blocks)", ["-w", "-c", "4096", "-s", "4K", "-S", "1M", "--pattern", "7"]),
        ("bench 4 KiB writes, one per 1 MiB, flush every 1000 (qemu-img -d 64)", ["-w", "-c", "4096", "-s", "4K", "-S", "1M", "--pattern", "7", "--flush-interval", "1000"]),
        ("bench 64 KiB sequential writes (1 GiB)", ["-w", "-c", "16384", "-s", "64K", "--pattern", "7"]),
    ):
        case(name, fs, d, [VHD, "bench", "-q", "w.vhd", *args],
             ["qemu-img", "bench", "-q", "-f", "vpc", "w.vhd", *args], setup=fresh(f"{d}/tpl.vhd", f"{d}/w.vhd"))
    case("bench 4 KiB reads, one per 1 MiB (40960, wrapping)", fs, d,
         [VHD, "bench", "-q", "read.vhd", "-c", "40960", "-s", "4K", "-S", "1M"],
         ["qemu-img", "bench", "-q", "-f", "vpc", "read.vhd", "-c", "40960", "-s", "4K", "-S", "1M"])

# ---------------------------------------------------------------- 2040 GiB
d = TDIR
sh(VHD, "create", "big.vhd", "2040G", cwd=d)
shutil.copyfile(f"{d}/big.vhd", f"{d}/bigs.vhd")
for i in range(16):  # 16 blocks of data, 127 GiB apart
    sh(VHD, "write", "bigs.vhd", "--offset", str(i * 127 * GIB), cwd=d, stdin=POOL[i * MIB:i * MIB + 2 * MIB])
case("info, 2040 GiB dynamic (BAT of 1044480 entries)", "tmpfs", d,
     [VHD, "info", "big.vhd"], ["qemu-img", "info", "-f", "vpc", "big.vhd"])
case("convert 2040 GiB dynamic, 16 blocks -> raw", "tmpfs", d,
     [VHD, "convert", "bigs.vhd", "out", "--to", "raw"],
     ["qemu-img", "convert", "-f", "vpc", "-O", "raw", "bigs.vhd", "out"], setup=rm(f"{d}/out"))
case("convert 2040 GiB dynamic, 16 blocks -> dynamic", "tmpfs", d,
     [VHD, "convert", "bigs.vhd", "out"],
     ["qemu-img", "convert", "-f", "vpc", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", "bigs.vhd", "out"],
     setup=rm(f"{d}/out"))

# ---------------------------------------------------------------- scaling
# info against BAT size; peak memory of a convert against disk size and
# against bitmap runs; convert time against allocated data.
for size in ("1G", "64G", "2040G"):
    sh(VHD, "create", f"s{size}.vhd", size, cwd=d)
    sh(VHD, "bench", f"s{size}.vhd", "-w", "-c", "16", "-s", "2M", "-S", "64M", "--pattern", "5", cwd=d)
    case(f"scaling: info, {size} dynamic", "tmpfs", d, [VHD, "info", f"s{size}.vhd"],
         ["qemu-img", "info", "-f", "vpc", f"s{size}.vhd"])
    case(f"scaling: convert {size} dynamic (16 blocks) -> raw, memory", "tmpfs", d,
         [VHD, "convert", f"s{size}.vhd", "out", "--to", "raw"],
         ["qemu-img", "convert", "-f", "vpc", "-O", "raw", f"s{size}.vhd", "out"], setup=rm(f"{d}/out"))
for blocks in (16, 64, 256):
    # Every other sector written: 2048 bitmap runs in each 2 MiB block.
    sh(VHD, "create", f"frag{blocks}.vhd", "1G", cwd=d)
    sh(VHD, "bench", f"frag{blocks}.vhd", "-w", "-c", str(blocks * 2048), "-s", "512", "-S", "1024",
       "--pattern", "9", cwd=d)
    case(f"scaling: convert {blocks} blocks of every other sector ({blocks * 2048} runs) -> raw, memory",
         "tmpfs", d, [VHD, "convert", f"frag{blocks}.vhd", "out", "--to", "raw"],
         ["qemu-img", "convert", "-f", "vpc", "-O", "raw", f"frag{blocks}.vhd", "out"], setup=rm(f"{d}/out"))
for fs, d in (("tmpfs", TDIR), ("disk", DDIR)):
    for name in ("half.raw", "half.vhd", "hfix.vhd", "tpl.vhd", "read.vhd", "w.vhd", "out", "base.vhd",
                 "mid.vhd", "top.vhd", "frag16.vhd", "frag64.vhd", "frag256.vhd"):
        rm(f"{d}/{name}")()
# On tmpfs, where the disk's own speed (and its other users) cannot blur
# the slope. The image and the output hold gib / 2 GiB each, in memory:
# a row runs there only if that leaves at least 8 GiB of memory to the
# rest of the machine; else on the disk (durable, as the disk rows) if
# that leaves 4 GiB free; else it is skipped and says so.
d = TDIR


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


for gib in (1, 4, 16):
    if ONLY and "scaling" not in ONLY:
        break
    need = gib * GIB  # image + output; the raw input is removed first
    fs, d = "tmpfs", TDIR
    if mem_available() - need < 8 * GIB:
        # Not in memory: on the disk if it has room to spare (durable,
        # like the disk rows above), else skipped, saying why.
        if shutil.disk_usage(DDIR).free - need < 4 * GIB:
            print(f"| scaling: convert {gib} GiB dynamic, half full -> raw | - | skipped: needs {gib} GiB of "
                  f"memory and 8 GiB to spare ({mem_available() / GIB:.1f} GiB available), or {gib} GiB "
                  f"of disk and 4 GiB to spare ({shutil.disk_usage(DDIR).free / GIB:.1f} GiB free) "
                  f"| | | | | | | | |", flush=True)
            continue
        fs, d = "disk", DDIR
    sparse_raw(f"{d}/sc.raw", gib * GIB, gib * 256, 20 + gib)
    sh(VHD, "convert", "sc.raw", "sc.vhd", cwd=d)
    os.unlink(f"{d}/sc.raw")
    if fs == "tmpfs":
        theirs = ["qemu-img", "convert", "-f", "vpc", "-O", "raw", "sc.vhd", "out"]
        floor = ["cp", "--sparse=always", "sc.vhd", "out"]
    else:
        theirs = ["qemu-img", "convert", "-t", "writeback", "-f", "vpc", "-O", "raw", "sc.vhd", "out"]
        floor = ["sh", "-c", "cp --sparse=always sc.vhd out && sync out"]
    durable = " (durable)" if fs == "disk" else ""
    med = case(f"scaling: convert {gib} GiB dynamic, half full -> raw{durable}", fs, d,
               [VHD, "convert", "sc.vhd", "out", "--to", "raw"], theirs, floor,
               setup=rm(f"{d}/out"), reps=3)
    if med:
        print(f"|   per GiB of data | {fs} | {fmt_t(med['vhd'] / (gib / 2))} | {fmt_t(med['qemu'] / (gib / 2))} | | "
              f"{fmt_t(med['floor'] / (gib / 2))} | | | | | |", flush=True)
    rm(f"{d}/sc.vhd", f"{d}/out")()
PY
echo
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
