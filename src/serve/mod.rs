//! `vhd serve`: an NBD server (the `NetworkBlockDevice` project's protocol,
//! fixed newstyle handshake) that exports one image, its chain resolved.
//!
//! Three layers, each usable alone:
//!
//! * [`proto`]: the wire format, pure parsing and encoding, bounded;
//! * [`session`]: one connection, requests mapped onto a [`Backend`];
//! * this module: the listener and one thread per client.
//!
//! # Read-only and writable exports
//!
//! A read-only export holds a shared lock on the image for as long as it
//! runs, and every client opens the image again on its own (shared lock,
//! its own caches), so clients read in parallel. A writable export holds the image once, with the exclusive lock.
//! Its first client may write; a client that connects while a writer is
//! connected is served read-only (`NBD_FLAG_READ_ONLY`, writes answered
//! `EPERM`) from the same image, so it sees the writer's data. When the
//! writer leaves, the image is flushed (metadata in the driver's write
//! order, then a sync) and the next client to connect may write.
//!
//! # Ending
//!
//! [`Server::run`] returns when the stop flag is set (the CLI sets it on
//! SIGINT and SIGTERM), or, with [`ServeOptions::once`], when the last
//! client has gone. Either way it closes the connections, waits for the
//! sessions, flushes and closes the image, and reports a flush failure.

pub mod backend;
pub mod proto;
pub mod session;

pub use backend::{Backend, ImageBackend, Span, image_spans};
pub use session::{ExportInfo, SessionEnd, SessionError, run_session, run_session_with};

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
#[cfg(unix)]
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::image::Image;

/// Opens the image again (for each client of a read-only export).
pub type Opener = Arc<dyn Fn() -> Result<Image> + Send + Sync>;

/// How long the accept loop sleeps between looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// How long a client may take over the handshake by default.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP address, e.g. `127.0.0.1:10809` (port 0: any free port).
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// What to serve, and how.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub address: Address,
    /// The export's name (the empty name selects it too).
    pub name: String,
    /// Allow one client at a time to write.
    pub writable: bool,
    /// Stop when the last client has disconnected (after the first came).
    pub once: bool,
    /// A client that has not finished the handshake after this long is
    /// disconnected (so silent connections cannot pile up); the
    /// transmission phase has no time limit.
    pub handshake_timeout: Duration,
}

