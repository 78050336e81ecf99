"""A real single-node Apache Kafka 4.x for development, tests and CI, without Docker.

Kafka's jars come from Maven Central into a cache outside the checkout; the broker runs as one combined
KRaft broker+controller bound to loopback only.

    python -m devtools.kafka_local ensure-jars
    python -m devtools.kafka_local start [--port 19092] [--controller-port 19093] [--data-dir DIR]
        [--secure --sasl-port N --ssl-port N --scram-user NAME:PASSWORD ...]
    python -m devtools.kafka_local status [--port 19092]
    python -m devtools.kafka_local stop [--port 19092]
    python -m devtools.kafka_local create-topic NAME [--partitions 1] [--port 19092]

The local broker does not create topics on first use (neither does a production cluster the bridge should meet),
so `create-topic` makes one for your own tries; `python -m devtools.produce` then fills it from a file.

`BRIDGE_KAFKA_CACHE` moves the cache root (default `~/.cache/appmetrica-bridge`).

`--secure` adds two listeners beside the plain one: SASL_SSL with SCRAM-SHA-512 (the `--scram-user`s, created
when the data directory is formatted) and SSL that demands a client certificate (mutual TLS), both with a CA made
for this broker in `<data-dir>/tls`, and turns on the StandardAuthorizer. The plain and controller listeners stay
unauthenticated and their principal (User:ANONYMOUS) is a super user, so the plain listener administers the
broker (topics, ACLs) while clients on the secured ones get only what ACLs grant them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devtools.tls_local import TlsFiles

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
# Kafka's poms declare slf4j-api 1.7, which cannot find log4j's SLF4J 2 provider and would silently log
# nothing (so no readiness line); a direct dependency on slf4j-api 2 wins Maven's nearest-first mediation.
SLF4J_VERSION = "2.0.17"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

HOST = "127.0.0.1"
DEFAULT_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
READY_LINE = b"Kafka Server started"

log = logging.getLogger(__name__)


OUTSIDE_THE_VENV = (
    "this command needs the project's packages: source .venv/bin/activate first, or run it with .venv/bin/python "
    "(scripts/demo creates .venv)"
)


class KafkaLocalError(RuntimeError):
    """The local broker could not be fetched, started or stopped."""


def cache_root() -> Path:
    configured = os.environ.get("BRIDGE_KAFKA_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "appmetrica-bridge"


def libs_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_root() / f"kafka-{version}" / "libs"


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on now; all held open together so the kernel cannot repeat one."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.appmetrica-bridge</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>{plugin}</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
"""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _tool(name: str) -> str:
    if name == "java" and (java_home := os.environ.get("JAVA_HOME")):
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise KafkaLocalError(f"`{name}` is not on PATH; the local Kafka needs Java 17+ and Maven")
    return found


