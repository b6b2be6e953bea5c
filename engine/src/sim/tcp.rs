//! Driving a [`SimClient`] over a real TCP connection to an engine's ICE-TCP
//! candidate (RFC 6544 active side, RFC 4571 framing): loopback tests and
//! tools that reach an engine the way a client behind a UDP-blocking
//! firewall does.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::{ClientConfig, SimClient};

/// The address an active TCP candidate carries (RFC 6544 section 4.5: the
/// port is 9, the discard port, as the active side's real port is not
/// known before it connects).
const ACTIVE_CANDIDATE: &str = "127.0.0.1:9";

/// A client's TCP connection to the engine, opened when the client first
/// sends to the engine's TCP candidate.
#[derive(Debug, Default)]
pub struct TcpLink {
    /// SO_RCVBUF to set before connecting (a small window: a slow path).
    receive_buffer: Option<usize>,
    stream: Option<TcpStream>,
    remote: Option<SocketAddr>,
    /// Bytes received, not yet a whole frame.
    inbuf: Vec<u8>,
    /// Framed bytes not yet taken by the kernel.
    out: Vec<u8>,
    /// The engine closed the connection (or it failed).
    pub closed: bool,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
}

impl TcpLink {
    /// A link whose socket's receive buffer is `bytes` (set before it
    /// connects, so the window it advertises stays that small): a client
    /// on a path that cannot take much at once.
    pub fn with_receive_buffer(bytes: usize) -> Self {
        TcpLink {
            receive_buffer: Some(bytes),
            ..Default::default()
        }
    }

    /// The connection's own address, once connected.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The engine's address, once connected.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// Close the connection (the client vanishes, or leaves).
    pub fn close(&mut self) {
        self.stream = None;
        self.closed = true;
    }

    fn connect(&mut self, to: SocketAddr) -> bool {
        if self.closed {
            return false;
        }
        if self.stream.is_some() {
            return self.remote == Some(to);
        }
        let Ok(s) = connect(to, self.receive_buffer) else {
            self.closed = true;
            return false;
        };
        let _ = s.set_nodelay(true);
        if s.set_nonblocking(true).is_err() {
            return false;
        }
        self.stream = Some(s);
        self.remote = Some(to);
        true
    }

    fn write_pending(&mut self) {
        let Some(s) = &mut self.stream else {
            self.out.clear();
            return;
        };
        while !self.out.is_empty() {
            match s.write(&self.out) {
                Ok(0) => break,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close();
                    break;
                }
            }
        }
    }
}

fn connect(to: SocketAddr, receive_buffer: Option<usize>) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )?;
    if let Some(n) = receive_buffer {
        s.set_recv_buffer_size(n)?;
    }
    s.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

impl TcpLink {
    /// The connection's socket, once connected (to watch it for
    /// readability, or writability while [`TcpLink::wants_write`]).
    pub fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stream.as_ref().map(|s| s.as_fd())
    }

    /// Whether framed bytes wait for the kernel to take them (call
    /// [`TcpLink::flush`] when the socket is writable).
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// Queue `payload` as a frame (RFC 4571: a two-byte length first) for
    /// `to`, opening the connection on the first send; [`TcpLink::flush`]
    /// hands the queue to the kernel. False when the frame was not queued:
    /// the connection is closed or could not be opened, it goes elsewhere,
    /// or the payload is longer than a frame can say.
    pub fn send(&mut self, to: SocketAddr, payload: &[u8]) -> bool {
        let Ok(len) = u16::try_from(payload.len()) else {
            return false;
        };
        if !self.connect(to) {
            return false;
        }
        self.frames_out += 1;
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(payload);
        true
    }

    /// Hand the kernel what it will take of the framed bytes waiting.
    pub fn flush(&mut self) {
        self.write_pending();
    }

    /// Read what has arrived, up to about `max_bytes`, and pass each
    /// complete frame to `on_frame` with the engine's address; a partial
    /// frame waits for the rest. Returns the bytes read.
    pub fn receive(
        &mut self,
        max_bytes: usize,
        mut on_frame: impl FnMut(SocketAddr, &[u8]),
    ) -> usize {
        let mut buf = [0u8; 16 * 1024];
        let mut read = 0;
        while read < max_bytes {
            let Some(s) = &mut self.stream else {
                break;
            };
            match s.read(&mut buf) {
                Ok(0) => {
                    self.close();
                    break;
                }
                Ok(n) => {
                    read += n;
                    self.inbuf.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.close();
                    break;
                }
            }
        }
        let Some(from) = self.remote else {
            return read;
        };
        let mut at = 0;
        while self.inbuf.len() >= at + 2 {
            let len = u16::from_be_bytes([self.inbuf[at], self.inbuf[at + 1]]) as usize;
            if self.inbuf.len() < at + 2 + len {
                break;
            }
            self.frames_in += 1;
            on_frame(from, &self.inbuf[at + 2..at + 2 + len]);
            at += 2 + len;
        }
        self.inbuf.drain(..at);
        read
    }
}

impl SimClient {
    /// A client that reaches the engine over ICE-TCP only (see
    /// [`ClientConfig::tcp`]) and its (not yet open) connection.
    pub fn on_tcp(mut config: ClientConfig, epoch: Instant) -> (Self, TcpLink) {
        config.tcp = true;
        let addr: SocketAddr = ACTIVE_CANDIDATE.parse().expect("a valid address");
        let client = SimClient::new(config, addr, epoch, Instant::now());
        (client, TcpLink::default())
    }

    /// One round over `link` with the real clock: take in every frame
    /// waiting, run the client's timers if due, and send what it has
    /// queued (opening the connection to the engine's TCP candidate on the
    /// first send; `tap` sees each outgoing frame's payload first).
    pub fn step_tcp(&mut self, link: &mut TcpLink, mut tap: impl FnMut(&[u8])) {
        let mut frames = Vec::new();
        link.receive(usize::MAX, |from, frame| {
            frames.push((from, frame.to_vec()))
        });
        for (from, frame) in frames {
            self.handle_datagram(Instant::now(), from, &frame);
        }
        let now = Instant::now();
        if self.is_alive() && self.poll_timeout() <= now {
            self.handle_timeout(now);
        }
        while let Some(t) = self.poll_transmit() {
            if link.connect(t.destination) {
                tap(&t.contents);
                link.send(t.destination, &t.contents);
            }
        }
        link.flush();
    }
}
