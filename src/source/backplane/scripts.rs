//! The three Lua scripts that make Redis the one sequencer of every
//! instance. Each runs atomically inside Redis, so no two instances can
//! interleave their steps.
//!
//! Keys: the stream (`--redis-key`), `<key>:id` (the last id given), and
//! `<key>:ticker` (the ticker's lease: which instance may tick).

/// Lua that creates the id counter if it is missing: at the time in ms
/// (`ARGV[t]`) less one, or the stream's last id if that is later, so ids
/// keep increasing across restarts, of an instance or of Redis. `KEYS[1]`
/// is the counter, `KEYS[2]` the stream. (A macro: `concat!` takes only
/// literals.)
macro_rules! start_counter {
    ($t:literal) => {
        concat!(
            "if redis.call('EXISTS', KEYS[1]) == 0 then\n",
            "  local start = tonumber(ARGV[",
            $t,
            "]) - 1\n",
            "  local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)\n",
            "  if #top > 0 then\n",
            "    local id = tonumber(string.match(top[1][1], '^(%d+)'))\n",
            "    if id > start then start = id end\n",
            "  end\n",
            "  redis.call('SET', KEYS[1], string.format('%.0f', start))\n",
            "end\n"
        )
    };
}

/// Makes sure the id counter exists, and returns it: the last id given.
/// `KEYS`: counter, stream. `ARGV`: the time in ms.
pub(crate) const INIT: &str = concat!(start_counter!("1"), "return redis.call('GET', KEYS[1])\n");

/// Appends one event with the next id, `<n>-0`, trimmed to about
/// `ARGV[3]` entries; returns n. A tick (`ARGV[4]` is the instance's
/// name) is appended only by the lease's holder: an instance whose lease
/// expired gets `NOTTICKER` and appends nothing (fencing). Nothing is
/// appended once Redis's own clock is past `ARGV[6]` (`LATE`): an append
/// that waited in a frozen Redis would otherwise publish, when it wakes, a
/// message whose poster was answered 503 long before. `KEYS`: counter,
/// stream, lease. `ARGV`: kind (`t` or `m`), data, max length, holder
/// (empty for a chat message), the time in ms, the deadline in Redis's ms.
pub(crate) const APPEND: &str = concat!(
    "local now = redis.call('TIME')\n",
    "if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[6]) then\n",
    "  return redis.error_reply('LATE the append came after its deadline: not appended')\n",
    "end\n",
    "if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[4] then\n",
    "  return redis.error_reply('NOTTICKER this instance does not hold the ticker lease')\n",
    "end\n",
    start_counter!("5"),
    "local n = redis.call('INCR', KEYS[1])\n",
    "local id = string.format('%.0f', n)\n",
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id .. '-0', 'k', ARGV[1], 'd', ARGV[2])\n",
    "return n\n"
);

/// Takes the ticker's lease if nobody holds it, or renews it if this
/// instance does (compare-and-renew); returns 1 if this instance holds it
/// now. `KEYS`: lease. `ARGV`: holder, time to live in ms.
pub(crate) const LEASE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_share_the_counters_start() {
        assert!(INIT.contains("ARGV[1]) - 1") && APPEND.contains("ARGV[5]) - 1"));
        assert!(INIT.ends_with("return redis.call('GET', KEYS[1])\n"));
        assert!(
            APPEND.find("NOTTICKER") < APPEND.find("INCR"),
            "fencing before the id is taken"
        );
        assert!(
            APPEND.find("LATE") < APPEND.find("INCR"),
            "a late append takes no id"
        );
    }
}
