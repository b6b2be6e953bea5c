//! Server configuration: defaults that serve on loopback, overridden by a
//! TOML file, then environment variables, then flags.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ice::IceServerConfig;

const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Everything the reference server can be told. Every field has a default
/// that serves on loopback; see `docs/api.md` section 4 for the TOML keys.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the HTTP API and the browser client listen. Default
    /// `127.0.0.1:8080`; port 0 picks a free port.
    pub http: SocketAddr,
    /// Shard threads (one UDP socket each). Default: one per core.
    pub shards: Option<usize>,
    /// IP the shards' UDP sockets bind. Default `127.0.0.1`.
    pub udp_bind: IpAddr,
    /// First UDP port to try; each shard takes the first free port from here
    /// up to `udp_port + 255`. Default: the OS picks.
    pub udp_port: Option<u16>,
    /// IP advertised in ICE candidates (needed when `udp_bind` is
    /// `0.0.0.0` or behind a 1:1 NAT).
    pub public_ip: Option<IpAddr>,
    /// ICE-TCP: every shard also listens on TCP, on its UDP port number,
    /// and clients get a passive TCP candidate beside the UDP one (for
    /// networks that drop UDP; docs/operations.md). Limits are
    /// [`crate::TcpConfig`]'s defaults. Default off.
    pub ice_tcp: bool,
    /// When set, `POST /v1/rooms` requires `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Base of invite links, e.g. `https://meet.example.com`. Default: the
    /// `Host` the request came in on, over `http`.
    pub public_url: Option<String>,
    /// HMAC secret for tokens. Default: 32 random bytes per process (tokens
    /// then die with the process, as rooms do).
    pub token_secret: Option<String>,
    /// Lifetime of owner, invite and participant tokens. Default 24 h.
    pub token_ttl: Duration,
    /// An empty room closes after this long. Default 5 min.
    pub empty_room_grace: Duration,
    /// Rooms the server keeps at once; more are refused with 503. Default 1000.
    pub max_rooms: usize,
    /// Largest `max_participants` a room may ask for (also the default).
    /// Default 50.
    pub max_participants: usize,
    /// Largest accepted SDP offer. Default 256 KiB.
    pub max_sdp_bytes: usize,
    /// Joins prepared at once (each costs 2-5 ms of CPU); more wait up to
    /// 5 s, then get 503. Default 8.
    pub max_pending_joins: usize,
    /// Video receive slots the browser client offers (it uses fewer in
    /// smaller rooms). Default 9.
    pub client_video_slots: usize,
    /// Audio receive slots the browser client offers. Default 3.
    pub client_audio_slots: usize,
    /// Admission control: participants one shard hosts before it refuses
    /// joins with 503 `overloaded` (and room creation, when every shard is
    /// there, with 503 `at_capacity`); 0 means no budget. Default 64 (a
    /// 50-person room costs 0.55-0.65 of a core; see docs/operations.md).
    pub max_participants_per_shard: usize,
    /// On SIGTERM or Ctrl-C: how long the engine gets to tell every
    /// participant and stop its shards. Default 5 s.
    pub shutdown_timeout: Duration,
    /// Room creations one client address may make per minute (a token
    /// bucket holding a minute's worth); more get 429 with `Retry-After`.
    /// 0 (the default) turns the limit off.
    pub rate_limit_rooms_per_minute: u32,
    /// Join attempts one client address may make per minute; 0 (the
    /// default) turns the limit off.
    pub rate_limit_joins_per_minute: u32,
    /// A header a trusted reverse proxy sets to the client's address (e.g.
    /// `x-real-ip`), used for rate limits. Default: the TCP peer address.
    /// Set it only behind a proxy that overwrites the header.
    pub client_ip_header: Option<String>,
    /// On drain (SIGUSR1 or `POST /v1/node/drain`): how long running rooms
    /// may continue before their participants are told to rejoin elsewhere.
    /// Default 10 min.
    pub drain_timeout: Duration,
    /// Cluster mode (docs/cluster.md): `None` runs one node on its own.
    pub cluster: Option<ClusterConfig>,
    /// STUN/TURN servers handed to clients before they join
    /// (`GET /v1/rooms/{room}/ice_servers`). Default: none.
    pub ice_servers: Vec<IceServerConfig>,
}

