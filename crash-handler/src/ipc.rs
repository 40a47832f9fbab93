//! The application's end of the socket to its watcher.
//!
//! Plain blocking Unix stream sockets: each message is a
//! [`frame header`](crate::protocol::FrameHeader) and its body, written with
//! one `writev`; a dump request waits for the watcher's reply. Everything on
//! the crash path is a system call on an already open socket: no allocation,
//! no lock, so it is safe in a signal handler.

use crate::protocol::FrameHeader;
use std::io::{IoSlice, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// How long a crash waits for the watcher to write its dump.
const DUMP_REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the watcher listens.
#[derive(Clone, Debug)]
pub(crate) enum SocketAddress {
    Path(PathBuf),
    Abstract(String),
}

impl SocketAddress {
    /// The form `crashmail watch --socket` takes: a path, or `@name`.
    pub(crate) fn as_arg(&self) -> String {
        match self {
            SocketAddress::Path(path) => path.display().to_string(),
            SocketAddress::Abstract(name) => format!("@{name}"),
        }
    }
}

/// One connection to the watcher.
#[derive(Debug)]
pub(crate) struct Client {
    socket: UnixStream,
}

impl Client {
    pub(crate) fn connect(address: &SocketAddress) -> std::io::Result<Client> {
        let socket = match address {
            SocketAddress::Path(path) => UnixStream::connect(path)?,
            SocketAddress::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                UnixStream::connect_addr(&address)?
            }
        };
        // A watcher that hangs must not hold the dying application forever.
        socket.set_read_timeout(Some(DUMP_REPLY_TIMEOUT))?;
        Ok(Client { socket })
    }

    /// Sends one message. Signal-safe.
    pub(crate) fn send_message(&self, kind: u32, body: &[u8]) -> std::io::Result<()> {
        let header = FrameHeader {
            kind,
            length: u32::try_from(body.len()).map_err(std::io::Error::other)?,
        }
        .to_bytes();
        write_all_vectored(&self.socket, &header, body)
    }

    /// Asks the watcher to dump this process as `context` describes, and
    /// waits until it has. Signal-safe.
    pub(crate) fn request_dump(
        &self,
        context: &crash_handler::CrashContext,
    ) -> std::io::Result<()> {
        self.send_message(FrameHeader::DUMP_REQUEST, context.as_bytes())?;
        let mut reply = [0u8; FrameHeader::LEN];
        (&self.socket).read_exact(&mut reply)?;
        match FrameHeader::from_bytes(&reply) {
            Some(header) if header.kind == FrameHeader::DUMP_WRITTEN => Ok(()),
            _ => Err(std::io::Error::other(
                "the watcher did not confirm the dump",
            )),
        }
    }
}

/// Writes `header` then `body` completely, in as few system calls as the
/// socket allows.
fn write_all_vectored(mut socket: &UnixStream, header: &[u8], body: &[u8]) -> std::io::Result<()> {
    let total = header.len() + body.len();
    let mut sent = 0;
    while sent < total {
        let written = if sent < header.len() {
            socket.write_vectored(&[IoSlice::new(&header[sent..]), IoSlice::new(body)])
        } else {
            socket.write(&body[sent - header.len()..])
        };
        match written {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
