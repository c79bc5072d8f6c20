//! The NBD wire format (the `NetworkBlockDevice` project's `doc/proto.md`):
//! constants, and pure functions that parse what a client sends and encode
//! what a server (or, for tests, a client) sends. No I/O here.
//!
//! Every parser takes a fixed-size header or a byte slice the caller has
//! already bounded ([`MAX_OPTION_LEN`], [`MAX_PAYLOAD`]); nothing allocates
//! from a length a client chose before that length was checked.

/// `NBDMAGIC`, first word of the server's greeting.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: second word of the greeting and the magic of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of an option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: fixed newstyle negotiation.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the 124 zero bytes after `NBD_OPT_EXPORT_NAME` may be left out.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: leave out the 124 zero bytes.
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

/// Transmission flag: always set.
pub const TF_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const TF_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `NBD_CMD_FLUSH` is understood.
pub const TF_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: `NBD_CMD_FLAG_FUA` is understood.
pub const TF_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: `NBD_CMD_WRITE_ZEROES` is understood.
pub const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: `NBD_CMD_FLAG_DF` is understood.
pub const TF_SEND_DF: u16 = 1 << 7;
/// Transmission flag: several connections see one another's writes.
pub const TF_CAN_MULTI_CONN: u16 = 1 << 8;

/// Option: choose an export and enter transmission (no error replies).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: end the negotiation.
pub const OPT_ABORT: u32 = 2;
/// Option: list the exports.
pub const OPT_LIST: u32 = 3;
/// Option: start TLS.
pub const OPT_STARTTLS: u32 = 5;
/// Option: describe an export.
pub const OPT_INFO: u32 = 6;
/// Option: describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option: use structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: list metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Option: select metadata contexts.
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply: done, no data.
pub const REP_ACK: u32 = 1;
/// Option reply: an export name (answer to `NBD_OPT_LIST`).
pub const REP_SERVER: u32 = 2;
/// Option reply: one item of information about an export.
pub const REP_INFO: u32 = 3;
/// Option reply: a metadata context.
pub const REP_META_CONTEXT: u32 = 4;
const REP_ERR: u32 = 1 << 31;
/// Option error: the option is not known.
pub const REP_ERR_UNSUP: u32 = REP_ERR | 1;
/// Option error: forbidden by the server's policy.
pub const REP_ERR_POLICY: u32 = REP_ERR | 2;
/// Option error: syntactically or semantically invalid.
pub const REP_ERR_INVALID: u32 = REP_ERR | 3;
/// Option error: no such export.
pub const REP_ERR_UNKNOWN: u32 = REP_ERR | 6;
/// Option error: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_ERR | 7;
/// Option error: the request is too large.
pub const REP_ERR_TOO_BIG: u32 = REP_ERR | 9;

/// Information type: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Information type: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// Information type: a description for people.
pub const INFO_DESCRIPTION: u16 = 2;
/// Information type: block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Command flag: force unit access (durable before the reply).
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag: write zeroes without making a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag: answer a read with one content chunk.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag: one extent per block status reply.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Command flag: fail a write-zeroes that is not fast.
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// Structured reply flag: the last chunk of a reply.
pub const REPLY_FLAG_DONE: u16 = 1;
/// Chunk type: nothing (a final chunk).
pub const REPLY_TYPE_NONE: u16 = 0;
/// Chunk type: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk type: a run of zeros at an offset.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Chunk type: block status descriptors of one metadata context.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Chunk type: an error, with a message.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;

/// Error: operation not permitted (a write to a read-only export).
pub const EPERM: u32 = 1;
/// Error: input/output error.
pub const EIO: u32 = 5;
/// Error: invalid argument (bad range, unknown command or flag).
pub const EINVAL: u32 = 22;
/// Error: no space (a write past the end of the export).
pub const ENOSPC: u32 = 28;
/// Error: value too large (a read longer than the server sends at once).
pub const EOVERFLOW: u32 = 75;
/// Error: the server is shutting down.
pub const ESHUTDOWN: u32 = 108;

