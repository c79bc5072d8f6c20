//! `vhd serve`: export an image over NBD.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Args;

use crate::serve::{Address, Event, Opener, ServeOptions, Server};

use super::CmdResult;
use super::args::ParentArgs;
use super::output::{Failure, print, warn};

/// Export a disk over NBD (the Network Block Device protocol), its
/// differencing chain resolved.
///
/// Read-only by default: the image keeps a shared lock and any number of
/// clients may read at once. With --writable the image is held with the
/// exclusive lock; the first client may write (write, flush, FUA), others
/// that connect meanwhile are served read-only. Writes are flushed when
/// the writer disconnects and when the server ends (SIGINT, SIGTERM, or
/// --once after the last client).
///
/// Clients get block status (`base:allocation`) from the image's map, so
/// `qemu-img convert` and `nbdcopy` copy only the data.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    vhd serve disk.vhd &\n  \
    qemu-img convert -O raw nbd://127.0.0.1:10809/disk.vhd disk.raw\n  \
    nbdinfo --map nbd://127.0.0.1:10809\n  \
    vhd serve disk.vhd --socket /tmp/disk.sock --once &\n  \
    nbdcopy 'nbd+unix:///?socket=/tmp/disk.sock' disk.raw")]
pub struct ServeArgs {
    /// The image.
    pub image: PathBuf,
    /// Listen on this TCP address.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:10809",
        conflicts_with = "socket"
    )]
    pub listen: String,
    /// Listen on a Unix socket at this path instead of TCP.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The export name (default: the image's file name). Clients that ask
    /// for the empty (default) name get the export too.
    #[arg(long)]
    pub name: Option<String>,
    /// Allow writes (takes the exclusive lock).
    #[arg(long, short)]
    pub writable: bool,
    /// End when the last client disconnects.
    #[arg(long)]
    pub once: bool,
    /// Report clients connecting and leaving on stderr.
    #[arg(long, short)]
    pub verbose: bool,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
}

fn tcp_address(text: &str) -> Result<SocketAddr, Failure> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            Failure::plain(format!(
                "--listen {text:?}: expected ADDR:PORT, e.g. 127.0.0.1:10809"
            ))
            .with_code(2)
        })
}

/// `name` as an NBD URI path (RFC 3986 unreserved characters kept).
fn uri_escape(name: &str) -> String {
    let mut s = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    s
}

/// Runs `vhd serve`.
pub fn run(args: &ServeArgs) -> CmdResult {
    let path = &args.image;
    let address = match &args.socket {
        Some(p) => Address::Unix(p.clone()),
        None => Address::Tcp(tcp_address(&args.listen)?),
    };
    let name = args.name.clone().unwrap_or_else(|| {
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    });
    let image = args.parent.open(path, args.writable)?;
    let parent = args.parent.clone();
    let reopen_path = path.clone();
    let opener: Opener = Arc::new(move || parent.open_options().open(&reopen_path));
    let options = ServeOptions {
        address,
        name: name.clone(),
        writable: args.writable,
        once: args.once,
        handshake_timeout: crate::serve::HANDSHAKE_TIMEOUT,
    };
    let server = Server::bind(image, opener, options).map_err(|e| Failure::image(path, &e))?;
    let stop = Arc::new(AtomicBool::new(false));
    register_signals(&stop)?;
    let url = match &args.socket {
        Some(p) => format!("nbd+unix:///{}?socket={}", uri_escape(&name), p.display()),
        None => format!("nbd://{}/{}", server.address(), uri_escape(&name)),
    };
    let verbose = args.verbose;
    let shown = path.display().to_string();
    let events = move |event: Event<'_>| match event {
        Event::Listening(_) => {
            // The one stdout line, for scripts: where to connect.
            let _ = print(&format!("{url}\n"));
        }
        Event::Connected { peer, writer } if verbose => {
            let mode = if writer { "read-write" } else { "read-only" };
            warn(&shown, &format!("client {peer} connected ({mode})"));
        }
        Event::Disconnected { peer, end: Err(e) } => {
            warn(&shown, &format!("client {peer}: {e}"));
        }
        Event::Disconnected { peer, end: Ok(_) } if verbose => {
            warn(&shown, &format!("client {peer} left"));
        }
        Event::FlushFailed(e) => warn(&shown, &format!("flush failed: {e}")),
        _ => {}
    };
    server
        .run(&stop, &events)
        .map_err(|e| Failure::image(path, &e))?;
    Ok(0)
}

/// SIGINT and SIGTERM set `stop` (the server then flushes and ends); a
/// second one ends the process at once.
#[cfg(unix)]
pub(super) fn register_signals(stop: &Arc<AtomicBool>) -> Result<(), Failure> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(stop))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(stop)))
            .map_err(|e| Failure::plain(format!("installing a signal handler: {e}")))?;
    }
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn register_signals(_stop: &Arc<AtomicBool>) -> Result<(), Failure> {
    Ok(())
}
