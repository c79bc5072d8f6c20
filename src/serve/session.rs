//! One client connection: the fixed newstyle handshake, then requests
//! mapped onto a [`Backend`] until the client leaves.
//!
//! Requests are served one at a time, in order (replies in the same
//! order). A request the protocol calls invalid gets an error reply and
//! the session goes on; only a broken framing (wrong magic, unknown client
//! flags, an export name that does not exist after `NBD_OPT_EXPORT_NAME`)
//! or the client going away ends it. Nothing a client sends makes the
//! server allocate more than [`MAX_PAYLOAD`] (plus fixed buffers).

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind};

use super::backend::{Backend, Span};
use super::proto::{
    self, BASE_ALLOCATION, ClientOption, Command, INFO_BLOCK_SIZE, INFO_DESCRIPTION, INFO_NAME,
    MAX_OPTION_LEN, MAX_PAYLOAD, Negotiated, OPTION_HEADER_LEN, ProtocolError, REP_ACK,
    REP_ERR_INVALID, REP_ERR_POLICY, REP_ERR_SHUTDOWN, REP_ERR_TOO_BIG, REP_ERR_UNKNOWN,
    REP_ERR_UNSUP, REP_INFO, REP_META_CONTEXT, REP_SERVER, REQUEST_LEN, Request,
};

/// The metadata context ID this server gives `base:allocation`.
const BASE_ALLOCATION_ID: u32 = 1;
/// At most this many block status descriptors in one reply.
const MAX_DESCRIPTORS: usize = 1 << 16;
/// Preferred block size announced to clients that ask.
const PREFERRED_BLOCK: u32 = 4096;
/// Socket buffers.
const IO_BUFFER: usize = 256 << 10;

/// What a client sees of the export besides its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// The export's name; the empty (default) name selects it too.
    pub name: String,
    /// A line for people (`NBD_INFO_DESCRIPTION`).
    pub description: String,
    /// Tell read-only clients that several connections may be used at
    /// once (`NBD_FLAG_CAN_MULTI_CONN`).
    pub multi_conn: bool,
}

impl ExportInfo {
    fn matches(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }
}

/// How a session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client sent `NBD_CMD_DISC`.
    Disconnected,
    /// The client sent `NBD_OPT_ABORT` during the handshake.
    Aborted,
    /// The client closed the connection between messages.
    Closed,
    /// The server is shutting down.
    Shutdown,
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The connection failed, or ended in the middle of a message.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The client broke the protocol in a way that ends the connection.
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
}

/// Negotiation state.
#[derive(Debug, Default)]
struct Handshake {
    no_zeroes: bool,
    structured: bool,
    block_status: bool,
}

/// Serves one client on `reader`/`writer` (the two halves of one
/// connection) from `backend`, until it disconnects. `stop` set makes the
/// handshake refuse to go on; the server also closes the connection to
/// interrupt a session blocked in a read.
pub fn run_session<R: Read, W: Write>(
    reader: R,
    writer: W,
    export: &ExportInfo,
    backend: &mut dyn Backend,
    stop: &AtomicBool,
) -> Result<SessionEnd, SessionError> {
    run_session_with(reader, writer, export, backend, stop, &mut || {})
}

/// [`run_session`], calling `on_transmission` when the handshake is over
/// (the server lifts the handshake's time limit there).
pub fn run_session_with<R: Read, W: Write>(
    reader: R,
    writer: W,
    export: &ExportInfo,
    backend: &mut dyn Backend,
    stop: &AtomicBool,
    on_transmission: &mut dyn FnMut(),
) -> Result<SessionEnd, SessionError> {
    let mut reader = BufReader::with_capacity(IO_BUFFER, reader);
    let mut writer = BufWriter::with_capacity(IO_BUFFER, writer);
    writer.write_all(&proto::greeting())?;
    writer.flush()?;
    let mut flags = [0u8; 4];
    if !read_or_eof(&mut reader, &mut flags)? {
        return Ok(SessionEnd::Closed);
    }
    let mut hs = Handshake {
        no_zeroes: proto::parse_client_flags(flags)?.no_zeroes,
        ..Handshake::default()
    };
    if let Some(end) = negotiate(&mut reader, &mut writer, export, backend, &mut hs, stop)? {
        return Ok(end);
    }
    on_transmission();
    transmission(&mut reader, &mut writer, backend, &hs)
}

fn transmission_flags(backend: &dyn Backend, export: &ExportInfo, hs: &Handshake) -> u16 {
    let mut flags = proto::TF_HAS_FLAGS | proto::TF_SEND_FLUSH;
    if backend.writable() {
        flags |= proto::TF_SEND_FUA | proto::TF_SEND_WRITE_ZEROES;
    } else {
        flags |= proto::TF_READ_ONLY;
        if export.multi_conn {
            flags |= proto::TF_CAN_MULTI_CONN;
        }
    }
    if hs.structured {
        flags |= proto::TF_SEND_DF;
    }
    flags
}