/// `base:allocation` state: not allocated.
pub const STATE_HOLE: u32 = 1;
/// `base:allocation` state: reads as zeros.
pub const STATE_ZERO: u32 = 2;

/// The one metadata context offered.
pub const BASE_ALLOCATION: &str = "base:allocation";

/// Bytes of a request header.
pub const REQUEST_LEN: usize = 28;
/// Bytes of an option header (magic, option, length).
pub const OPTION_HEADER_LEN: usize = 16;
/// Largest read or write payload served (the protocol's 32 MiB that no
/// client may take for a denial of service). Longer requests get an error.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Largest option payload read into memory; longer options are skipped
/// and answered `NBD_REP_ERR_TOO_BIG`.
pub const MAX_OPTION_LEN: u32 = 64 << 10;
/// Longest string the protocol allows (names, queries, messages).
pub const MAX_STRING: usize = 4096;

/// A violation after which the connection cannot go on (the protocol
/// allows a hard disconnect).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

/// What the client announced after the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    /// The client asked to leave out the 124 zero bytes.
    pub no_zeroes: bool,
}

/// Parses the client flags. Unknown bits end the connection, as the
/// protocol demands. A client that does not set the fixed-newstyle bit is
/// served the same (the protocol allows it).
pub fn parse_client_flags(bytes: [u8; 4]) -> Result<ClientFlags, ProtocolError> {
    let flags = u32::from_be_bytes(bytes);
    let known = CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES;
    if flags & !known != 0 {
        return Err(ProtocolError(format!(
            "client flags {flags:#x} set unknown bits"
        )));
    }
    Ok(ClientFlags {
        no_zeroes: flags & CLIENT_NO_ZEROES != 0,
    })
}

/// The server's greeting: magic words and handshake flags.
pub fn greeting() -> [u8; 18] {
    let mut out = [0u8; 18];
    out[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    out[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    out
}

/// The header of an option: which option, and how many bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option code.
    pub option: u32,
    /// Bytes of option data that follow.
    pub length: u32,
}

/// Parses an option header; a wrong magic ends the connection.
pub fn parse_option_header(bytes: &[u8; OPTION_HEADER_LEN]) -> Result<OptionHeader, ProtocolError> {
    let mut r = Reader::new(bytes);
    let magic = r.u64().unwrap_or_default();
    if magic != IHAVEOPT {
        return Err(ProtocolError(format!(
            "option magic {magic:#018x} is not IHAVEOPT"
        )));
    }
    Ok(OptionHeader {
        option: r.u32().unwrap_or_default(),
        length: r.u32().unwrap_or_default(),
    })
}

/// The export name and information requests of `NBD_OPT_INFO` / `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoRequest {
    /// Export name (empty: the default export).
    pub name: String,
    /// Information types asked for.
    pub info: Vec<u16>,
}

/// The export name and queries of the metadata context options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    /// Export name.
    pub name: String,
    /// Context queries, such as `base:allocation` or `base:`.
    pub queries: Vec<String>,
}

/// An option, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    /// `NBD_OPT_EXPORT_NAME`.
    ExportName(String),
    /// `NBD_OPT_ABORT`.
    Abort,
    /// `NBD_OPT_LIST`.
    List,
    /// `NBD_OPT_STARTTLS`.
    StartTls,
    /// `NBD_OPT_INFO`.
    Info(GoRequest),
    /// `NBD_OPT_GO`.
    Go(GoRequest),
    /// `NBD_OPT_STRUCTURED_REPLY`.
    StructuredReply,
    /// `NBD_OPT_LIST_META_CONTEXT`.
    ListMetaContext(MetaRequest),
    /// `NBD_OPT_SET_META_CONTEXT`.
    SetMetaContext(MetaRequest),
    /// An option this server does not know.
    Unknown(u32),
}

/// Why an option's data is not acceptable (answered `NBD_REP_ERR_INVALID`
/// with this message; the negotiation goes on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOption(pub String);

