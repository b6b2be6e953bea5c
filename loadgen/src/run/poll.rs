//! The client driver's wait primitive, on the maintained `polling` crate
//! (smol-rs; epoll on Linux) instead of hand-written epoll/timerfd/eventfd
//! calls: one poller over every client socket (level-triggered), woken
//! early by [`Waker::wake`] when the orchestrator queued a command.
//!
//! Why `polling` and not `mio` or the engine's own module: the driver needs
//! sub-millisecond deadlines (epoll_wait's own timeout has millisecond
//! resolution, which would delay media generation and so inflate the
//! measured latency); `polling` arms a timerfd for the timeout on Linux
//! (nanosecond resolution) while `mio` rounds it up to whole milliseconds.
//! The engine's socket module is private to its shards (another team's
//! area) and tuned for them; sharing it would couple the two.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Instant;

use polling::{Event, Events, PollMode};

/// Wakes the driver thread from another thread.
#[derive(Clone)]
pub struct Waker {
    poller: Arc<polling::Poller>,
}

impl Waker {
    /// Wake the driver (never blocks; several wakes before it runs are one).
    pub fn wake(&self) {
        // Only fails if the poller's own notification pipe is broken; the
        // driver still wakes at its next deadline.
        let _ = self.poller.notify();
    }
}

/// A poller over client sockets.
pub struct Poller {
    poller: Arc<polling::Poller>,
    events: Events,
}

impl Poller {
    /// A fresh poller.
    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            poller: Arc::new(polling::Poller::new()?),
            events: Events::new(),
        })
    }

    /// A handle that wakes this poller's [`Poller::wait`].
    pub fn waker(&self) -> Waker {
        Waker {
            poller: self.poller.clone(),
        }
    }

    /// Watch `fd` for readability (level-triggered), reported as `token`.
    /// The caller must [`Poller::remove`] it before closing it.
    pub fn add(&mut self, fd: BorrowedFd<'_>, token: usize) -> io::Result<()> {
        // SAFETY: the driver removes every socket from the poller before it
        // closes it (`Driver::remove`), or drops the poller with it (at the
        // end of the run), as `polling::Poller::add` requires.
        unsafe {
            self.poller
                .add_with_mode(&fd, Event::readable(token), PollMode::Level)
        }
    }

    /// Watch `fd` (added before) for readability, and also for
    /// writability when `writable` (a TCP client with bytes the kernel did
    /// not take yet).
    pub fn set_writable(
        &mut self,
        fd: BorrowedFd<'_>,
        token: usize,
        writable: bool,
    ) -> io::Result<()> {
        let interest = if writable {
            Event::all(token)
        } else {
            Event::readable(token)
        };
        self.poller.modify_with_mode(fd, interest, PollMode::Level)
    }

    /// Stop watching `fd` (before closing it).
    pub fn remove(&mut self, fd: BorrowedFd<'_>) {
        let _ = self.poller.delete(fd);
    }

    /// Wait until a watched socket is readable (or writable, when asked), [`Waker::wake`] was called,
    /// or `deadline` passed. Ready socket tokens are appended to `ready`.
    pub fn wait(&mut self, deadline: Instant, ready: &mut Vec<usize>) -> io::Result<()> {
        self.events.clear();
        match self.poller.wait_deadline(&mut self.events, deadline) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        ready.extend(self.events.iter().map(|ev| ev.key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn reports_readable_sockets_deadlines_and_wakes() {
        let mut p = Poller::new().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        p.add(a.as_fd(), 7).unwrap();
        let mut ready = Vec::new();
        // Nothing to read: the deadline ends the wait, sub-millisecond.
        let t = Instant::now();
        p.wait(t + Duration::from_micros(300), &mut ready).unwrap();
        assert!(ready.is_empty());
        assert!(t.elapsed() < Duration::from_millis(200));
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        p.wait(Instant::now() + Duration::from_secs(5), &mut ready)
            .unwrap();
        assert_eq!(ready, vec![7]);
        // Level-triggered: still readable until read.
        ready.clear();
        p.wait(Instant::now() + Duration::from_secs(5), &mut ready)
            .unwrap();
        assert_eq!(ready, vec![7]);
        p.remove(a.as_fd());
        // A wake from another thread ends a long wait.
        let w = p.waker();
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.wake();
        });
        ready.clear();
        let t = Instant::now();
        p.wait(t + Duration::from_secs(10), &mut ready).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        th.join().unwrap();
    }
}