/// Cluster mode: the Redis directory and this node's identity.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Redis URL, e.g. `redis://127.0.0.1:6379/0` or
    /// `redis://:PASSWORD@10.0.0.5:6379/0`.
    pub redis_url: String,
    /// This node's name; the process adds a random suffix so a restarted
    /// node never claims its predecessor's rooms.
    pub node_id: String,
    /// The URL other nodes reach this node's HTTP API at, e.g.
    /// `http://10.0.0.7:8080`.
    pub node_url: String,
    /// Prefix of every Redis key. Default `piazza`.
    pub key_prefix: String,
    /// A node whose heartbeats stop is dead after this long and its rooms
    /// move at their next join. Heartbeats go every third of it. Default 10 s.
    pub node_ttl: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            shards: None,
            udp_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            udp_port: None,
            public_ip: None,
            ice_tcp: false,
            api_key: None,
            public_url: None,
            token_secret: None,
            token_ttl: Duration::from_secs(24 * 3600),
            empty_room_grace: Duration::from_secs(300),
            max_rooms: 1000,
            max_participants: 50,
            max_sdp_bytes: 256 * 1024,
            max_pending_joins: 8,
            client_video_slots: 9,
            client_audio_slots: 3,
            max_participants_per_shard: 64,
            shutdown_timeout: Duration::from_secs(5),
            rate_limit_rooms_per_minute: 0,
            rate_limit_joins_per_minute: 0,
            client_ip_header: None,
            drain_timeout: Duration::from_secs(600),
            cluster: None,
            ice_servers: Vec::new(),
        }
    }
}

/// A duration in a TOML file: seconds, or text such as `"90s"`, `"5m"`, `"24h"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    fn get(&self, key: &str) -> Result<Duration, String> {
        match self {
            DurationValue::Seconds(s) => Ok(Duration::from_secs(*s)),
            DurationValue::Text(t) => parse_duration(t).map_err(|e| format!("{key}: {e}")),
        }
    }
}

/// The TOML file's shape: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http: Option<String>,
    shards: Option<usize>,
    udp_bind: Option<String>,
    public_ip: Option<String>,
    ice_tcp: Option<bool>,
    api_key: Option<String>,
    public_url: Option<String>,
    token_secret: Option<String>,
    token_ttl: Option<DurationValue>,
    empty_room_grace: Option<DurationValue>,
    max_rooms: Option<usize>,
    max_participants: Option<usize>,
    max_sdp_bytes: Option<usize>,
    max_pending_joins: Option<usize>,
    client_video_slots: Option<usize>,
    client_audio_slots: Option<usize>,
    max_participants_per_shard: Option<usize>,
    shutdown_timeout: Option<DurationValue>,
    rate_limit_rooms_per_minute: Option<u32>,
    rate_limit_joins_per_minute: Option<u32>,
    client_ip_header: Option<String>,
    drain_timeout: Option<DurationValue>,
    cluster: Option<FileCluster>,
    ice_servers: Option<Vec<IceServerConfig>>,
}

/// The `[cluster]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    redis_url: Option<String>,
    node_id: Option<String>,
    node_url: Option<String>,
    key_prefix: Option<String>,
    node_ttl: Option<DurationValue>,
}

