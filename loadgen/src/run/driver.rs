//! A client-driver thread: owns a share of the simulated participants, each
//! with its own UDP socket on 127.0.0.1 (the engine routes by source
//! address) or its own TCP connection to the engine's ICE-TCP candidate
//! (RFC 4571 frames), and drives them with the real clock.
//!
//! The loop: wait (the `polling` crate: epoll) for a readable socket (or a
//! TCP connection that can take queued bytes again), the
//! next deadline (sub-millisecond) or a wake from the orchestrator; read each readable socket,
//! stamping every datagram (TCP: every complete frame) with `Instant::now()` as `recv` returns; pass it
//! through the participant's receive-path impairment (a seeded
//! [`piazza::sim::Link`]: loss, delay, downlink cap) into the client; run
//! due client timers (media generation, str0m timers) and delayed
//! datagrams; send what the clients produced; feed the clients' arrival
//! logs to the meters. Commands (add, remove, speak, open the window, stop)
//! come from the orchestrator over a channel.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use piazza::sim::client::Arrival;
use piazza::sim::{Link, SimClient, TcpLink};

use crate::metrics::{
    Collector, LatencyHistogram, MediaTotals, ParticipantMeter, ParticipantResult, PauseWatch,
};
use crate::run::poll::{Poller, Waker};

/// Datagrams read from one socket per wakeup before the others get a turn.
const READ_BUDGET: usize = 64;
/// Bytes read from one TCP connection per wakeup before the others get a
/// turn (about as many packets as [`READ_BUDGET`]).
const TCP_READ_BUDGET: usize = 64 * 1024;
/// How often the live counters for the progress line are refreshed.
const LIVE_INTERVAL: Duration = Duration::from_millis(250);
/// A client whose timer is due again right after being driven waits this
/// long (str0m can ask for "now" repeatedly; never spin on it).
const MIN_REARM: Duration = Duration::from_micros(50);
/// With a starvation hook (`starve_clients_ms`), the thread sleeps once per
/// this period during the window.
const STARVE_PERIOD: Duration = Duration::from_millis(200);
/// A connected participant that received nothing for this long has lost
/// its session (`Scenario::rejoin`): a live one gets media, RTCP and data
/// channel traffic many times a second.
pub const LOST_AFTER: Duration = Duration::from_secs(3);

/// A participant whose session was lost (`Scenario::rejoin`), reported by
/// its driver once.
#[derive(Debug, Clone)]
pub struct Lost {
    /// The participant's key.
    pub key: u64,
    /// When it last received a datagram.
    pub last_rx: Instant,
    /// When the driver noticed.
    pub noticed: Instant,
    /// Why: `silent`, `ice_closed` or the server's `closing` reason.
    pub reason: String,
}

/// How a client reaches the engine.
pub enum ClientSocket {
    /// Its own UDP socket (nonblocking, bound to the address in its offer).
    Udp(UdpSocket),
    /// A TCP connection to the engine's ICE-TCP candidate, opened on the
    /// client's first send (its offer has only an active TCP candidate).
    Tcp(TcpLink),
}

/// A joined participant handed to a driver.
pub struct NewClient {
    /// Unique key of this participant in the run.
    pub key: u64,
    /// The peer, its answer already applied.
    pub client: SimClient,
    /// Its socket, or its TCP connection.
    pub socket: ClientSocket,
    /// Its measurements.
    pub meter: ParticipantMeter,
    /// Receive-path impairment, if any.
    pub link: Option<Link>,
    /// Whether this peer is a participant of the report. False for a
    /// publish-only companion peer (on Janus a participant is two peers:
    /// its publisher and its subscriber, which carries the meter): driven
    /// like the others, but neither reported nor counted as joined.
    pub measured: bool,
}

/// What the orchestrator asks of a driver.
pub enum Command {
    /// Start driving a participant.
    Add(Box<NewClient>),
    /// The participant left (the engine was told): close and finalize it.
    Remove(u64),
    /// Start or stop talking.
    Speaking(u64, bool),
    /// The measurement window opens now.
    StartWindow,
    /// Finalize everyone and end the thread.
    Stop,
}

