"""One gateway's view of the Durable Streams log, and its writes to it.

:class:`DsLog` is the only Kafka user of the ``durable`` package:

- a tail consumer (manual assignment, ``read_committed``) over every partition of
  ``tidemark.<ns>.ds`` from the start, folding each record into the :class:`Registry`
  and waking the live readers of the stream it changed;
- :meth:`caught_up`: ask a partition's last stable offset (a consumer that never
  fetches, so nothing queues before its ListOffsets) and apply the partition up to it
  now with a paused catch-up reader, so that a write acknowledged by any gateway is seen
  here (read-your-writes across gateways); the tail consumer and the catch-up reader
  apply each record once, in order, whichever reads it first;
- :meth:`write`: the check-then-write of an operation, atomic across gateways with
  Kafka alone. Partition p has one ``transactional.id``; a gateway that writes to p
  first initialises it, which fences whichever gateway held it before and aborts its
  open transaction, then reads p to its high watermark (the fenced holder's last
  transaction decided and, if committed, applied), then checks the request against that
  state and writes the record in a transaction. While its producer is not fenced no
  one else has written to p, so a write checked on its state commits only if that state
  was exact, and later writes need no new catch-up; a fenced producer is dropped and the
  operation is checked again (bounded tries). An answer that writes nothing (a refusal, a
  duplicate) is not checked by a commit, so it is given only from state read to the
  partition's end;
- group commit: one committer task per partition takes the writes waiting for it (at
  most ``TIDEMARK_DS_WRITE_BATCH``, :data:`MAX_BATCH_BYTES`, after
  ``TIDEMARK_DS_WRITE_LINGER_MS``), checks each on the partition's state and writes them
  all in one transaction. Only writes that cannot change each other's answer share a
  batch (their :class:`Claim` s do not conflict: plain appends to one stream, appends of
  different producers, writes to different streams); the next write that would conflict
  starts the next batch, so writes to one stream are still checked in arrival order;
- :meth:`touch`: a read of a stream with a sliding TTL writes a ``touch`` record (not
  transactional; at most one per stream and gateway per tenth of its TTL, at most
  one second apart) so every gateway sees the access;
- :meth:`load`: bytes the memory budget dropped, read again from Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from durable import records
from durable.state import Rec, Registry, Stream, now_ms
from eventlog.clients import (
    make_admin,
    make_consumer,
    make_producer,
    partitions_of,
    started,
    stop_client,
)
from eventlog.errors import KafkaUnavailable
from eventlog.settings import Settings

log = logging.getLogger(__name__)

#: Tries of one write when its producer is fenced meanwhile.
WRITE_TRIES = 4
#: Backoff of :meth:`DsLog.supervise` between restarts of a failed log reader: from the
#: first to the second, doubling; back to the first after a run this long.
RESTART_DELAYS_S = (0.5, 30.0)
RESTART_RESET_S = 60.0
#: Touch records in flight at once; more are skipped (a touch is an optimisation of
#: a later expiry, never needed for correctness of the data).
MAX_TOUCHES_IN_FLIGHT = 1000


#: How long a lease's first read may stop at the last stable offset below the end
#: before it takes the open transaction there for one nobody decides (see
#: :meth:`DsLog._take_over`; once initialised, the lease's producer has had every
#: transaction the coordinator knows decided).
HANGING_WAIT_S = 1.0
#: Most bytes of records in one transaction of a partition's committer (a larger
#: record goes alone).
MAX_BATCH_BYTES = 1024 * 1024
#: Writes waiting for one partition's committer; more answer 503.
MAX_PENDING_WRITES = 10_000
#: Rounds of reading the partitions of a pending fork's sources (one more level of the
#: fork chain each).
MAX_FORK_DEPTH_READ = 8


@dataclass(frozen=True, slots=True)
class Write:
    """A record to write: checked against the state of its partition just before."""

    key: str
    meta: dict[str, Any]
    value: bytes = b""


@dataclass(frozen=True, slots=True)
class Claim:
    """What a write reads or changes of one stream. Two writes whose claims conflict are
    never checked in one batch: an exclusive claim conflicts with every claim on the
    stream, shared claims with those that name a common part (``producer:<id>``,
    ``seq``)."""

    key: str
    parts: frozenset[str] = frozenset()
    exclusive: bool = False

    def conflicts(self, other: Claim) -> bool:
        return self.key == other.key and (self.exclusive or other.exclusive
                                          or bool(self.parts & other.parts))


Answer = tuple[Any, int | None]


@dataclass(eq=False, slots=True)
class _Pending:
    """A write waiting for its partition's committer."""

    decide: Callable[[], Write | Any]
    also: tuple[int, ...]
    #: None: it conflicts with everything (a batch of its own).
    claims: tuple[Claim, ...] | None
    future: asyncio.Future[Answer]
    #: More partitions to read to their end, given the state (a pending fork's source).
    also_of: Callable[[], tuple[int, ...]] | None = None


