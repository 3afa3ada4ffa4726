"""Pluggable stores, each in three flavours (memory, SQL, Redis; Redis with the database
behind it, for when Redis goes away while the bot runs): `StateStore` keeps each user's
conversation record (flow state, collected data, pages), `DedupStore` remembers every inbound
message and the reply it got. One module each (state, dedup), and the failover between them.
"""
from bot.conversation.stores.dedup import (PENDING, REPLAYED, DedupMirror, DedupStore,
                                           MemoryDedupStore, RedisDedupStore, SqlDedupStore)
from bot.conversation.stores.failover import (Failover, FailoverDedupStore, FailoverStateStore,
                                              build_stores)
from bot.conversation.stores.state import (PREFETCH, STATE_MARGIN_SECONDS, LockBusy,
                                           MemoryStateStore, Prefetch, Record, RedisStateStore,
                                           SqlStateStore, StateStore, purge_states,
                                           state_ttl_seconds)

__all__ = ["PENDING", "REPLAYED", "DedupMirror", "DedupStore", "MemoryDedupStore", "RedisDedupStore",
           "SqlDedupStore", "Failover", "FailoverDedupStore", "FailoverStateStore", "build_stores",
           "PREFETCH", "STATE_MARGIN_SECONDS", "LockBusy", "MemoryStateStore", "Prefetch", "Record",
           "RedisStateStore", "SqlStateStore", "StateStore", "purge_states", "state_ttl_seconds"]