/// Command-line flags; each also reads an environment variable. Flags win
/// over the environment, which wins over the config file.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "piazza",
    version,
    about = "Piazza reference server: HTTP API, tokens and a browser client for the Piazza SFU"
)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, env = "PIAZZA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "PIAZZA_HTTP", value_name = "ADDR")]
    pub http: Option<String>,
    /// Shard threads [default: one per core].
    #[arg(long, env = "PIAZZA_SHARDS", value_name = "N")]
    pub shards: Option<usize>,
    /// UDP bind address for media: IP, or IP:PORT for the first port to try
    /// [default: 127.0.0.1, OS-assigned ports].
    #[arg(long, env = "PIAZZA_UDP_BIND", value_name = "ADDR")]
    pub udp_bind: Option<String>,
    /// IP advertised in ICE candidates.
    #[arg(long, env = "PIAZZA_PUBLIC_IP", value_name = "IP")]
    pub public_ip: Option<String>,
    /// ICE-TCP: also listen on TCP on every shard's UDP port number and
    /// offer a passive TCP candidate (true or false) [default: false].
    #[arg(long, env = "PIAZZA_ICE_TCP", value_name = "BOOL")]
    pub ice_tcp: Option<bool>,
    /// API key required to create rooms.
    #[arg(
        long,
        env = "PIAZZA_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Base URL of invite links, e.g. `https://meet.example.com`.
    #[arg(long, env = "PIAZZA_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// HMAC secret for tokens [default: random per process].
    #[arg(
        long,
        env = "PIAZZA_TOKEN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub token_secret: Option<String>,
    /// Token lifetime, e.g. 24h.
    #[arg(long, env = "PIAZZA_TOKEN_TTL", value_name = "DURATION")]
    pub token_ttl: Option<String>,
    /// How long an empty room lives before it closes, e.g. 5m.
    #[arg(long, env = "PIAZZA_EMPTY_ROOM_GRACE", value_name = "DURATION")]
    pub empty_room_grace: Option<String>,
    /// Most rooms at once.
    #[arg(long, env = "PIAZZA_MAX_ROOMS", value_name = "N")]
    pub max_rooms: Option<usize>,
    /// Largest room a client may create (also the default size) [default: 50].
    #[arg(long, env = "PIAZZA_MAX_PARTICIPANTS", value_name = "N")]
    pub max_participants: Option<usize>,
    /// Participants per shard before joins get 503 (0: no budget) [default: 64].
    #[arg(long, env = "PIAZZA_MAX_PARTICIPANTS_PER_SHARD", value_name = "N")]
    pub max_participants_per_shard: Option<usize>,
    /// Bound on the graceful shutdown, e.g. 5s [default: 5s].
    #[arg(long, env = "PIAZZA_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
    /// Room creations per client address per minute (0: no limit).
    #[arg(long, env = "PIAZZA_RATE_LIMIT_ROOMS", value_name = "N")]
    pub rate_limit_rooms_per_minute: Option<u32>,
    /// Join attempts per client address per minute (0: no limit).
    #[arg(long, env = "PIAZZA_RATE_LIMIT_JOINS", value_name = "N")]
    pub rate_limit_joins_per_minute: Option<u32>,
    /// How long running rooms may continue once a drain starts, e.g. 10m.
    #[arg(long, env = "PIAZZA_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Cluster mode: the Redis directory's URL (redis://HOST:PORT/DB).
    #[arg(
        long,
        env = "PIAZZA_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// Cluster mode: this node's name [default: the host name].
    #[arg(long, env = "PIAZZA_NODE_ID", value_name = "NAME")]
    pub node_id: Option<String>,
    /// Cluster mode: the URL other nodes reach this node at.
    #[arg(long, env = "PIAZZA_NODE_URL", value_name = "URL")]
    pub node_url: Option<String>,
    /// Cluster mode: a silent node is dead after this long, e.g. 10s.
    #[arg(long, env = "PIAZZA_NODE_TTL", value_name = "DURATION")]
    pub node_ttl: Option<String>,
}