def ensure_jars(version: str = KAFKA_VERSION) -> Path:
    """Fetch Kafka and its logging backend into the cache once; return the directory of jars."""
    libs = libs_dir(version)
    if libs.is_dir():
        return libs
    home = libs.parent
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        if libs.is_dir():  # a concurrent run fetched them while this one waited for the lock
            return libs
        pom = home / "pom.xml"
        pom.write_text(
            _POM.format(kafka=version, slf4j=SLF4J_VERSION, log4j=LOG4J_VERSION, plugin=DEPENDENCY_PLUGIN_VERSION)
        )
        partial = home / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        began = time.monotonic()
        command = [
            _tool("mvn"),
            "-B",
            "-q",
            "-f",
            str(pom),
            # Keeping Maven's repository in the cache makes that one directory all a CI cache needs.
            f"-Dmaven.repo.local={cache_root() / 'm2'}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ]
        log.info("fetching Kafka %s jars with Maven into %s", version, libs)
        fetched = subprocess.run(command, capture_output=True, text=True, check=False)
        if fetched.returncode != 0:
            raise KafkaLocalError(
                f"Maven could not fetch Kafka {version} with {' '.join(command)}\n{fetched.stdout}{fetched.stderr}"
            )
        # The rename is atomic, so a `libs` directory only ever holds a complete set of jars.
        partial.rename(libs)
        count = len(list(libs.glob("*.jar")))
        log.info("fetched %d jars in %.1fs", count, time.monotonic() - began)
    return libs


def _new_cluster_id() -> str:
    # The format of Kafka's Uuid.randomUuid(), the output of `StorageTool random-uuid`, without paying
    # for a JVM start: 16 random bytes in unpadded URL-safe base64, never starting with "-".
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _is_kafka_process(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc", str(pid))
    if not proc.is_dir():  # no procfs (macOS): existence is all that can be checked
        return True
    try:
        state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    # A zombie still answers kill(0), and after a reboot a stale pid file may name an unrelated process.
    return state != "Z" and b"kafka.Kafka" in cmdline


@dataclass(frozen=True)
class Secured:
    """The secured listeners of a broker: ports, SCRAM users and ACL super users beyond the plain principal."""

    sasl_port: int
    ssl_port: int
    scram_users: Mapping[str, str] = field(default_factory=dict)
    """SCRAM-SHA-512 user name -> password."""
    super_users: Sequence[str] = ()
    """Principals (`User:name`) the authorizer lets do anything; the mutual-TLS client is `User:bridge-mtls`."""


class LocalKafka:
    """One combined KRaft broker+controller on loopback, with its state in `data_dir`.

    The data directory survives `stop()` and `restart()`, so topics and committed offsets do too.
    """

    def __init__(
        self,
        *,
        port: int = DEFAULT_PORT,
        controller_port: int = DEFAULT_CONTROLLER_PORT,
        data_dir: Path | None = None,
        version: str = KAFKA_VERSION,
        heap: str = "512m",
        secured: Secured | None = None,
        full_jit: bool = False,
    ) -> None:
        """`full_jit`: the JVM's optimising compiler too, for a broker whose steady-state speed is measured (the
        benchmark's); without it the broker starts with about 60% of the CPU, which a test's or the demo's needs."""
        self.port = port
        self.secured = secured
        self.controller_port = controller_port
        self.data_dir = data_dir if data_dir is not None else cache_root() / "state" / f"kafka-{port}"
        self.version = version
        self.heap = heap
        self._jvm_options = () if full_jit else ("-XX:TieredStopAtLevel=1",)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def tls(self) -> TlsFiles:
        """The broker's CA and certificates (made at the first secured start, kept with the data directory)."""
        # Imported here: trustme and cryptography are dev dependencies only the secured broker needs.
        from devtools.tls_local import TlsFiles, make_tls_files

        directory = self.data_dir / "tls"
        keystore_password_file = directory / "keystore.password"
        if not keystore_password_file.exists():
            files = make_tls_files(directory)
            keystore_password_file.write_text(files.keystore_password)
            return files
        return TlsFiles(
            ca=directory / "ca.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server.key",
            client_cert=directory / "client.pem",
            client_key=directory / "client.key",
            keystore=directory / "broker.p12",
            keystore_password=keystore_password_file.read_text(),
        )

    @property
    def sasl_bootstrap(self) -> str:
        assert self.secured is not None
        return f"{HOST}:{self.secured.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        assert self.secured is not None
        return f"{HOST}:{self.secured.ssl_port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def pid_file(self) -> Path:
        # Kept by port rather than in the data dir, so `stop --port N` finds any broker this tool started.
        return cache_root() / "run" / f"kafka-{self.port}.pid"

    def pid(self) -> int | None:
        """The pid of the broker this tool started on the port, if it still runs."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if _is_kafka_process(pid) else None

    def start(self, timeout: float = 60.0) -> float:
        """Start the broker, wait up to `timeout` for it to serve, and return the seconds it all took."""
        began = time.monotonic()
        if self.pid() is not None:
            raise KafkaLocalError(f"a broker started by this tool already runs on {self.bootstrap}")
        ports = [self.port, self.controller_port]
        if self.secured is not None:
            ports += [self.secured.sasl_port, self.secured.ssl_port]
        for port in ports:
            if port_open(port):
                raise KafkaLocalError(f"{HOST}:{port} is already in use by another process")
        libs = ensure_jars(self.version)
        java = _tool("java")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = self._write_config()
        classpath = ["-cp", f"{libs}/*"]
        logging_config = f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}"
        if not (self.data_dir / "data" / "meta.properties").exists():
            formatted = subprocess.run(
                [
                    *(java, *self._jvm_options, logging_config, *classpath, "kafka.tools.StorageTool", "format"),
                    *("--cluster-id", _new_cluster_id(), "--config", str(properties)),
                    *self._scram_arguments(),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if formatted.returncode != 0:
                raise KafkaLocalError(f"formatting {self.data_dir} failed:\n{formatted.stdout}{formatted.stderr}")
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as output:
            self._process = subprocess.Popen(
                [
                    *(java, *self._jvm_options, f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"),
                    *("-Djava.awt.headless=true", logging_config, *classpath, "kafka.Kafka", str(properties)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                # Its own session keeps a CLI-started broker alive after the shell's Ctrl-C or exit.
                start_new_session=True,
            )
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{self._process.pid}\n")
        self._wait_ready(self._process, log_offset, time.monotonic() + timeout)
        elapsed = time.monotonic() - began
        log.info("Kafka %s serves %s after %.1fs (log: %s)", self.version, self.bootstrap, elapsed, self.log_file)
        return elapsed

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the broker, SIGKILL it after `timeout`; return whether one was running."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):  # it may exit on its own meanwhile
                os.kill(pid, signal.SIGTERM)
                if not self._wait_exit(pid, timeout):
                    log.warning("Kafka pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout)
                    os.kill(pid, signal.SIGKILL)
                    self._wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        self._process = None
        return pid is not None

    def restart(self, timeout: float = 60.0) -> float:
        """Stop and start again on the same data dir; return the seconds the start took."""
        self.stop()
        return self.start(timeout)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout)  # reaps our own child, which would otherwise stay a zombie
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while _is_kafka_process(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _wait_ready(self, process: subprocess.Popen[bytes], log_offset: int, deadline: float) -> None:
        while True:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise KafkaLocalError(
                    f"Kafka exited with code {process.returncode} while starting; "
                    f"{self.log_file} ends with:\n{self._log_tail(log_offset)}"
                )
            if READY_LINE in self._log_since(log_offset) and port_open(self.port):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise KafkaLocalError(
                    f"Kafka did not report ready on {self.bootstrap} in time; "
                    f"{self.log_file} ends with:\n{self._log_tail(log_offset)}"
                )
            time.sleep(0.1)

    def _log_since(self, offset: int) -> bytes:
        with self.log_file.open("rb") as handle:
            handle.seek(offset)
            return handle.read()

    def _log_tail(self, offset: int, lines: int = 40) -> str:
        return "\n".join(self._log_since(offset).decode(errors="replace").splitlines()[-lines:])

    def _scram_arguments(self) -> list[str]:
        users = self.secured.scram_users if self.secured is not None else {}
        return [f"--add-scram=SCRAM-SHA-512=[name={name},password={password}]" for name, password in users.items()]

    def _secured_settings(self) -> dict[str, str]:
        if self.secured is None:
            return {}
        tls = self.tls
        secured = self.secured
        return {
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port},"
            f"SASL_SSL://{HOST}:{secured.sasl_port},SSL://{HOST}:{secured.ssl_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port},SASL_SSL://{HOST}:{secured.sasl_port},"
            f"SSL://{HOST}:{secured.ssl_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(tls.keystore),
            "ssl.keystore.password": tls.keystore_password,
            "ssl.key.password": tls.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca),
            "listener.name.ssl.ssl.client.auth": "required",
            # A client certificate's principal is its common name, as SCRAM users are plain names.
            "ssl.principal.mapping.rules": "RULE:^.*CN=([a-zA-Z0-9._-]+).*$/$1/,DEFAULT",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": ";".join(["User:ANONYMOUS", *secured.super_users]),
        }

    def _write_config(self) -> Path:
        (self.data_dir / "log4j2.properties").write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.out.type = Console",
                    "appender.out.name = STDOUT",
                    "appender.out.layout.type = PatternLayout",
                    "appender.out.layout.pattern = [%d] %p %m (%c)%n",
                    "rootLogger.level = INFO",
                    "rootLogger.appenderRef.out.ref = STDOUT",
                    # Per-request lines would bury the startup and error messages.
                    "logger.request.name = kafka.request.logger",
                    "logger.request.level = WARN",
                    "logger.channel.name = kafka.network.RequestChannel$",
                    "logger.channel.level = WARN",
                    "",
                ]
            )
        )
        properties = self.data_dir / "server.properties"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "data"),
            # Tests create every topic they use; a typo must fail rather than create a new topic.
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.replication.factor": "1",
            # Every partition is a log the broker loads on each (re)start; one node gains nothing from 50.
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # The cleaner's default 128 MiB dedupe buffer would take a quarter of the small heap.
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            **self._secured_settings(),
        }
        properties.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        return properties


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.kafka_local", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ensure-jars", help="fetch the Kafka jars into the cache if missing")
    create = commands.add_parser("create-topic", help="create a topic on the broker at --port (exit 0 if it exists)")
    create.add_argument("name", help="the topic's name")
    create.add_argument("--partitions", type=int, default=1, help="partitions of a new topic (default 1)")
    create.add_argument("--port", type=int, default=DEFAULT_PORT)
    create.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    for name, help_text in [
        ("start", "start a broker, or reuse one already serving the port"),
        ("stop", "stop the broker this tool started on the port"),
        ("status", "say whether a broker runs on the port (exit 3 when none)"),
    ]:
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--port", type=int, default=DEFAULT_PORT)
        command.add_argument("--controller-port", type=int, default=DEFAULT_CONTROLLER_PORT)
        command.add_argument("--data-dir", type=Path, help="default: <cache>/state/kafka-<port>")
        command.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
        if name == "start":
            command.add_argument("--secure", action="store_true", help="add the SASL_SSL and mutual-TLS listeners")
            command.add_argument("--sasl-port", type=int, help="SASL_SSL listener (default: port + 2)")
            command.add_argument("--ssl-port", type=int, help="mutual-TLS listener (default: port + 3)")
            command.add_argument(
                "--scram-user",
                action="append",
                default=[],
                metavar="NAME:PASSWORD",
                help="a SCRAM-SHA-512 user, created when the data directory is first formatted (repeatable)",
            )
            command.add_argument(
                "--super-user", action="append", default=[], metavar="NAME", help="a user the authorizer lets do all"
            )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="kafka_local: %(message)s")
    try:
        if args.command == "ensure-jars":
            print(ensure_jars())
            return 0
        if args.command == "create-topic":
            return create_topic(args.name, args.partitions, f"{HOST}:{args.port}", args.timeout)
        kafka = LocalKafka(
            port=args.port, controller_port=args.controller_port, data_dir=args.data_dir, secured=_secured(args)
        )
        return _run(args.command, kafka, args.timeout)
    except KafkaLocalError as error:
        print(f"kafka_local: error: {error}", file=sys.stderr)
        return 1


def create_topic(name: str, partitions: int, bootstrap: str, timeout: float) -> int:
    """Create ``name`` with ``partitions`` partitions; an existing topic is left as it is and named."""
    if partitions < 1:
        raise KafkaLocalError(f"--partitions must be at least 1, not {partitions}")
    # Imported here: the broker's own commands need nothing but the standard library.
    try:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
    except ImportError:
        raise KafkaLocalError(OUTSIDE_THE_VENV) from None

    if not port_open(int(bootstrap.rpartition(":")[2])):
        raise KafkaLocalError(f"no broker answers at {bootstrap}; start one with: python -m devtools.kafka_local start")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name]
    try:
        future.result(timeout=timeout)
    except KafkaException as error:
        if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise KafkaLocalError(f"cannot create topic {name!r}: {error.args[0].str()}") from None
        existing = admin.list_topics(name, timeout=timeout).topics[name]
        print(f"topic {name} already exists at {bootstrap} ({len(existing.partitions)} partitions); left as it is")
        return 0
    print(f"created topic {name} at {bootstrap} ({partitions} partition{'s' if partitions > 1 else ''})")
    return 0


def _secured(args: argparse.Namespace) -> Secured | None:
    if not getattr(args, "secure", False):
        return None
    users = dict(user.partition(":")[::2] for user in args.scram_user)
    return Secured(
        sasl_port=args.sasl_port or args.port + 2,
        ssl_port=args.ssl_port or args.port + 3,
        scram_users=users,
        super_users=[f"User:{name}" for name in args.super_user],
    )


def _run(command: str, kafka: LocalKafka, timeout: float) -> int:
    pid = kafka.pid()
    if command == "start":
        if pid is not None:
            print(f"the broker this tool started already serves {kafka.bootstrap} (pid {pid}); reusing it")
            return 0
        if port_open(kafka.port):
            print(f"a process this tool did not start listens on {kafka.bootstrap}; reusing it as the broker")
            return 0
        kafka.start(timeout)
        print(f"Kafka {kafka.version} running at {kafka.bootstrap} (pid {kafka.pid()}, log {kafka.log_file})")
        if kafka.secured is not None:
            from devtools.tls_local import CLIENT_NAME

            print(
                f"SASL_SSL (SCRAM-SHA-512) at {kafka.sasl_bootstrap}, mutual TLS at {kafka.ssl_bootstrap} "
                f"(client certificate CN={CLIENT_NAME}); CA and certificates in {kafka.tls.ca.parent}"
            )
        return 0
    if command == "stop":
        if kafka.stop(timeout):
            print(f"stopped the broker at {kafka.bootstrap} (pid {pid})")
        elif port_open(kafka.port):
            print(f"{kafka.bootstrap} is served by a process this tool did not start; left it running")
            return 1
        else:
            print(f"no broker runs at {kafka.bootstrap}")
        return 0
    if pid is not None:
        print(f"running at {kafka.bootstrap} (pid {pid})")
        return 0
    if port_open(kafka.port):
        print(f"{kafka.bootstrap} is served by a process this tool did not start")
        return 0
    print(f"no broker runs at {kafka.bootstrap}")
    return 3


if __name__ == "__main__":
    sys.exit(main())
