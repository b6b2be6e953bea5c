//! The cluster directory in Redis: nodes, room placement and room metadata.
//! Every operation that must be atomic (placement, claiming a dead node's
//! room, creating, forgetting) is one Lua script, which Redis runs alone.
//!
//! Keys (`P` is the configured prefix; lifetimes in docs/cluster.md):
//!
//! | key | type | content | lifetime |
//! |---|---|---|---|
//! | `P:node:{id}` | hash | url, media, participants, rooms, cpu, draining | node TTL, renewed by heartbeats |
//! | `P:nodes` | sorted set | node id, scored by load (participants + rooms + placed) | entries of dead nodes removed by placement |
//! | `P:placed:{id}` | string | rooms placed on the node lately | 2 s after the last placement |
//! | `P:room:{slug}` | hash | name, public, max, starts_at, created_at, locked, participants, owner | until closed, at most the token lifetime |
//! | `P:kicked:{slug}` | set | token subjects the owner removed | as the room |
//! | `P:public` | set | slugs of public rooms | members removed with their room |

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

/// A directory call failed: Redis is down, slow, or answered nonsense.
#[derive(Debug)]
pub struct DirectoryError(pub String);

impl std::fmt::Display for DirectoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<redis::RedisError> for DirectoryError {
    fn from(e: redis::RedisError) -> Self {
        DirectoryError(e.to_string())
    }
}

type Result<T> = std::result::Result<T, DirectoryError>;

/// Longest a directory call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A room's metadata: what a node needs to recreate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMeta {
    pub slug: String,
    pub name: String,
    pub public: bool,
    pub max_participants: usize,
    /// Unix seconds; 0 for none.
    pub starts_at: u64,
    /// Unix seconds.
    pub created_at: u64,
    pub locked: bool,
    pub participants: usize,
    /// End-to-end encrypted (docs/e2ee.md): a room recreated on another
    /// node after a failover must stay encrypted, or its clients would
    /// send plaintext.
    pub e2ee: bool,
}

impl RoomMeta {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("name", self.name.clone()),
            ("public", flag(self.public).into()),
            ("max", self.max_participants.to_string()),
            ("starts_at", self.starts_at.to_string()),
            ("created_at", self.created_at.to_string()),
            ("locked", flag(self.locked).into()),
            ("participants", self.participants.to_string()),
            ("e2ee", flag(self.e2ee).into()),
        ]
    }

    fn from_fields(slug: &str, f: &HashMap<String, String>) -> Option<RoomMeta> {
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
        Some(RoomMeta {
            slug: slug.to_string(),
            name: f.get("name")?.clone(),
            public: f.get("public").is_some_and(|v| v == "1"),
            max_participants: usize::try_from(num("max")?).ok()?,
            starts_at: num("starts_at").unwrap_or(0),
            created_at: num("created_at").unwrap_or(0),
            locked: f.get("locked").is_some_and(|v| v == "1"),
            participants: num("participants")
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0),
            e2ee: f.get("e2ee").is_some_and(|v| v == "1"),
        })
    }
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// One node as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeInfo {
    pub id: String,
    pub url: String,
    pub media: String,
    pub participants: u64,
    pub rooms: u64,
    /// Busy fraction of the node's shard threads (0-1).
    pub cpu: f64,
    pub draining: bool,
}

impl NodeInfo {
    fn from_fields(id: &str, f: &HashMap<String, String>) -> Option<NodeInfo> {
        Some(NodeInfo {
            id: id.to_string(),
            url: f.get("url")?.clone(),
            media: f.get("media").cloned().unwrap_or_default(),
            participants: f.get("participants").and_then(|v| v.parse().ok())?,
            rooms: f.get("rooms").and_then(|v| v.parse().ok())?,
            cpu: f.get("cpu").and_then(|v| v.parse().ok()).unwrap_or(0.0),
            draining: f.get("draining").is_some_and(|v| v == "1"),
        })
    }
}

/// Where a room is, as [`Directory::locate`] finds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Located {
    /// No such room anywhere.
    Missing,
    /// Hosted by a live node (possibly just claimed for it).
    Hosted {
        owner: String,
        url: String,
        meta: RoomMeta,
    },
    /// Its node is dead and it was not claimed (no claim asked, or no live
    /// node to take it).
    Orphan { meta: RoomMeta },
}