/// What the server tells its caller as it runs.
#[derive(Debug)]
pub enum Event<'a> {
    /// Listening, at this address (for TCP with the real port).
    Listening(&'a str),
    /// A client connected.
    Connected {
        /// Its address.
        peer: &'a str,
        /// Whether it may write.
        writer: bool,
    },
    /// A client left (`Ok`) or its session failed.
    Disconnected {
        /// Its address.
        peer: &'a str,
        /// How the session ended.
        end: &'a std::result::Result<SessionEnd, SessionError>,
    },
    /// Flushing the image after a writer left failed.
    FlushFailed(&'a Error),
}

/// A listening NBD server.
pub struct Server {
    listener: Listener,
    image: Arc<Mutex<Image>>,
    opener: Opener,
    options: ServeOptions,
    info: ExportInfo,
    address: String,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(UnixListener, PathBuf),
}

/// One accepted connection.
enum Conn {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            #[cfg(unix)]
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            #[cfg(unix)]
            Conn::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn shutdown(&self) {
        // Already closed is fine.
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
            #[cfg(unix)]
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl io::Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl io::Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Server {
    /// Binds the address and takes hold of `image` (opened read-only, or
    /// for writing if `options.writable`); `opener` opens it again for
    /// each reader of a read-only export.
    pub fn bind(image: Image, opener: Opener, options: ServeOptions) -> Result<Server> {
        if options.writable && !image.is_writable() {
            return Err(Error::InvalidArgument(
                "a writable export needs an image opened for writing".into(),
            ));
        }
        let (listener, address) = match &options.address {
            Address::Tcp(addr) => {
                let l = TcpListener::bind(addr)
                    .map_err(|e| Error::io(format!("listening on {addr}"), e))?;
                let local = l
                    .local_addr()
                    .map_err(|e| Error::io(format!("listening on {addr}"), e))?;
                (Listener::Tcp(l), local.to_string())
            }
            #[cfg(unix)]
            Address::Unix(path) => {
                remove_stale_socket(path)?;
                let l = UnixListener::bind(path)
                    .map_err(|e| Error::io(format!("listening on {}", path.display()), e))?;
                (Listener::Unix(l, path.clone()), path.display().to_string())
            }
            #[cfg(not(unix))]
            Address::Unix(path) => {
                return Err(Error::InvalidArgument(format!(
                    "Unix sockets ({}) need a Unix system",
                    path.display()
                )));
            }
        };
        let description = format!(
            "{} VHD {}{}",
            image.disk_type().name(),
            image.name(),
            if options.writable { "" } else { " (read-only)" }
        );
        let info = ExportInfo {
            name: options.name.clone(),
            description,
            multi_conn: !options.writable,
        };
        Ok(Server {
            listener,
            image: Arc::new(Mutex::new(image)),
            opener,
            options,
            info,
            address,
        })
    }

    /// The address listened on: `HOST:PORT` (with the real port when 0
    /// was asked for) or the socket path.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Serves clients until `stop` is set or, with `once`, the last client
    /// has gone; then flushes and closes the image.
    pub fn run(self, stop: &AtomicBool, events: &(dyn Fn(Event<'_>) + Sync)) -> Result<()> {
        events(Event::Listening(&self.address));
        let conns: Mutex<Vec<(u64, Conn)>> = Mutex::new(Vec::new());
        let active = AtomicUsize::new(0);
        let served = AtomicUsize::new(0);
        let next_id = AtomicU64::new(0);
        let writer_busy = AtomicBool::new(false);
        let result = std::thread::scope(|scope| -> Result<()> {
            self.set_nonblocking(true)?;
            loop {
                if stop.load(Ordering::Acquire)
                    || (self.options.once
                        && served.load(Ordering::Acquire) > 0
                        && active.load(Ordering::Acquire) == 0)
                {
                    break;
                }
                let (conn, peer) = match self.accept() {
                    Ok(c) => c,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        std::thread::sleep(POLL);
                        continue;
                    }
                    // A client that went away before it was accepted, or
                    // too many open files: wait a little and go on.
                    Err(_) => {
                        std::thread::sleep(POLL);
                        continue;
                    }
                };
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let Ok(registered) = conn.try_clone() else {
                    continue;
                };
                lock(&conns).push((id, registered));
                active.fetch_add(1, Ordering::AcqRel);
                served.fetch_add(1, Ordering::AcqRel);
                let (conns, active, writer_busy, server) = (&conns, &active, &writer_busy, &self);
                scope.spawn(move || {
                    server.serve_client(conn, &peer, writer_busy, stop, events);
                    lock(conns).retain(|(i, _)| *i != id);
                    active.fetch_sub(1, Ordering::AcqRel);
                });
            }
            // Wake every session blocked in a read; each ends at its next
            // message boundary, after the request it is serving.
            for (_, c) in lock(&conns).iter() {
                c.shutdown();
            }
            Ok(())
        });
        self.cleanup();
        result?;
        let image = Arc::try_unwrap(self.image)
            .map_err(|_| Error::InvalidArgument("a session still holds the image".into()))?
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        image.close()
    }

    fn set_nonblocking(&self, yes: bool) -> Result<()> {
        let r = match &self.listener {
            Listener::Tcp(l) => l.set_nonblocking(yes),
            #[cfg(unix)]
            Listener::Unix(l, _) => l.set_nonblocking(yes),
        };
        r.map_err(|e| Error::io(format!("listening on {}", self.address), e))
    }

    fn accept(&self) -> io::Result<(Conn, String)> {
        match &self.listener {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                s.set_nonblocking(false)?;
                // Replies are written whole; do not wait to fill packets.
                s.set_nodelay(true)?;
                Ok((Conn::Tcp(s), peer.to_string()))
            }
            #[cfg(unix)]
            Listener::Unix(l, path) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Ok((Conn::Unix(s), path.display().to_string()))
            }
        }
    }

    fn cleanup(&self) {
        #[cfg(unix)]
        if let Listener::Unix(_, path) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
    }

    /// One client, start to end, on its own thread.
    fn serve_client(
        &self,
        conn: Conn,
        peer: &str,
        writer_busy: &AtomicBool,
        stop: &AtomicBool,
        events: &(dyn Fn(Event<'_>) + Sync),
    ) {
        let is_writer = self.options.writable
            && writer_busy
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        let backend = if self.options.writable {
            Ok(ImageBackend::new(Arc::clone(&self.image), is_writer))
        } else {
            (self.opener)().map(|img| ImageBackend::new(Arc::new(Mutex::new(img)), false))
        };
        let mut backend = match backend {
            Ok(b) => b,
            Err(e) => {
                let end = Err(SessionError::Io(io::Error::other(format!(
                    "opening the image for this client: {e}"
                ))));
                events(Event::Disconnected { peer, end: &end });
                return;
            }
        };
        events(Event::Connected {
            peer,
            writer: is_writer,
        });
        let end = match (conn.try_clone(), conn.try_clone()) {
            (Ok(writer), Ok(control)) => {
                let limit = Some(self.options.handshake_timeout).filter(|t| !t.is_zero());
                match control.set_read_timeout(limit) {
                    Ok(()) => {
                        let mut lift = || {
                            let _ = control.set_read_timeout(None);
                        };
                        run_session_with(conn, writer, &self.info, &mut backend, stop, &mut lift)
                    }
                    Err(e) => Err(SessionError::Io(e)),
                }
            }
            (Err(e), _) | (_, Err(e)) => Err(SessionError::Io(e)),
        };
        if is_writer {
            // Whatever way the writer left, what it wrote becomes durable.
            if let Err(e) = backend.flush() {
                events(Event::FlushFailed(&e));
            }
            writer_busy.store(false, Ordering::Release);
        }
        events(Event::Disconnected { peer, end: &end });
    }
}

/// Removes a socket left by a server that was killed; refuses to remove
/// anything else.
#[cfg(unix)]
fn remove_stale_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(Error::InvalidArgument(format!(
                    "{} is the socket of a running server",
                    path.display()
                )));
            }
            std::fs::remove_file(path)
                .map_err(|e| Error::io(format!("removing the old socket {}", path.display()), e))
        }
        Ok(_) => Err(Error::InvalidArgument(format!(
            "{} exists and is not a socket",
            path.display()
        ))),
        Err(_) => Ok(()),
    }
}