/// Counters the driver publishes for the progress line.
#[derive(Debug, Default)]
pub struct Live {
    /// Participants whose ICE + DTLS completed.
    pub connected: AtomicUsize,
    /// Media packets received so far.
    pub packets: AtomicU64,
    /// p99 latency over the last interval, microseconds.
    pub recent_p99_us: AtomicU64,
}

/// What a driver measured, returned when it stops.
pub struct DriverOutput {
    /// Latency histograms, packet counts and time series.
    pub collector: Collector,
    /// Loss, jitter, freezes, switches.
    pub totals: MediaTotals,
    /// Join and first-frame outcomes of everyone it drove.
    pub participants: Vec<ParticipantResult>,
    /// CPU time of the thread.
    pub cpu: Duration,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
    /// Transmits to a non-loopback destination, not sent.
    pub blocked: u64,
    /// How late client timers ran against their deadline in the window,
    /// microseconds (the load generator's own health).
    pub lateness: LatencyHistogram,
    /// CPU time of the thread in the measurement window.
    pub window_cpu: Duration,
    /// Length of the window as this thread saw it.
    pub window_wall: Duration,
}

/// What a driver is told when it starts.
pub struct DriverConfig {
    /// The trailers' time base.
    pub epoch: Instant,
    /// The start of the run.
    pub t0: Instant,
    /// The time-series width.
    pub bucket: Duration,
    /// Test hook: sleep this long every 200 ms of the window, so the
    /// clients fall behind their schedule on purpose (the validity check
    /// must catch it); `None` in real runs.
    pub starve: Option<Duration>,
    /// Where to report participants whose session was lost
    /// (`Scenario::rejoin`); `None`: nobody watches for that.
    pub lost: Option<Sender<Lost>>,
}

/// The orchestrator's side of a driver thread.
pub struct DriverHandle {
    tx: Sender<Command>,
    waker: Waker,
    thread: Option<JoinHandle<DriverOutput>>,
    /// Live counters.
    pub live: Arc<Live>,
}

impl DriverHandle {
    /// Queue a command and wake the thread.
    pub fn send(&self, cmd: Command) {
        // The thread only ends on Stop, after which nothing is sent.
        let _ = self.tx.send(cmd);
        self.waker.wake();
    }

    /// Stop the thread (if not yet asked to) and collect what it measured;
    /// `None` if it panicked.
    pub fn join(mut self) -> Option<DriverOutput> {
        self.send(Command::Stop);
        self.thread.take()?.join().ok()
    }
}

impl Drop for DriverHandle {
    /// A handle dropped without [`DriverHandle::join`] (an error ended the
    /// run) still stops its thread.
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.send(Command::Stop);
        }
    }
}

/// Start driver thread number `index`.
pub fn spawn(index: usize, config: DriverConfig) -> io::Result<DriverHandle> {
    let DriverConfig {
        epoch,
        t0,
        bucket,
        starve,
        lost,
    } = config;
    let poller = Poller::new()?;
    let waker = poller.waker();
    let (tx, rx) = crossbeam_channel::unbounded();
    let live = Arc::new(Live::default());
    let driver = Driver {
        poller,
        rx,
        entries: Vec::new(),
        free: Vec::new(),
        by_key: HashMap::new(),
        timers: BinaryHeap::new(),
        delayed: BinaryHeap::new(),
        order: 0,
        epoch,
        t0,
        collector: Collector::new(t0, bucket),
        totals: MediaTotals::default(),
        results: Vec::new(),
        arrivals: Vec::new(),
        window_start: None,
        live: live.clone(),
        next_live: Instant::now() + LIVE_INTERVAL,
        send_errors: 0,
        blocked: 0,
        lateness: LatencyHistogram::new(),
        window_cpu_start: Duration::ZERO,
        starve,
        next_starve: None,
        lost,
    };
    let thread = std::thread::Builder::new()
        .name(format!("loadgen-clients-{index}"))
        .spawn(move || driver.run())?;
    Ok(DriverHandle {
        tx,
        waker,
        thread: Some(thread),
        live,
    })
}

