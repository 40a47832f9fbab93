//! The watcher's end of the link to the application.
//!
//! One thread waits in `accept`, and one per connection waits in `read`.
//! Nothing polls: an idle watcher is woken only when the application says
//! something, so it costs no CPU while the application runs. The frames are
//! [`FrameHeader`]s and their bodies; a dump request is answered once the
//! dump is written, so the application stays stopped in its handler while
//! the dump is taken.

use crashmail_handler::protocol::FrameHeader;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the watcher does with what arrives.
pub trait LinkHandler: Send + Sync + 'static {
    /// A message of one of the application's kinds.
    fn on_message(&self, kind: u32, body: Vec<u8>);
    /// A dump request; returns once the dump is written or has failed.
    fn on_dump_request(
        &self,
        context: Result<minidump_writer::crash_context::CrashContext, String>,
    );
    /// The last connection has closed: the application is gone.
    fn on_all_disconnected(&self);
    /// The listening socket failed; no more connections can come.
    fn on_failure(&self, why: String);
}

/// A bound socket, not yet served.
pub struct LinkServer {
    listener: UnixListener,
    path: Option<PathBuf>,
}

/// Removes the socket file when the watcher is done with it.
pub struct SocketFile(Option<PathBuf>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl LinkServer {
    /// Binds `socket`: a path, or `@name` for an abstract socket.
    pub fn bind(socket: &str) -> std::io::Result<LinkServer> {
        match socket.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                Ok(LinkServer {
                    listener: UnixListener::bind_addr(&address)?,
                    path: None,
                })
            }
            None => Ok(LinkServer {
                listener: UnixListener::bind(socket)?,
                path: Some(PathBuf::from(socket)),
            }),
        }
    }

    /// Serves connections on background threads for the rest of the
    /// process's life.
    pub fn serve(self, handler: Arc<dyn LinkHandler>) -> std::io::Result<SocketFile> {
        let LinkServer { listener, path } = self;
        let open = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("crashmail-accept".into())
            .spawn(move || loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        open.fetch_add(1, Ordering::SeqCst);
                        let handler = handler.clone();
                        let open = open.clone();
                        let spawned = std::thread::Builder::new()
                            .name("crashmail-conn".into())
                            .spawn(move || {
                                serve_connection(stream, handler.as_ref());
                                if open.fetch_sub(1, Ordering::SeqCst) == 1 {
                                    handler.on_all_disconnected();
                                }
                            });
                        if let Err(e) = spawned {
                            log::error!("no thread for a new connection: {e}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        handler.on_failure(format!("accept: {e}"));
                        return;
                    }
                }
            })?;
        Ok(SocketFile(path))
    }
}

/// Reads frames until the application closes the connection.
fn serve_connection(mut stream: UnixStream, handler: &dyn LinkHandler) {
    loop {
        let mut header = [0u8; FrameHeader::LEN];
        if stream.read_exact(&mut header).is_err() {
            return;
        }
        let Some(header) = FrameHeader::from_bytes(&header) else {
            log::warn!("a frame too large to be the application's; connection closed");
            return;
        };
        let mut body = vec![0u8; header.length as usize];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        if header.kind == FrameHeader::DUMP_REQUEST {
            let context = minidump_writer::crash_context::CrashContext::from_bytes(&body)
                .ok_or_else(|| {
                    format!(
                        "the dump request carried {} bytes, not a crash context of this build ({})",
                        body.len(),
                        std::mem::size_of::<minidump_writer::crash_context::CrashContext>()
                    )
                });
            handler.on_dump_request(context);
            let reply = FrameHeader {
                kind: FrameHeader::DUMP_WRITTEN,
                length: 0,
            };
            if stream.write_all(&reply.to_bytes()).is_err() {
                return;
            }
        } else {
            handler.on_message(header.kind, body);
        }
    }
}