/// Parses the data of option `option`.
pub fn parse_option(option: u32, data: &[u8]) -> Result<ClientOption, InvalidOption> {
    let empty = |what: ClientOption, name: &str| {
        if data.is_empty() {
            Ok(what)
        } else {
            Err(InvalidOption(format!("{name} takes no data")))
        }
    };
    match option {
        OPT_EXPORT_NAME => Ok(ClientOption::ExportName(string(data, "export name")?)),
        // The protocol asks servers to ignore data sent with an abort.
        OPT_ABORT => Ok(ClientOption::Abort),
        OPT_LIST => empty(ClientOption::List, "NBD_OPT_LIST"),
        OPT_STARTTLS => empty(ClientOption::StartTls, "NBD_OPT_STARTTLS"),
        OPT_STRUCTURED_REPLY => empty(ClientOption::StructuredReply, "NBD_OPT_STRUCTURED_REPLY"),
        OPT_INFO | OPT_GO => {
            let bad = || InvalidOption("truncated NBD_OPT_INFO/NBD_OPT_GO data".into());
            let mut r = Reader::new(data);
            let name_len = r.u32().ok_or_else(bad)?;
            let name = string(r.bytes(name_len as usize).ok_or_else(bad)?, "export name")?;
            let count = r.u16().ok_or_else(bad)?;
            let mut info = Vec::with_capacity(usize::from(count).min(r.remaining() / 2));
            for _ in 0..count {
                info.push(r.u16().ok_or_else(bad)?);
            }
            if r.remaining() != 0 {
                return Err(InvalidOption(
                    "NBD_OPT_INFO/NBD_OPT_GO data too long".into(),
                ));
            }
            let req = GoRequest { name, info };
            Ok(if option == OPT_GO {
                ClientOption::Go(req)
            } else {
                ClientOption::Info(req)
            })
        }
        OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
            let bad = || InvalidOption("truncated metadata context request".into());
            let mut r = Reader::new(data);
            let name_len = r.u32().ok_or_else(bad)?;
            let name = string(r.bytes(name_len as usize).ok_or_else(bad)?, "export name")?;
            let count = r.u32().ok_or_else(bad)?;
            // Each query takes at least 4 bytes: bound the vector by the data.
            let mut queries = Vec::with_capacity((count as usize).min(r.remaining() / 4));
            for _ in 0..count {
                let len = r.u32().ok_or_else(bad)?;
                queries.push(string(r.bytes(len as usize).ok_or_else(bad)?, "query")?);
            }
            if r.remaining() != 0 {
                return Err(InvalidOption("metadata context request too long".into()));
            }
            let req = MetaRequest { name, queries };
            Ok(if option == OPT_SET_META_CONTEXT {
                ClientOption::SetMetaContext(req)
            } else {
                ClientOption::ListMetaContext(req)
            })
        }
        other => Ok(ClientOption::Unknown(other)),
    }
}

fn string(bytes: &[u8], what: &str) -> Result<String, InvalidOption> {
    if bytes.len() > MAX_STRING {
        return Err(InvalidOption(format!(
            "{what} is {} bytes, longer than {MAX_STRING}",
            bytes.len()
        )));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| InvalidOption(format!("{what} is not UTF-8")))
}

/// Which contexts of this server a metadata context query names:
/// `base:allocation` itself, or (only when listing) the `base:` wildcard.
/// Queries of other namespaces are ignored, as the protocol demands.
pub fn query_selects_base_allocation(query: &str, listing: bool) -> bool {
    query == BASE_ALLOCATION || (listing && query == "base:")
}

/// Appends an option reply.
pub fn encode_option_reply(out: &mut Vec<u8>, option: u32, reply: u32, data: &[u8]) {
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    out.extend_from_slice(&len32(data.len()).to_be_bytes());
    out.extend_from_slice(data);
}

/// Data of `NBD_REP_INFO` / `NBD_INFO_EXPORT`.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut v = INFO_EXPORT.to_be_bytes().to_vec();
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v
}

/// Data of `NBD_REP_INFO` carrying a string (`NBD_INFO_NAME`, `NBD_INFO_DESCRIPTION`).
pub fn info_string(kind: u16, text: &str) -> Vec<u8> {
    let mut v = kind.to_be_bytes().to_vec();
    v.extend_from_slice(truncated(text));
    v
}

