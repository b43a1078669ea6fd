"""Per-user send rate limit shared by every server process: a token bucket in Redis.

One Lua script per ``send`` refills the user's bucket by the time elapsed on
Redis's own clock (so the processes' clocks do not matter) and takes a token.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

# KEYS: bucket   ARGV: burst, per_second   ->  {allowed (1/0), retry_after_ms}
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2]) / 1000
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1])
local ts = tonumber(data[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return {allowed, wait}
"""


def bucket_key(user_id: int) -> str:
    return f"kaiwa:{{u:{user_id}}}:rate"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_ms: int


class RateLimiter:
    def __init__(self, client: aioredis.Redis) -> None:
        self._take = client.register_script(_TAKE)

    async def take(self, *, user_id: int, burst: int, per_second: float) -> Verdict:
        allowed, wait = await self._take(keys=[bucket_key(user_id)], args=[burst, repr(float(per_second))])
        return Verdict(allowed=bool(int(allowed)), retry_after_ms=max(1, int(wait)) if not int(allowed) else 0)
