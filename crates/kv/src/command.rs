//! Command execution: one parsed request in, its RESP reply out, and for a write the command to
//! append to the append-only file.
//!
//! Replies and errors follow Redis 7 word for word where clients or people depend on them
//! (`-ERR wrong number of arguments for 'get' command`, `-ERR value is not an integer or out of
//! range`, ...). Writes are logged in a form that replays to the same state later: relative
//! expiries become absolute (`SET k v PXAT t`, `PEXPIREAT k t`), and commands that changed
//! nothing are not logged.

use std::time::Instant;

use crate::resp::{self, Command};
use crate::stats::Stats;
use crate::store::Store;

/// What the connection does after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading requests.
    Continue,
    /// Send the replies so far, then close (QUIT).
    Close,
}

/// What a command may report about the server (INFO, CONFIG GET).
pub struct ServerEnv<'a> {
    pub stats: &'a Stats,
    /// The libOS serving the network queues.
    pub libos: &'a str,
    pub started: Instant,
    /// The append-only file's fsync policy (`always`, `everysec`, `no`), if there is one.
    pub aof_fsync: Option<&'static str>,
}

/// Where a command writes its effects.
pub struct Effects<'a> {
    /// The reply goes here.
    pub reply: &'a mut Vec<u8>,
    /// A write appends its replayable form here (RESP); `None`: not logged (no file, or
    /// replaying one).
    pub log: Option<&'a mut Vec<u8>>,
}

impl Effects<'_> {
    fn log<'b>(&mut self, args: impl ExactSizeIterator<Item = &'b [u8]>) {
        if let Some(log) = self.log.as_deref_mut() {
            resp::request(log, args);
        }
    }
}

/// The database: the keyspace and the commands over it.
#[derive(Default)]
pub struct Db {
    pub store: Store,
}

/// Reply text of Redis's most common errors.
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

impl Db {
    pub fn new() -> Db {
        Db::default()
    }

    /// Executes `cmd` at wall-clock time `now` (Unix ms).
    pub fn execute(
        &mut self,
        cmd: Command<'_>,
        now: u64,
        env: &ServerEnv<'_>,
        fx: &mut Effects<'_>,
    ) -> Flow {
        debug_assert!(!cmd.is_empty(), "the parser yields no empty request");
        let name = cmd.arg(0);
        let Some(spec) = COMMANDS
            .iter()
            .find(|s| name.eq_ignore_ascii_case(s.name.as_bytes()))
        else {
            unknown_command(fx.reply, cmd);
            return Flow::Continue;
        };
        let n = cmd.len() as i32;
        if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
            resp::error(
                fx.reply,
                &format!("ERR wrong number of arguments for '{}' command", spec.name),
            );
            return Flow::Continue;
        }
        (spec.run)(self, cmd, now, env, fx)
    }
}

type Handler = fn(&mut Db, Command<'_>, u64, &ServerEnv<'_>, &mut Effects<'_>) -> Flow;

struct Spec {
    /// Lower-case, as Redis names commands in its errors.
    name: &'static str,
    /// Redis's convention: `n` exactly n arguments (name included); `-n` at least n.
    arity: i32,
    run: Handler,
}

const COMMANDS: &[Spec] = &[
    Spec {
        name: "get",
        arity: 2,
        run: get,
    },
    Spec {
        name: "set",
        arity: -3,
        run: set,
    },
    Spec {
        name: "ping",
        arity: -1,
        run: ping,
    },
    Spec {
        name: "echo",
        arity: 2,
        run: echo,
    },
    Spec {
        name: "del",
        arity: -2,
        run: del,
    },
    Spec {
        name: "exists",
        arity: -2,
        run: exists,
    },
    Spec {
        name: "incr",
        arity: 2,
        run: incr,
    },
    Spec {
        name: "decr",
        arity: 2,
        run: decr,
    },
    Spec {
        name: "incrby",
        arity: 3,
        run: incrby,
    },
    Spec {
        name: "decrby",
        arity: 3,
        run: decrby,
    },
    Spec {
        name: "mget",
        arity: -2,
        run: mget,
    },
    Spec {
        name: "mset",
        arity: -3,
        run: mset,
    },
    Spec {
        name: "expire",
        arity: 3,
        run: expire,
    },
    Spec {
        name: "pexpire",
        arity: 3,
        run: pexpire,
    },
    Spec {
        name: "expireat",
        arity: 3,
        run: expireat,
    },
    Spec {
        name: "pexpireat",
        arity: 3,
        run: pexpireat,
    },
    Spec {
        name: "persist",
        arity: 2,
        run: persist,
    },
    Spec {
        name: "ttl",
        arity: 2,
        run: ttl,
    },
    Spec {
        name: "pttl",
        arity: 2,
        run: pttl,
    },
    Spec {
        name: "dbsize",
        arity: 1,
        run: dbsize,
    },
    Spec {
        name: "flushall",
        arity: -1,
        run: flushall,
    },
    Spec {
        name: "flushdb",
        arity: -1,
        run: flushall,
    },
    Spec {
        name: "select",
        arity: 2,
        run: select,
    },
    Spec {
        name: "info",
        arity: -1,
        run: info,
    },
    Spec {
        name: "config",
        arity: -2,
        run: config,
    },
    Spec {
        name: "command",
        arity: -1,
        run: command,
    },
    Spec {
        name: "quit",
        arity: -1,
        run: quit,
    },
];

/// `-ERR unknown command 'FOO', with args beginning with: 'a' 'b' `, as Redis 7 words it.
fn unknown_command(reply: &mut Vec<u8>, cmd: Command<'_>) {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        clip(cmd.arg(0))
    );
    for a in cmd.iter().skip(1) {
        msg.push('\'');
        msg.push_str(&clip(a));
        msg.push_str("' ");
    }
    resp::error(reply, &msg);
}

