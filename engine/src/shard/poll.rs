//! The shard's wait primitive: an epoll instance watching the UDP socket,
//! an eventfd doorbell that control commands ring, and with ICE-TCP the
//! listening socket and its connections.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Token of the socket in epoll events.
pub(crate) const SOCKET: u64 = 0;
/// Token of the doorbell in epoll events.
pub(crate) const DOORBELL: u64 = 1;
/// Token of the TCP listener in epoll events.
pub(crate) const LISTENER: u64 = 2;
/// Tokens from here on are TCP connections (`shard/tcp.rs` encodes them).
pub(crate) const FIRST_CONNECTION: u64 = 16;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 64;

/// An eventfd that wakes the shard thread when a command is queued.
pub(crate) struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: eventfd takes no pointers; a negative return is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Doorbell { fd })
    }

    /// Wake the shard. Never blocks: the counter only saturates after 2^64-2
    /// unconsumed rings, and then the shard is awake anyway.
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
        let r = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if r < 0 {
            tracing::debug!("doorbell ring failed: {}", io::Error::last_os_error());
        }
    }

    /// Reset the counter (the shard then drains its command queue).
    pub fn clear(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live, writable u64. A
        // nonblocking eventfd with a zero counter fails with EAGAIN, which
        // is fine: there was nothing to clear.
        let _ = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut value as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// What woke the shard.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Ready {
    pub socket: bool,
    pub doorbell: bool,
    /// The TCP listener or a connection: see [`Poller::tcp_ready`].
    pub tcp: bool,
}

/// An epoll instance over the shard's socket and doorbell (level-triggered:
/// a socket left unread after a bounded amount of work wakes us again).
pub(crate) struct Poller {
    epoll: OwnedFd,
    events: [libc::epoll_event; EVENTS],
    /// TCP tokens and their event bits from the last wait.
    tcp_ready: Vec<(u64, u32)>,
}

impl Poller {
    pub fn new(socket: RawFd, doorbell: RawFd) -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers; a negative return is an error.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        for (fd, token) in [(socket, SOCKET), (doorbell, DOORBELL)] {
            control(&epoll, libc::EPOLL_CTL_ADD, fd, token, libc::EPOLLIN as u32)?;
        }
        Ok(Poller {
            epoll,
            events: [libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            tcp_ready: Vec::with_capacity(EVENTS),
        })
    }

    /// A second descriptor of the same epoll instance, for the TCP sockets'
    /// registrations ([`EpollCtl`]).
    pub fn ctl(&self) -> io::Result<EpollCtl> {
        Ok(EpollCtl {
            epoll: self.epoll.try_clone()?,
        })
    }

    /// The TCP tokens (listener and connections) the last wait reported,
    /// with their event bits (`EPOLLIN`, `EPOLLOUT`, `EPOLLERR`, ...).
    pub fn tcp_ready(&self) -> &[(u64, u32)] {
        &self.tcp_ready
    }

    /// Wait until the socket is readable, the doorbell rang or `deadline`
    /// passed (`None`: no deadline). Never spins: a deadline less than a
    /// millisecond away waits one millisecond (epoll's resolution), a
    /// deadline in the past does not wait at all.
    pub fn wait(&mut self, deadline: Option<Instant>, now: Instant) -> io::Result<Ready> {
        let timeout_ms = timeout_ms(deadline, now);
        // SAFETY: `self.events` is a live array of `len` epoll_events the
        // kernel may write into; the epoll descriptor is open.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(Ready::default());
            }
            return Err(err);
        }
        let mut ready = Ready::default();
        self.tcp_ready.clear();
        for ev in &self.events[..n as usize] {
            // Copy out of the (packed on x86_64) struct before matching.
            let (token, bits) = (ev.u64, ev.events);
            match token {
                SOCKET => ready.socket = true,
                DOORBELL => ready.doorbell = true,
                _ => {
                    ready.tcp = true;
                    self.tcp_ready.push((token, bits));
                }
            }
        }
        Ok(ready)
    }
}

/// Registrations on the shard's epoll instance (its own descriptor of it).
pub(crate) struct EpollCtl {
    epoll: OwnedFd,
}

impl EpollCtl {
    /// Watch `fd` for `events` under `token`.
    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        control(&self.epoll, libc::EPOLL_CTL_ADD, fd, token, events)
    }

    /// Change what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        control(&self.epoll, libc::EPOLL_CTL_MOD, fd, token, events)
    }
}

fn control(epoll: &OwnedFd, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a live epoll_event the kernel only reads; the
    // descriptors are plain integers to it (a closed one is EBADF).
    let r = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut ev) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// epoll_wait's timeout: -1 for none, 0 when due, else milliseconds rounded
/// up so we never wake before the deadline and spin.
pub(crate) fn timeout_ms(deadline: Option<Instant>, now: Instant) -> libc::c_int {
    let Some(deadline) = deadline else {
        return -1;
    };
    if deadline <= now {
        return 0;
    }
    let wait = deadline - now;
    let ms = wait.as_millis() + u128::from(!wait.subsec_nanos().is_multiple_of(1_000_000));
    ms.min(libc::c_int::MAX as u128) as libc::c_int
}

/// CPU time the calling thread has used (user + system).
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec; the clock id is a Linux constant.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_and_never_spin() {
        let now = Instant::now();
        assert_eq!(timeout_ms(None, now), -1);
        assert_eq!(timeout_ms(Some(now), now), 0);
        assert_eq!(timeout_ms(Some(now - Duration::from_millis(5)), now), 0);
        assert_eq!(timeout_ms(Some(now + Duration::from_micros(10)), now), 1);
        assert_eq!(timeout_ms(Some(now + Duration::from_millis(20)), now), 20);
        assert_eq!(
            timeout_ms(Some(now + Duration::from_micros(20_001)), now),
            21
        );
    }

    #[test]
    fn doorbell_wakes_the_poller() {
        let bell = Doorbell::new().unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut poller = Poller::new(sock.as_raw_fd(), bell.as_raw_fd()).unwrap();
        let now = Instant::now();
        let r = poller.wait(Some(now), now).unwrap();
        assert!(!r.doorbell && !r.socket);
        bell.ring();
        let r = poller
            .wait(Some(now + Duration::from_secs(5)), now)
            .unwrap();
        assert!(r.doorbell);
        bell.clear();
        let r = poller.wait(Some(now), now).unwrap();
        assert!(!r.doorbell);
    }

    #[test]
    fn thread_cpu_time_advances() {
        let a = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_time() > a);
    }
}