/// Data of `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE`.
pub fn info_block_size(minimum: u32, preferred: u32, maximum: u32) -> Vec<u8> {
    let mut v = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    for n in [minimum, preferred, maximum] {
        v.extend_from_slice(&n.to_be_bytes());
    }
    v
}

/// Data of `NBD_REP_SERVER`: an export name.
pub fn rep_server(name: &str) -> Vec<u8> {
    let name = truncated(name);
    let mut v = len32(name.len()).to_be_bytes().to_vec();
    v.extend_from_slice(name);
    v
}

/// Data of `NBD_REP_META_CONTEXT`.
pub fn rep_meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(truncated(name));
    v
}

/// What the server sends after `NBD_OPT_EXPORT_NAME`: size, flags and
/// (unless the client asked otherwise) 124 zero bytes.
pub fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut v = size.to_be_bytes().to_vec();
    v.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        v.extend_from_slice(&[0u8; 124]);
    }
    v
}

/// A transmission command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `NBD_CMD_READ`.
    Read,
    /// `NBD_CMD_WRITE` (a payload of `length` bytes follows the header).
    Write,
    /// `NBD_CMD_DISC`.
    Disconnect,
    /// `NBD_CMD_FLUSH`.
    Flush,
    /// `NBD_CMD_TRIM`.
    Trim,
    /// `NBD_CMD_CACHE`.
    Cache,
    /// `NBD_CMD_WRITE_ZEROES`.
    WriteZeroes,
    /// `NBD_CMD_BLOCK_STATUS`.
    BlockStatus,
    /// A command this server does not know.
    Unknown(u16),
}

impl Command {
    /// The command from its code.
    pub fn from_code(code: u16) -> Command {
        match code {
            0 => Command::Read,
            1 => Command::Write,
            2 => Command::Disconnect,
            3 => Command::Flush,
            4 => Command::Trim,
            5 => Command::Cache,
            6 => Command::WriteZeroes,
            7 => Command::BlockStatus,
            other => Command::Unknown(other),
        }
    }

    /// The command's code.
    pub fn code(self) -> u16 {
        match self {
            Command::Read => 0,
            Command::Write => 1,
            Command::Disconnect => 2,
            Command::Flush => 3,
            Command::Trim => 4,
            Command::Cache => 5,
            Command::WriteZeroes => 6,
            Command::BlockStatus => 7,
            Command::Unknown(c) => c,
        }
    }

    /// The flags the protocol documents for this command (FUA is valid on all).
    fn allowed_flags(self) -> u16 {
        CMD_FLAG_FUA
            | match self {
                Command::Read => CMD_FLAG_DF,
                Command::WriteZeroes => CMD_FLAG_NO_HOLE,
                Command::BlockStatus => CMD_FLAG_REQ_ONE,
                _ => 0,
            }
    }
}

/// A transmission request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// The command.
    pub command: Command,
    /// The client's cookie, echoed in the reply.
    pub cookie: u64,
    /// Export offset.
    pub offset: u64,
    /// Length (of the payload, for a write).
    pub length: u32,
}

impl Request {
    /// Bytes of payload that follow the header on the wire.
    pub fn payload_len(&self) -> u32 {
        if self.command == Command::Write {
            self.length
        } else {
            0
        }
    }
}

/// Parses a request header; a wrong magic ends the connection (nothing
/// after it can be trusted to be a request boundary).
pub fn parse_request(bytes: &[u8; REQUEST_LEN]) -> Result<Request, ProtocolError> {
    let mut r = Reader::new(bytes);
    let magic = r.u32().unwrap_or_default();
    if magic != REQUEST_MAGIC {
        return Err(ProtocolError(format!(
            "request magic {magic:#010x} is not {REQUEST_MAGIC:#010x}"
        )));
    }
    Ok(Request {
        flags: r.u16().unwrap_or_default(),
        command: Command::from_code(r.u16().unwrap_or_default()),
        cookie: r.u64().unwrap_or_default(),
        offset: r.u64().unwrap_or_default(),
        length: r.u32().unwrap_or_default(),
    })
}

