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
    /// STUN/TURN servers handed to clients before they join
    /// (`GET /v1/rooms/{room}/ice_servers`). Default: none.
    pub ice_servers: Vec<IceServerConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            shards: None,
            udp_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            udp_port: None,
            public_ip: None,
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
    ice_servers: Option<Vec<IceServerConfig>>,
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
    /// Participants per shard before joins get 503 (0: no budget) [default: 64].
    #[arg(long, env = "PIAZZA_MAX_PARTICIPANTS_PER_SHARD", value_name = "N")]
    pub max_participants_per_shard: Option<usize>,
    /// Bound on the graceful shutdown, e.g. 5s [default: 5s].
    #[arg(long, env = "PIAZZA_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
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
        if let Some(v) = args.max_participants_per_shard {
            self.max_participants_per_shard = v;
        }
        if let Some(v) = &args.shutdown_timeout {
            self.shutdown_timeout =
                parse_duration(v).map_err(|e| format!("--shutdown-timeout: {e}"))?;
        }
        Ok(())
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
        Ok(())
    }
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