/// Option haggling. `Ok(None)`: go on to transmission.
fn negotiate<R: Read, W: Write>(
    reader: &mut R,
    writer: &mut W,
    export: &ExportInfo,
    backend: &dyn Backend,
    hs: &mut Handshake,
    stop: &AtomicBool,
) -> Result<Option<SessionEnd>, SessionError> {
    let mut out = Vec::new();
    loop {
        let mut header = [0u8; OPTION_HEADER_LEN];
        if !read_or_eof(reader, &mut header)? {
            return Ok(Some(SessionEnd::Closed));
        }
        let header = proto::parse_option_header(&header)?;
        let code = header.option;
        out.clear();
        if header.length > MAX_OPTION_LEN {
            if code == proto::OPT_EXPORT_NAME {
                return Err(
                    ProtocolError(format!("export name of {} bytes", header.length)).into(),
                );
            }
            discard(reader, u64::from(header.length))?;
            let msg = format!("option data of {} bytes is too long", header.length);
            proto::encode_option_reply(&mut out, code, REP_ERR_TOO_BIG, msg.as_bytes());
            send(writer, &out)?;
            continue;
        }
        let mut data = vec![0u8; header.length as usize];
        reader.read_exact(&mut data)?;
        if stop.load(Ordering::Acquire) {
            if code == proto::OPT_ABORT {
                proto::encode_option_reply(&mut out, code, REP_ACK, &[]);
                send(writer, &out)?;
            } else if code != proto::OPT_EXPORT_NAME {
                let msg = b"the server is shutting down";
                proto::encode_option_reply(&mut out, code, REP_ERR_SHUTDOWN, msg);
                send(writer, &out)?;
            }
            return Ok(Some(SessionEnd::Shutdown));
        }
        let option = match proto::parse_option(code, &data) {
            Ok(o) => o,
            Err(_) if code == proto::OPT_EXPORT_NAME => {
                return Err(ProtocolError("export name is not valid".into()).into());
            }
            Err(e) => {
                proto::encode_option_reply(&mut out, code, REP_ERR_INVALID, e.0.as_bytes());
                send(writer, &out)?;
                continue;
            }
        };
        match answer(option, code, export, backend, hs, &mut out)? {
            Next::Continue => send(writer, &out)?,
            Next::Transmit => {
                send(writer, &out)?;
                return Ok(None);
            }
            Next::End(end) => {
                send(writer, &out)?;
                return Ok(Some(end));
            }
        }
    }
}

/// What follows an option.
enum Next {
    /// More options.
    Continue,
    /// The transmission phase.
    Transmit,
    /// The end of the session.
    End(SessionEnd),
}

/// Appends the reply to one option to `out`.
fn answer(
    option: ClientOption,
    code: u32,
    export: &ExportInfo,
    backend: &dyn Backend,
    hs: &mut Handshake,
    out: &mut Vec<u8>,
) -> Result<Next, ProtocolError> {
    let reply = |out: &mut Vec<u8>, kind: u32, data: &[u8]| {
        proto::encode_option_reply(out, code, kind, data);
    };
    match option {
        ClientOption::ExportName(name) => {
            if !export.matches(&name) {
                return Err(ProtocolError(format!("no export named {name:?}")));
            }
            let flags = transmission_flags(backend, export, hs);
            out.extend(proto::export_name_reply(
                backend.size(),
                flags,
                hs.no_zeroes,
            ));
            return Ok(Next::Transmit);
        }
        ClientOption::Abort => {
            reply(out, REP_ACK, &[]);
            return Ok(Next::End(SessionEnd::Aborted));
        }
        ClientOption::List => {
            reply(out, REP_SERVER, &proto::rep_server(&export.name));
            reply(out, REP_ACK, &[]);
        }
        ClientOption::StartTls => {
            reply(out, REP_ERR_POLICY, b"this server does not offer TLS");
        }
        ClientOption::Info(req) | ClientOption::Go(req) => {
            if !export.matches(&req.name) {
                let msg = format!("no export named {:?}", req.name);
                reply(out, REP_ERR_UNKNOWN, msg.as_bytes());
                return Ok(Next::Continue);
            }
            let flags = transmission_flags(backend, export, hs);
            reply(out, REP_INFO, &proto::info_export(backend.size(), flags));
            for info in req.info {
                let data = match info {
                    INFO_NAME => proto::info_string(INFO_NAME, &export.name),
                    INFO_DESCRIPTION => proto::info_string(INFO_DESCRIPTION, &export.description),
                    INFO_BLOCK_SIZE => proto::info_block_size(1, PREFERRED_BLOCK, MAX_PAYLOAD),
                    _ => continue,
                };
                reply(out, REP_INFO, &data);
            }
            reply(out, REP_ACK, &[]);
            if code == proto::OPT_GO {
                return Ok(Next::Transmit);
            }
        }
        ClientOption::StructuredReply => {
            if hs.structured {
                reply(
                    out,
                    REP_ERR_INVALID,
                    b"structured replies already negotiated",
                );
            } else {
                hs.structured = true;
                reply(out, REP_ACK, &[]);
            }
        }
        ClientOption::ListMetaContext(req) | ClientOption::SetMetaContext(req) => {
            let set = code == proto::OPT_SET_META_CONTEXT;
            if set {
                // A set replaces the selection, even when it fails.
                hs.block_status = false;
            }
            if !hs.structured {
                reply(out, REP_ERR_INVALID, b"negotiate structured replies first");
            } else if !export.matches(&req.name) {
                let msg = format!("no export named {:?}", req.name);
                reply(out, REP_ERR_UNKNOWN, msg.as_bytes());
            } else {
                let listing = !set;
                let chosen = (listing && req.queries.is_empty())
                    || req
                        .queries
                        .iter()
                        .any(|q| proto::query_selects_base_allocation(q, listing));
                if chosen {
                    // Listed contexts carry ID 0, as the protocol asks.
                    let id = if set { BASE_ALLOCATION_ID } else { 0 };
                    reply(
                        out,
                        REP_META_CONTEXT,
                        &proto::rep_meta_context(id, BASE_ALLOCATION),
                    );
                }
                hs.block_status = set && chosen;
                reply(out, REP_ACK, &[]);
            }
        }
        ClientOption::Unknown(c) => {
            let msg = format!("option {c} is not supported");
            reply(out, REP_ERR_UNSUP, msg.as_bytes());
        }
    }
    Ok(Next::Continue)
}