/// Placement: the least-loaded live node that is not draining. Dead nodes
/// met on the way leave the sorted set. The chosen node's score goes up by
/// one so concurrent placements spread, and its `placed` counter (2 s
/// lease) too, which its heartbeats add to the load they report: a room
/// placed but not yet created there is never forgotten by a heartbeat
/// (over-counting for 2 s only spreads rooms more).
/// KEYS[1] nodes; ARGV[1] node key prefix, ARGV[2] placed key prefix.
/// Returns {id, url} or {}.
const PICK: &str = r#"
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do
  local node = ARGV[1] .. id
  if redis.call('EXISTS', node) == 1 then
    if redis.call('HGET', node, 'draining') ~= '1' then
      redis.call('ZINCRBY', KEYS[1], 1, id)
      redis.call('INCR', ARGV[2] .. id)
      redis.call('PEXPIRE', ARGV[2] .. id, 2000)
      return {id, redis.call('HGET', node, 'url')}
    end
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return {}
"#;

/// Find a room's live owner; with ARGV[2] == '1' and the owner dead, give
/// the room to the least-loaded live node in the same step, so two nodes
/// never both recreate it.
/// KEYS[1] room, KEYS[2] nodes; ARGV[1] node key prefix, ARGV[2] claim,
/// ARGV[3] placed key prefix.
/// Returns {status, owner, url, fields}: 0 missing, 1 hosted, 2 orphan.
const LOCATE: &str = r#"
local meta = redis.call('HGETALL', KEYS[1])
if #meta == 0 then return {0, '', '', {}} end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= '' and redis.call('EXISTS', ARGV[1] .. owner) == 1 then
  return {1, owner, redis.call('HGET', ARGV[1] .. owner, 'url'), meta}
end
if ARGV[2] ~= '1' then return {2, '', '', meta} end
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, id in ipairs(ids) do
  local node = ARGV[1] .. id
  if redis.call('EXISTS', node) == 1 then
    if redis.call('HGET', node, 'draining') ~= '1' then
      redis.call('HSET', KEYS[1], 'owner', id)
      redis.call('ZINCRBY', KEYS[2], 1, id)
      redis.call('INCR', ARGV[3] .. id)
      redis.call('PEXPIRE', ARGV[3] .. id, 2000)
      return {1, id, redis.call('HGET', node, 'url'), meta}
    end
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return {2, '', '', meta}
"#;

/// Register or refresh a node. KEYS[1] node, KEYS[2] nodes, KEYS[3] its
/// placed counter; ARGV[1] TTL
/// ms, ARGV[2] id, ARGV[3] score, ARGV[4..] field/value pairs. Returns
/// whether the node's key existed (0 after a Redis restart or a lapse
/// longer than the TTL: the node then re-announces its rooms).
const HEARTBEAT: &str = r#"
local existed = redis.call('EXISTS', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local placed = tonumber(redis.call('GET', KEYS[3]) or '0')
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + placed, ARGV[2])
return existed
"#;

/// Create a room's entry unless the slug is taken. KEYS[1] room, KEYS[2]
/// public; ARGV[1] TTL s, ARGV[2] public, ARGV[3] slug, ARGV[4..] fields.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[1])
if ARGV[2] == '1' then redis.call('SADD', KEYS[2], ARGV[3]) end
return 1
"#;

/// Re-announce a room this node runs (after the directory lost it or this
/// node's lease lapsed). Writes it if missing; takes it if unowned or its
/// owner is dead; returns the other live owner's id if someone else has
/// taken it meanwhile, '' otherwise. KEYS[1] room, KEYS[2] public; ARGV[1]
/// TTL s, ARGV[2] public, ARGV[3] slug, ARGV[4] me, ARGV[5] node prefix,
/// ARGV[6..] fields (with owner).
const ADOPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 6))
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  if ARGV[2] == '1' then redis.call('SADD', KEYS[2], ARGV[3]) end
  return ''
end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= '' and owner ~= ARGV[4] and redis.call('EXISTS', ARGV[5] .. owner) == 1 then
  return owner
end
redis.call('HSET', KEYS[1], 'owner', ARGV[4])
return ''
"#;

/// Change lock or visibility of an existing room. KEYS[1] room, KEYS[2]
/// public; ARGV[1] slug, ARGV[2] locked ('' unchanged), ARGV[3] public.
const UPDATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'locked', ARGV[2]) end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'public', '1')
  redis.call('SADD', KEYS[2], ARGV[1])
elseif ARGV[3] == '0' then
  redis.call('HSET', KEYS[1], 'public', '0')
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
"#;