impl ServerConfig {
    /// Build the configuration: defaults, then the file named by `--config`
    /// (if any), then environment variables and flags (`args`).
    pub fn load(args: &Args) -> Result<ServerConfig, String> {
        let mut config = ServerConfig::default();
        if let Some(path) = &args.config {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            config
                .apply_toml(&text)
                .map_err(|e| format!("config file {}: {e}", path.display()))?;
        }
        config.apply_args(args)?;
        config.validate()?;
        Ok(config)
    }

    /// Apply the keys of a TOML document over this configuration.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(v) = &file.http {
            self.http = parse_socket_addr("http", v)?;
        }
        if let Some(v) = file.shards {
            self.shards = Some(v);
        }
        if let Some(v) = &file.udp_bind {
            (self.udp_bind, self.udp_port) = parse_udp_bind(v)?;
        }
        if let Some(v) = &file.public_ip {
            self.public_ip = Some(parse_ip("public_ip", v)?);
        }
        if let Some(v) = file.ice_tcp {
            self.ice_tcp = v;
        }
        set(&mut self.api_key, file.api_key);
        set(&mut self.public_url, file.public_url);
        set(&mut self.token_secret, file.token_secret);
        if let Some(v) = &file.token_ttl {
            self.token_ttl = v.get("token_ttl")?;
        }
        if let Some(v) = &file.empty_room_grace {
            self.empty_room_grace = v.get("empty_room_grace")?;
        }
        if let Some(v) = &file.shutdown_timeout {
            self.shutdown_timeout = v.get("shutdown_timeout")?;
        }
        if let Some(v) = &file.drain_timeout {
            self.drain_timeout = v.get("drain_timeout")?;
        }
        if let Some(v) = file.rate_limit_rooms_per_minute {
            self.rate_limit_rooms_per_minute = v;
        }
        if let Some(v) = file.rate_limit_joins_per_minute {
            self.rate_limit_joins_per_minute = v;
        }
        set(&mut self.client_ip_header, file.client_ip_header.clone());
        if let Some(c) = &file.cluster {
            let ttl = c
                .node_ttl
                .as_ref()
                .map(|v| v.get("cluster.node_ttl"))
                .transpose()?;
            self.set_cluster(
                c.redis_url.clone(),
                c.node_id.clone(),
                c.node_url.clone(),
                c.key_prefix.clone(),
                ttl,
            );
        }
        if let Some(v) = file.ice_servers {
            self.ice_servers = v;
        }
        let sizes = [
            (&mut self.max_rooms, file.max_rooms),
            (&mut self.max_participants, file.max_participants),
            (&mut self.max_sdp_bytes, file.max_sdp_bytes),
            (&mut self.max_pending_joins, file.max_pending_joins),
            (&mut self.client_video_slots, file.client_video_slots),
            (&mut self.client_audio_slots, file.client_audio_slots),
            (
                &mut self.max_participants_per_shard,
                file.max_participants_per_shard,
            ),
        ];
        for (field, value) in sizes {
            if let Some(v) = value {
                *field = v;
            }
        }
        Ok(())
    }

    fn apply_args(&mut self, args: &Args) -> Result<(), String> {
        if let Some(v) = &args.http {
            self.http = parse_socket_addr("--http", v)?;
        }
        if let Some(v) = args.shards {
            self.shards = Some(v);
        }
        if let Some(v) = &args.udp_bind {
            (self.udp_bind, self.udp_port) = parse_udp_bind(v)?;
        }
        if let Some(v) = &args.public_ip {
            self.public_ip = Some(parse_ip("--public-ip", v)?);
        }
        if let Some(v) = args.ice_tcp {
            self.ice_tcp = v;
        }
        set(&mut self.api_key, args.api_key.clone());
        set(&mut self.public_url, args.public_url.clone());
        set(&mut self.token_secret, args.token_secret.clone());
        if let Some(v) = &args.token_ttl {
            self.token_ttl = parse_duration(v).map_err(|e| format!("--token-ttl: {e}"))?;
        }
        if let Some(v) = &args.empty_room_grace {
            self.empty_room_grace =
                parse_duration(v).map_err(|e| format!("--empty-room-grace: {e}"))?;
        }
        if let Some(v) = args.max_rooms {
            self.max_rooms = v;
        }
        if let Some(v) = args.max_participants {
            self.max_participants = v;
        }
        if let Some(v) = args.max_participants_per_shard {
            self.max_participants_per_shard = v;
        }
        if let Some(v) = &args.shutdown_timeout {
            self.shutdown_timeout =
                parse_duration(v).map_err(|e| format!("--shutdown-timeout: {e}"))?;
        }
        if let Some(v) = &args.drain_timeout {
            self.drain_timeout = parse_duration(v).map_err(|e| format!("--drain-timeout: {e}"))?;
        }
        if let Some(v) = args.rate_limit_rooms_per_minute {
            self.rate_limit_rooms_per_minute = v;
        }
        if let Some(v) = args.rate_limit_joins_per_minute {
            self.rate_limit_joins_per_minute = v;
        }
        let ttl = args
            .node_ttl
            .as_deref()
            .map(|v| parse_duration(v).map_err(|e| format!("--node-ttl: {e}")))
            .transpose()?;
        self.set_cluster(
            args.redis_url.clone(),
            args.node_id.clone(),
            args.node_url.clone(),
            None,
            ttl,
        );
        Ok(())
    }

    /// Merge cluster keys; a Redis URL turns cluster mode on.
    fn set_cluster(
        &mut self,
        redis_url: Option<String>,
        node_id: Option<String>,
        node_url: Option<String>,
        key_prefix: Option<String>,
        node_ttl: Option<Duration>,
    ) {
        let any = redis_url.is_some()
            || node_id.is_some()
            || node_url.is_some()
            || key_prefix.is_some()
            || node_ttl.is_some();
        if !any {
            return;
        }
        let c = self.cluster.get_or_insert_with(|| ClusterConfig {
            redis_url: String::new(),
            node_id: default_node_id(),
            node_url: String::new(),
            key_prefix: "piazza".into(),
            node_ttl: Duration::from_secs(10),
        });
        if let Some(v) = redis_url {
            c.redis_url = v;
        }
        if let Some(v) = node_id {
            c.node_id = v;
        }
        if let Some(v) = node_url {
            c.node_url = v;
        }
        if let Some(v) = key_prefix {
            c.key_prefix = v;
        }
        if let Some(v) = node_ttl {
            c.node_ttl = v;
        }
    }

    /// Refuse values that cannot serve.
    pub fn validate(&self) -> Result<(), String> {
        if self.shards == Some(0) {
            return Err("shards must be at least 1".into());
        }
        if self.max_participants == 0 {
            return Err("max_participants must be at least 1".into());
        }
        if self.max_pending_joins == 0 {
            return Err("max_pending_joins must be at least 1".into());
        }
        if self.token_ttl.is_zero() || self.token_ttl > TEN_YEARS {
            return Err("token_ttl must be longer than zero and at most 10 years".into());
        }
        if self.shutdown_timeout > Duration::from_secs(3600) {
            return Err("shutdown_timeout must be at most 1 hour".into());
        }
        if self.empty_room_grace > TEN_YEARS {
            return Err("empty_room_grace must be at most 10 years".into());
        }
        if self.client_video_slots == 0 || self.client_video_slots > 49 {
            return Err("client_video_slots must be between 1 and 49".into());
        }
        if self.client_audio_slots > 8 {
            return Err("client_audio_slots must be at most 8".into());
        }
        if let Some(key) = &self.api_key
            && key.is_empty()
        {
            return Err("api_key is empty; remove it to disable the key".into());
        }
        if let Some(secret) = &self.token_secret
            && secret.len() < 16
        {
            return Err("token_secret must be at least 16 bytes (32 random bytes is good)".into());
        }
        for ice in &self.ice_servers {
            ice.validate()?;
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "public_url {url:?} must start with http:// or https://"
            ));
        }
        if self.drain_timeout > TEN_YEARS {
            return Err("drain_timeout must be at most 10 years".into());
        }
        if let Some(h) = &self.client_ip_header
            && axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            return Err(format!("client_ip_header {h:?} is not a header name"));
        }
        if let Some(c) = &self.cluster {
            c.validate(self)?;
        }
        Ok(())
    }
}