/// Encodes a request header (the client's side; for tests and the fuzzer).
pub fn encode_request(req: &Request) -> [u8; REQUEST_LEN] {
    let mut out = [0u8; REQUEST_LEN];
    out[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&req.flags.to_be_bytes());
    out[6..8].copy_from_slice(&req.command.code().to_be_bytes());
    out[8..16].copy_from_slice(&req.cookie.to_be_bytes());
    out[16..24].copy_from_slice(&req.offset.to_be_bytes());
    out[24..28].copy_from_slice(&req.length.to_be_bytes());
    out
}

/// Encodes an option with its data (the client's side).
pub fn encode_option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&len32(data.len()).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// Encodes the data of `NBD_OPT_INFO` / `NBD_OPT_GO` (the client's side).
pub fn encode_go(req: &GoRequest) -> Vec<u8> {
    let mut v = len32(req.name.len()).to_be_bytes().to_vec();
    v.extend_from_slice(req.name.as_bytes());
    v.extend_from_slice(&(req.info.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    for i in req.info.iter().take(usize::from(u16::MAX)) {
        v.extend_from_slice(&i.to_be_bytes());
    }
    v
}

/// Encodes the data of the metadata context options (the client's side).
pub fn encode_meta(req: &MetaRequest) -> Vec<u8> {
    let mut v = len32(req.name.len()).to_be_bytes().to_vec();
    v.extend_from_slice(req.name.as_bytes());
    v.extend_from_slice(&len32(req.queries.len()).to_be_bytes());
    for q in &req.queries {
        v.extend_from_slice(&len32(q.len()).to_be_bytes());
        v.extend_from_slice(q.as_bytes());
    }
    v
}

/// The state of the negotiation that decides whether a request is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Export size in bytes.
    pub size: u64,
    /// Writes are allowed.
    pub writable: bool,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// `base:allocation` was selected.
    pub block_status: bool,
}

/// Why a request is refused: the error value and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// An NBD error value (`EINVAL`, `EPERM`, ...).
    pub error: u32,
    /// What was wrong.
    pub message: String,
}

fn refuse(error: u32, message: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal {
        error,
        message: message.into(),
    })
}

/// Decides whether `req` may be carried out, with the error values the
/// protocol names: `EINVAL` for unknown commands and flags, reads and
/// block status past the end, and oversized payloads; `EOVERFLOW` for a
/// read too long to answer at once; `EPERM` for writes to a read-only
/// export; `ENOSPC` for writes past the end.
pub fn check_request(req: &Request, n: &Negotiated) -> Result<(), Refusal> {
    let cmd = req.command;
    if let Command::Unknown(code) = cmd {
        return refuse(EINVAL, format!("unknown command {code}"));
    }
    let stray = req.flags & !cmd.allowed_flags();
    if stray != 0 {
        return refuse(
            EINVAL,
            format!("flags {stray:#x} are not valid for {cmd:?}"),
        );
    }
    if req.flags & CMD_FLAG_DF != 0 && !n.structured {
        return refuse(EINVAL, "NBD_CMD_FLAG_DF needs structured replies");
    }
    let len = u64::from(req.length);
    let past_end = req.offset.checked_add(len).is_none_or(|end| end > n.size);
    let range = || {
        format!(
            "{len} bytes at offset {} go past the end of the export ({} bytes)",
            req.offset, n.size
        )
    };
    match cmd {
        Command::Disconnect | Command::Unknown(_) => Ok(()),
        Command::Flush => {
            if req.offset != 0 || req.length != 0 {
                return refuse(EINVAL, "NBD_CMD_FLUSH with a nonzero offset or length");
            }
            Ok(())
        }
        Command::Read => {
            if req.length > MAX_PAYLOAD {
                let error = if n.structured { EOVERFLOW } else { EINVAL };
                return refuse(
                    error,
                    format!("read of {len} bytes is longer than {MAX_PAYLOAD}"),
                );
            }
            if past_end {
                return refuse(EINVAL, range());
            }
            Ok(())
        }
        Command::Write | Command::WriteZeroes | Command::Trim => {
            if !n.writable {
                return refuse(EPERM, "the export is read-only");
            }
            if cmd == Command::Trim {
                return refuse(EINVAL, "NBD_CMD_TRIM is not offered");
            }
            if cmd == Command::Write && req.length > MAX_PAYLOAD {
                return refuse(
                    EINVAL,
                    format!("write of {len} bytes is longer than {MAX_PAYLOAD}"),
                );
            }
            if past_end {
                return refuse(ENOSPC, range());
            }
            Ok(())
        }
        Command::Cache => {
            if past_end {
                return refuse(EINVAL, range());
            }
            Ok(())
        }
        Command::BlockStatus => {
            if !n.structured || !n.block_status {
                return refuse(EINVAL, "no metadata context was selected");
            }
            if req.length == 0 {
                return refuse(EINVAL, "block status of zero bytes");
            }
            if past_end {
                return refuse(EINVAL, range());
            }
            Ok(())
        }
    }
}