/// Set one field of an existing room. KEYS[1] room; ARGV[1] field, ARGV[2] value.
const SET_FIELD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

/// Forget a closed room, unless another node owns it now. KEYS[1] room,
/// KEYS[2] public, KEYS[3] kicked; ARGV[1] me, ARGV[2] slug.
const FORGET: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= '' and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"#;

/// Let go of a room (draining): the next join places it anew.
/// KEYS[1] room; ARGV[1] me.
const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'owner', '')
  return 1
end
return 0
"#;

/// The Redis side of the cluster: one multiplexed connection that
/// reconnects by itself, with exponential backoff, when Redis goes away.
#[derive(Clone)]
pub struct Directory {
    conn: ConnectionManager,
    prefix: String,
    /// Room entries expire after this (the token lifetime: no token can
    /// join the room after it).
    room_ttl: Duration,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    pick: Script,
    locate: Script,
    heartbeat: Script,
    create: Script,
    adopt: Script,
    update: Script,
    forget: Script,
    release: Script,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Directory {
    /// A directory on `url`. Does not connect yet: the first call does, so
    /// a node starts (and serves its own rooms) while Redis is down.
    pub fn new(url: &str, prefix: &str, room_ttl: Duration) -> Result<Directory> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Directory {
            conn,
            prefix: prefix.to_string(),
            room_ttl: room_ttl.max(Duration::from_secs(60)),
            scripts: std::sync::Arc::new(Scripts {
                pick: Script::new(PICK),
                locate: Script::new(LOCATE),
                heartbeat: Script::new(HEARTBEAT),
                create: Script::new(CREATE),
                adopt: Script::new(ADOPT),
                update: Script::new(UPDATE),
                forget: Script::new(FORGET),
                release: Script::new(RELEASE),
            }),
        })
    }

    fn node_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }
    fn node_key(&self, id: &str) -> String {
        format!("{}:node:{id}", self.prefix)
    }
    fn placed_prefix(&self) -> String {
        format!("{}:placed:", self.prefix)
    }
    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    fn room_key(&self, slug: &str) -> String {
        format!("{}:room:{slug}", self.prefix)
    }
    fn kicked_key(&self, slug: &str) -> String {
        format!("{}:kicked:{slug}", self.prefix)
    }
    fn public_key(&self) -> String {
        format!("{}:public", self.prefix)
    }

    fn ttl_secs(&self) -> u64 {
        self.room_ttl.as_secs()
    }

    /// Run one call with the directory's time bound.
    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(r) => r.map_err(DirectoryError::from),
            Err(_) => Err(DirectoryError(format!(
                "Redis did not answer within {CALL_TIMEOUT:?}"
            ))),
        }
    }

    /// Register or refresh this node; `Ok(false)` when its entry had gone.
    pub async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<bool> {
        let mut conn = self.conn.clone();
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.key(self.node_key(&node.id))
            .key(self.nodes_key())
            .key(format!("{}{}", self.placed_prefix(), node.id))
            .arg(ttl.as_millis() as u64)
            .arg(&node.id)
            .arg(node.participants + node.rooms)
            .arg("url")
            .arg(&node.url)
            .arg("media")
            .arg(&node.media)
            .arg("participants")
            .arg(node.participants)
            .arg("rooms")
            .arg(node.rooms)
            .arg("cpu")
            .arg(format!("{:.3}", node.cpu))
            .arg("draining")
            .arg(flag(node.draining));
        let existed: i64 = self.timed(inv.invoke_async(&mut conn)).await?;
        Ok(existed == 1)
    }

    /// Remove this node (it is stopping).
    pub async fn deregister(&self, id: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.del(self.node_key(id))
            .ignore()
            .zrem(self.nodes_key(), id)
            .ignore();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    /// The least-loaded live node that takes rooms: `(id, url)`.
    pub async fn pick(&self) -> Result<Option<(String, String)>> {
        let mut conn = self.conn.clone();
        let mut inv = self.scripts.pick.prepare_invoke();
        inv.key(self.nodes_key())
            .arg(self.node_prefix())
            .arg(self.placed_prefix());
        let v: Vec<String> = self.timed(inv.invoke_async(&mut conn)).await?;
        Ok(match v.as_slice() {
            [id, url] => Some((id.clone(), url.clone())),
            _ => None,
        })
    }

    /// Where `slug` is; with `claim`, an orphan goes to a live node.
    pub async fn locate(&self, slug: &str, claim: bool) -> Result<Located> {
        let mut conn = self.conn.clone();
        let mut inv = self.scripts.locate.prepare_invoke();
        inv.key(self.room_key(slug))
            .key(self.nodes_key())
            .arg(self.node_prefix())
            .arg(flag(claim))
            .arg(self.placed_prefix());
        let (status, owner, url, flat): (i64, String, String, Vec<String>) =
            self.timed(inv.invoke_async(&mut conn)).await?;
        if status == 0 {
            return Ok(Located::Missing);
        }
        let fields: HashMap<String, String> = flat
            .chunks_exact(2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect();
        let meta = RoomMeta::from_fields(slug, &fields).ok_or_else(|| {
            DirectoryError(format!("the directory entry of room {slug} is malformed"))
        })?;
        Ok(match status {
            1 => Located::Hosted { owner, url, meta },
            _ => Located::Orphan { meta },
        })
    }

    /// Record a new room owned by `owner`; `Ok(false)` if the slug is taken.
    pub async fn create(&self, meta: &RoomMeta, owner: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let mut inv = self.scripts.create.prepare_invoke();
        inv.key(self.room_key(&meta.slug))
            .key(self.public_key())
            .arg(self.ttl_secs())
            .arg(flag(meta.public))
            .arg(&meta.slug);
        for (k, v) in meta.fields() {
            inv.arg(k).arg(v);
        }
        inv.arg("owner").arg(owner);
        let created: i64 = self.timed(inv.invoke_async(&mut conn)).await?;
        Ok(created == 1)
    }

    /// Re-announce a running room; `Ok(Some(other))` if another live node
    /// has taken it meanwhile.
    pub async fn adopt(&self, meta: &RoomMeta, me: &str) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        let mut inv = self.scripts.adopt.prepare_invoke();
        inv.key(self.room_key(&meta.slug))
            .key(self.public_key())
            .arg(self.ttl_secs())
            .arg(flag(meta.public))
            .arg(&meta.slug)
            .arg(me)
            .arg(self.node_prefix());
        for (k, v) in meta.fields() {
            inv.arg(k).arg(v);
        }
        inv.arg("owner").arg(me);
        let other: String = self.timed(inv.invoke_async(&mut conn)).await?;
        Ok((!other.is_empty()).then_some(other))
    }

    /// Change lock and/or visibility.
    pub async fn update(
        &self,
        slug: &str,
        locked: Option<bool>,
        public: Option<bool>,
    ) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut inv = self.scripts.update.prepare_invoke();
        inv.key(self.room_key(slug))
            .key(self.public_key())
            .arg(slug)
            .arg(locked.map(flag).unwrap_or(""))
            .arg(public.map(flag).unwrap_or(""));
        self.timed(inv.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Record a room's participant count (for the cluster-wide list).
    pub async fn set_participants(&self, counts: &[(String, usize)]) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for (slug, n) in counts {
            // EVAL with the text (not EVALSHA): a pipeline cannot reload a
            // script Redis forgot in a restart.
            pipe.cmd("EVAL")
                .arg(SET_FIELD)
                .arg(1)
                .arg(self.room_key(slug))
                .arg("participants")
                .arg(*n)
                .ignore();
        }
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    /// Forget a closed room (unless another node has taken it).
    pub async fn forget(&self, slug: &str, me: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut inv = self.scripts.forget.prepare_invoke();
        inv.key(self.room_key(slug))
            .key(self.public_key())
            .key(self.kicked_key(slug))
            .arg(me)
            .arg(slug);
        self.timed(inv.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Let go of a room this node stops hosting.
    pub async fn release(&self, slug: &str, me: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut inv = self.scripts.release.prepare_invoke();
        inv.key(self.room_key(slug)).arg(me);
        self.timed(inv.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Record a removed participant's token subject.
    pub async fn add_kicked(&self, slug: &str, sub: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let key = self.kicked_key(slug);
        let mut pipe = redis::pipe();
        pipe.sadd(&key, sub)
            .ignore()
            .expire(&key, self.ttl_secs() as i64)
            .ignore();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    /// The token subjects removed from a room.
    pub async fn kicked(&self, slug: &str) -> Result<HashSet<String>> {
        let mut conn = self.conn.clone();
        self.timed(conn.smembers(self.kicked_key(slug))).await
    }

    /// Every public room of the cluster.
    pub async fn public_rooms(&self) -> Result<Vec<RoomMeta>> {
        let mut conn = self.conn.clone();
        let slugs: Vec<String> = self.timed(conn.smembers(self.public_key())).await?;
        if slugs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for s in &slugs {
            pipe.hgetall(self.room_key(s));
        }
        let all: Vec<HashMap<String, String>> = self.timed(pipe.query_async(&mut conn)).await?;
        Ok(slugs
            .iter()
            .zip(all)
            .filter_map(|(s, f)| RoomMeta::from_fields(s, &f))
            .collect())
    }

    /// Every live node.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = self.timed(conn.zrange(self.nodes_key(), 0, -1)).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.node_key(id));
        }
        let all: Vec<HashMap<String, String>> = self.timed(pipe.query_async(&mut conn)).await?;
        Ok(ids
            .iter()
            .zip(all)
            .filter_map(|(id, f)| NodeInfo::from_fields(id, &f))
            .collect())
    }

    /// One round trip (PING), for the throughput measurement.
    #[cfg(test)]
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        self.timed(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Directory operations per second one Redis serves, through this
    /// client (one multiplexed connection, 64 requests in flight). Numbers
    /// for docs/cluster.md; run by engine/tests/cluster.sh.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs redis-server: run engine/tests/cluster.sh"]
    async fn directory_throughput() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let dir = std::env::temp_dir().join(format!("piazza-dirbench-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < end);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let d = Directory::new(
            &format!("redis://127.0.0.1:{port}/0"),
            "bench",
            Duration::from_secs(3600),
        )
        .unwrap();
        // Ten live nodes, as placement sees them.
        for i in 0..10 {
            let node = NodeInfo {
                id: format!("n{i}"),
                url: format!("http://198.18.0.{i}:8080"),
                media: String::new(),
                participants: 0,
                rooms: 0,
                cpu: 0.0,
                draining: false,
            };
            d.heartbeat(&node, Duration::from_secs(60)).await.unwrap();
        }
        const N: usize = 20_000;
        const IN_FLIGHT: usize = 64;
        async fn run<F, Fut>(what: &str, f: F) -> f64
        where
            F: Fn(usize) -> Fut + Clone + Send + 'static,
            Fut: std::future::Future<Output = ()> + Send,
        {
            let t = std::time::Instant::now();
            let mut tasks = Vec::new();
            for w in 0..IN_FLIGHT {
                let f = f.clone();
                tasks.push(tokio::spawn(async move {
                    let mut i = w;
                    while i < N {
                        f(i).await;
                        i += IN_FLIGHT;
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let rate = N as f64 / t.elapsed().as_secs_f64();
            println!(
                "directory_throughput: {what}: {rate:.0} ops/s ({N} ops, {IN_FLIGHT} in flight)"
            );
            rate
        }
        let d1 = d.clone();
        run("PING (round trip floor)", move |_| {
            let d = d1.clone();
            async move { d.ping().await.unwrap() }
        })
        .await;
        let d1 = d.clone();
        run("pick (placement script, 10 nodes)", move |_| {
            let d = d1.clone();
            async move {
                d.pick().await.unwrap().unwrap();
            }
        })
        .await;
        let d1 = d.clone();
        run("create (room entry script)", move |i| {
            let d = d1.clone();
            async move {
                let meta = RoomMeta {
                    slug: format!("r{i}"),
                    name: "bench".into(),
                    public: i % 2 == 0,
                    max_participants: 50,
                    starts_at: 0,
                    created_at: 1,
                    locked: false,
                    participants: 0,
                    e2ee: false,
                };
                assert!(d.create(&meta, "n0").await.unwrap());
            }
        })
        .await;
        let d1 = d.clone();
        run("locate (join through a non-owning node)", move |i| {
            let d = d1.clone();
            async move {
                let found = d.locate(&format!("r{i}"), true).await.unwrap();
                assert!(matches!(found, Located::Hosted { .. }));
            }
        })
        .await;
        let d1 = d.clone();
        run("heartbeat (node entry script)", move |i| {
            let d = d1.clone();
            async move {
                let node = NodeInfo {
                    id: format!("n{}", i % 10),
                    url: "http://198.18.0.1:8080".into(),
                    media: String::new(),
                    participants: 100,
                    rooms: 5,
                    cpu: 0.5,
                    draining: false,
                };
                d.heartbeat(&node, Duration::from_secs(60)).await.unwrap();
            }
        })
        .await;
        let _ = redis.kill();
        let _ = redis.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
