"""The bridge's main job, for real, on local parts: `scripts/demo [--events N] [--no-poison]`.

Starts a local Kafka (its own port and data dir, so it never meets the tests' brokers), the Post API sandbox and
the schema registry (in this process, on a thread of their own), produces sample events in the contract schema
through confluent-kafka's own AvroSerializer, and beside them, on topics of their own routed to the `revenue` and
`profiles` methods, purchases a server validated and profile attributes a backend computed, each in its method's
contract. It runs `appmetrica-bridge run` as a child process, waits until every row is accepted and every offset
committed, stops the bridge with SIGTERM and prints what happened.
Exits 0 only when everything arrived exactly once, unaltered, the poison records reached the dead-letter topic,
the committed offsets reached the end and the bridge exited 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import shutil
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

# NewTopic is documented in confluent_kafka.admin, which re-exports it without listing it as public.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bridge.decoding.avro import contract_schema
from bridge.kafka.dead_letter_producer import (
    HEADER_DETAIL,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
)
from bridge.postapi.methods import MethodName
from bridge.sandbox import Keys, Sandbox, SandboxOptions, SchemaRegistry
from devtools.kafka_local import (
    HOST,
    KafkaLocalError,
    LocalKafka,
    cache_root,
    ensure_jars,
    free_ports,
    libs_dir,
    port_open,
)
from devtools.testkit.bridge_child import BridgeProcess
from devtools.testkit.kafka import OffsetsProbe
from devtools.testkit.records import expected_row

ROOT = Path(__file__).resolve().parent.parent
RUNS_DIR = ROOT / ".local" / "demo"
RUNS_KEPT = 5
KAFKA_PORT = 28092
"""Not the tests' 19092 nor bench's 29092, and below Linux's ephemeral range (32768-60999): a port in that range can
be taken as the source port of any outgoing connection, the broker's own included, and the broker then fails to
bind it (the first try of 39092 did exactly that)."""
PARTITIONS = 4
DRAIN_TIMEOUT_S = 15
COMMIT_WAIT_S = 30.0
TV_KEY_ENV = "DEMO_TV_POST_API_KEY"
DAY_S = 86400
MAX_EVENTS = 100_000
"""The demo holds every event it produced, and the sandbox every event it accepted, to compare them."""

_T = TypeVar("_T")


class DemoError(Exception):
    """Something the demo needs failed; the message says what, in one or a few lines."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so the children are stopped on the way out."""


# -- sample events -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class App:
    id: int
    name: str
    package: str
    version: str


GAME = App(3713842, "Starfall Tactics (mobile game)", "com.example.starfall", "2.8.1")
TV = App(3713855, "Kinoteka (Smart TV app)", "com.example.kinoteka.tv", "5.2.0")

# Sample text is non-ASCII on purpose (Cyrillic, typographic quotes), hence the RUF001 exemptions below.
MOVIES = [
    ("Ирония судьбы, или С лёгким паром!", 1975, "комедия", 184),  # noqa: RUF001
    ("Москва слезам не верит", 1979, "мелодрама", 150),
    ("Кин-дза-дза!", 1986, "фантастика", 135),
    ("Операция «Ы» и другие приключения Шурика", 1965, "комедия", 95),
    ("Белое солнце пустыни", 1970, "вестерн", 85),
    ("Le Fabuleux Destin d’Amélie Poulain", 2001, "comédie", 122),  # noqa: RUF001
    ("千と千尋の神隠し", 2001, "アニメ", 125),
    ('Léon: "The Professional"', 1994, "thriller", 110),
]
TVS = [("Xiaomi", "Mi TV P1 55"), ("Sber", "SberBox Top"), ("TCL", "55C835"), ("Haier", "Smart TV S5")]
ITEMS = [
    ("gems_500", "Набор кристаллов 💎 ×500", 299.0, "RUB"),  # noqa: RUF001
    ("energy_refill", "Полная энергия ⚡", 79.0, "RUB"),
    ("season_pass", "Сезонный пропуск «Звездопад»", 749.0, "RUB"),
    ("starter_pack", "Starter pack, limited", 1.99, "USD"),
    ("gems_1200", "Kristall-Paket 1200", 9.99, "EUR"),
]
PHONES = [
    ("android", "14", "Samsung", "Galaxy A54", "phone"),
    ("android", "13", "Xiaomi", "Redmi Note 12", "phone"),
    ("ios", "17.5", "Apple", "iPhone 13", "phone"),
    ("ios", "17.4", "Apple", "iPad Air", "tablet"),
]
OPERATORS = [("МТС", 250, 1), ("МегаФон", 250, 2), ("Билайн", 250, 99), ("Kcell", 401, 2)]  # noqa: RUF001
LOCALES = ["ru_RU", "ru_RU", "en_US", "kk_KZ", "de_DE"]


@dataclass
class Sample:
    """The records to produce and, for each event, the row the Post API must receive."""

    events: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    expected: set[int] = field(default_factory=set)
    """The fingerprint of each event's row (see `fingerprint`)."""
    by_app: Counter[int] = field(default_factory=Counter)
    poison: list[tuple[str, bytes, dict[str, Any] | bytes]] = field(default_factory=list)
    """(expected dead-letter reason, key, an Avro record or raw bytes)."""
    routed: list[Routed] = field(default_factory=list)
    """The records of the other methods, each on a topic of its own."""