/// Appends a simple reply header (a read's data follows it).
pub fn encode_simple_reply(out: &mut Vec<u8>, cookie: u64, error: u32) {
    out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
}

/// Appends a structured reply chunk header; `length` payload bytes follow.
pub fn encode_chunk_header(out: &mut Vec<u8>, flags: u16, kind: u16, cookie: u64, length: u32) {
    out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
}

/// Appends the header of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk (its
/// `data_len` bytes of data follow).
pub fn encode_data_chunk_header(
    out: &mut Vec<u8>,
    flags: u16,
    cookie: u64,
    offset: u64,
    data_len: u32,
) {
    encode_chunk_header(
        out,
        flags,
        REPLY_TYPE_OFFSET_DATA,
        cookie,
        data_len.saturating_add(8),
    );
    out.extend_from_slice(&offset.to_be_bytes());
}

/// Appends a final `NBD_REPLY_TYPE_ERROR` chunk.
pub fn encode_error_chunk(out: &mut Vec<u8>, cookie: u64, error: u32, message: &str) {
    let msg = truncated(message);
    encode_chunk_header(
        out,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        cookie,
        len32(6 + msg.len()),
    );
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
}

/// Appends a final `NBD_REPLY_TYPE_BLOCK_STATUS` chunk for context `id`
/// with `(length, flags)` descriptors.
pub fn encode_block_status(out: &mut Vec<u8>, cookie: u64, id: u32, descriptors: &[(u32, u32)]) {
    encode_chunk_header(
        out,
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS,
        cookie,
        len32(4 + 8 * descriptors.len()),
    );
    out.extend_from_slice(&id.to_be_bytes());
    for (len, flags) in descriptors {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }
}

/// A string cut to the protocol's limit, at a character boundary.
fn truncated(text: &str) -> &[u8] {
    let mut end = text.len().min(MAX_STRING);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text.as_bytes()[..end]
}

