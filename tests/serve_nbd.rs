//! `vhd serve` with real NBD clients (qemu-img, qemu-io, nbdinfo, nbdcopy
//! from libnbd), with a small client of our own for what those never send
//! (oversized, out-of-range and garbage requests), and with kill -9 in the
//! middle of a client's writes. A missing client prints `SKIP: <why>`
//! (and fails with `VHDREF_REQUIRE_PEERS=1`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    MIB, Peer, Rng, cmd, one_at_a_time, our_images, peer_available, prefilled_part, run, run_ok,
    temp_dir,
};
use proptest::prelude::*;
use vhdref::serve::proto::{self, Command as NbdCmd, GoRequest, MetaRequest, Request};
use vhdref::serve::{
    Address, Event, ExportInfo, ImageBackend, Opener, ServeOptions, Server, run_session,
};
use vhdref::storage::MemStorage;
use vhdref::{CreateOptions, DiskType, Image};

const VHD: &str = env!("CARGO_BIN_EXE_vhd");

// ---------------------------------------------------------------------------
// The server as a process

/// A `vhd serve` process; killed when dropped.
struct Served {
    child: Child,
    url: String,
}

impl Served {
    /// Starts `vhd serve IMAGE --listen 127.0.0.1:0 EXTRA...` (or with a
    /// `--socket` in `extra`) and waits for the URL it prints.
    fn start(image: &Path, extra: &[&str]) -> Served {
        let mut args: Vec<String> = vec!["serve".into(), image.display().to_string()];
        if !extra.contains(&"--socket") {
            args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_string()));
        let mut child = Command::new(VHD)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("vhd serve starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the URL vhd serve prints");
        assert!(
            line.starts_with("nbd"),
            "vhd serve {args:?} printed {line:?}"
        );
        Served {
            child,
            url: line.trim().to_string(),
        }
    }

    fn tcp_addr(&self) -> String {
        let rest = self.url.trim_start_matches("nbd://");
        rest.split('/').next().unwrap_or(rest).to_string()
    }

    /// Sends SIGTERM and waits; returns the exit code.
    fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        run(&mut cmd("kill", ["-TERM", pid.as_str()]));
        let status = self.child.wait().expect("vhd serve ends");
        status.code()
    }

    /// Waits for the server to end by itself (with `--once`).
    fn wait(mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("polling vhd serve") {
                return s.code();
            }
            assert!(start.elapsed() < limit, "vhd serve --once did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `tool` runs; else prints SKIP (or fails under `VHDREF_REQUIRE_PEERS=1`).
fn tool_available(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var_os("VHDREF_REQUIRE_PEERS").is_some_and(|v| v == "1");
        assert!(!required, "{tool} is missing (and VHDREF_REQUIRE_PEERS=1)");
        eprintln!("SKIP: {tool}: `{tool} --version` does not run (Debian: libnbd-bin)");
    }
    ok
}

fn vhd(args: &[&str]) -> std::process::Output {
    let out = run(&mut cmd(VHD, args));
    assert_ne!(out.status.code(), Some(101), "vhd {args:?} panicked");
    out
}

/// What `vhd convert` makes of the image: its guest bytes.
fn vhd_convert(image: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join("vhd-convert.raw");
    let _ = std::fs::remove_file(&out);
    let o = vhd(&[
        "convert",
        &image.display().to_string(),
        &out.display().to_string(),
        "--to",
        "raw",
    ]);
    assert!(
        o.status.success(),
        "vhd convert failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(&out).expect("reading vhd convert's output")
}

/// A dynamic image of `size` bytes, prefilled with a pattern (so that old
/// contents are never zeros), closed.
fn prefilled(path: &Path, size: u64) -> Vec<u8> {
    prefilled_part(path, size, size)
}

// ---------------------------------------------------------------------------
// Real clients

#[test]
fn qemu_img_convert_from_nbd_gives_the_bytes_vhd_convert_gives() {
    let _g = one_at_a_time();
    if !peer_available(Peer::QemuImg) {
        return;
    }
    let dir = temp_dir();
    for case in our_images(dir.path(), 16) {
        let ours = vhd_convert(case.path(), dir.path());
        common::assert_same_bytes(
            &ours,
            &case.expected,
            &format!("{}: vhd convert", case.name),
        );
        // Over TCP, a differencing chain served whole.
        let server = Served::start(case.path(), &[]);
        let out = dir.path().join("qemu.raw");
        let _ = std::fs::remove_file(&out);
        run_ok(&mut cmd(
            "qemu-img",
            [
                "convert",
                "-O",
                "raw",
                server.url.as_str(),
                &out.display().to_string(),
            ],
        ));
        let got = std::fs::read(&out).expect("reading qemu-img's output");
        common::assert_same_bytes(
            &got,
            &ours,
            &format!("{}: qemu-img convert from nbd://", case.name),
        );
        assert_eq!(
            server.stop(),
            Some(0),
            "{}: vhd serve ends cleanly on SIGTERM",
            case.name
        );
        // Over a Unix socket, qemu-img compare against vhd convert's output.
        let sock = dir.path().join("nbd.sock");
        let served = Served::start(
            case.path(),
            &["--socket", &sock.display().to_string(), "--once"],
        );
        let reference = dir.path().join("vhd-convert.raw");
        let o = run(&mut cmd(
            "qemu-img",
            [
                "compare",
                "-f",
                "raw",
                "-F",
                "raw",
                served.url.as_str(),
                &reference.display().to_string(),
            ],
        ));
        assert!(
            o.status.success(),
            "{}: qemu-img compare: {}",
            case.name,
            String::from_utf8_lossy(&o.stdout)
        );
        assert_eq!(
            served.wait(Duration::from_secs(10)),
            Some(0),
            "--once ends with the client"
        );
        assert!(!sock.exists(), "the socket is removed at the end");
    }
}

/// One qemu-io write: offset, length, pattern byte.
const QEMU_IO_WRITES: [(u64, u64, u8); 4] = [
    (MIB, 64 * 1024, 0xab),
    (3 * MIB - 512, 4096, 0xcd),
    (7 * MIB + 1000, 1, 0x11),
    (16 * MIB - 4096, 4096, 0x22),
];

#[test]
fn qemu_io_writes_through_a_writable_export_and_vhd_compare_sees_them() {
    let _g = one_at_a_time();
    if !peer_available(Peer::QemuIo) {
        return;
    }
    let dir = temp_dir();
    let image = dir.path().join("w.vhd");
    let mut expected = prefilled(&image, 16 * MIB);
    let server = Served::start(&image, &["--writable"]);
    let mut args: Vec<String> = vec!["-f".into(), "raw".into()];
    for (off, len, byte) in QEMU_IO_WRITES {
        args.extend(["-c".into(), format!("write -P {byte} {off} {len}")]);
        expected[off as usize..(off + len) as usize].fill(byte);
    }
    // Zeros too: a write-zeroes request, with FUA.
    args.extend(["-c".into(), format!("write -z -f {} {}", 9 * MIB, MIB)]);
    expected[9 * MIB as usize..10 * MIB as usize].fill(0);
    args.extend(["-c".into(), "flush".into(), server.url.clone()]);
    run_ok(&mut cmd("qemu-io", &args));
    assert_eq!(server.stop(), Some(0));
    let raw = dir.path().join("expected.raw");
    std::fs::write(&raw, &expected).expect("writing the expected bytes");
    let o = vhd(&[
        "compare",
        &image.display().to_string(),
        &raw.display().to_string(),
    ]);
    assert!(
        o.status.success(),
        "vhd compare: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = vhd(&["check", &image.display().to_string()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "vhd check: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// `(offset, length, data)` runs, adjacent runs of the same kind merged.
fn merged(runs: impl IntoIterator<Item = (u64, u64, bool)>) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for (o, l, d) in runs {
        match out.last_mut() {
            Some(last) if last.2 == d && last.0 + last.1 == o => last.1 += l,
            _ => out.push((o, l, d)),
        }
    }
    out
}

#[test]
fn nbdinfo_map_shows_the_extents_vhd_map_shows() {
    let _g = one_at_a_time();
    if !tool_available("nbdinfo") {
        return;
    }
    let dir = temp_dir();
    for case in our_images(dir.path(), 17) {
        let o = vhd(&[
            "map",
            &case.path().display().to_string(),
            "--output",
            "json",
        ]);
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("vhd map JSON");
        let ours = merged(v["extents"].as_array().expect("extents").iter().map(|e| {
            (
                e["offset"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["data"].as_bool().unwrap(),
            )
        }));
        let server = Served::start(case.path(), &[]);
        let o = run_ok(&mut cmd(
            "nbdinfo",
            ["--map", "--json", server.url.as_str()],
        ));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("nbdinfo JSON");
        let theirs = merged(v.as_array().expect("an array of extents").iter().map(|e| {
            let kind = e["type"].as_u64().unwrap();
            assert!(kind == 0 || kind == 3, "{}: type {kind}", case.name);
            (
                e["offset"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                kind == 0,
            )
        }));
        assert_eq!(theirs, ours, "{}: nbdinfo --map vs vhd map", case.name);
        server.stop();
    }
}

/// Bytes the file system allocated for `path`.
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").blocks() * 512
}

#[test]
fn nbdcopy_copies_a_sparse_disk_and_the_output_is_sparse() {
    let _g = one_at_a_time();
    if !tool_available("nbdcopy") {
        return;
    }
    let dir = temp_dir();
    let image = dir.path().join("sparse.vhd");
    let size = 256 * MIB;
    let mut img = CreateOptions::new(DiskType::Dynamic, size)
        .create(&image)
        .expect("creating");
    let mut rng = Rng::new(5);
    for off in [3 * MIB, 100 * MIB + 4096, 255 * MIB] {
        img.write_at(off, &rng.nonzero_bytes(MIB as usize))
            .expect("writing");
    }
    img.close().expect("closing");
    let ours = vhd_convert(&image, dir.path());
    let server = Served::start(&image, &[]);
    let out = dir.path().join("copy.raw");
    run_ok(&mut cmd(
        "nbdcopy",
        [server.url.as_str(), &out.display().to_string()],
    ));
    let got = std::fs::read(&out).expect("reading nbdcopy's output");
    assert!(got == ours, "nbdcopy's copy differs from vhd convert's");
    let used = allocated(&out);
    assert!(
        used < 16 * MIB,
        "the copy of 3 MiB of data takes {used} bytes: holes were written"
    );
    server.stop();
}

// ---------------------------------------------------------------------------
// A small client of our own

/// One parsed reply.
#[derive(Debug, Default)]
struct Reply {
    error: u32,
    data: Vec<u8>,
    descriptors: Vec<(u32, u32)>,
}

struct Client {
    s: TcpStream,
    structured: bool,
    size: u64,
    flags: u16,
    cookie: u64,
}

fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).expect("reading from the server");
    v
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

/// Reads option replies until a final one; returns (type, data) of each.
fn option_replies(s: &mut TcpStream) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let h = read_n(s, 20);
        assert_eq!(be64(&h), proto::OPTION_REPLY_MAGIC);
        let kind = be32(&h[12..]);
        let data = read_n(s, be32(&h[16..]) as usize);
        let last = !matches!(
            kind,
            proto::REP_INFO | proto::REP_SERVER | proto::REP_META_CONTEXT
        );
        out.push((kind, data));
        if last {
            return out;
        }
    }
}

impl Client {
    /// Connects and negotiates (structured replies and block status if
    /// `structured`), entering transmission with `NBD_OPT_GO`.
    fn connect(addr: &str, structured: bool) -> Client {
        let mut s = TcpStream::connect(addr).expect("connecting");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let g = read_n(&mut s, 18);
        assert_eq!(be64(&g), proto::NBDMAGIC);
        s.write_all(&3u32.to_be_bytes()).unwrap();
        if structured {
            s.write_all(&proto::encode_option(proto::OPT_STRUCTURED_REPLY, &[]))
                .unwrap();
            assert_eq!(option_replies(&mut s)[0].0, proto::REP_ACK);
            let meta = MetaRequest {
                name: String::new(),
                queries: vec![proto::BASE_ALLOCATION.into()],
            };
            s.write_all(&proto::encode_option(
                proto::OPT_SET_META_CONTEXT,
                &proto::encode_meta(&meta),
            ))
            .unwrap();
            let r = option_replies(&mut s);
            assert_eq!(r.len(), 2, "one context, then ACK: {r:?}");
        }
        let go = GoRequest {
            name: String::new(),
            info: vec![],
        };
        s.write_all(&proto::encode_option(proto::OPT_GO, &proto::encode_go(&go)))
            .unwrap();
        let replies = option_replies(&mut s);
        assert_eq!(
            replies.last().map(|r| r.0),
            Some(proto::REP_ACK),
            "{replies:?}"
        );
        let export = &replies[0].1;
        Client {
            s,
            structured,
            size: be64(&export[2..]),
            flags: u16::from_be_bytes([export[10], export[11]]),
            cookie: 0,
        }
    }

    fn send(
        &mut self,
        command: NbdCmd,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> Request {
        self.cookie += 1;
        let req = Request {
            flags,
            command,
            cookie: self.cookie,
            offset,
            length,
        };
        self.s.write_all(&proto::encode_request(&req)).unwrap();
        self.s.write_all(payload).unwrap();
        req
    }

    fn reply(&mut self, req: &Request) -> Reply {
        let mut r = Reply::default();
        if !self.structured {
            let h = read_n(&mut self.s, 16);
            assert_eq!(be32(&h), proto::SIMPLE_REPLY_MAGIC);
            assert_eq!(be64(&h[8..]), req.cookie);
            r.error = be32(&h[4..]);
            if r.error == 0 && req.command == NbdCmd::Read {
                r.data = read_n(&mut self.s, req.length as usize);
            }
            return r;
        }
        loop {
            let h = read_n(&mut self.s, 4);
            if be32(&h) == proto::SIMPLE_REPLY_MAGIC {
                let rest = read_n(&mut self.s, 12);
                assert_eq!(be64(&rest[4..]), req.cookie);
                r.error = be32(&rest);
                return r;
            }
            assert_eq!(be32(&h), proto::STRUCTURED_REPLY_MAGIC);
            let rest = read_n(&mut self.s, 16);
            let flags = u16::from_be_bytes([rest[0], rest[1]]);
            let kind = u16::from_be_bytes([rest[2], rest[3]]);
            assert_eq!(be64(&rest[4..]), req.cookie);
            let payload = read_n(&mut self.s, be32(&rest[12..]) as usize);
            match kind {
                proto::REPLY_TYPE_OFFSET_DATA => r.data.extend_from_slice(&payload[8..]),
                proto::REPLY_TYPE_ERROR => r.error = be32(&payload),
                proto::REPLY_TYPE_BLOCK_STATUS => {
                    r.descriptors = payload[4..]
                        .chunks(8)
                        .map(|c| (be32(c), be32(&c[4..])))
                        .collect();
                }
                proto::REPLY_TYPE_NONE => {}
                other => panic!("unexpected chunk type {other}"),
            }
            if flags & proto::REPLY_FLAG_DONE != 0 {
                return r;
            }
        }
    }

    fn call(
        &mut self,
        command: NbdCmd,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> Reply {
        let req = self.send(command, flags, offset, length, payload);
        self.reply(&req)
    }

    fn read(&mut self, offset: u64, length: u32) -> Reply {
        self.call(NbdCmd::Read, 0, offset, length, &[])
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Reply {
        self.call(NbdCmd::Write, 0, offset, data.len() as u32, data)
    }

    fn disconnect(mut self) {
        self.send(NbdCmd::Disconnect, 0, 0, 0, &[]);
        let mut rest = Vec::new();
        let _ = self.s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "nothing after NBD_CMD_DISC");
    }
}

#[test]
fn several_clients_read_a_read_only_export_at_once() {
    let _g = one_at_a_time();
    let dir = temp_dir();
    let image = dir.path().join("ro.vhd");
    let expected = prefilled(&image, 8 * MIB);
    let server = Served::start(&image, &[]);
    let addr = server.tcp_addr();
    let mut clients: Vec<Client> = (0..4).map(|i| Client::connect(&addr, i % 2 == 0)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_ne!(c.flags & proto::TF_READ_ONLY, 0);
        assert_eq!(c.size, 8 * MIB);
        let off = i as u64 * MIB + 100;
        let r = c.read(off, 70_000);
        assert_eq!(r.error, 0);
        assert!(
            r.data == expected[off as usize..off as usize + 70_000],
            "client {i} reads the image"
        );
        assert_eq!(
            c.write(0, &[1; 512]).error,
            proto::EPERM,
            "writes to a read-only export"
        );
    }
    for c in clients {
        c.disconnect();
    }
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn a_writable_export_serves_a_second_client_read_only() {
    let _g = one_at_a_time();
    let dir = temp_dir();
    let image = dir.path().join("rw.vhd");
    prefilled(&image, 8 * MIB);
    let server = Served::start(&image, &["--writable"]);
    let addr = server.tcp_addr();
    let mut writer = Client::connect(&addr, true);
    assert_eq!(
        writer.flags & proto::TF_READ_ONLY,
        0,
        "the first client may write"
    );
    let mut reader = Client::connect(&addr, true);
    assert_ne!(
        reader.flags & proto::TF_READ_ONLY,
        0,
        "the second is read-only"
    );
    assert_eq!(writer.write(4096, &[0xee; 4096]).error, 0);
    assert_eq!(
        reader.write(0, &[1; 512]).error,
        proto::EPERM,
        "the second writer is refused"
    );
    let r = reader.read(4096, 4096);
    assert!(
        r.data.iter().all(|&b| b == 0xee),
        "the reader sees the writer's data"
    );
    writer.disconnect();
    // The writer is gone: the next client may write.
    let mut next = Client::connect(&addr, false);
    assert_eq!(next.flags & proto::TF_READ_ONLY, 0);
    assert_eq!(next.write(0, &[2; 512]).error, 0);
    next.disconnect();
    reader.disconnect();
    assert_eq!(server.stop(), Some(0));
    let mut img = Image::open(&image).unwrap();
    let mut buf = [0u8; 512];
    img.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [2; 512]);
}

#[test]
fn bad_requests_get_error_replies_and_the_session_goes_on() {
    let _g = one_at_a_time();
    let dir = temp_dir();
    let image = dir.path().join("bad.vhd");
    let expected = prefilled(&image, 4 * MIB);
    let server = Served::start(&image, &["--writable"]);
    for structured in [true, false] {
        let mut c = Client::connect(&server.tcp_addr(), structured);
        let size = c.size;
        let big = proto::MAX_PAYLOAD + 1;
        let read_big = if structured {
            proto::EOVERFLOW
        } else {
            proto::EINVAL
        };
        assert_eq!(c.read(0, big).error, read_big, "oversized read");
        assert_eq!(
            c.read(size - 512, 1024).error,
            proto::EINVAL,
            "read past the end"
        );
        assert_eq!(
            c.read(u64::MAX - 10, 512).error,
            proto::EINVAL,
            "offset overflow"
        );
        assert_eq!(
            c.write(size, &[1; 512]).error,
            proto::ENOSPC,
            "write past the end"
        );
        // An oversized write: its payload is read and dropped, then refused.
        let payload = vec![0x77u8; big as usize];
        assert_eq!(
            c.call(NbdCmd::Write, 0, 0, big, &payload).error,
            proto::EINVAL
        );
        assert_eq!(
            c.call(NbdCmd::Unknown(99), 0, 0, 0, &[]).error,
            proto::EINVAL,
            "unknown command"
        );
        assert_eq!(
            c.call(NbdCmd::Read, 1 << 12, 0, 512, &[]).error,
            proto::EINVAL,
            "unknown flag"
        );
        assert_eq!(
            c.call(NbdCmd::Trim, 0, 0, 512, &[]).error,
            proto::EINVAL,
            "trim is not offered"
        );
        if structured {
            let r = c.call(NbdCmd::BlockStatus, 0, size - 1, 2, &[]);
            assert_eq!(r.error, proto::EINVAL, "block status past the end");
            let r = c.call(NbdCmd::BlockStatus, proto::CMD_FLAG_REQ_ONE, 0, 4096, &[]);
            assert_eq!(r.descriptors, vec![(4096, 0)]);
        }
        // After all that, reads still answer with the image's bytes.
        let r = c.read(MIB, 4096);
        assert_eq!(r.error, 0);
        assert!(r.data == expected[MIB as usize..MIB as usize + 4096]);
        c.disconnect();
    }
    assert_eq!(server.stop(), Some(0));
    let o = vhd(&[
        "compare",
        &image.display().to_string(),
        &image.display().to_string(),
    ]);
    assert!(o.status.success());
    common::assert_same_bytes(
        &vhd_convert(&image, dir.path()),
        &expected,
        "no refused write reached the image",
    );
}

#[test]
fn garbage_and_half_requests_never_take_the_server_down() {
    let _g = one_at_a_time();
    let dir = temp_dir();
    let image = dir.path().join("g.vhd");
    let expected = prefilled(&image, 4 * MIB);
    let server = Served::start(&image, &["--writable"]);
    let addr = server.tcp_addr();
    // Garbage instead of a handshake, and garbage instead of a request.
    let mut rng = Rng::new(9);
    let mut s = TcpStream::connect(&addr).unwrap();
    let _ = s.write_all(&rng.nonzero_bytes(10_000));
    drop(s);
    let mut c = Client::connect(&addr, true);
    let _ = c.s.write_all(&rng.nonzero_bytes(1000));
    let mut rest = Vec::new();
    let _ = c.s.read_to_end(&mut rest);
    // A write whose payload stops half-way, then the client goes away.
    let mut c = Client::connect(&addr, false);
    c.send(NbdCmd::Write, 0, 0, 65536, &vec![0x55; 30_000]);
    drop(c);
    // A header cut short.
    let mut c = Client::connect(&addr, false);
    let req = Request {
        flags: 0,
        command: NbdCmd::Write,
        cookie: 1,
        offset: 0,
        length: 512,
    };
    c.s.write_all(&proto::encode_request(&req)[..11]).unwrap();
    drop(c);
    // The server still serves, and the image never saw the half write.
    let mut c = Client::connect(&addr, true);
    let r = c.read(0, 65536);
    assert!(r.data == expected[..65536]);
    c.disconnect();
    assert_eq!(server.stop(), Some(0));
    let o = vhd(&["check", &image.display().to_string()]);
    assert_eq!(o.status.code(), Some(0));
    common::assert_same_bytes(
        &vhd_convert(&image, dir.path()),
        &expected,
        "the image after garbage",
    );
}

#[test]
fn sigterm_flushes_what_a_connected_writer_wrote() {
    let _g = one_at_a_time();
    let dir = temp_dir();
    let image = dir.path().join("t.vhd");
    let mut expected = prefilled_part(&image, 16 * MIB, 0);
    let server = Served::start(&image, &["--writable"]);
    let mut c = Client::connect(&server.tcp_addr(), true);
    // Into unallocated blocks: only a flush writes their BAT entries.
    for (i, off) in [MIB, 5 * MIB + 512, 13 * MIB].into_iter().enumerate() {
        let data = vec![i as u8 + 1; 8192];
        assert_eq!(c.write(off, &data).error, 0);
        expected[off as usize..off as usize + 8192].copy_from_slice(&data);
    }
    // The client stays connected; the server is told to end.
    assert_eq!(server.stop(), Some(0), "vhd serve ends cleanly on SIGTERM");
    drop(c);
    assert_eq!(
        common::read_image(&image),
        expected,
        "the writes were flushed"
    );
}

#[test]
fn a_writer_leaving_flushes_before_anything_else_happens() {
    let _g = one_at_a_time();
    let dir = temp_dir();
    let image = dir.path().join("l.vhd");
    let mut expected = prefilled_part(&image, 16 * MIB, 0);
    let server = Served::start(&image, &["--writable"]);
    let mut c = Client::connect(&server.tcp_addr(), false);
    let data = vec![0x5a; 65536];
    assert_eq!(c.write(7 * MIB, &data).error, 0);
    expected[7 * MIB as usize..7 * MIB as usize + 65536].copy_from_slice(&data);
    // The connection closes only after the flush that follows the writer.
    c.disconnect();
    server.kill9();
    common::assert_same_bytes(
        &common::read_image(&image),
        &expected,
        "the writer's data was flushed when it left",
    );
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[test]
fn a_client_silent_in_the_handshake_is_dropped_and_the_library_server_stops_on_its_flag() {
    let _g = one_at_a_time();
    let dir = temp_dir();
    let image = dir.path().join("h.vhd");
    prefilled(&image, 4 * MIB);
    let reopen = image.clone();
    let opener: Opener = Arc::new(move || Image::open(&reopen));
    let options = ServeOptions {
        address: Address::Tcp("127.0.0.1:0".parse().unwrap()),
        name: "h".into(),
        writable: false,
        once: false,
        handshake_timeout: Duration::from_millis(300),
    };
    let server = Server::bind(Image::open(&image).unwrap(), opener, options).unwrap();
    let addr = server.address().to_string();
    let stop = AtomicBool::new(false);
    let stop = &stop;
    std::thread::scope(|scope| {
        let running = scope.spawn(move || server.run(stop, &|_: Event<'_>| {}));
        // Whatever happens below, the server is told to stop (a failed
        // assertion must not leave the scope waiting for it forever).
        let _stop = StopOnDrop(stop);
        let mut silent = TcpStream::connect(&addr).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let start = Instant::now();
        let mut got = Vec::new();
        let _ = silent.read_to_end(&mut got);
        assert_eq!(got.len(), 18, "the greeting, then the server gives up");
        assert!(start.elapsed() < Duration::from_secs(10));
        // A client past the handshake keeps its connection beyond the limit.
        let mut c = Client::connect(&addr, true);
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(c.read(0, 512).error, 0);
        stop.store(true, Ordering::Release);
        running.join().unwrap().expect("the server ends cleanly");
        // Its connection was closed by the stop.
        let mut rest = Vec::new();
        assert!(matches!(c.s.read_to_end(&mut rest), Ok(0) | Err(_)));
    });
}

// ---------------------------------------------------------------------------
// Faults

/// kill -9 of the server while a client writes: the image opens, `vhd
/// check` finds no errors, every sector reads its old or its new bytes,
/// and what a completed flush covered is there.
#[test]
fn kill_9_of_the_server_during_writes_leaves_old_or_new_sectors_and_flushed_data() {
    let _g = one_at_a_time();
    let dir = temp_dir();
    for round in 0..3u64 {
        let image = dir.path().join(format!("k{round}.vhd"));
        let size = 32 * MIB;
        let old = prefilled_part(&image, size, size / 2);
        // Writes go to distinct 16 KiB slots in random order, so every
        // sector has exactly one possible new value.
        let slot = 16 * 1024u64;
        let mut slots: Vec<u64> = (0..size / slot).collect();
        let mut rng = Rng::new(100 + round);
        for i in (1..slots.len()).rev() {
            slots.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut new = old.clone();
        let server = Served::start(&image, &["--writable"]);
        let mut c = Client::connect(&server.tcp_addr(), false);
        let mut durable = 0usize; // writes covered by a completed flush
        let mut done = 0usize;
        let kill_after = 40 + rng.below(80) as usize;
        let mut server = Some(server);
        for (i, &s) in slots.iter().enumerate() {
            let data = rng.nonzero_bytes(slot as usize);
            new[(s * slot) as usize..((s + 1) * slot) as usize].copy_from_slice(&data);
            if i == kill_after {
                // Kill with this write in flight.
                let req = c.send(NbdCmd::Write, 0, s * slot, slot as u32, &data);
                let _ = req;
                if let Some(sv) = server.take() {
                    sv.kill9();
                }
                break;
            }
            if c.write(s * slot, &data).error != 0 {
                break;
            }
            done = i + 1;
            if i % 10 == 9 && c.call(NbdCmd::Flush, 0, 0, 0, &[]).error == 0 {
                durable = done;
            }
        }
        drop(c);
        drop(server);
        common::assert_old_or_new_after_kill(
            VHD,
            &image,
            (&old, &new),
            (slot, &slots[..durable]),
            &format!("round {round}"),
        );
        assert!(
            durable >= 30 && done >= durable,
            "round {round}: the test flushed ({durable} of {done})"
        );
    }
}

// ---------------------------------------------------------------------------
// Hostile bytes, in process

fn mem_image(size: u64) -> Image {
    let mut img = CreateOptions::new(DiskType::Dynamic, size)
        .block_size(512 * 1024)
        .create_in(Box::new(MemStorage::new()), "mem.vhd", None)
        .unwrap();
    img.write_at(4096, &[7; 8192]).unwrap();
    img
}

/// A valid handshake (structured replies, block status, GO) for the
/// in-process sessions, so that garbage reaches the transmission phase.
fn handshake_bytes() -> Vec<u8> {
    let mut v = 3u32.to_be_bytes().to_vec();
    v.extend(proto::encode_option(proto::OPT_STRUCTURED_REPLY, &[]));
    let meta = MetaRequest {
        name: String::new(),
        queries: vec![proto::BASE_ALLOCATION.into()],
    };
    v.extend(proto::encode_option(
        proto::OPT_SET_META_CONTEXT,
        &proto::encode_meta(&meta),
    ));
    let go = GoRequest {
        name: String::new(),
        info: vec![proto::INFO_BLOCK_SIZE],
    };
    v.extend(proto::encode_option(proto::OPT_GO, &proto::encode_go(&go)));
    v
}

fn session_on(input: &[u8], writable: bool) -> Vec<u8> {
    let mut backend = ImageBackend::single(mem_image(2 * MIB), writable);
    let export = ExportInfo {
        name: "x".into(),
        description: String::new(),
        multi_conn: false,
    };
    let mut out = Vec::new();
    let _ = run_session(
        input,
        &mut out,
        &export,
        &mut backend,
        &AtomicBool::new(false),
    );
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn garbage_after_the_handshake_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..2000), writable: bool) {
        let mut input = handshake_bytes();
        input.extend(&garbage);
        session_on(&input, writable);
        session_on(&garbage, writable);
    }

    #[test]
    fn well_framed_random_requests_get_one_reply_each(reqs in proptest::collection::vec((0u16..10, any::<u16>(), 0u64..3 * MIB, 0u32..70_000), 1..20)) {
        let mut input = handshake_bytes();
        let mut expected_replies = 0;
        for (i, (command, flags, offset, length)) in reqs.iter().enumerate() {
            let command = NbdCmd::from_code(*command);
            if command == NbdCmd::Disconnect {
                continue;
            }
            let req = Request { flags: *flags, command, cookie: i as u64 + 1, offset: *offset, length: *length };
            input.extend(proto::encode_request(&req));
            input.extend(vec![0x42; req.payload_len() as usize]);
            expected_replies += 1;
        }
        let out = session_on(&input, true);
        // Every request's cookie appears in a final reply; count DONE chunks
        // and simple replies after the handshake's replies.
        let replies = count_final_replies(&out);
        prop_assert_eq!(replies, expected_replies);
    }
}

/// Final transmission replies in a server's output (after the handshake).
fn count_final_replies(out: &[u8]) -> usize {
    // Skip the greeting and option replies up to the ACK of GO.
    let mut pos = 18;
    loop {
        let Some(h) = out.get(pos..pos + 20) else {
            return 0;
        };
        let option = be32(&h[8..]);
        let kind = be32(&h[12..]);
        pos += 20 + be32(&h[16..]) as usize;
        if option == proto::OPT_GO && kind == proto::REP_ACK {
            break;
        }
    }
    let mut n = 0;
    while let Some(h) = out.get(pos..pos + 4) {
        match be32(h) {
            proto::SIMPLE_REPLY_MAGIC => {
                n += 1;
                pos += 16;
            }
            proto::STRUCTURED_REPLY_MAGIC => {
                let flags = u16::from_be_bytes([out[pos + 4], out[pos + 5]]);
                n += usize::from(flags & proto::REPLY_FLAG_DONE != 0);
                pos += 20 + be32(&out[pos + 16..]) as usize;
            }
            other => panic!("bad reply magic {other:#x} at {pos}"),
        }
    }
    n
}