/// The transmission phase: requests until the client leaves.
fn transmission<R: Read, W: Write>(
    reader: &mut BufReader<R>,
    writer: &mut W,
    backend: &mut dyn Backend,
    hs: &Handshake,
) -> Result<SessionEnd, SessionError> {
    let negotiated = Negotiated {
        size: backend.size(),
        writable: backend.writable(),
        structured: hs.structured,
        block_status: hs.block_status,
    };
    let mut data: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    loop {
        // Replies wait in the buffer while more requests are already here
        // (pipelining clients); flush before waiting for the next one.
        if reader.buffer().is_empty() {
            writer.flush()?;
        }
        let mut header = [0u8; REQUEST_LEN];
        if !read_or_eof(reader, &mut header)? {
            writer.flush()?;
            return Ok(SessionEnd::Closed);
        }
        let req = proto::parse_request(&header)?;
        let verdict = proto::check_request(&req, &negotiated);
        let payload = req.payload_len();
        if payload > 0 {
            if verdict.is_ok() {
                // Checked: at most MAX_PAYLOAD.
                let buf = sized(&mut data, payload as usize);
                reader.read_exact(buf)?;
            } else {
                discard(reader, u64::from(payload))?;
            }
        }
        out.clear();
        if let Err(refusal) = verdict {
            encode_error(&mut out, &req, hs, refusal.error, &refusal.message);
            writer.write_all(&out)?;
            continue;
        }
        let fua = req.flags & proto::CMD_FLAG_FUA != 0;
        let len = u64::from(req.length);
        let result = match req.command {
            Command::Disconnect => {
                writer.flush()?;
                return Ok(SessionEnd::Disconnected);
            }
            Command::Read => {
                let buf = sized(&mut data, req.length as usize);
                match backend.read(req.offset, buf) {
                    Ok(()) => {
                        encode_read_header(&mut out, &req, hs);
                        writer.write_all(&out)?;
                        writer.write_all(buf)?;
                        continue;
                    }
                    Err(e) => Err(e),
                }
            }
            Command::Write => {
                let buf = sized(&mut data, req.length as usize);
                backend
                    .write(req.offset, buf)
                    .and_then(|()| if fua { backend.flush() } else { Ok(()) })
            }
            Command::WriteZeroes => {
                let allocate = req.flags & proto::CMD_FLAG_NO_HOLE != 0;
                backend
                    .write_zeroes(req.offset, len, allocate)
                    .and_then(|()| if fua { backend.flush() } else { Ok(()) })
            }
            Command::Flush => backend.flush(),
            // Advisory, and cheap enough without it.
            Command::Cache => Ok(()),
            Command::BlockStatus => {
                let req_one = req.flags & proto::CMD_FLAG_REQ_ONE != 0;
                let limit = if req_one { 1 } else { MAX_DESCRIPTORS };
                match backend.spans(req.offset, len, limit) {
                    Ok(spans) => {
                        let d = descriptors(&spans, len, req_one);
                        if d.is_empty() {
                            let e = Error::InvalidArgument("the map ends before the disk".into());
                            Err(e)
                        } else {
                            proto::encode_block_status(
                                &mut out,
                                req.cookie,
                                BASE_ALLOCATION_ID,
                                &d,
                            );
                            writer.write_all(&out)?;
                            continue;
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            // check_request refused these.
            Command::Trim | Command::Unknown(_) => {
                Err(Error::InvalidArgument("command not supported".into()))
            }
        };
        match result {
            Ok(()) => proto::encode_simple_reply(&mut out, req.cookie, 0),
            Err(e) => encode_error(&mut out, &req, hs, nbd_error(&e), &e.to_string()),
        }
        writer.write_all(&out)?;
    }
}

/// The NBD error value for a library error.
pub fn nbd_error(e: &Error) -> u32 {
    match e.kind() {
        ErrorKind::ReadOnly => proto::EPERM,
        ErrorKind::OutOfRange | ErrorKind::InvalidArgument => proto::EINVAL,
        _ => proto::EIO,
    }
}

/// The reply header of a successful read of `req.length` bytes (the data
/// follows): one final data chunk, or a simple reply.
fn encode_read_header(out: &mut Vec<u8>, req: &Request, hs: &Handshake) {
    if !hs.structured {
        proto::encode_simple_reply(out, req.cookie, 0);
    } else if req.length == 0 {
        // A data chunk holds at least one byte: an empty read is just done.
        proto::encode_chunk_header(
            out,
            proto::REPLY_FLAG_DONE,
            proto::REPLY_TYPE_NONE,
            req.cookie,
            0,
        );
    } else {
        // The data is already read: no error can follow, so this chunk is final.
        proto::encode_data_chunk_header(
            out,
            proto::REPLY_FLAG_DONE,
            req.cookie,
            req.offset,
            req.length,
        );
    }
}

fn encode_error(out: &mut Vec<u8>, req: &Request, hs: &Handshake, error: u32, message: &str) {
    if hs.structured {
        proto::encode_error_chunk(out, req.cookie, error, message);
    } else {
        proto::encode_simple_reply(out, req.cookie, error);
    }
}

/// Block status descriptors `(length, flags)` for `spans` (which start at
/// the request's offset): at most one when `req_one` (no longer than the
/// request), else until the request's `length` is covered (the last may
/// reach past it, as the protocol allows). Lengths stay 512-aligned below
/// 4 GiB.
pub fn descriptors(spans: &[Span], length: u64, req_one: bool) -> Vec<(u32, u32)> {
    const MAX_LEN: u64 = 0xffff_fe00;
    let mut out = Vec::new();
    let mut covered = 0u64;
    'spans: for s in spans {
        let flags = if s.data {
            0
        } else {
            proto::STATE_HOLE | proto::STATE_ZERO
        };
        let mut left = s.length;
        while left > 0 {
            let mut n = left.min(MAX_LEN);
            if req_one {
                n = n.min(length);
            }
            out.push((n as u32, flags));
            covered += n;
            left -= n;
            if req_one || covered >= length || out.len() >= MAX_DESCRIPTORS {
                break 'spans;
            }
        }
    }
    out
}

fn send<W: Write>(writer: &mut W, bytes: &[u8]) -> io::Result<()> {
    writer.write_all(bytes)?;
    writer.flush()
}

/// `buf` at exactly `len` bytes, growing it only when needed.
fn sized(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    &mut buf[..len]
}

/// Reads and drops `len` bytes, in bounded memory.
fn discard<R: Read>(reader: &mut R, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.by_ref().take(len), &mut io::sink())?;
    if copied < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Fills `buf`; `Ok(false)` if the stream ended before its first byte
/// (a clean end between messages), an error if it ended inside.
fn read_or_eof<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(offset: u64, length: u64, data: bool) -> Span {
        Span {
            offset,
            length,
            data,
        }
    }

    #[test]
    fn descriptors_mark_zeros_as_holes_and_cover_the_request() {
        let spans = [
            span(0, 4096, true),
            span(4096, 8192, false),
            span(12288, 512, true),
        ];
        assert_eq!(descriptors(&spans, 5000, false), vec![(4096, 0), (8192, 3)]);
        assert_eq!(descriptors(&spans, 1 << 20, false).len(), 3);
        assert_eq!(descriptors(&spans, 1000, true), vec![(1000, 0)]);
    }

    #[test]
    fn descriptors_split_extents_of_four_gib_and_more() {
        let spans = [span(0, 10 << 30, false)];
        let d = descriptors(&spans, 10 << 30, false);
        assert!(d.iter().all(|&(l, f)| l % 512 == 0 && f == 3));
        assert_eq!(d.iter().map(|&(l, _)| u64::from(l)).sum::<u64>(), 10 << 30);
    }
}