struct Entry {
    key: u64,
    client: SimClient,
    socket: ClientSocket,
    /// A TCP client's connection as the poller watches it: a duplicate of
    /// its descriptor, so it is removed from the poller before it closes
    /// even when the connection closes itself (the engine hung up).
    tcp_watch: Option<OwnedFd>,
    /// The poller also watches `tcp_watch` for writability.
    tcp_writable: bool,
    meter: ParticipantMeter,
    watch: PauseWatch,
    link: Option<Link>,
    scheduled: Instant,
    measured: bool,
    /// When it last received a datagram (or was added).
    last_rx: Instant,
    /// Reported lost already.
    lost: bool,
}

/// A datagram held back by the receive-path delay.
struct Delayed {
    at: Instant,
    order: u64,
    index: usize,
    key: u64,
    source: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(o.at, o.order))
    }
}

struct Driver {
    poller: Poller,
    rx: Receiver<Command>,
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_key: HashMap<u64, usize>,
    /// (deadline, entry index); stale when the entry's `scheduled` differs.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    order: u64,
    epoch: Instant,
    t0: Instant,
    collector: Collector,
    totals: MediaTotals,
    results: Vec<ParticipantResult>,
    arrivals: Vec<Arrival>,
    window_start: Option<Instant>,
    live: Arc<Live>,
    next_live: Instant,
    send_errors: u64,
    blocked: u64,
    lateness: LatencyHistogram,
    window_cpu_start: Duration,
    starve: Option<Duration>,
    next_starve: Option<Instant>,
    lost: Option<Sender<Lost>>,
}

impl Driver {
    fn run(mut self) -> DriverOutput {
        let mut ready = Vec::with_capacity(256);
        let mut buf = vec![0u8; 2048];
        loop {
            if self.run_commands() {
                break;
            }
            let deadline = self.next_deadline();
            ready.clear();
            if let Err(e) = self.poller.wait(deadline, &mut ready) {
                // Not expected; do not spin on it.
                eprintln!("loadgen: epoll_wait failed: {e}");
                std::thread::sleep(Duration::from_millis(1));
            }
            for &token in &ready {
                self.read_socket(token, &mut buf);
            }
            let now = Instant::now();
            self.run_delayed(now);
            self.run_timers(now);
            if now >= self.next_live {
                self.publish_live(now);
            }
            self.starve_if_asked(now);
        }
        self.finish()
    }

    fn next_deadline(&mut self) -> Instant {
        let mut t = self.next_live;
        while let Some(Reverse((at, i))) = self.timers.peek().copied() {
            if self.entries[i].as_ref().is_some_and(|e| e.scheduled == at) {
                t = t.min(at);
                break;
            }
            self.timers.pop();
        }
        if let Some(Reverse(d)) = self.delayed.peek() {
            t = t.min(d.at);
        }
        t
    }