@dataclass
class Routed:
    """One route's records, in its method's contract, and the fingerprint of each row the Post API must receive."""

    method: MethodName
    records: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    expected: set[int] = field(default_factory=set)
    poison: list[tuple[str, bytes, dict[str, Any]]] = field(default_factory=list)

    def add(self, key: bytes, record: dict[str, Any], row: dict[str, str]) -> None:
        self.records.append((key, record))
        self.expected.add(fingerprint(row))


def fingerprint(row: dict[str, str]) -> int:
    """One row, every column and value, as an int: the demo keeps one per event, not a copy of every row.

    Python's hash is salted per process, which is fine: both sides are fingerprinted in this one.
    """
    return hash(frozenset(row.items()))


class Events:
    """Realistic events of two applications, deterministic for a seed; timestamps are relative to now."""

    def __init__(self, seed: int, now_s: float) -> None:
        self._rng = random.Random(seed)
        self._now_s = now_s
        self._fields = [f["name"] for f in contract_schema()["fields"]]
        self._players: dict[int, dict[str, Any]] = {}

    def sample(self, count: int, with_poison: bool) -> Sample:
        sample = Sample()
        while len(sample.events) < count:
            pick = self._rng.random()
            key, record = self._energy() if pick < 0.45 else self._movie() if pick < 0.8 else self._purchase()
            row = fingerprint(expected_row(record, GAME.id))
            while row in sample.expected:  # every event distinct, so a duplicate delivery is always visible
                record["event_timestamp"] -= 1000
                row = fingerprint(expected_row(record, GAME.id))
            sample.expected.add(row)
            sample.events.append((key, record))
            sample.by_app[record["application_id"] or GAME.id] += 1
        sample.routed = [
            self._validated(max(1, count // 10), with_poison),
            self._profiles(max(1, count // 10), with_poison),
        ]
        if with_poison:
            late_key, late = self._purchase()
            # A purchase confirmed offline 20 days later: past the Post API's 14-day window.
            late["event_timestamp"] = self._ms(self._now_s - 20 * DAY_S)
            both_key, both = self._movie()
            # An upstream bug: both identities, where the Post API takes exactly one.
            both["profile_id"], both["appmetrica_device_id"] = "household-0042", "12345678901234567890"
            # A producer that skipped the serializer and wrote JSON text.
            misrouted = json.dumps({"event_name": "movie_watched", "title": "Брат"}, ensure_ascii=False).encode()
            sample.poison = [
                ("expired", late_key, late),
                ("invalid", both_key, both),
                ("decode", b"household-0042", misrouted),
            ]
        return sample

    def _validated(self, count: int, with_poison: bool) -> Routed:
        """Purchases the game's server validated with the store (`revenue`): each receipt once, refunds negative."""
        rng = self._rng
        routed = Routed("revenue")
        for number in range(count):
            sku, _, price, currency = rng.choice(ITEMS)
            refund = rng.random() < 0.1
            amount = -Decimal(str(price)) if refund else Decimal(str(price))
            player = rng.randrange(1, 900)
            profile = f"player-{player:05d}"
            record: dict[str, Any] = {
                **dict.fromkeys(f["name"] for f in contract_schema("revenue")["fields"]),
                "profile_id": profile,
                "revenue_event_type": "refund" if refund else "one_time_purchase",
                "event_timestamp": self._ms(self._now_s - rng.uniform(60, 5 * DAY_S)),
                "price": amount,
                "currency": currency.lower() if rng.random() < 0.5 else currency,
                "product_id": sku,
                "quantity": 1,
                "transaction_id": 7_000_000_000 + number,
                "payload": json.dumps({"store": "google_play", "receipt": f"GPA.{number:08d}"}),
            }
            row = {name: str(value) for name, value in record.items() if value is not None}
            # Plain decimal text, without exponent or trailing zeros: what the contract's decimal(18, 8) becomes.
            row |= {"price": format(amount.normalize(), "f"), "application_id": str(GAME.id)}
            row["event_timestamp"] = str(record["event_timestamp"] // 1000)
            routed.add(profile.encode(), record, row)
        if with_poison:
            key, gift = routed.records[0]
            # A gift is no revenue_event_type the Post API knows.
            routed.poison.append(("invalid", key, {**gift, "revenue_event_type": "gift", "transaction_id": 1}))
        return routed

    def _profiles(self, count: int, with_poison: bool) -> Routed:
        """Profile attributes the game's backend computed (`profiles`): no timestamp, profile_id the identity."""
        rng = self._rng
        routed = Routed("profiles")
        for player in rng.sample(range(1, 900), min(count, 899)):
            attributes = {
                "level": rng.randint(1, 80),
                "vip": rng.random() < 0.1,
                "guild": rng.choice(["Звездопад", "Nebula", "Ёжики"]),
                "spent_rub": round(rng.uniform(0, 20_000), 2),
            }
            profile = f"player-{player:05d}"
            record = {
                "application_id": GAME.id,
                "profile_id": profile,
                "attributes": json.dumps(attributes, ensure_ascii=False),
            }
            routed.add(profile.encode(), record, {k: str(v) for k, v in record.items()})
        if with_poison:
            # A nested object is no attribute value: the Post API takes strings, numbers and bools.
            nested = {"application_id": GAME.id, "profile_id": "player-00000", "attributes": '{"stats": {"wins": 3}}'}
            routed.poison.append(("invalid", b"player-00000", nested))
        return routed

    def _record(self, **values: Any) -> dict[str, Any]:
        record: dict[str, Any] = dict.fromkeys(self._fields)
        record.update(values)
        return record

    def _ms(self, seconds: float) -> int:
        return int(seconds * 1000) + self._rng.randrange(1000)

    def _player(self, number: int) -> dict[str, Any]:
        """One player's phone, the same on every event of theirs."""
        known = self._players.get(number)
        if known is None:
            rng = self._rng
            os_name, os_version, maker, model, kind = rng.choice(PHONES)
            operator, mcc, mnc = rng.choice(OPERATORS)
            known = self._players[number] = {
                "os_name": os_name,
                "os_version": os_version,
                "device_manufacturer": maker,
                "device_model": model,
                "device_type": kind,
                "device_locale": rng.choice(LOCALES),
                "ios_ifv" if os_name == "ios" else "google_aid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "connection_type": "cell" if rng.random() < 0.4 else "wifi",
                "operator_name": operator,
                "mcc": mcc,
                "mnc": mnc,
            }
        return known

    def _energy(self) -> tuple[bytes, dict[str, Any]]:
        """The game's server computes when a player's energy is full again; the player may not be in the app."""
        rng = self._rng
        player = rng.randrange(1, 900)
        recovered, regen_min = rng.randint(5, 30), 6
        full_at = self._now_s - rng.uniform(60, 3 * DAY_S)
        details = {
            "energy": 30,
            "max_energy": 30,
            "recovered": recovered,
            "regen_minutes": regen_min,
            "spent_at": datetime.fromtimestamp(full_at - recovered * regen_min * 60, UTC).isoformat(timespec="seconds"),
            "computed_by": "energy-service",
        }
        record = self._record(
            application_id=None,  # the game is the configured default application
            profile_id=f"player-{player:05d}",
            event_name="energy_full",
            event_timestamp=self._ms(full_at),
            event_json=json.dumps(details) if rng.random() < 0.6 else None,
            session_type="background",
            app_package_name=GAME.package,
            app_version_name=GAME.version,
            **self._player(player),
        )
        return record["profile_id"].encode(), record

    def _movie(self) -> tuple[bytes, dict[str, Any]]:
        """A film watched on a Smart TV; most TVs have no login, so the SDK's device id names them."""
        rng = self._rng
        title, year, genre, minutes = rng.choice(MOVIES)
        watched = minutes if rng.random() < 0.6 else rng.randint(5, minutes - 1)
        household = rng.randrange(1, 400)
        by_device = rng.random() < 0.7
        maker, model = TVS[household % len(TVS)]
        details = {
            "title": title,
            "year": year,
            "genre": genre,
            "watched_min": watched,
            "duration_min": minutes,
            "completed": watched >= minutes * 0.9,
            "quality": rng.choice(["4K HDR", "Full HD"]),
        }
        record = self._record(
            application_id=TV.id,
            # The SDK's device-id hash is an unsigned 64-bit number: often beyond a signed long.
            appmetrica_device_id=str(random.Random(household).randrange(10**17, 2**64)) if by_device else None,
            profile_id=None if by_device else f"household-{household:04d}",
            event_name="movie_watched",
            event_timestamp=self._ms(self._now_s - rng.uniform(60, 3 * DAY_S)),
            event_json=json.dumps(details, ensure_ascii=False),
            session_type="foreground",
            os_name="android",
            os_version="11",
            device_manufacturer=maker,
            device_model=model,
            device_type="unknown",
            device_locale=rng.choice(LOCALES),
            app_package_name=TV.package,
            app_version_name=TV.version,
            connection_type="wifi",
            device_ipv6=f"2a02:6b8::{household:x}:{rng.getrandbits(16):x}:baff:fea6:{rng.getrandbits(16):x}"
            if rng.random() < 0.3
            else None,
        )
        return (record["appmetrica_device_id"] or record["profile_id"]).encode(), record

    def _purchase(self) -> tuple[bytes, dict[str, Any]]:
        """An in-game purchase made offline, confirmed by the store's receipt check when the phone came back."""
        rng = self._rng
        sku, item, price, currency = rng.choice(ITEMS)
        player = rng.randrange(1, 900)
        purchased_at = self._now_s - rng.uniform(DAY_S / 24, 10 * DAY_S)
        before_login = rng.random() < 0.4
        details = {
            "sku": sku,
            "item": item,
            "price": price,
            "currency": currency,
            "order_id": f"GPA.{rng.randrange(10**4):04d}-{rng.randrange(10**4):04d}-{rng.randrange(10**5):05d}",
            "confirmed_offline": True,
            "confirmed_at": datetime.fromtimestamp(
                min(self._now_s, purchased_at + rng.uniform(600, DAY_S)), UTC
            ).isoformat(timespec="seconds"),
        }
        record = self._record(
            application_id=GAME.id if rng.random() < 0.5 else None,
            profile_id=None if before_login else f"player-{player:05d}",
            appmetrica_device_id=str(random.Random(-player).randrange(10**17, 2**64)) if before_login else None,
            event_name="purchase_confirmed",
            event_timestamp=self._ms(purchased_at),
            event_json=json.dumps(details, ensure_ascii=False),
            session_type="background",
            app_package_name=GAME.package,
            app_version_name=GAME.version,
            **self._player(player),
        )
        return (record["profile_id"] or record["appmetrica_device_id"]).encode(), record


# -- local parts -----------------------------------------------------------------------------------------------


class Servers:
    """The Post API sandbox and the schema registry, served by an event loop on a thread of their own.

    A thread rather than the main loop: the Kafka clients and the child process are driven with plain blocking
    calls, and the servers must keep answering (the serializer asks the registry) while those block.
    """

    def __init__(self, keys: Keys) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-servers", daemon=True)
        self._keys = keys
        self.sandbox: Sandbox | None = None
        self.registry: SchemaRegistry | None = None

    def start(self) -> tuple[Sandbox, SchemaRegistry]:
        self._thread.start()

        async def start() -> tuple[Sandbox, SchemaRegistry]:
            self.sandbox = Sandbox(SandboxOptions(keys=self._keys))
            self.registry = SchemaRegistry()
            await self.sandbox.start(HOST, 0)
            await self.registry.start(HOST, 0)
            return self.sandbox, self.registry

        return self._call(start())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def stop() -> None:
            for server in (self.sandbox, self.registry):
                if server is not None:
                    await server.stop()

        with contextlib.suppress(Exception):
            self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def _call(self, work: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(30)


# -- the run ---------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.began = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.began:6.1f}s] {text}", flush=True)


@dataclass
class Outcome:
    """The summary's lines (label None: an indented detail of the line above) and what went wrong."""

    lines: list[tuple[str | None, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    log_tail: str = ""
    kept: str = ""

    def add(self, label: str | None, value: str) -> None:
        self.lines.append((label, value))

    def check(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if count / seconds >= 100 else f"{count / seconds:.1f}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


class Demo:
    def __init__(self, args: argparse.Namespace, cleanup: contextlib.ExitStack) -> None:
        self.args = args
        self.cleanup = cleanup
        self.clock = Clock()
        self.say = self.clock.say
        run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_dir = RUNS_DIR / run_id
        suffix = secrets.token_hex(3)
        self.topic = f"demo.appmetrica.events.{suffix}"
        self.routed_topics: dict[MethodName, str] = {
            "revenue": f"demo.shop.purchases.{suffix}",
            "profiles": f"demo.crm.profiles.{suffix}",
        }
        self.dlq = f"{self.topic}.dlq"
        self.group = f"demo-bridge-{suffix}"
        self.bootstrap = f"{HOST}:{args.kafka_port}"
        self.game_key = "demo-game-" + secrets.token_hex(16)
        self.tv_key = "demo-tv-" + secrets.token_hex(16)

    def run(self) -> Outcome:
        """Everything up to the verdict; the caller prints it once the cleanup has stopped the children."""
        self._prepare_run_dir()
        self._kafka()
        sandbox, registry = self._servers()
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 3})
        self._create_topics(admin)
        sample = Events(self.args.seed, time.time()).sample(self.args.events, self.args.poison)
        produced = self._produce(registry.url, sample)
        bridge = self._start_bridge(sandbox.url, registry.url)
        outcome = Outcome()
        self._wait_for_delivery(bridge, sandbox, sample, outcome)
        exit_line = self._stop_bridge(bridge, outcome)
        self._judge(bridge, sandbox, sample, produced, outcome, exit_line)
        if outcome.problems or self.args.keep_topics:
            outcome.kept = f"{', '.join(self._topics())} on {self.bootstrap}"
        if outcome.problems:
            outcome.log_tail = bridge.tail()
        elif not self.args.keep_topics:
            self._delete_topics(admin)
        return outcome

    # -- set-up --------------------------------------------------------------------------------------------

    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for old in sorted(p for p in RUNS_DIR.iterdir() if p.is_dir())[:-RUNS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
        # The in-process sandbox logs every request; that belongs in a file, not between the progress lines.
        sandbox_log = self.cleanup.enter_context((self.run_dir / "sandbox.log").open("a", encoding="utf-8"))
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(sandbox_log),
        )

    def _kafka(self) -> None:
        if not libs_dir().is_dir():
            self.say("fetching the Kafka jars with Maven (first run only; a minute or two)")
        try:
            ensure_jars()
        except KafkaLocalError as exc:
            raise DemoError(str(exc)) from None
        controller_port = self.args.kafka_port + 1
        kafka = LocalKafka(
            port=self.args.kafka_port,
            controller_port=controller_port,
            data_dir=cache_root() / "demo" / f"kafka-{self.args.kafka_port}",
        )
        if kafka.pid() is not None:
            self.say(f"reusing the local Kafka already serving {self.bootstrap} (left running at the end)")
            return
        for port in (self.args.kafka_port, controller_port):
            # Someone else's broker (a Docker one, say) is no place to create demo topics in.
            if port_open(port):
                raise DemoError(f"{HOST}:{port} is in use by another process; pick free ports with --kafka-port N")
        self.say(f"starting Kafka {kafka.version} on {self.bootstrap} (data in {_shown(kafka.data_dir)})")
        self.cleanup.callback(self._stop_kafka, kafka)
        try:
            took = kafka.start(timeout=90)
        except KafkaLocalError as exc:
            raise DemoError(str(exc)) from None
        self.say(f"Kafka ready after {took:.1f} s")

    def _stop_kafka(self, kafka: LocalKafka) -> None:
        self.say("stopping Kafka")
        try:
            kafka.stop()
        except (KafkaLocalError, OSError) as exc:
            print(f"demo: could not stop Kafka: {exc}", file=sys.stderr)

    def _servers(self) -> tuple[Sandbox, SchemaRegistry]:
        keys = Keys(post_api_key=self.game_key, application_id=GAME.id, apps={TV.id: self.tv_key})
        servers = Servers(keys)
        self.cleanup.callback(servers.stop)
        sandbox, registry = servers.start()
        self.say(f"Post API sandbox at {sandbox.url}, schema registry at {registry.url}")
        return sandbox, registry

    def _topics(self) -> list[str]:
        return [self.topic, *self.routed_topics.values(), self.dlq]

    def _create_topics(self, admin: AdminClient) -> None:
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=1 if t == self.dlq else PARTITIONS) for t in self._topics()]
        )
        try:
            for future in futures.values():
                future.result(timeout=30)
        except KafkaException as exc:
            raise DemoError(f"cannot create the demo topics: {exc}") from None
        # create_topics() answers once the controller accepted them; a client starting right after could still
        # find no leader and, with auto-creation off, call the topic unknown.
        deadline = time.monotonic() + 30
        for topic in self._topics():
            count = 1 if topic == self.dlq else PARTITIONS
            while True:
                metadata = admin.list_topics(topic, timeout=10).topics[topic]
                leaders = [p.leader for p in metadata.partitions.values()]
                if metadata.error is None and len(leaders) == count and min(leaders) >= 0:
                    break
                if time.monotonic() > deadline:
                    raise DemoError(f"topic {topic} has no leader for every partition after 30 s")
                time.sleep(0.05)
        routed = ", ".join(f"{topic} ({method})" for method, topic in self.routed_topics.items())
        self.say(
            f"created topics {self.topic} (events), {routed}, {PARTITIONS} partitions each, "
            f"and dead-letter topic {self.dlq}"
        )

    def _produce(self, registry_url: str, sample: Sample) -> int:
        began = time.monotonic()
        # Confluent's own serializer, as upstream producers use it: it registers the contract under
        # "<topic>-value" and writes magic byte 0 + schema id + Avro body.
        serializer = AvroSerializer(SchemaRegistryClient({"url": registry_url}), json.dumps(contract_schema()))
        context = SerializationContext(self.topic, MessageField.VALUE)
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "acks": "all",
                "enable.idempotence": True,  # a retried send must not add a record: the summary counts them
                "linger.ms": 20,
                # A broker just started answers "coordinator load in progress" at first; librdkafka retries and
                # warns on stderr, between the progress lines. Failures still reach the delivery callback.
                "log_level": 3,
            }
        )
        failures: list[str] = []

        def delivered(error: Any, _: Any) -> None:
            if error is not None:
                failures.append(str(error))

        records: list[tuple[bytes, bytes]] = [(key, serializer(record, context)) for key, record in sample.events]
        # Poison records sit among the events, so they are in the way of the commits if the bridge mishandles them.
        for index, (_, key, value) in enumerate(sample.poison, 1):
            raw = value if isinstance(value, bytes) else serializer(value, context)
            records.insert(len(records) * index // (len(sample.poison) + 1), (key, raw))
        self._send(producer, self.topic, records, delivered)
        produced = len(records)
        for routed in sample.routed:
            topic = self.routed_topics[routed.method]
            # Each method's own contract, registered by the serializer under "<topic>-value" like the events'.
            own = AvroSerializer(
                SchemaRegistryClient({"url": registry_url}), json.dumps(contract_schema(routed.method))
            )
            own_context = SerializationContext(topic, MessageField.VALUE)
            values = [(key, own(record, own_context)) for key, record in routed.records]
            for index, (_, key, record) in enumerate(routed.poison, 1):
                values.insert(len(values) * index // (len(routed.poison) + 1), (key, own(record, own_context)))
            self._send(producer, topic, values, delivered)
            produced += len(values)
        unsent = producer.flush(60)
        if unsent or failures:
            raise DemoError(f"producing failed: {failures[:3]} ({unsent} unsent)")
        poison = len(sample.poison) + sum(len(r.poison) for r in sample.routed)
        shown_poison = f" and {_count(poison, 'poison record')}" if poison else ""
        others = ", ".join(f"{_count(len(r.records), f'{r.method} row')}" for r in sample.routed)
        self.say(
            f"produced {_count(len(sample.events), 'event')} ({sample.by_app[GAME.id]:,} of the game, "
            f"{sample.by_app[TV.id]:,} of the TV app), {others}{shown_poison} in {time.monotonic() - began:.1f} s"
        )
        return produced

    @staticmethod
    def _send(producer: Producer, topic: str, records: list[tuple[bytes, bytes]], delivered: Any) -> None:
        for key, raw in records:
            while True:
                try:
                    producer.produce(topic, value=raw, key=key, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)

    def _start_bridge(self, sandbox_url: str, registry_url: str) -> BridgeProcess:
        metrics_port = free_ports(1)[0]
        config = {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "group_id": self.group,
                "topics": [self.topic],
                "dead_letter_topic": self.dlq,
            },
            "routes": [{"topics": [topic], "method": method} for method, topic in self.routed_topics.items()],
            "avro": {"format": "confluent", "schema_registry_url": registry_url},
            "post_api": {
                "url": sandbox_url,
                "application_id": GAME.id,
                "applications": {TV.id: {"api_key_env": TV_KEY_ENV}},
            },
            "batch": {"max_rows": 1000, "linger_ms": 500},
            "upload": {"max_in_flight": 4, "requests_per_second": 20},
            "server": {"host": HOST, "port": metrics_port},
            "shutdown": {"drain_timeout_s": DRAIN_TIMEOUT_S},
            "log": {"progress_interval_s": 2},
        }
        # BRIDGE_* overrides left in the caller's shell would point the demo's bridge somewhere else: the runner
        # leaves them out.
        bridge = BridgeProcess(config, self.run_dir, key=self.game_key, env={TV_KEY_ENV: self.tv_key}, own_session=True)
        self.cleanup.callback(self._stop_bridge_quietly, bridge)
        pid = bridge.start().process.pid
        self.say(
            f"started appmetrica-bridge run --config {_shown(bridge.config_path)} (pid {pid}; "
            f"metrics at {bridge.endpoints}/metrics)"
        )
        return bridge

    # -- the bridge at work --------------------------------------------------------------------------------

    def _wait_for_delivery(self, bridge: BridgeProcess, sandbox: Sandbox, sample: Sample, outcome: Outcome) -> None:
        expected = len(sample.events) + sum(len(r.records) for r in sample.routed)
        poison = len(sample.poison) + sum(len(r.poison) for r in sample.routed)
        deadline = time.monotonic() + self.args.timeout
        last_said, last_seen = 0.0, (-1, -1, "")
        probe = OffsetsProbe(self.bootstrap)
        while True:
            code = bridge.exit_code
            if code is not None:
                raise DemoError(f"the bridge exited early with code {code}; its log ends with:\n{bridge.tail()}")
            accepted = sandbox.state.rows_accepted
            dead = sum(probe.end_offsets(self.dlq, 1).values())
            done = accepted >= expected and dead >= poison
            ready = bridge.readiness()
            now = time.monotonic()
            seen = (accepted, dead, ready)
            if done or (now - last_said >= 1.0 and seen != last_seen) or now - last_said >= 5.0:
                dead_letters = f", {dead} of {poison} poison records dead-lettered" if poison else ""
                self.say(
                    f"{accepted:,} of {_count(expected, 'row')} accepted in "
                    f"{_count(len(sandbox.state.requests), 'request')}{dead_letters}; /readyz: {ready}"
                )
                last_said, last_seen = now, seen
            if done:
                break
            if now > deadline:
                outcome.problems.append(
                    f"timed out after {self.args.timeout:g} s: {accepted:,} of {expected:,} rows accepted, "
                    f"{dead} of {poison} dead-lettered"
                )
                return
            time.sleep(0.25)
        self.say("every row accepted; waiting for the committed offsets to reach the end")
        deadline = time.monotonic() + COMMIT_WAIT_S
        topics = [self.topic, *self.routed_topics.values()]
        while not all(probe.at_end(self.group, topic, PARTITIONS) for topic in topics):
            if time.monotonic() > deadline:
                outcome.problems.append(f"the committed offsets did not reach the end within {COMMIT_WAIT_S:g} s")
                return
            time.sleep(0.25)

    def _stop_bridge(self, bridge: BridgeProcess, outcome: Outcome) -> str:
        """SIGTERM and wait; the summary's line about the exit."""
        self.say("sending SIGTERM to the bridge")
        began = time.monotonic()
        code = bridge.terminate(DRAIN_TIMEOUT_S + 15)
        took = time.monotonic() - began
        if code is None:
            outcome.problems.append("the bridge did not exit after SIGTERM")
            self.say(f"the bridge did not exit within {DRAIN_TIMEOUT_S + 15} s of SIGTERM; killed it")
            return f"NONE within {DRAIN_TIMEOUT_S + 15} s of SIGTERM; killed"
        outcome.check(code == 0, f"the bridge exited with code {code} after SIGTERM")
        self.say(f"the bridge exited with code {code} after {took:.1f} s")
        return f"{code}, {took:.1f} s after SIGTERM"

    def _stop_bridge_quietly(self, bridge: BridgeProcess) -> None:
        if bridge.exit_code is None:
            self.say("stopping the bridge")
            bridge.terminate(DRAIN_TIMEOUT_S + 5)

    # -- the verdict ---------------------------------------------------------------------------------------

    def _judge(
        self, bridge: BridgeProcess, sandbox: Sandbox, sample: Sample, produced: int, outcome: Outcome, exit_line: str
    ) -> None:
        # The bridge has exited: the sandbox's lists no longer change under us.
        accepted = [fingerprint(event) for event in sandbox.state.events]
        distinct = set(accepted)
        missing = len(sample.expected - distinct)
        altered = len(distinct - sample.expected)
        duplicates = len(accepted) - len(distinct)
        expected = len(sample.events)
        poison = f" (+{len(sample.poison)} poison records)" if sample.poison else ""
        outcome.add("events produced", f"{expected:,}{poison}")
        per_app = Counter(event.get("application_id") for event in sandbox.state.events)
        outcome.add(
            "events delivered",
            f"{len(distinct & sample.expected):,} of {expected:,} "
            f"(game {per_app[str(GAME.id)]:,}, TV app {per_app[str(TV.id)]:,})",
        )
        outcome.check(missing == 0, f"{missing:,} events never arrived")
        outcome.check(altered == 0, f"{altered:,} events arrived different from what the contract says they should be")
        outcome.add("arrived as produced", _yes(missing == 0 and altered == 0) + " (every field compared)")
        for routed in sample.routed:
            self._judge_route(sandbox, routed, outcome)

        requests = sandbox.state.requests
        statuses = Counter("dropped" if r.status is None else str(r.status) for r in requests)
        if len(statuses) == 1:
            shown = f"all answered {next(iter(statuses))}"
        else:
            shown = ", ".join(f"{count} answered {status}" for status, count in sorted(statuses.items()))
        outcome.add("requests", f"{len(requests)}, {shown}" if requests else "none")
        outcome.add("duplicates", f"{duplicates:,}")
        outcome.check(duplicates == 0, f"{duplicates:,} events were accepted more than once")

        self._judge_dead_letters(sample, outcome)

        ok_arrivals = sorted(r.arrived for r in requests if r.status == 200)
        if ok_arrivals:
            total_s = ok_arrivals[-1] - bridge.started
            outcome.add(
                "time",
                f"{total_s:.1f} s from starting the bridge to the last row accepted "
                f"(first upload after {ok_arrivals[0] - bridge.started:.1f} s)",
            )
            rows = expected + sum(len(routed.records) for routed in sample.routed)
            rate = f"{_rate(rows, total_s)} end to end"
            uploading_s = ok_arrivals[-1] - ok_arrivals[0]
            if len(ok_arrivals) > 1 and uploading_s > 0.1:
                rate += f", {_rate(rows, uploading_s)} from the first upload to the last"
            outcome.add("rows a second", rate)

        probe = OffsetsProbe(self.bootstrap)
        topics = (self.topic, *self.routed_topics.values())
        ends = [probe.end_offsets(topic, PARTITIONS) for topic in topics]
        at_end = all(probe.at_end(self.group, topic, PARTITIONS) for topic in topics)
        partitions, records = sum(map(len, ends)), sum(sum(end.values()) for end in ends)
        outcome.add(
            "committed == end",
            f"{_yes(at_end)} ({len(ends)} topics, {partitions} partitions, {_count(records, 'record')})",
        )
        outcome.check(at_end, "the committed offsets are not at the end of every topic")
        outcome.check(records == produced, f"the topic holds {records:,} records; {produced:,} were produced")
        outcome.add("bridge exit code", exit_line)

        lines = bridge.logs()
        stopped = [line for line in lines if line.get("event") == "bridge stopped"]
        if stopped:
            last = stopped[-1]
            outcome.add(
                "the bridge's own count",
                f"uploaded {last.get('uploaded', '?'):,}, dead-lettered {last.get('dead_lettered', '?')}, "
                f"requests {last.get('requests', '?')}",
            )
        else:
            outcome.problems.append("the bridge's log has no 'bridge stopped' line")
        errors = [line for line in lines if line.get("level") in ("error", "critical", "unparsed")]
        outcome.add("errors in its log", f"{len(errors)}")
        if errors:
            outcome.problems.append(
                f"the bridge logged {len(errors)} error or unreadable lines, the first: {json.dumps(errors[0])[:300]}"
            )
        text = bridge.log_path.read_text(errors="replace")
        leaked = self.game_key in text or self.tv_key in text
        outcome.add("key in its log", "YES (a leak)" if leaked else "no")
        outcome.check(not leaked, "a Post API key appears in the bridge's log")
        outcome.add("bridge log", _shown(bridge.log_path))

    def _judge_route(self, sandbox: Sandbox, routed: Routed, outcome: Outcome) -> None:
        """A routed method's rows, checked as the events are: every row once, every field as produced."""
        accepted = [fingerprint(row) for row in sandbox.state.kept[routed.method]]
        distinct = set(accepted)
        missing, altered = len(routed.expected - distinct), len(distinct - routed.expected)
        duplicates = len(accepted) - len(distinct)
        outcome.add(
            f"{routed.method} rows",
            f"{len(distinct & routed.expected):,} of {len(routed.records):,} delivered to {routed.method}.csv, "
            f"{duplicates} duplicates, as produced: {_yes(missing == altered == 0)}",
        )
        outcome.check(missing == 0, f"{missing:,} {routed.method} rows never arrived")
        outcome.check(altered == 0, f"{altered:,} {routed.method} rows arrived different from what was produced")
        outcome.check(duplicates == 0, f"{duplicates:,} {routed.method} rows were accepted more than once")

    def _judge_dead_letters(self, sample: Sample, outcome: Outcome) -> None:
        letters = _read_all(self.bootstrap, self.dlq, timeout_s=15)
        reasons = Counter(str(letter["reason"]) for letter in letters)
        wanted = Counter(reason for reason, _, _ in sample.poison)
        wanted.update(reason for routed in sample.routed for reason, _, _ in routed.poison)
        summary = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items()))
        if wanted or letters:
            outcome.add(
                "dead-lettered",
                f"{len(letters)} of {_count(wanted.total(), 'poison record')}" + (f" ({summary})" if summary else ""),
            )
        else:
            outcome.add("dead-lettered", "0 (no poison records were produced: --no-poison)")
        outcome.check(reasons == wanted, f"dead-letter reasons {dict(reasons)}; expected {dict(wanted)}")
        for letter in sorted(letters, key=lambda letter: str(letter["reason"])):
            detail = str(letter["detail"])
            outcome.add(
                None,
                f"{letter['reason']:<8} {str(letter['topic']).rsplit('.', 1)[0]:<24} "
                f"partition {letter['partition']} offset {letter['offset']:<6} "
                f"{detail if len(detail) <= 100 else detail[:99] + '…'}",
            )

    def _delete_topics(self, admin: AdminClient) -> None:
        # Every run makes new topics; deleting them keeps the broker's data dir from growing run after run.
        with contextlib.suppress(KafkaException):
            for future in admin.delete_topics(self._topics()).values():
                future.result(timeout=30)


# -- Kafka reading helpers -------------------------------------------------------------------------------------


# These consumers only read offsets and records: they never commit, and librdkafka's notices about their
# teardown would land between the summary's lines.
_QUIET: dict[str, object] = {"enable.auto.commit": False, "log_level": 3}


def _read_all(bootstrap: str, topic: str, timeout_s: float) -> list[dict[str, object]]:
    """Every record of a one-partition topic (the dead-letter topic) with its reason headers."""
    consumer = Consumer({**_QUIET, "bootstrap.servers": bootstrap, "group.id": "demo-dlq-reader"})
    letters: list[dict[str, object]] = []
    try:
        _, end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        position = 0
        while position < end and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error() is not None:
                    continue
                position = (message.offset() or 0) + 1
                raw = message.headers() or []
                headers = {name: _text(value) for name, value in (raw.items() if isinstance(raw, dict) else raw)}
                letters.append(
                    {
                        "reason": headers.get(HEADER_REASON, "?"),
                        "topic": headers.get(HEADER_TOPIC, "?"),
                        "detail": headers.get(HEADER_DETAIL, ""),
                        "partition": headers.get(HEADER_PARTITION, "?"),
                        "offset": headers.get(HEADER_OFFSET, "?"),
                    }
                )
    finally:
        consumer.close()
    return letters


def _text(value: str | bytes | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value or ""


def _interrupt(signum: int, _: FrameType | None) -> NoReturn:
    raise Interrupted(signal.Signals(signum).name)


def _hold_signals() -> None:
    # Cleanup is bounded (the bridge gets SIGKILL after its drain deadline, Kafka after 30 s); a second Ctrl-C
    # must not cut it short and leave a broker or a bridge behind.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def _port(text: str) -> int:
    value = int(text)
    if not 1024 <= value < 65535:
        raise argparse.ArgumentTypeError(f"must be 1024 to 65534 (the controller takes the next port), got {text}")
    return value


def _event_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_EVENTS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_EVENTS:,}, got {text}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description="Run the bridge for real on a local Kafka, Post API sandbox and schema registry.",
    )
    parser.add_argument(
        "--events",
        metavar="N",
        type=_event_count,
        default=5000,
        help=f"sample events to produce (default 5000, at most {MAX_EVENTS:,}; bench/ measures larger volumes)",
    )
    parser.add_argument(
        "--no-poison",
        dest="poison",
        action="store_false",
        help="leave out the poison records that show the dead-letter topic at work",
    )
    parser.add_argument(
        "--kafka-port",
        metavar="PORT",
        type=_port,
        default=KAFKA_PORT,
        help=f"the demo broker's port; the controller takes the next (default {KAFKA_PORT})",
    )
    parser.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        default=180.0,
        help="seconds to wait for every event to arrive (default 180)",
    )
    parser.add_argument("--seed", metavar="N", type=int, default=1, help="seed of the sample events (default 1)")
    parser.add_argument(
        "--keep-topics",
        action="store_true",
        help="keep the topic and the dead-letter topic, for `appmetrica-bridge dead-letters` on a broker left running",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    demo: Demo | None = None
    outcome: Outcome | None = None
    failure = ""
    code = 1
    try:
        with contextlib.ExitStack() as cleanup:
            try:
                demo = Demo(args, cleanup)
                outcome = demo.run()
            except (KeyboardInterrupt, Interrupted) as exc:
                print(f"\ndemo: interrupted ({str(exc) or 'Ctrl-C'}); stopping what it started", file=sys.stderr)
                code = 130
            except DemoError as exc:
                failure = str(exc)
            except Exception:
                traceback.print_exc()
                failure = "the unexpected error above"
            finally:
                _hold_signals()
    except Exception as exc:  # the children may be left behind: say so rather than only print a traceback
        print(f"demo: cleanup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        failure = failure or "the cleanup failed"
    # Printed after the cleanup, so the verdict is the last thing on the screen.
    if failure:
        print(f"demo: FAILED: {failure}", file=sys.stderr)
        return 1
    if outcome is not None and demo is not None:
        _print(outcome, time.monotonic() - demo.clock.began)
        return 1 if outcome.problems else 0
    return code


def _print(outcome: Outcome, took_s: float) -> None:
    print()
    verdict = "FAILED" if outcome.problems else "PASSED"
    print(f"appmetrica-kafka-bridge demo: {verdict} in {took_s:.1f} s")
    width = max(len(label or "") for label, _ in outcome.lines)
    for label, value in outcome.lines:
        print(f"  {label:<{width}}  {value}" if label is not None else f"  {'':<{width}}    {value}")
    for problem in outcome.problems:
        print(f"  PROBLEM: {problem}")
    if outcome.kept:
        print(f"  topics kept for a look: {outcome.kept}")
    if outcome.problems:
        print(f"  the bridge's log ends with:\n{outcome.log_tail}")


if __name__ == "__main__":
    sys.exit(main())
