//! Driving a [`SimClient`] over a real TCP connection to an engine's ICE-TCP
//! candidate (RFC 6544 active side, RFC 4571 framing): loopback tests and
//! tools that reach an engine the way a client behind a UDP-blocking
//! firewall does.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
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
        let mut buf = [0u8; 16 * 1024];
        while let Some(s) = &mut link.stream {
            match s.read(&mut buf) {
                Ok(0) => {
                    link.close();
                    break;
                }
                Ok(n) => link.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    link.close();
                    break;
                }
            }
        }
        let mut at = 0;
        while link.inbuf.len() >= at + 2 {
            let len = u16::from_be_bytes([link.inbuf[at], link.inbuf[at + 1]]) as usize;
            if link.inbuf.len() < at + 2 + len {
                break;
            }
            let from = link.remote.expect("data only comes on a connection");
            link.frames_in += 1;
            let frame = link.inbuf[at + 2..at + 2 + len].to_vec();
            self.handle_datagram(Instant::now(), from, &frame);
            at += 2 + len;
        }
        link.inbuf.drain(..at);
        let now = Instant::now();
        if self.is_alive() && self.poll_timeout() <= now {
            self.handle_timeout(now);
        }
        while let Some(t) = self.poll_transmit() {
            if !link.connect(t.destination) {
                continue;
            }
            tap(&t.contents);
            link.frames_out += 1;
            link.out
                .extend_from_slice(&(t.contents.len() as u16).to_be_bytes());
            link.out.extend_from_slice(&t.contents);
        }
        link.write_pending();
    }
}
