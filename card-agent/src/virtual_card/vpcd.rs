//! The card side of vsmartcard's vpcd protocol (virtualsmartcard 0.8, `vpcd.c`).
//!
//! TCP to the vpcd reader driver inside pcscd (port 35963 for `Virtual PCD 00 00`). Each message,
//! both ways, is a 2-byte big-endian length and a payload. A 1-byte payload from vpcd is control:
//! `00` power off, `01` power on, `02` reset (no reply), `04` get ATR (the card answers with it).
//! Anything longer is a C-APDU, answered with the R-APDU. Closing the socket removes the card.
//!
//! vpcd writes length and payload separately, so with delayed ACKs each APDU would cost ~48 ms;
//! the card re-arms `TCP_QUICKACK` before every read (Linux).

use super::{VirtualCard, lock};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// vpcd's port for the first virtual reader (`Virtual PCD 00 00`).
pub const DEFAULT_PORT: u16 = 35963;

const CTRL_POWER_OFF: u8 = 0x00;
const CTRL_POWER_ON: u8 = 0x01;
const CTRL_RESET: u8 = 0x02;
const CTRL_GET_ATR: u8 = 0x04;

/// Connects to vpcd, retrying until `timeout` (pcscd may still be starting).
pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    loop {
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address for vpcd");
        for a in &addrs {
            match TcpStream::connect_timeout(a, Duration::from_secs(1)) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Err(e) => last_error = e,
            }
        }
        if Instant::now() >= deadline {
            return Err(last_error);
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Serves `card` on an open vpcd connection until vpcd closes it (or [`Running::remove`]).
pub fn serve<C: VirtualCard>(card: &Mutex<C>, mut stream: TcpStream) -> io::Result<()> {
    loop {
        quickack(&stream);
        let mut len = [0u8; 2];
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if is_closed(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u16::from_be_bytes(len) as usize;
        let mut payload = vec![0u8; len];
        quickack(&stream);
        match stream.read_exact(&mut payload) {
            Ok(()) => {}
            Err(e) if is_closed(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
        let reply = match payload.as_slice() {
            [] => return Ok(()),
            [CTRL_POWER_OFF] | [CTRL_POWER_ON] | [CTRL_RESET] => {
                lock(card).reset();
                continue;
            }
            [CTRL_GET_ATR] => lock(card).atr(),
            [other] => {
                tracing::warn!(control = other, "unknown vpcd control byte");
                continue;
            }
            apdu => lock(card).process(apdu),
        };
        if reply.is_empty() {
            // The chip died mid-command: the card leaves the reader (vpcd would wait forever
            // for a zero-length answer; a closed socket is what a dead card process gives).
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
        zeroize::Zeroize::zeroize(&mut payload);
        let mut message = Vec::with_capacity(2 + reply.len());
        let reply_len = u16::try_from(reply.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "response over 64 KiB"))?;
        message.extend_from_slice(&reply_len.to_be_bytes());
        message.extend_from_slice(&reply);
        stream.write_all(&message)?;
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    )
}

#[cfg(target_os = "linux")]
fn quickack(stream: &TcpStream) {
    // Best effort: without it every APDU waits for the delayed ACK timer.
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

#[cfg(not(target_os = "linux"))]
fn quickack(_stream: &TcpStream) {}

/// A virtual card inserted into a vpcd reader, served on a background thread.
pub struct Running<C> {
    card: Arc<Mutex<C>>,
    stream: TcpStream,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl<C: VirtualCard + 'static> Running<C> {
    /// Inserts `card` into the vpcd reader at `addr`.
    pub fn insert(card: C, addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<Self> {
        Self::insert_shared(Arc::new(Mutex::new(card)), addr, timeout)
    }

    /// Inserts a card that the caller keeps a handle on.
    pub fn insert_shared(
        card: Arc<Mutex<C>>,
        addr: impl ToSocketAddrs,
        timeout: Duration,
    ) -> io::Result<Self> {
        let stream = connect(addr, timeout)?;
        let serving = stream.try_clone()?;
        let shared = Arc::clone(&card);
        let thread = std::thread::Builder::new()
            .name("vpcd-card".into())
            .spawn(move || serve(&shared, serving))?;
        Ok(Running {
            card,
            stream,
            thread: Some(thread),
        })
    }

    /// The card, for inspection.
    pub fn card(&self) -> std::sync::MutexGuard<'_, C> {
        lock(&self.card)
    }

    /// Pulls the card out of the reader and waits for the serving thread.
    pub fn remove(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        let _ = self.stream.shutdown(Shutdown::Both);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("vpcd card thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl<C> Drop for Running<C> {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