/// At most 128 bytes of an argument, for an error message.
fn clip(a: &[u8]) -> String {
    String::from_utf8_lossy(&a[..a.len().min(128)]).into_owned()
}

/// A strict decimal i64, as Redis's `string2ll`: optional `-`, digits, no blanks or `+`.
pub fn parse_i64(a: &[u8]) -> Option<i64> {
    if a.is_empty() || a.len() > 20 {
        return None;
    }
    let s = std::str::from_utf8(a).ok()?;
    if s.starts_with('+') || (s.len() > 1 && (s.starts_with('0') || s.starts_with("-0"))) {
        return None;
    }
    s.parse().ok()
}

fn ok(reply: &mut Vec<u8>) {
    resp::simple(reply, "OK");
}

fn get(db: &mut Db, cmd: Command<'_>, now: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    match db.store.get(cmd.arg(1), now) {
        Some(v) => resp::bulk(fx.reply, &v.bytes),
        None => resp::null(fx.reply),
    }
    Flow::Continue
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]`.
fn set(db: &mut Db, cmd: Command<'_>, now: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    #[derive(PartialEq)]
    enum Cond {
        Always,
        IfMissing,
        IfPresent,
    }
    #[derive(PartialEq)]
    enum Ttl {
        Clear,
        Keep,
        At(u64),
    }
    let (key, value) = (cmd.arg(1), cmd.arg(2));
    let mut cond = Cond::Always;
    let mut ttl = Ttl::Clear;
    let mut want_old = false;
    let mut i = 3;
    while i < cmd.len() {
        let opt = cmd.arg(i);
        let has_ttl = ttl != Ttl::Clear;
        let timed = [&b"EX"[..], b"PX", b"EXAT", b"PXAT"]
            .iter()
            .position(|o| opt.eq_ignore_ascii_case(o));
        if opt.eq_ignore_ascii_case(b"NX") && cond == Cond::Always {
            cond = Cond::IfMissing;
        } else if opt.eq_ignore_ascii_case(b"XX") && cond == Cond::Always {
            cond = Cond::IfPresent;
        } else if opt.eq_ignore_ascii_case(b"GET") {
            want_old = true;
        } else if opt.eq_ignore_ascii_case(b"KEEPTTL") && !has_ttl {
            ttl = Ttl::Keep;
        } else if let (Some(unit), false) = (timed, has_ttl) {
            let Some(raw) = (i + 1 < cmd.len()).then(|| cmd.arg(i + 1)) else {
                resp::error(fx.reply, SYNTAX);
                return Flow::Continue;
            };
            let Some(n) = parse_i64(raw) else {
                resp::error(fx.reply, NOT_INTEGER);
                return Flow::Continue;
            };
            let at = match unit {
                0 => expire_time(n, 1000, now),
                1 => expire_time(n, 1, now),
                2 => expire_time(n, 1000, 0),
                _ => expire_time(n, 1, 0),
            };
            let Some(at) = at else {
                resp::error(fx.reply, "ERR invalid expire time in 'set' command");
                return Flow::Continue;
            };
            ttl = Ttl::At(at);
            i += 1;
        } else {
            resp::error(fx.reply, SYNTAX);
            return Flow::Continue;
        }
        i += 1;
    }
    let (exists, old_expiry) = match db.store.get(key, now) {
        Some(v) => {
            if want_old {
                resp::bulk(fx.reply, &v.bytes);
            }
            (true, v.expire_at)
        }
        None => {
            if want_old {
                resp::null(fx.reply);
            }
            (false, None)
        }
    };
    let go = match cond {
        Cond::Always => true,
        Cond::IfMissing => !exists,
        Cond::IfPresent => exists,
    };
    if !go {
        if !want_old {
            resp::null(fx.reply);
        }
        return Flow::Continue;
    }
    let expire_at = match ttl {
        Ttl::Clear => None,
        Ttl::Keep => old_expiry,
        Ttl::At(t) => Some(t),
    };
    db.store.set(key, value.to_vec(), expire_at);
    match expire_at {
        Some(t) => {
            let mut at = Vec::with_capacity(20);
            resp::push_decimal(&mut at, t as i64);
            fx.log([&b"SET"[..], key, value, b"PXAT", &at].into_iter());
        }
        None => fx.log([&b"SET"[..], key, value].into_iter()),
    }
    if !want_old {
        ok(fx.reply);
    }
    Flow::Continue
}

/// The absolute Unix ms of `n` units of `unit_ms` after `base`; `None` if not positive or it
/// overflows (Redis: "invalid expire time").
fn expire_time(n: i64, unit_ms: i64, base: u64) -> Option<u64> {
    if n <= 0 {
        return None;
    }
    let ms = n.checked_mul(unit_ms)?;
    let at = (base as i64).checked_add(ms)?;
    Some(at as u64)
}

fn ping(_: &mut Db, cmd: Command<'_>, _: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    match cmd.len() {
        1 => resp::simple(fx.reply, "PONG"),
        2 => resp::bulk(fx.reply, cmd.arg(1)),
        _ => resp::error(fx.reply, "ERR wrong number of arguments for 'ping' command"),
    }
    Flow::Continue
}

fn echo(_: &mut Db, cmd: Command<'_>, _: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    resp::bulk(fx.reply, cmd.arg(1));
    Flow::Continue
}

fn del(db: &mut Db, cmd: Command<'_>, now: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    let mut removed = 0;
    for key in cmd.iter().skip(1) {
        if db.store.remove(key, now) {
            removed += 1;
            fx.log([&b"DEL"[..], key].into_iter());
        }
    }
    resp::integer(fx.reply, removed);
    Flow::Continue
}

fn exists(
    db: &mut Db,
    cmd: Command<'_>,
    now: u64,
    _: &ServerEnv<'_>,
    fx: &mut Effects<'_>,
) -> Flow {
    let n = cmd
        .iter()
        .skip(1)
        .filter(|k| db.store.get(k, now).is_some())
        .count();
    resp::integer(fx.reply, n as i64);
    Flow::Continue
}

fn incr(db: &mut Db, cmd: Command<'_>, now: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    add(db, cmd.arg(1), 1, now, fx)
}

fn decr(db: &mut Db, cmd: Command<'_>, now: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    add(db, cmd.arg(1), -1, now, fx)
}

fn incrby(
    db: &mut Db,
    cmd: Command<'_>,
    now: u64,
    _: &ServerEnv<'_>,
    fx: &mut Effects<'_>,
) -> Flow {
    match parse_i64(cmd.arg(2)) {
        Some(by) => add(db, cmd.arg(1), by, now, fx),
        None => {
            resp::error(fx.reply, NOT_INTEGER);
            Flow::Continue
        }
    }
}

fn decrby(
    db: &mut Db,
    cmd: Command<'_>,
    now: u64,
    _: &ServerEnv<'_>,
    fx: &mut Effects<'_>,
) -> Flow {
    match parse_i64(cmd.arg(2)).and_then(i64::checked_neg) {
        Some(by) => add(db, cmd.arg(1), by, now, fx),
        None => {
            resp::error(fx.reply, NOT_INTEGER);
            Flow::Continue
        }
    }
}

/// INCR and friends: the value must be a decimal i64; its expiry is kept.
fn add(db: &mut Db, key: &[u8], by: i64, now: u64, fx: &mut Effects<'_>) -> Flow {
    let (current, expire_at) = match db.store.get(key, now) {
        Some(v) => match parse_i64(&v.bytes) {
            Some(n) => (n, v.expire_at),
            None => {
                resp::error(fx.reply, NOT_INTEGER);
                return Flow::Continue;
            }
        },
        None => (0, None),
    };
    let Some(next) = current.checked_add(by) else {
        resp::error(fx.reply, "ERR increment or decrement would overflow");
        return Flow::Continue;
    };
    let mut bytes = Vec::with_capacity(20);
    resp::push_decimal(&mut bytes, next);
    match db.store.get_mut(key, now) {
        Some(v) => v.bytes.clone_from(&bytes),
        None => db.store.set(key, bytes.clone(), expire_at),
    }
    let mut by_text = Vec::with_capacity(20);
    resp::push_decimal(&mut by_text, by);
    fx.log([&b"INCRBY"[..], key, &by_text].into_iter());
    resp::integer(fx.reply, next);
    Flow::Continue
}

fn mget(db: &mut Db, cmd: Command<'_>, now: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    resp::array(fx.reply, cmd.len() - 1);
    for key in cmd.iter().skip(1) {
        match db.store.get(key, now) {
            Some(v) => resp::bulk(fx.reply, &v.bytes),
            None => resp::null(fx.reply),
        }
    }
    Flow::Continue
}

fn mset(db: &mut Db, cmd: Command<'_>, _: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    if cmd.len() & 1 == 0 {
        resp::error(fx.reply, "ERR wrong number of arguments for 'mset' command");
        return Flow::Continue;
    }
    for i in (1..cmd.len()).step_by(2) {
        db.store.set(cmd.arg(i), cmd.arg(i + 1).to_vec(), None);
    }
    fx.log(cmd.iter());
    ok(fx.reply);
    Flow::Continue
}

fn expire(
    db: &mut Db,
    cmd: Command<'_>,
    now: u64,
    _: &ServerEnv<'_>,
    fx: &mut Effects<'_>,
) -> Flow {
    set_expiry(db, cmd, now, 1000, now, "expire", fx)
}

fn pexpire(
    db: &mut Db,
    cmd: Command<'_>,
    now: u64,
    _: &ServerEnv<'_>,
    fx: &mut Effects<'_>,
) -> Flow {
    set_expiry(db, cmd, now, 1, now, "pexpire", fx)
}

fn expireat(
    db: &mut Db,
    cmd: Command<'_>,
    now: u64,
    _: &ServerEnv<'_>,
    fx: &mut Effects<'_>,
) -> Flow {
    set_expiry(db, cmd, now, 1000, 0, "expireat", fx)
}

fn pexpireat(
    db: &mut Db,
    cmd: Command<'_>,
    now: u64,
    _: &ServerEnv<'_>,
    fx: &mut Effects<'_>,
) -> Flow {
    set_expiry(db, cmd, now, 1, 0, "pexpireat", fx)
}

/// EXPIRE and friends: `n` units of `unit_ms` after `base` (0 for absolute times). A time not
/// in the future deletes the key, as in Redis.
fn set_expiry(
    db: &mut Db,
    cmd: Command<'_>,
    now: u64,
    unit_ms: i64,
    base: u64,
    name: &str,
    fx: &mut Effects<'_>,
) -> Flow {
    let key = cmd.arg(1);
    let Some(n) = parse_i64(cmd.arg(2)) else {
        resp::error(fx.reply, NOT_INTEGER);
        return Flow::Continue;
    };
    let at = n
        .checked_mul(unit_ms)
        .and_then(|ms| (base as i64).checked_add(ms));
    let Some(at) = at else {
        resp::error(
            fx.reply,
            &format!("ERR invalid expire time in '{name}' command"),
        );
        return Flow::Continue;
    };
    if db.store.get(key, now).is_none() {
        resp::integer(fx.reply, 0);
        return Flow::Continue;
    }
    if at <= now as i64 {
        db.store.remove(key, now);
        fx.log([&b"DEL"[..], key].into_iter());
    } else {
        db.store.set_expiry(key, Some(at as u64), now);
        let mut text = Vec::with_capacity(20);
        resp::push_decimal(&mut text, at);
        fx.log([&b"PEXPIREAT"[..], key, &text].into_iter());
    }
    resp::integer(fx.reply, 1);
    Flow::Continue
}

fn persist(
    db: &mut Db,
    cmd: Command<'_>,
    now: u64,
    _: &ServerEnv<'_>,
    fx: &mut Effects<'_>,
) -> Flow {
    let key = cmd.arg(1);
    let had = db
        .store
        .get(key, now)
        .is_some_and(|v| v.expire_at.is_some());
    if had {
        db.store.set_expiry(key, None, now);
        fx.log([&b"PERSIST"[..], key].into_iter());
    }
    resp::integer(fx.reply, i64::from(had));
    Flow::Continue
}

fn ttl(db: &mut Db, cmd: Command<'_>, now: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    let left = remaining(db, cmd.arg(1), now);
    // Redis rounds to the nearest second.
    resp::integer(fx.reply, if left >= 0 { (left + 500) / 1000 } else { left });
    Flow::Continue
}

fn pttl(db: &mut Db, cmd: Command<'_>, now: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    resp::integer(fx.reply, remaining(db, cmd.arg(1), now));
    Flow::Continue
}

/// Milliseconds left; -2 for no key, -1 for no expiry.
fn remaining(db: &mut Db, key: &[u8], now: u64) -> i64 {
    match db.store.get(key, now) {
        None => -2,
        Some(v) => match v.expire_at {
            None => -1,
            Some(t) => (t - now) as i64,
        },
    }
}

fn dbsize(db: &mut Db, _: Command<'_>, _: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    resp::integer(fx.reply, db.store.len() as i64);
    Flow::Continue
}

fn flushall(
    db: &mut Db,
    cmd: Command<'_>,
    _: u64,
    _: &ServerEnv<'_>,
    fx: &mut Effects<'_>,
) -> Flow {
    let mode_ok = match cmd.len() {
        1 => true,
        2 => cmd.arg(1).eq_ignore_ascii_case(b"SYNC") || cmd.arg(1).eq_ignore_ascii_case(b"ASYNC"),
        _ => false,
    };
    if !mode_ok {
        resp::error(fx.reply, SYNTAX);
        return Flow::Continue;
    }
    db.store.clear();
    fx.log([&b"FLUSHALL"[..]].into_iter());
    ok(fx.reply);
    Flow::Continue
}

fn select(_: &mut Db, cmd: Command<'_>, _: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    match parse_i64(cmd.arg(1)) {
        Some(0) => ok(fx.reply),
        Some(_) => resp::error(fx.reply, "ERR DB index is out of range"),
        None => resp::error(fx.reply, NOT_INTEGER),
    }
    Flow::Continue
}

fn quit(_: &mut Db, _: Command<'_>, _: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    ok(fx.reply);
    Flow::Close
}

/// COMMAND and its subcommands: an empty array (clients fall back to their built-in tables),
/// COUNT the number of commands.
fn command(_: &mut Db, cmd: Command<'_>, _: u64, _: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    if cmd.len() >= 2 && cmd.arg(1).eq_ignore_ascii_case(b"COUNT") {
        resp::integer(fx.reply, COMMANDS.len() as i64);
    } else {
        resp::array(fx.reply, 0);
    }
    Flow::Continue
}

/// The configuration parameters CONFIG GET knows, with their values.
fn config_params(env: &ServerEnv<'_>) -> Vec<(&'static str, String)> {
    vec![
        ("save", String::new()),
        (
            "appendonly",
            if env.aof_fsync.is_some() { "yes" } else { "no" }.into(),
        ),
        ("appendfsync", env.aof_fsync.unwrap_or("everysec").into()),
        ("port", Stats::get(&env.stats.port).to_string()),
        ("databases", "1".into()),
        ("maxmemory", "0".into()),
        ("maxclients", "10000".into()),
    ]
}

fn config(_: &mut Db, cmd: Command<'_>, _: u64, env: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    let sub = cmd.arg(1);
    if !sub.eq_ignore_ascii_case(b"GET") {
        resp::error(
            fx.reply,
            &format!("ERR unknown subcommand '{}'. Try CONFIG HELP.", clip(sub)),
        );
        return Flow::Continue;
    }
    if cmd.len() < 3 {
        resp::error(
            fx.reply,
            "ERR wrong number of arguments for 'config|get' command",
        );
        return Flow::Continue;
    }
    let params = config_params(env);
    let mut found: Vec<&(&str, String)> = Vec::new();
    for pattern in cmd.iter().skip(2) {
        for p in &params {
            if glob(pattern, p.0.as_bytes()) && !found.iter().any(|f| f.0 == p.0) {
                found.push(p);
            }
        }
    }
    resp::array(fx.reply, found.len() * 2);
    for (name, value) in found {
        resp::bulk(fx.reply, name.as_bytes());
        resp::bulk(fx.reply, value.as_bytes());
    }
    Flow::Continue
}

/// Glob matching with `*` and `?`, case-insensitive (enough for CONFIG GET patterns).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob(rest, &name[1..]),
        Some((c, rest)) => {
            name.first().is_some_and(|n| n.eq_ignore_ascii_case(c)) && glob(rest, &name[1..])
        }
    }
}

fn info(db: &mut Db, cmd: Command<'_>, _: u64, env: &ServerEnv<'_>, fx: &mut Effects<'_>) -> Flow {
    let want = |section: &str| {
        cmd.len() == 1
            || cmd.iter().skip(1).any(|a| {
                a.eq_ignore_ascii_case(section.as_bytes())
                    || a.eq_ignore_ascii_case(b"all")
                    || a.eq_ignore_ascii_case(b"everything")
                    || a.eq_ignore_ascii_case(b"default")
            })
    };
    let s = env.stats;
    let mut text = String::new();
    let mut section = |name: &str, body: String| {
        if want(name) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let mut title = name.to_string();
            title[..1].make_ascii_uppercase();
            text.push_str(&format!("# {title}\r\n{body}"));
        }
    };
    section(
        "server",
        format!(
            "redis_version:7.0.0\r\nredis_mode:standalone\r\nbypass_libos:{}\r\nprocess_id:{}\r\n\
             tcp_port:{}\r\nuptime_in_seconds:{}\r\n",
            env.libos,
            std::process::id(),
            Stats::get(&s.port),
            env.started.elapsed().as_secs()
        ),
    );
    section(
        "clients",
        format!(
            "connected_clients:{}\r\nclient_input_buffered_bytes:{}\r\n\
             client_peak_input_buffered_bytes:{}\r\nclient_output_in_flight_bytes:{}\r\n",
            Stats::get(&s.connected_clients),
            Stats::get(&s.input_buffered),
            Stats::get(&s.peak_input_buffered),
            Stats::get(&s.output_in_flight)
        ),
    );
    section(
        "memory",
        format!(
            "used_memory:{}\r\nused_memory_dataset:{}\r\n",
            db.store.bytes() as u64 + Stats::get(&s.input_buffered),
            db.store.bytes()
        ),
    );
    section(
        "persistence",
        format!(
            "aof_enabled:{}\r\naof_fsync:{}\r\naof_appends:{}\r\naof_syncs:{}\r\n\
             aof_replayed_commands:{}\r\n",
            u8::from(env.aof_fsync.is_some()),
            env.aof_fsync.unwrap_or("-"),
            Stats::get(&s.aof_appends),
            Stats::get(&s.aof_syncs),
            Stats::get(&s.aof_replayed)
        ),
    );
    section(
        "stats",
        format!(
            "total_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\nprotocol_errors:{}\r\nexpired_keys:{}\r\n",
            Stats::get(&s.total_connections),
            Stats::get(&s.total_commands),
            Stats::get(&s.rejected_connections),
            Stats::get(&s.protocol_errors),
            db.store.expired()
        ),
    );
    let keyspace = if db.store.is_empty() {
        String::new()
    } else {
        format!(
            "db0:keys={},expires={},avg_ttl=0\r\n",
            db.store.len(),
            db.store.volatile()
        )
    };
    section("keyspace", keyspace);
    resp::bulk(fx.reply, text.as_bytes());
    Flow::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_parsed_strictly() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-42"), Some(-42));
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"+1",
            b" 1",
            b"1 ",
            b"01",
            b"-0",
            b"1.5",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn glob_matches_config_patterns() {
        assert!(glob(b"*", b"save"));
        assert!(glob(b"append*", b"appendonly"));
        assert!(glob(b"SAVE", b"save"));
        assert!(glob(b"s?ve", b"save"));
        assert!(!glob(b"save", b"saves"));
        assert!(!glob(b"x*", b"save"));
    }
}
