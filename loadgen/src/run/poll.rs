//! The client driver's wait primitive: one epoll instance over every
//! client socket, a timerfd for sub-millisecond deadlines (epoll_wait's own
//! timeout has millisecond resolution, which would delay media generation
//! and so inflate the measured latency), and an eventfd doorbell the
//! orchestrator rings after queueing a command.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Token of the timerfd.
pub const TIMER: u64 = u64::MAX;
/// Token of the doorbell.
pub const DOORBELL: u64 = u64::MAX - 1;

/// An eventfd that wakes the driver thread.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A fresh, nonblocking eventfd.
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: eventfd takes no pointers; a negative return is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor nothing else owns.
        Ok(Doorbell {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Wake the driver (never blocks; a saturated counter means it is awake).
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
        let _ = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

/// Read and discard an eventfd/timerfd counter (EAGAIN when zero is fine).
fn drain_counter(fd: RawFd) {
    let mut value: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live, writable u64.
    let _ = unsafe {
        libc::read(
            fd,
            (&mut value as *mut u64).cast(),
            std::mem::size_of::<u64>(),
        )
    };
}

/// epoll over sockets, a timerfd and a doorbell.
pub struct Poller {
    epoll: OwnedFd,
    timer: OwnedFd,
    doorbell_fd: RawFd,
    armed: Option<Instant>,
    events: Vec<libc::epoll_event>,
}

impl Poller {
    /// An epoll instance watching `doorbell` and its own timerfd.
    pub fn new(doorbell: &Doorbell) -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers; a negative return is an error.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ep` is a freshly created descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        // SAFETY: timerfd_create takes no pointers; a negative return is an error.
        let tfd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if tfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `tfd` is a freshly created descriptor nothing else owns.
        let timer = unsafe { OwnedFd::from_raw_fd(tfd) };
        let mut p = Poller {
            epoll,
            timer,
            doorbell_fd: doorbell.fd.as_raw_fd(),
            armed: None,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
        };
        p.add(p.timer.as_raw_fd(), TIMER)?;
        p.add(p.doorbell_fd, DOORBELL)?;
        Ok(p)
    }

    /// Watch `fd` for readability (level-triggered), reported as `token`.
    pub fn add(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a live epoll_event the kernel only reads.
        let r =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stop watching `fd` (before closing it).
    pub fn remove(&mut self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is a live epoll_event (ignored by DEL on modern kernels).
        let _ =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    fn arm(&mut self, deadline: Instant, now: Instant) -> io::Result<()> {
        if self.armed == Some(deadline) {
            return Ok(());
        }
        // A zero it_value disarms; wait at least 1 us instead.
        let wait = deadline
            .saturating_duration_since(now)
            .max(Duration::from_micros(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a live itimerspec the kernel only reads; the old
        // value pointer may be null.
        let r = unsafe {
            libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut())
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(deadline);
        Ok(())
    }

    /// Wait until a watched socket is readable, the doorbell rang or
    /// `deadline` passed. Readable socket tokens are appended to `ready`;
    /// the timer and doorbell are consumed here.
    pub fn wait(&mut self, deadline: Instant, ready: &mut Vec<u64>) -> io::Result<()> {
        let now = Instant::now();
        let timeout_ms = if deadline <= now {
            0
        } else {
            self.arm(deadline, now)?;
            // The timerfd wakes us; this is only a safety net.
            1000
        };
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
                return Ok(());
            }
            return Err(err);
        }
        for ev in &self.events[..n as usize] {
            // Copy out of the (packed on x86_64) struct before matching.
            let token = ev.u64;
            match token {
                TIMER => {
                    drain_counter(self.timer.as_raw_fd());
                    self.armed = None;
                }
                DOORBELL => drain_counter(self.doorbell_fd),
                t => ready.push(t),
            }
        }
        Ok(())
    }
}