    /// Returns true on Stop.
    fn run_commands(&mut self) -> bool {
        loop {
            let cmd = match self.rx.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            };
            let now = Instant::now();
            match cmd {
                Command::Add(c) => self.add(*c, now),
                Command::Remove(key) => self.remove(key, now),
                Command::Speaking(key, on) => {
                    if let Some(e) = self
                        .by_key
                        .get(&key)
                        .and_then(|&i| self.entries[i].as_mut())
                    {
                        e.client.set_speaking(on);
                    }
                }
                Command::StartWindow => {
                    self.window_start = Some(now);
                    self.window_cpu_start = thread_cpu_time();
                    self.next_starve = self.starve.map(|_| now);
                    for e in self.entries.iter_mut().flatten() {
                        e.meter.start_window(now);
                    }
                }
                Command::Stop => return true,
            }
        }
    }

    fn add(&mut self, c: NewClient, now: Instant) {
        let index = self.free.pop().unwrap_or_else(|| {
            self.entries.push(None);
            self.entries.len() - 1
        });
        // A TCP client's connection opens on its first send, and is
        // watched from then on (`watch_tcp`).
        if let ClientSocket::Udp(socket) = &c.socket
            && let Err(e) = self.poller.add(socket.as_fd(), index)
        {
            eprintln!("loadgen: cannot watch a client socket: {e}");
        }
        let mut entry = Entry {
            key: c.key,
            client: c.client,
            socket: c.socket,
            tcp_watch: None,
            tcp_writable: false,
            meter: c.meter,
            watch: PauseWatch::default(),
            link: c.link,
            scheduled: now,
            measured: c.measured,
            last_rx: now,
            lost: false,
        };
        if let Some(w) = self.window_start {
            entry.meter.start_window(w);
        }
        self.by_key.insert(c.key, index);
        self.entries[index] = Some(entry);
        // Start ICE: the first timeout sends the binding requests.
        if let Some(e) = self.entries[index].as_mut() {
            e.client.handle_timeout(now);
        }
        self.after_io(index, now, false);
    }

    fn remove(&mut self, key: u64, now: Instant) {
        let Some(index) = self.by_key.remove(&key) else {
            return;
        };
        let Some(mut e) = self.entries[index].take() else {
            return;
        };
        e.client.close(now);
        self.flush_transmits_of(&mut e, index);
        match &e.socket {
            ClientSocket::Udp(socket) => self.poller.remove(socket.as_fd()),
            ClientSocket::Tcp(_) => {
                if let Some(fd) = e.tcp_watch.take() {
                    self.poller.remove(fd.as_fd());
                }
            }
        }
        self.finalize(e);
        self.free.push(index);
    }

    fn finalize(&mut self, mut e: Entry) {
        if !e.measured {
            return;
        }
        e.client.take_arrivals(&mut self.arrivals);
        for a in self.arrivals.drain(..) {
            e.meter.on_arrival(&a, self.epoch, &mut self.collector);
        }
        let now = Instant::now();
        e.watch.update(&e.client, &mut e.meter, now);
        self.results
            .push(e.meter.result(e.client.connected_at(), self.t0));
        e.meter.add_totals(now, &mut self.totals);
        self.totals.add_e2ee(e.client.stats());
    }

    fn read_socket(&mut self, index: usize, buf: &mut [u8]) {
        if let Some(Some(Entry {
            socket: ClientSocket::Tcp(_),
            ..
        })) = self.entries.get(index)
        {
            self.read_tcp(index);
            return;
        }
        let mut last = None;
        for _ in 0..READ_BUDGET {
            let Some(e) = self.entries.get_mut(index).and_then(|e| e.as_mut()) else {
                return;
            };
            let ClientSocket::Udp(socket) = &e.socket else {
                return;
            };
            let (n, source) = match socket.recv_from(buf) {
                Ok(r) => r,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors surface here (ECONNREFUSED after the engine
                // closed); nothing to read.
                Err(_) => break,
            };
            // Stamped as the datagram leaves the socket.
            let at = Instant::now();
            e.last_rx = at;
            let deliver_at = match e.link.as_mut() {
                None => Some(at),
                Some(link) => link.send(at, n),
            };
            match deliver_at {
                None => {} // Lost on the impaired receive path.
                Some(t) if t <= at => {
                    e.client.handle_datagram(at, source, &buf[..n]);
                    last = Some(at);
                }
                Some(t) => {
                    self.order += 1;
                    self.delayed.push(Reverse(Delayed {
                        at: t,
                        order: self.order,
                        index,
                        key: e.key,
                        source,
                        data: buf[..n].to_vec(),
                    }));
                }
            }
        }
        if let Some(at) = last {
            self.after_io(index, at, false);
        }
    }

    /// A TCP client's connection is ready: hand the kernel what waits to
    /// be sent, and take in every complete frame (through the receive-path
    /// impairment, as a UDP client's datagrams).
    fn read_tcp(&mut self, index: usize) {
        let Some(e) = self.entries.get_mut(index).and_then(|e| e.as_mut()) else {
            return;
        };
        let ClientSocket::Tcp(tcp) = &mut e.socket else {
            return;
        };
        tcp.flush();
        let (client, impairment, key) = (&mut e.client, &mut e.link, e.key);
        let (delayed, order) = (&mut self.delayed, &mut self.order);
        let mut last = None;
        tcp.receive(TCP_READ_BUDGET, |source, frame| {
            // Stamped as the frame is complete.
            let at = Instant::now();
            let deliver_at = match impairment.as_mut() {
                None => Some(at),
                Some(link) => link.send(at, frame.len()),
            };
            match deliver_at {
                None => {} // Lost on the impaired receive path.
                Some(t) if t <= at => {
                    client.handle_datagram(at, source, frame);
                    last = Some(at);
                }
                Some(t) => {
                    *order += 1;
                    delayed.push(Reverse(Delayed {
                        at: t,
                        order: *order,
                        index,
                        key,
                        source,
                        data: frame.to_vec(),
                    }));
                }
            }
        });
        if let Some(at) = last {
            e.last_rx = at;
        }
        watch_tcp(&mut self.poller, index, e);
        if let Some(at) = last {
            self.after_io(index, at, false);
        }
    }

    fn run_delayed(&mut self, now: Instant) {
        while self.delayed.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(d)) = self.delayed.pop() else {
                break;
            };
            let Some(e) = self.entries.get_mut(d.index).and_then(|e| e.as_mut()) else {
                continue;
            };
            if e.key != d.key {
                continue;
            }
            // Delivered now: the arrival time includes the emulated delay.
            let at = Instant::now();
            e.client.handle_datagram(at, d.source, &d.data);
            self.after_io(d.index, at, false);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, index))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.entries[index].as_mut() else {
                continue;
            };
            if e.scheduled != at {
                continue;
            }
            if self.window_start.is_some() {
                // Measured when the driver gets to this timer, not when the
                // batch began: a long batch makes its last timers late.
                let late = Instant::now().saturating_duration_since(at);
                self.lateness.record(late.as_micros() as u64);
            }
            e.client.handle_timeout(now);
            self.after_io(index, now, true);
        }
        // Stale entries are popped as they come due; rebuild if they pile up.
        if self.timers.len() > 4 * self.entries.len() + 1024 {
            self.timers = self
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.as_ref().map(|e| Reverse((e.scheduled, i))))
                .collect();
        }
    }

    /// After any input to client `index`: send, meter, reschedule.
    fn after_io(&mut self, index: usize, now: Instant, was_timeout: bool) {
        let Some(mut e) = self.entries[index].take() else {
            return;
        };
        self.flush_transmits_of(&mut e, index);
        e.client.take_arrivals(&mut self.arrivals);
        for a in self.arrivals.drain(..) {
            e.meter.on_arrival(&a, self.epoch, &mut self.collector);
        }
        e.watch.update(&e.client, &mut e.meter, now);
        let mut t = e.client.poll_timeout();
        if was_timeout && t <= now {
            t = now + MIN_REARM;
        }
        if t != e.scheduled {
            e.scheduled = t;
            self.timers.push(Reverse((t, index)));
        }
        self.entries[index] = Some(e);
    }

    /// Send what client `e` (entry `index`) queued.
    fn flush_transmits_of(&mut self, e: &mut Entry, index: usize) {
        while let Some(t) = e.client.poll_transmit() {
            // Bounded by construction: only loopback destinations.
            if !t.destination.ip().is_loopback() {
                self.blocked += 1;
                continue;
            }
            crate::run::flood::TAP.offer(&t.contents);
            let sent = match &mut e.socket {
                ClientSocket::Udp(socket) => socket.send_to(&t.contents, t.destination).is_ok(),
                ClientSocket::Tcp(tcp) => tcp.send(t.destination, &t.contents),
            };
            if !sent {
                self.send_errors += 1;
            }
        }
        if let ClientSocket::Tcp(tcp) = &mut e.socket {
            tcp.flush();
            watch_tcp(&mut self.poller, index, e);
        }
    }

    fn publish_live(&mut self, now: Instant) {
        self.next_live = now + LIVE_INTERVAL;
        let (packets, p99) = self.collector.take_recent();
        self.live.packets.fetch_add(packets, Ordering::Relaxed);
        self.live.recent_p99_us.store(p99, Ordering::Relaxed);
        let mut connected = 0;
        for e in self.entries.iter_mut().flatten() {
            connected += (e.measured && e.client.connected_at().is_some()) as usize;
            // The client's own latency list is not used (the meters compute
            // latency from the arrival log); keep it from growing.
            drop(e.client.take_latencies());
            if let Some(tx) = &self.lost
                && !e.lost
                && let Some(reason) = lost_reason(e, now)
            {
                e.lost = true;
                let _ = tx.send(Lost {
                    key: e.key,
                    last_rx: e.last_rx,
                    noticed: now,
                    reason,
                });
            }
        }
        self.live.connected.store(connected, Ordering::Relaxed);
    }

    /// The starvation test hook: sleep through part of every period.
    fn starve_if_asked(&mut self, now: Instant) {
        if let (Some(d), Some(next)) = (self.starve, self.next_starve)
            && now >= next
        {
            self.next_starve = Some(now + STARVE_PERIOD);
            std::thread::sleep(d.min(STARVE_PERIOD));
        }
    }

    fn finish(mut self) -> DriverOutput {
        let entries: Vec<Entry> = self.entries.iter_mut().filter_map(|e| e.take()).collect();
        for e in entries {
            self.finalize(e);
        }
        let cpu = thread_cpu_time();
        let (window_cpu, window_wall) = match self.window_start {
            Some(w) => (cpu.saturating_sub(self.window_cpu_start), w.elapsed()),
            None => (Duration::ZERO, Duration::ZERO),
        };
        DriverOutput {
            lateness: self.lateness,
            window_cpu,
            window_wall,
            collector: self.collector,
            totals: self.totals,
            participants: self.results,
            cpu,
            send_errors: self.send_errors,
            blocked: self.blocked,
        }
    }
}