/// A length that the caller has bounded, as the protocol's 32 bits.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A bounds-checked big-endian reader over a byte slice.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    fn remaining(&self) -> usize {
        self.data.len()
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.data.len() {
            return None;
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N).and_then(|b| b.try_into().ok())
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn negotiated() -> Negotiated {
        Negotiated {
            size: 1 << 20,
            writable: true,
            structured: true,
            block_status: true,
        }
    }

    fn req(command: Command, offset: u64, length: u32) -> Request {
        Request {
            flags: 0,
            command,
            cookie: 7,
            offset,
            length,
        }
    }

    fn error_of(r: &Request, n: &Negotiated) -> Option<u32> {
        check_request(r, n).err().map(|e| e.error)
    }

    #[test]
    fn reads_and_block_status_past_the_end_are_invalid() {
        let n = negotiated();
        assert_eq!(
            error_of(&req(Command::Read, (1 << 20) - 512, 512), &n),
            None
        );
        assert_eq!(
            error_of(&req(Command::Read, (1 << 20) - 511, 512), &n),
            Some(EINVAL)
        );
        assert_eq!(error_of(&req(Command::Read, u64::MAX, 1), &n), Some(EINVAL));
        assert_eq!(
            error_of(&req(Command::BlockStatus, 1 << 20, 1), &n),
            Some(EINVAL)
        );
        assert_eq!(error_of(&req(Command::Cache, 1 << 20, 1), &n), Some(EINVAL));
    }

    #[test]
    fn writes_past_the_end_are_out_of_space_and_read_only_exports_refuse_them() {
        let mut n = negotiated();
        assert_eq!(error_of(&req(Command::Write, 1 << 20, 1), &n), Some(ENOSPC));
        assert_eq!(
            error_of(&req(Command::WriteZeroes, u64::MAX, 2), &n),
            Some(ENOSPC)
        );
        n.writable = false;
        assert_eq!(error_of(&req(Command::Write, 0, 1), &n), Some(EPERM));
        assert_eq!(error_of(&req(Command::WriteZeroes, 0, 1), &n), Some(EPERM));
    }

    #[test]
    fn oversized_reads_overflow_with_structured_replies_and_are_invalid_without() {
        let mut n = negotiated();
        n.size = u64::MAX;
        assert_eq!(error_of(&req(Command::Read, 0, MAX_PAYLOAD), &n), None);
        assert_eq!(
            error_of(&req(Command::Read, 0, MAX_PAYLOAD + 1), &n),
            Some(EOVERFLOW)
        );
        assert_eq!(
            error_of(&req(Command::Write, 0, MAX_PAYLOAD + 1), &n),
            Some(EINVAL)
        );
        n.structured = false;
        assert_eq!(
            error_of(&req(Command::Read, 0, MAX_PAYLOAD + 1), &n),
            Some(EINVAL)
        );
    }

    #[test]
    fn unknown_commands_and_flags_are_invalid() {
        let n = negotiated();
        assert_eq!(error_of(&req(Command::Unknown(42), 0, 0), &n), Some(EINVAL));
        let mut r = req(Command::Read, 0, 512);
        r.flags = CMD_FLAG_REQ_ONE;
        assert_eq!(error_of(&r, &n), Some(EINVAL));
        r.flags = 1 << 12;
        assert_eq!(error_of(&r, &n), Some(EINVAL));
        r.flags = CMD_FLAG_FUA | CMD_FLAG_DF;
        assert_eq!(error_of(&r, &n), None);
        let mut flush = req(Command::Flush, 0, 0);
        assert_eq!(error_of(&flush, &n), None);
        flush.length = 1;
        assert_eq!(error_of(&flush, &n), Some(EINVAL));
        assert_eq!(error_of(&req(Command::Trim, 0, 512), &n), Some(EINVAL));
    }

    #[test]
    fn block_status_needs_a_selected_context() {
        let mut n = negotiated();
        n.block_status = false;
        assert_eq!(
            error_of(&req(Command::BlockStatus, 0, 512), &n),
            Some(EINVAL)
        );
        assert_eq!(
            error_of(&req(Command::BlockStatus, 0, 0), &negotiated()),
            Some(EINVAL)
        );
    }

    #[test]
    fn client_flags_with_unknown_bits_end_the_connection() {
        assert!(parse_client_flags(3u32.to_be_bytes()).is_ok_and(|f| f.no_zeroes));
        assert!(parse_client_flags(0u32.to_be_bytes()).is_ok_and(|f| !f.no_zeroes));
        assert!(parse_client_flags(4u32.to_be_bytes()).is_err());
    }

    #[test]
    fn options_with_truncated_or_trailing_data_are_invalid() {
        let go = encode_go(&GoRequest {
            name: "disk".into(),
            info: vec![INFO_BLOCK_SIZE],
        });
        assert!(parse_option(OPT_GO, &go).is_ok());
        assert!(parse_option(OPT_GO, &go[..go.len() - 1]).is_err());
        let mut long = go.clone();
        long.push(0);
        assert!(parse_option(OPT_GO, &long).is_err());
        // A name length far beyond the data.
        assert!(parse_option(OPT_GO, &u32::MAX.to_be_bytes()).is_err());
        assert!(parse_option(OPT_LIST, b"x").is_err());
        assert!(parse_option(OPT_STRUCTURED_REPLY, b"x").is_err());
        assert_eq!(parse_option(OPT_ABORT, b"x"), Ok(ClientOption::Abort));
        assert_eq!(parse_option(99, b"x"), Ok(ClientOption::Unknown(99)));
        // A huge query count with no queries does not allocate for them.
        let mut meta = encode_meta(&MetaRequest {
            name: String::new(),
            queries: vec![],
        });
        meta[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_option(OPT_SET_META_CONTEXT, &meta).is_err());
    }

    #[test]
    fn long_strings_are_cut_at_a_character_boundary() {
        let text = "é".repeat(MAX_STRING);
        let cut = truncated(&text);
        assert!(cut.len() <= MAX_STRING);
        assert!(std::str::from_utf8(cut).is_ok());
    }

    fn any_command() -> impl Strategy<Value = Command> {
        any::<u16>().prop_map(Command::from_code)
    }

    proptest! {
        #[test]
        fn requests_round_trip(flags: u16, command in any_command(), cookie: u64, offset: u64, length: u32) {
            let r = Request { flags, command, cookie, offset, length };
            prop_assert_eq!(parse_request(&encode_request(&r)), Ok(r));
        }

        #[test]
        fn go_requests_round_trip(name in "[a-z./]{0,40}", info in proptest::collection::vec(any::<u16>(), 0..8), go: bool) {
            let r = GoRequest { name, info };
            let code = if go { OPT_GO } else { OPT_INFO };
            let parsed = parse_option(code, &encode_go(&r)).map_err(|e| TestCaseError::fail(e.0))?;
            prop_assert_eq!(parsed, if go { ClientOption::Go(r) } else { ClientOption::Info(r) });
        }

        #[test]
        fn meta_requests_round_trip(name in "\\PC{0,20}", queries in proptest::collection::vec("\\PC{0,30}", 0..6)) {
            let r = MetaRequest { name, queries };
            let parsed = parse_option(OPT_LIST_META_CONTEXT, &encode_meta(&r)).map_err(|e| TestCaseError::fail(e.0))?;
            prop_assert_eq!(parsed, ClientOption::ListMetaContext(r));
        }

        #[test]
        fn option_headers_round_trip(option: u32, data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let bytes = encode_option(option, &data);
            let header: [u8; OPTION_HEADER_LEN] = bytes[..OPTION_HEADER_LEN].try_into().unwrap();
            prop_assert_eq!(parse_option_header(&header), Ok(OptionHeader { option, length: data.len() as u32 }));
        }

        #[test]
        fn garbage_never_panics(option: u32, data in proptest::collection::vec(any::<u8>(), 0..300), header: [u8; 28], size: u64, writable: bool, structured: bool, block_status: bool) {
            let _ = parse_option(option, &data);
            let _ = parse_client_flags([header[0], header[1], header[2], header[3]]);
            let _ = parse_option_header(header[..16].try_into().unwrap());
            // Most random headers have a bad magic: give half of them a good one.
            let mut h = header;
            if option % 2 == 0 {
                h[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
            }
            if let Ok(r) = parse_request(&h) {
                let _ = check_request(&r, &Negotiated { size, writable, structured, block_status });
            }
        }

        #[test]
        fn accepted_requests_lie_inside_the_export(command in any_command(), flags: u16, offset: u64, length: u32, size: u64, writable: bool) {
            let n = Negotiated { size, writable, structured: true, block_status: true };
            let r = Request { flags, command, cookie: 0, offset, length };
            if check_request(&r, &n).is_ok() && !matches!(command, Command::Disconnect | Command::Flush) {
                prop_assert!(offset.checked_add(u64::from(length)).is_some_and(|end| end <= size));
                prop_assert!(!matches!(command, Command::Unknown(_)));
                if matches!(command, Command::Read | Command::Write) {
                    prop_assert!(length <= MAX_PAYLOAD);
                }
                if matches!(command, Command::Write | Command::WriteZeroes) {
                    prop_assert!(writable);
                }
            }
        }
    }
}