class _Lease:
    """The transactional producer of one partition, while this gateway holds it, and the
    writes waiting for it."""

    def __init__(self) -> None:
        self.producer: AIOKafkaProducer | None = None
        #: This view has applied every write to the partition since the producer was
        #: initialised (set by the first catch-up under it; cleared when fenced).
        self.exact = False
        self.pending: deque[_Pending] = deque()
        self.committer: asyncio.Task[None] | None = None


class DsLog:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = records.ds_topic(settings.log.namespace)
        self.registry = Registry(cache_bytes=settings.durable.cache_bytes)
        self.partitions = 0
        self.ready = asyncio.Event()
        #: Why the log is not read now (:meth:`supervise` restarts it), else None.
        self.trouble: str | None = None
        #: Set at shutdown: live reads answer at once.
        self.closing = False
        self._consumer: AIOKafkaConsumer | None = None
        self._fetcher: AIOKafkaConsumer | None = None
        self._fetch_lock = asyncio.Lock()
        self._catcher: AIOKafkaConsumer | None = None
        #: Asks partition ends only: a consumer with a fetch waiting on the broker would
        #: have its ListOffsets answered after that fetch (one connection, in order).
        self._probe: AIOKafkaConsumer | None = None
        #: Asks high watermarks (``read_uncommitted``): where a partition ends once every
        #: transaction in it is decided (see :meth:`_take_over`).
        self._hw_probe: AIOKafkaConsumer | None = None
        self._catch_lock = asyncio.Lock()
        self._touch: AIOKafkaProducer | None = None
        self._touches = 0
        self._touched: dict[str, int] = {}
        self._applied: dict[int, int] = {}
        self._watchers: dict[str, set[asyncio.Future[None]]] = {}
        #: Streams changed by the records being applied; their readers are woken after.
        self._changed: set[str] = set()
        self._leases: dict[int, _Lease] = {}
        self._closing_tasks: set[asyncio.Future[None]] = set()

    # -- start, tail, stop -------------------------------------------------------------

    async def supervise(self) -> None:
        """:meth:`run`, restarted with bounded backoff when it fails (Kafka unreachable
        for ``TIDEMARK_KAFKA_CONNECT_TIMEOUT``, a bug); meanwhile :meth:`not_ready` says
        why and requests answer 503 at once. A restart goes on from the positions already
        applied: the state is kept."""
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAYS_S[0]
        while True:
            began = loop.time()
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the supervisor's edge: logged, retried
                self.ready.clear()
                if loop.time() - began > RESTART_RESET_S:
                    delay = RESTART_DELAYS_S[0]
                self.trouble = (f"the Durable Streams log failed ({exc}); restarting in "
                                f"{delay:.1f}s")
                log.exception("durable streams: the log reader failed; restarting in %.1fs",
                              delay)
                await self._stop_readers()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_DELAYS_S[1])

    def not_ready(self) -> str | None:
        """Why this gateway cannot serve the protocol now (for ``/readyz``), else None."""
        if self.trouble is not None:
            return self.trouble
        return None if self.ready.is_set() else "the Durable Streams log is not read yet"

    async def run(self) -> None:
        kafka = self.settings.kafka
        admin = await started(lambda: make_admin(kafka, role="ds-admin"), kafka, "ds admin")
        try:
            await self._ensure_topic(admin)
        finally:
            await stop_client(admin)
        consumer = self._consumer = await started(
            lambda: make_consumer(kafka, role="ds-tail", fetch_max_wait_ms=100,
                                  max_partition_fetch_bytes=4 * 1024 * 1024),
            kafka, "ds tail consumer")
        self._fetcher = await started(
            lambda: make_consumer(kafka, role="ds-fetch", fetch_max_wait_ms=10),
            kafka, "ds fetcher")
        self._catcher = await started(
            lambda: make_consumer(kafka, role="ds-catchup", fetch_max_wait_ms=1,
                                  max_partition_fetch_bytes=4 * 1024 * 1024),
            kafka, "ds catch-up reader")
        self._probe = await started(
            lambda: make_consumer(kafka, role="ds-probe"), kafka, "ds end probe")
        self._hw_probe = await started(
            lambda: make_consumer(kafka, role="ds-hw-probe",
                                  isolation_level="read_uncommitted"),
            kafka, "ds high-watermark probe")
        self._touch = await started(
            lambda: make_producer(kafka, role="ds-touch", linger_ms=5), kafka, "ds touch")
        parts = await partitions_of(consumer, self.topic, timeout=30.0)
        tps = [TopicPartition(self.topic, p) for p in parts]
        consumer.assign(tps)
        for tp in tps:
            # From the start; after a restart, from what is applied already.
            consumer.seek(tp, self._applied.setdefault(tp.partition, 0))
        self.partitions = len(parts)
        # Both readers stay paused but while a read needs them: a consumer with assigned
        # partitions fetches on its own, and the fetcher's short wait made an idle
        # gateway send the broker ~70 fetches a second.
        self._fetcher.assign(tps)
        self._fetcher.pause(*tps)
        self._catcher.assign(tps)
        self._catcher.pause(*tps)
        self.trouble = None
        self.ready.set()
        log.info("durable streams: tailing %s (%d partitions)", self.topic, len(parts))
        while True:
            batches = await consumer.getmany(timeout_ms=10, max_records=2000)
            for tp, batch in batches.items():
                for msg in batch:
                    self._apply(tp.partition, msg)
            self._wake_changed()
            for tp in tps:
                self._applied[tp.partition] = max(self._applied[tp.partition],
                                                  await consumer.position(tp))

    async def _ensure_topic(self, admin: AIOKafkaAdminClient) -> None:
        if self.topic in set(await admin.list_topics()):
            return
        brokers = len((await admin.describe_cluster())["brokers"])
        rf, min_isr = self.settings.log.replication(brokers)
        configs = {"cleanup.policy": "delete",
                   "retention.ms": str(self.settings.durable.retention_ms)}
        if min_isr is not None:
            configs["min.insync.replicas"] = str(min_isr)
        response = await admin.create_topics(
            [NewTopic(self.topic, self.settings.log.partitions, rf, topic_configs=configs)])
        for topic, code, *_ in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise KafkaUnavailable(f"could not create topic {topic}: error code {code}")

    def _apply(self, partition: int, msg: Any) -> None:
        """Apply a record once: the tail consumer and :meth:`_fill` both read every
        partition in order, and whichever is ahead applies it."""
        if msg.offset < self._applied[partition]:
            return
        self._applied[partition] = msg.offset + 1
        meta = records.decode(msg.headers)
        if meta is None or msg.key is None:
            return
        try:
            key = msg.key.decode()
            stream = self.registry.apply(partition, msg.offset, key, meta, msg.value or b"")
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            # Not written by a gateway (anyone with access to the topic can): skipped, as
            # every gateway skips it, rather than stopping this gateway's reader.
            log.warning("durable streams: skipped a malformed record at %s[%d]@%d: %r",
                        self.topic, partition, msg.offset, exc)
            return
        if stream is not None:
            self._changed.add(key)

    def _wake_changed(self) -> None:
        """Wake the live readers of every stream the records just applied changed: once
        per stream per batch of records, not once per record."""
        changed, self._changed = self._changed, set()
        for key in changed:
            self._wake(key)

    def _wake(self, key: str) -> None:
        for fut in self._watchers.pop(key, ()):
            if not fut.done():
                fut.set_result(None)

    async def close(self) -> None:
        for lease in self._leases.values():
            if lease.committer is not None:
                lease.committer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lease.committer
            if lease.producer is not None:
                await stop_client(lease.producer)
        await self._stop_readers()

    async def _stop_readers(self) -> None:
        for client in (self._touch, self._fetcher, self._catcher, self._probe,
                       self._hw_probe, self._consumer):
            if client is not None:
                with contextlib.suppress(KafkaError):
                    await stop_client(client)

    # -- reading -----------------------------------------------------------------------

    async def wait_ready(self) -> None:
        """Wait until the clients are up and the partitions known (a starting gateway);
        :class:`KafkaUnavailable` after ``TIDEMARK_DS_CATCHUP_WAIT``, or at once while
        the log reader is down."""
        if self.ready.is_set():
            return
        if self.trouble is not None:
            raise KafkaUnavailable(self.trouble)
        try:
            await asyncio.wait_for(self.ready.wait(), self.settings.durable.catchup_wait_s)
        except TimeoutError as exc:
            raise KafkaUnavailable("the Durable Streams log is not read yet") from exc

    def partition_of(self, key: str) -> int:
        return records.partition_of(key, self.partitions)

    async def caught_up(self, *partitions: int, decided: bool = False) -> None:
        """Wait until every write acknowledged before this call to ``partitions`` is
        applied here (:class:`KafkaUnavailable` after ``TIDEMARK_DS_CATCHUP_WAIT``).

        ``decided``: read up to the high watermark rather than the last stable offset, so
        that a transaction still open or being committed in them is decided and, if
        committed, applied too (taking a lease: :meth:`_commit`)."""
        await self.wait_ready()
        consumer = self._hw_probe if decided else self._probe
        assert consumer is not None
        tps = [TopicPartition(self.topic, p) for p in set(partitions)]
        try:
            async with asyncio.timeout(self.settings.durable.catchup_wait_s):
                ends = await consumer.end_offsets(tps)
                for tp, end in ends.items():
                    await self._fill(tp.partition, end)
        except (TimeoutError, KafkaError) as exc:
            raise KafkaUnavailable("the Durable Streams log did not answer in time") from exc

    async def _fill(self, partition: int, end: int) -> None:
        """Apply partition ``partition`` up to ``end`` now, reading it with the catch-up
        reader rather than waiting for the tail consumer (whose fetch may be waiting on
        the broker for up to its ``fetch_max_wait_ms``)."""
        if self._applied[partition] >= end:
            return
        catcher = self._catcher
        assert catcher is not None
        tp = TopicPartition(self.topic, partition)
        async with self._catch_lock:
            if self._applied[partition] >= end:
                return
            catcher.seek(tp, self._applied[partition])
            catcher.resume(tp)
            try:
                while self._applied[partition] < end:
                    batch = await catcher.getmany(tp, timeout_ms=2, max_records=2000)
                    for msg in batch.get(tp, []):
                        self._apply(partition, msg)
                    self._wake_changed()
                    self._applied[partition] = max(self._applied[partition],
                                                   await catcher.position(tp))
            finally:
                catcher.pause(tp)

    async def changed(self, stream: Stream, version: int, timeout: float) -> bool:
        """Wait until ``stream`` changes from ``version`` (False: ``timeout`` passed)."""
        if stream.version != version:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.setdefault(stream.key, set()).add(fut)
        try:
            # Not wait_for: it runs the wait in a task of its own, per reader per wake-up.
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            return stream.version != version
        finally:
            watchers = self._watchers.get(stream.key)
            if watchers is not None:
                watchers.discard(fut)
                if not watchers:
                    self._watchers.pop(stream.key, None)
        return True

    def wake_all(self) -> None:
        """End every live wait (gateway shutdown)."""
        for key in list(self._watchers):
            self._wake(key)

    async def load(self, recs: list[Rec]) -> list[bytes]:
        """The bytes of ``recs``, from memory or read again from Kafka."""
        missing = sorted({r.start for r in recs if r.data is None})
        found: dict[tuple[int, int], bytes] = {}
        if missing:
            found = await self._fetch([(m.partition, m.offset) for m in missing])
        return [r.data if r.data is not None
                else found[(r.start.partition, r.start.offset)][r.skip:] for r in recs]

    async def _fetch(self, wanted: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        fetcher = self._fetcher
        assert fetcher is not None
        out: dict[tuple[int, int], bytes] = {}
        async with self._fetch_lock, asyncio.timeout(self.settings.durable.catchup_wait_s):
            by_part: dict[int, list[int]] = {}
            for p, o in wanted:
                by_part.setdefault(p, []).append(o)
            for p, offsets in by_part.items():
                tp = TopicPartition(self.topic, p)
                todo = set(offsets)
                fetcher.seek(tp, min(offsets))
                fetcher.resume(tp)
                try:
                    while todo:
                        batch = await fetcher.getmany(tp, timeout_ms=500, max_records=500)
                        for msg in batch.get(tp, []):
                            if msg.offset in todo:
                                out[(p, msg.offset)] = msg.value or b""
                                todo.discard(msg.offset)
                        if todo and await fetcher.position(tp) > max(todo):
                            raise KafkaUnavailable(f"records {sorted(todo)} of {tp} are gone")
                finally:
                    fetcher.pause(tp)
        return out

    def touch(self, stream: Stream) -> None:
        """Reset a sliding TTL for every gateway (see the module's docstring)."""
        if stream.ttl_s is None or self._touch is None:
            return
        at = now_ms()
        gap = min(1000, stream.ttl_s * 100)
        if at - self._touched.get(stream.key, 0) < gap or self._touches >= MAX_TOUCHES_IN_FLIGHT:
            return
        if len(self._touched) > 100_000:
            self._touched.clear()
        self._touched[stream.key] = at
        stream.last_access_ms = max(stream.last_access_ms, at)
        self._touches += 1
        task = asyncio.ensure_future(self._touch.send_and_wait(
            self.topic, b"", key=stream.key.encode(), partition=stream.partition,
            headers=records.encode({"op": "touch", "ts": at})))
        task.add_done_callback(self._touch_done)

    def _touch_done(self, task: asyncio.Future[Any]) -> None:
        self._touches -= 1
        if not task.cancelled() and task.exception() is not None:
            log.warning("durable streams: a touch record failed: %s", task.exception())

    # -- writing -----------------------------------------------------------------------

    async def write(self, partition: int, decide: Callable[[], Write | Any],
                    *, also: tuple[int, ...] = (),
                    also_of: Callable[[], tuple[int, ...]] | None = None,
                    claims: tuple[Claim, ...] | None = None) -> Answer:
        """Check and write under partition ``partition``'s lease.

        ``decide`` runs on this view once it has read the partition (and ``also``) to
        its end while holding the lease; it returns a :class:`Write` or an answer. It may
        run in one batch with other writes to the partition whose ``claims`` do not
        conflict with these (None: alone), so it must read no more of the state than its
        claims say. ``also_of`` names more partitions to read to their end first, from
        the state read so far (see :meth:`settle`). Returns ``(what decide returned, the
        record's Kafka offset or None)``; the record is applied to this view before this
        returns.
        """
        lease = self._leases.setdefault(partition, _Lease())
        if len(lease.pending) >= MAX_PENDING_WRITES:
            raise KafkaUnavailable(f"too many writes wait for partition {partition}")
        item = _Pending(decide, also, claims, asyncio.get_running_loop().create_future(),
                        also_of)
        lease.pending.append(item)
        if lease.committer is None:
            lease.committer = asyncio.create_task(self._committer(partition, lease),
                                                  name=f"ds-commit-p{partition}")
        try:
            async with asyncio.timeout(self.settings.gateway.request_timeout_s):
                # Not shielded: a caller that gives up cancels its future, and a write not
                # yet taken into a batch is then dropped (one taken still commits).
                return await item.future
        except TimeoutError as exc:
            raise KafkaUnavailable(f"a write to partition {partition} did not finish within "
                                   "TIDEMARK_REQUEST_TIMEOUT") from exc

    async def _committer(self, partition: int, lease: _Lease) -> None:
        """Commit the partition's waiting writes, a batch at a time, until none wait."""
        durable = self.settings.durable
        batch: list[_Pending] = []
        answers: list[Answer] | Exception
        try:
            while lease.pending:
                if durable.write_linger_ms > 0 and len(lease.pending) < durable.write_batch:
                    await asyncio.sleep(durable.write_linger_ms / 1000)
                batch = self._take(lease)
                if not batch:
                    continue
                try:
                    async with asyncio.timeout(self.settings.gateway.request_timeout_s):
                        answers = await self._commit(lease, partition, batch)
                except TimeoutError:
                    answers = KafkaUnavailable(
                        f"a write to partition {partition} did not finish within "
                        "TIDEMARK_REQUEST_TIMEOUT")
                except Exception as exc:  # noqa: BLE001 - handed to every writer of the batch
                    answers = exc
                for n, item in enumerate(batch):
                    if item.future.done():
                        continue
                    if isinstance(answers, Exception):
                        item.future.set_exception(answers)
                    else:
                        item.future.set_result(answers[n])
                batch = []
                # Let the writers answer (from the state this batch left) before the
                # next batch changes it.
                await asyncio.sleep(0)
        except BaseException as exc:
            if isinstance(exc, Exception):
                log.exception("durable streams: the committer of partition %d failed",
                              partition)
            reason = exc if isinstance(exc, Exception) else KafkaUnavailable(
                "the gateway is stopping")
            for item in [*batch, *lease.pending]:
                if not item.future.done():
                    item.future.set_exception(reason)
            lease.pending.clear()
            if not isinstance(exc, Exception):
                raise
        finally:
            lease.committer = None

    def _take(self, lease: _Lease) -> list[_Pending]:
        """The next batch: waiting writes in order while their claims do not conflict."""
        batch: list[_Pending] = []
        claimed: list[Claim] = []
        while lease.pending and len(batch) < self.settings.durable.write_batch:
            item = lease.pending[0]
            if item.future.done():  # its writer gave up
                lease.pending.popleft()
                continue
            if batch and (item.claims is None
                          or any(c.conflicts(d) for c in item.claims for d in claimed)):
                break
            lease.pending.popleft()
            batch.append(item)
            if item.claims is None:
                break
            claimed += item.claims
        return batch

    async def _commit(self, lease: _Lease, partition: int,
                      batch: list[_Pending]) -> list[Answer]:
        kafka = self.settings.kafka
        tid = f"{self.topic}.p{partition}"
        also = tuple(sorted({p for item in batch for p in item.also}))
        for attempt in range(WRITE_TRIES):
            if lease.producer is None:
                lease.producer = await started(
                    lambda: make_producer(kafka, role="ds-writer", transactional_id=tid,
                                          linger_ms=0), kafka, "ds writer")
            skipped = lease.exact
            if skipped:
                if also:
                    await self.caught_up(*also)
            else:
                # Just initialised: the holder it fenced may have a transaction whose
                # commit is not in the partition's last stable offset yet (an append it
                # never answered, retried here). Read until it is decided, so that retry
                # is checked against it (answered as a duplicate, not written again).
                try:
                    await self._take_over(lease.producer, partition)
                except KafkaError as exc:
                    await self._lost(lease, partition, exc, attempt)
                    continue
                if also:
                    await self.caught_up(*also)
                lease.exact = True
            await self._also_of(batch)
            plans = [item.decide() for item in batch]
            if skipped and not all(isinstance(plan, Write) for plan in plans):
                # An answer that writes nothing is not checked by a commit: another gateway
                # may have taken the lease and written meanwhile. Read to the end first.
                await self.caught_up(partition)
                await self._also_of(batch)
                plans = [item.decide() for item in batch]
            plans = self._within_bytes(lease, batch, plans)
            writes = [(n, plan) for n, plan in enumerate(plans) if isinstance(plan, Write)]
            if not writes:
                return [(plan, None) for plan in plans]
            producer = lease.producer
            try:
                async with producer.transaction():
                    sent = [await producer.send(
                        self.topic, plan.value, key=plan.key.encode(), partition=partition,
                        headers=records.encode(plan.meta)) for _, plan in writes]
                    metas = await asyncio.gather(*sent)
            except KafkaError as exc:
                await self._lost(lease, partition, exc, attempt)
                continue
            except BaseException:
                # Cancelled or timed out mid-transaction: its outcome is unknown, so this
                # producer's view of the partition is no longer trusted.
                lease.producer = None
                lease.exact = False
                self._closing_tasks.add(task := asyncio.ensure_future(stop_client(producer)))
                task.add_done_callback(self._closing_tasks.discard)
                raise
            try:
                await self._fill(partition, metas[-1].offset + 1)
            except BaseException:
                # Committed, but not applied here: later writes would be checked on a
                # state without these records (a retry of one written again), so the
                # next batch reads the partition to its end first.
                lease.exact = False
                raise
            offsets = {n: meta.offset for (n, _), meta in zip(writes, metas, strict=True)}
            return [(plan, offsets.get(n)) for n, plan in enumerate(plans)]
        raise KafkaUnavailable(f"partition {partition}'s writer was fenced {WRITE_TRIES} times")

    @staticmethod
    async def _lost(lease: _Lease, partition: int, exc: KafkaError, attempt: int) -> None:
        """The lease's producer failed (fenced, or Kafka went away): drop it."""
        log.info("durable streams: writer of partition %d lost its lease (%s); try %d",
                 partition, exc, attempt + 1)
        producer, lease.producer, lease.exact = lease.producer, None, False
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await stop_client(producer)

    async def _take_over(self, producer: AIOKafkaProducer, partition: int) -> None:
        """Read ``partition`` to its high watermark with ``producer`` just initialised.

        Its initialisation decided every transaction the coordinator knew of this
        transactional id, so a transaction still open in the partition is one it does not
        know (a produce that landed while the broker restarted: "hanging"). Nothing would
        ever decide it: read_committed readers stop at it for good, and the next
        transaction's marker would commit it, unchecked. So when the read stops at the
        last stable offset below the end for :data:`HANGING_WAIT_S`, this aborts it: a
        transaction that writes a record to the partition and aborts ends the producer
        id's open transaction with an ABORT marker, records and all (its client had no
        answer for them, and its retry is checked here as any write)."""
        try:
            async with asyncio.timeout(HANGING_WAIT_S):
                await self.caught_up(partition, decided=True)
            return
        except TimeoutError:
            pass
        assert self._probe is not None and self._hw_probe is not None
        tp = TopicPartition(self.topic, partition)
        stable = (await self._probe.end_offsets([tp]))[tp]
        end = (await self._hw_probe.end_offsets([tp]))[tp]
        if self._applied[partition] >= stable and stable < end:
            log.warning("durable streams: partition %d holds a transaction nobody decides "
                        "(from offset %d); aborting it", partition, stable)
            await producer.begin_transaction()
            await (await producer.send(self.topic, b"", partition=partition,
                                       headers=records.encode({"op": "noop"})))
            await producer.abort_transaction()
        await self.caught_up(partition, decided=True)

    async def _also_of(self, batch: list[_Pending]) -> None:
        await self._read_sources(lambda: {p for item in batch if item.also_of is not None
                                          for p in item.also_of()})

    async def settle(self, *keys: str) -> None:
        """Read the partition of each stream to its end, then the partitions that may
        confirm a pending fork among them and their sources (``Registry.unconfirmed``)."""
        await self.caught_up(*(self.partition_of(k) for k in keys))
        await self._read_sources(lambda: set(self.registry.unconfirmed(*keys)))

    async def _read_sources(self, wanted: Callable[[], set[int]]) -> None:
        """Read the partitions ``wanted`` names to their end, asking again after each
        round (a source read may show its own source pending), a bounded number of times."""
        done: set[int] = set()
        for _ in range(MAX_FORK_DEPTH_READ):
            todo = wanted() - done
            if not todo:
                return
            await self.caught_up(*todo)
            done |= todo

    @staticmethod
    def _within_bytes(lease: _Lease, batch: list[_Pending],
                      plans: list[Write | Any]) -> list[Write | Any]:
        """Cut the batch where its records pass :data:`MAX_BATCH_BYTES`; the writes after
        the cut wait for the next batch (at the head of the queue, in order)."""
        size = 0
        for n, plan in enumerate(plans):
            if isinstance(plan, Write):
                size += len(plan.value)
                if size > MAX_BATCH_BYTES and n > 0:
                    lease.pending.extendleft(reversed(batch[n:]))
                    del batch[n:]
                    return plans[:n]
        return plans