/// Keep the poller's view of TCP client `e` (entry `index`) current: watch
/// its connection once open, for writability too while bytes wait, and
/// stop watching it once it closed.
fn watch_tcp(poller: &mut Poller, index: usize, e: &mut Entry) {
    let ClientSocket::Tcp(tcp) = &e.socket else {
        return;
    };
    if tcp.closed {
        if let Some(fd) = e.tcp_watch.take() {
            poller.remove(fd.as_fd());
        }
        return;
    }
    if e.tcp_watch.is_none() {
        let Some(fd) = tcp.as_fd() else {
            return; // Not connected yet.
        };
        match fd.try_clone_to_owned() {
            Ok(fd) => match poller.add(fd.as_fd(), index) {
                Ok(()) => {
                    e.tcp_watch = Some(fd);
                    e.tcp_writable = false;
                }
                Err(err) => eprintln!("loadgen: cannot watch a client connection: {err}"),
            },
            Err(err) => eprintln!("loadgen: cannot watch a client connection: {err}"),
        }
    }
    let want = tcp.wants_write();
    if let Some(fd) = &e.tcp_watch
        && want != e.tcp_writable
    {
        match poller.set_writable(fd.as_fd(), index, want) {
            Ok(()) => e.tcp_writable = want,
            Err(err) => eprintln!("loadgen: cannot watch a client connection: {err}"),
        }
    }
}

/// Why a connected participant's session is over and worth a rejoin, if it
/// is: the server told it to go elsewhere (a stopping or draining node, a
/// room that moved), its ICE agent gave up, or it has heard nothing for
/// [`LOST_AFTER`]. A kicked participant or a closed room is not lost.
fn lost_reason(e: &Entry, now: Instant) -> Option<String> {
    if !e.measured || e.client.connected_at().is_none() || e.client.kicked {
        return None;
    }
    if let Some(reason) = &e.client.closing {
        return (reason.contains("shutting down") || reason.contains("moved"))
            .then(|| format!("closing: {reason}"));
    }
    if !e.client.is_alive() {
        return Some("ice_closed".into());
    }
    (now.saturating_duration_since(e.last_rx) >= LOST_AFTER).then(|| "silent".into())
}

/// CPU time the calling thread has used (user + system).
pub fn thread_cpu_time() -> Duration {
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