impl ClusterConfig {
    fn validate(&self, server: &ServerConfig) -> Result<(), String> {
        if self.redis_url.is_empty() {
            return Err(
                "cluster mode needs cluster.redis_url (e.g. redis://127.0.0.1:6379/0)".into(),
            );
        }
        if !(self.redis_url.starts_with("redis://")
            || self.redis_url.starts_with("redis+unix://")
            || self.redis_url.starts_with("unix://"))
        {
            return Err(format!(
                "cluster.redis_url must start with redis:// (got {:?})",
                redact(&self.redis_url)
            ));
        }
        if !(self.node_url.starts_with("http://") || self.node_url.starts_with("https://")) {
            return Err(
                "cluster mode needs cluster.node_url, the http(s):// URL other nodes reach this node at"
                    .into(),
            );
        }
        if self.node_id.is_empty()
            || self.node_id.len() > 48
            || !self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("cluster.node_id must be 1-48 letters, digits, - or _".into());
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            return Err("cluster.key_prefix must be non-empty, without spaces".into());
        }
        if self.node_ttl < Duration::from_secs(1) || self.node_ttl > Duration::from_secs(300) {
            return Err("cluster.node_ttl must be between 1 s and 5 min".into());
        }
        if server.token_secret.is_none() {
            return Err(
                "cluster mode needs token_secret, the same on every node (tokens are verified on every node)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A Redis URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The host name, or `node`.
fn default_node_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .take(48)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

fn set(field: &mut Option<String>, value: Option<String>) {
    if value.is_some() {
        *field = value;
    }
}

/// Parse `"90s"`, `"5m"`, `"1h 30m"` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| format!("{text:?} is not a duration ({e})"))
}

fn parse_socket_addr(what: &str, v: &str) -> Result<SocketAddr, String> {
    v.trim()
        .parse()
        .map_err(|e| format!("{what}: {v:?} is not an IP:PORT address ({e})"))
}

fn parse_ip(what: &str, v: &str) -> Result<IpAddr, String> {
    v.trim()
        .parse()
        .map_err(|e| format!("{what}: {v:?} is not an IP address ({e})"))
}

/// `IP` or `IP:PORT` (IPv6 as `[::1]:PORT`).
fn parse_udp_bind(v: &str) -> Result<(IpAddr, Option<u16>), String> {
    let v = v.trim();
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    match v.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => Ok((addr.ip(), None)),
        Ok(addr) => Ok((addr.ip(), Some(addr.port()))),
        Err(_) => Err(format!(
            "udp_bind: {v:?} is neither an IP nor an IP:PORT address"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let mut c = ServerConfig::default();
        c.apply_toml(
            r#"
            http = "127.0.0.1:9000"
            shards = 3
            udp_bind = "0.0.0.0:40000"
            public_ip = "203.0.113.7"
            empty_room_grace = "90s"
            token_ttl = 3600
            "#,
        )
        .unwrap();
        assert_eq!(c.http.port(), 9000);
        assert_eq!(c.shards, Some(3));
        assert_eq!(c.udp_port, Some(40000));
        assert_eq!(c.empty_room_grace, Duration::from_secs(90));
        assert_eq!(c.token_ttl, Duration::from_secs(3600));
        let args = Args {
            http: Some("127.0.0.1:0".into()),
            shards: Some(1),
            empty_room_grace: Some("2m".into()),
            ..Default::default()
        };
        c.apply_args(&args).unwrap();
        assert_eq!(c.http.port(), 0);
        assert_eq!(c.shards, Some(1));
        assert_eq!(c.empty_room_grace, Duration::from_secs(120));
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let mut c = ServerConfig::default();
        let e = c.apply_toml("htp = \"x\"").unwrap_err();
        assert!(e.contains("htp"), "{e}");
        let e = c.apply_toml("udp_bind = \"nowhere\"").unwrap_err();
        assert!(e.contains("udp_bind"), "{e}");
        let e = c.apply_toml("empty_room_grace = \"soon\"").unwrap_err();
        assert!(e.contains("empty_room_grace"), "{e}");
        c.shards = Some(0);
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_example_configuration_is_valid_and_complete() {
        let text = include_str!("../../../deploy/piazza.toml");
        let mut c = ServerConfig::default();
        c.apply_toml(text).unwrap();
        c.validate().unwrap();
        let cluster = c.cluster.as_ref().unwrap();
        assert_eq!(cluster.node_ttl, Duration::from_secs(10));
        assert_eq!(c.rate_limit_joins_per_minute, 120);
        assert!(c.ice_tcp);
        // Every key of the file format appears in the example.
        for key in [
            "http",
            "shards",
            "udp_bind",
            "public_ip",
            "ice_tcp",
            "api_key",
            "public_url",
            "token_secret",
            "token_ttl",
            "empty_room_grace",
            "max_rooms",
            "max_participants",
            "max_sdp_bytes",
            "max_pending_joins",
            "client_video_slots",
            "client_audio_slots",
            "max_participants_per_shard",
            "shutdown_timeout",
            "drain_timeout",
            "rate_limit_rooms_per_minute",
            "rate_limit_joins_per_minute",
            "client_ip_header",
            "redis_url",
            "node_id",
            "node_url",
            "key_prefix",
            "node_ttl",
        ] {
            assert!(text.contains(&format!("{key} =")), "{key} missing");
        }
    }

    #[test]
    fn cluster_keys_need_a_url_a_node_url_and_a_shared_secret() {
        let mut c = ServerConfig::default();
        c.apply_toml(
            r#"
            [cluster]
            redis_url = "redis://127.0.0.1:6379/0"
            node_id = "a"
            node_ttl = "3s"
            "#,
        )
        .unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("node_url"), "{e}");
        c.cluster.as_mut().unwrap().node_url = "http://10.0.0.7:8080".into();
        let e = c.validate().unwrap_err();
        assert!(e.contains("token_secret"), "{e}");
        c.token_secret = Some("0123456789abcdef0123".into());
        c.validate().unwrap();
        assert_eq!(c.cluster.as_ref().unwrap().node_ttl, Duration::from_secs(3));
        assert_eq!(
            redact("redis://:hunter2@10.0.0.5:6379/0"),
            "redis://***@10.0.0.5:6379/0"
        );
        assert!(ServerConfig::default().cluster.is_none());
    }

    #[test]
    fn ice_servers_from_toml() {
        let mut c = ServerConfig::default();
        c.apply_toml(
            r#"
            [[ice_servers]]
            urls = ["stun:stun.example.com:3478"]

            [[ice_servers]]
            urls = ["turn:turn.example.com:3478?transport=udp", "turn:turn.example.com:3478?transport=tcp"]
            secret = "a shared secret of 16+ bytes"
            ttl = "10m"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.ice_servers.len(), 2);
        assert_eq!(c.ice_servers[1].ttl, Some(Duration::from_secs(600)));
        let e = c
            .apply_toml("[[ice_servers]]\nurls = [\"turn:x:3478\"]\n")
            .and_then(|()| c.validate())
            .unwrap_err();
        assert!(e.contains("need username"), "{e}");
    }
}
