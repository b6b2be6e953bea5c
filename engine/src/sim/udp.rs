//! Driving a [`SimClient`] over a real UDP socket (loopback tests, examples
//! and tools that talk to an engine through the network).

use std::net::UdpSocket;
use std::time::Instant;

use super::{ClientConfig, SimClient};
use crate::{Engine, Error, JoinOptions, Joined, RoomId};

impl SimClient {
    /// A client on its own non-blocking loopback UDP socket.
    pub fn on_loopback(config: ClientConfig, epoch: Instant) -> std::io::Result<(Self, UdpSocket)> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        let client = SimClient::new(config, socket.local_addr()?, epoch, Instant::now());
        Ok((client, socket))
    }

    /// Join `room` on an embedded `engine`: offer, take the answer, and run
    /// the first timers (the client starts ICE toward the engine's port).
    pub fn join_engine(
        &mut self,
        engine: &Engine,
        room: RoomId,
        options: JoinOptions,
    ) -> Result<Joined, Error> {
        let joined = engine.join(room, self.offer(), options)?;
        self.accept_answer(&joined.answer)
            .map_err(Error::Negotiation)?;
        self.handle_timeout(Instant::now());
        Ok(joined)
    }

    /// One round on a non-blocking `socket` with the real clock: take in
    /// every datagram waiting, run the client's timers if due, and send
    /// what it has queued (`tap` sees each outgoing datagram first).
    /// `buf` must hold the largest datagram (2000 bytes will do).
    pub fn step_udp(&mut self, socket: &UdpSocket, buf: &mut [u8], mut tap: impl FnMut(&[u8])) {
        while let Ok((n, from)) = socket.recv_from(buf) {
            self.handle_datagram(Instant::now(), from, &buf[..n]);
        }
        let now = Instant::now();
        if self.is_alive() && self.poll_timeout() <= now {
            self.handle_timeout(now);
        }
        while let Some(t) = self.poll_transmit() {
            tap(&t.contents);
            let _ = socket.send_to(&t.contents, t.destination);
        }
    }
}
