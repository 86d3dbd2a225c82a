"""Fleet-wide counters kept in Redis hashes (fields ``provider:account`` or ``provider:state``).

Workers increment them where the event happens (the fenced job write, the budget); the
metrics exporter (workers.metrics) reads them, so they count for the whole fleet and survive
worker restarts.
"""

from tasks import keys

STATS = {
    "states": f"{keys.STATS}:states",  # jobs by provider:state (a gauge; moved on every state change)
    "finished": f"{keys.STATS}:finished",  # provider:state -> jobs that reached it (ready/failed/cancelled)
    "bytes": f"{keys.STATS}:bytes_uploaded",  # provider:account -> bytes uploaded
    "throttle_waits": f"{keys.STATS}:throttle_waits",  # provider:account -> calls deferred by the budget
    "cooldowns": f"{keys.STATS}:cooldowns",  # provider:account -> provider 429s that paused the account
}
