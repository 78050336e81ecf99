"""Every shell command of the README and docs/ runs as printed, from the checkout, with an empty home.

Commands come from the ``sh`` blocks and from the ``$ `` lines of ``text`` blocks; each one either runs here (exit 0)
or is in SKIPPED with the reason it cannot run offline on one machine. The walkthrough on the local broker runs as
one session, in order, the way a user types it. Every ``yaml`` block is a configuration example: laid over a small
base configuration, ``check-config`` must accept it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.cli import main as bridge_main
from devtools.kafka_local import KAFKA_VERSION, libs_dir

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
VENV_BIN = Path(sys.executable).parent

SKIPPED: dict[str, str] = {
    r"scripts/demo": "the demo itself: a broker and the main job end to end; the README's sample output is its run",
    r"scripts/test": "the whole suite: a test cannot run the suite it belongs to",
    r"scripts/check-chart": "the chart checks, which scripts/test runs",
    r"\.venv/bin/pytest .*": "runs tests, which scripts/test runs",
    r"\.venv/bin/python -m bench\.(throughput --latency-ms|transform_speed).*": "a measurement taking minutes",
    r"docker .*": "needs Docker",
    r"kubectl .*": "needs a Kubernetes cluster",
    r"kafka-acls .*": "needs a secured Kafka cluster and Kafka's shell tools",
    r"helm dependency build .*": "needs Helm on PATH (scripts/check-chart fetches a pinned one for the offline checks)",
    r"helm upgrade .*": "needs a Kubernetes cluster",
    r"scripts/test .*": "runs tests, which scripts/test runs",
    r"scripts/demo --keep-topics": "the demo itself, as scripts/demo",
    r"python -m devtools\.kafka_local start --port 28092": "the demo's broker; the walkthrough starts one",
    r"\.venv/bin/python -m devtools\.kafka_local start": "starts the broker, as the walkthrough does as printed",
    r"python -m devtools\.helm path": "fetches Helm from the network the first time",
    r"appmetrica-bridge run --config .*": "runs until a signal; the walkthrough runs and stops it",
    r"appmetrica-bridge registry &": "a server in the background; the walkthrough runs the sandbox the same way",
    r"appmetrica-bridge (run|registry|check-config)|python -m bridge": "names the command in running text",
    r"python -m bench\.throughput": "a measurement taking minutes (named in running text)",
    r"scripts/check-values values-prod\.yaml": "your own values file; tests/test_chart_checks.py runs the command",
    r"scripts/lock( .*)?": "rewrites the lock files from PyPI: a maintainer's step, not an offline check",
    r"\.venv/bin/python -m devtools\.mutation_check": "runs the runtime's tests once per planted bug: minutes; "
    "tests/test_mutation_check.py checks its table",
}
EVENTUALLY: dict[str, str] = {
    "curl -s http://127.0.0.1:8089/sandbox/rows/events": '"total": 4',
}
"""Commands whose output shows the outcome only once the bridge has done its work: retried until it holds this."""
WALKTHROUGH_PORTS = (19092, 19093, 8089, 8090)
"""What the walkthrough's commands listen on, as printed: the broker, its controller, the sandbox, the bridge."""


@dataclass(frozen=True)
class Command:
    """One command as printed, with where it was printed and the block it belongs to."""

    text: str
    where: str
    block: int


def _blocks(path: Path) -> Iterator[tuple[str, int, list[str]]]:
    """Each fenced block's language, first line number and lines."""
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        fence = re.fullmatch(r"```(\w*)", lines[index])
        if fence is None:
            index += 1
            continue
        end = lines.index("```", index + 1)
        yield fence.group(1), index + 1, lines[index + 1 : end]
        index = end + 1


def _strip_comment(line: str) -> str:
    """The command without its trailing comment (no printed command has a '#' of its own after a space)."""
    return re.sub(r"\s+#(\s.*)?$", "", line).strip()


_INLINE = re.compile(r"`((?:[A-Z_]+=\S+ )?(?:appmetrica-bridge|python -m|\.venv/bin/|scripts/|curl )[^`]*)`")
_PLACEHOLDER = re.compile(r"<|…|\b[A-Z]{1,}\b(?!=)")
"""A synopsis, not a command: `<run>`, `…`, or a word in capitals standing for a value (`FILE`, `N`)."""


def inline_commands() -> list[Command]:
    """The commands quoted in running text: a program and at least one argument, no placeholder."""
    found = []
    for path in DOCUMENTS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for text in _INLINE.findall(line):
                arguments = re.sub(r"^[A-Z_]+=\S+ ", "", text).split(" ", 1)[1:]
                if arguments and not _PLACEHOLDER.search(arguments[0]):
                    found.append(Command(text.strip(), f"{path.relative_to(ROOT)}:{number}", -number))
    return found


def commands() -> list[Command]:
    found: list[Command] = inline_commands()
    for number, path in enumerate(DOCUMENTS):
        for language, first, lines in _blocks(path):
            block = number * 10_000 + first
            where = f"{path.relative_to(ROOT)}:{first}"
            if language == "sh":
                joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
                found += [Command(_strip_comment(line), where, block) for line in joined.splitlines() if line.strip()]
            elif language == "text":
                found += [Command(line[2:].strip(), where, block) for line in lines if line.startswith("$ ")]
    return [command for command in found if command.text]


def skipped_because(command: Command) -> str | None:
    return next((why for pattern, why in SKIPPED.items() if re.fullmatch(pattern, command.text)), None)


def _port_taken(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Session:
    """A user's shell: the checkout as working directory, an empty home, background jobs numbered from 1."""

    env: dict[str, str]
    jobs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, text: str) -> str:
        if text in (". .venv/bin/activate", "source .venv/bin/activate"):
            self.env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{self.env['PATH']}"
            self.env["VIRTUAL_ENV"] = str(ROOT / ".venv")
            return ""
        if assignment := re.fullmatch(r"export (\w+)=(\S+)", text):
            self.env[assignment.group(1)] = assignment.group(2)
            return ""
        if text.endswith("&"):
            self.jobs.append(subprocess.Popen(["bash", "-c", f"exec {text[:-1]}"], cwd=ROOT, env=self.env))
            return ""
        if stop := re.fullmatch(r"kill -INT %(\d+) && wait %\1", text):
            job = self.jobs[int(stop.group(1)) - 1]
            job.send_signal(signal.SIGINT)
            assert job.wait(timeout=60) == 0, f"{text}: the job exited with {job.returncode}"
            return ""
        if stop := re.fullmatch(r"kill %(\d+)", text):
            job = self.jobs[int(stop.group(1)) - 1]
            job.terminate()
            job.wait(timeout=30)
            return ""
        wanted = EVENTUALLY.get(text)
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run(
                ["bash", "-c", text], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=240
            )
            settled = done.returncode == 0 and (wanted is None or wanted in done.stdout)
            if settled or wanted is None or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # polling for an outcome (the sandbox listening, the rows uploaded), not an absence
        assert done.returncode == 0, f"{text}: exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        assert wanted is None or wanted in done.stdout, f"{text}: {wanted!r} never appeared:\n{done.stdout[-2000:]}"
        return done.stdout

    def close(self) -> None:
        for job in self.jobs:
            if job.poll() is None:
                job.kill()
                job.wait()


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Session]:
    """A fresh shell: an empty home, and a Kafka cache of its own holding only the jars already fetched."""
    jars = libs_dir()
    if not jars.is_dir():
        pytest.skip(f"the Kafka jars are not cached ({jars}); python -m devtools.kafka_local ensure-jars")
    cache = tmp_path / "cache"
    (cache / f"kafka-{KAFKA_VERSION}").mkdir(parents=True)
    (cache / f"kafka-{KAFKA_VERSION}" / "libs").symlink_to(jars)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != VENV_BIN),
        "BRIDGE_KAFKA_CACHE": str(cache),
        "LANG": "C.UTF-8",
    }
    shell = Session(env)
    shell.run(". .venv/bin/activate")  # what the README's set-up asks for, once per shell
    try:
        yield shell
    finally:
        shell.close()
        if (cache / "run" / "kafka-19092.pid").exists():
            subprocess.run([VENV_BIN / "python", "-m", "devtools.kafka_local", "stop"], cwd=ROOT, env=env, check=False)


def _walkthrough() -> list[Command]:
    everything = commands()
    starts = [c.block for c in everything if c.text == "python -m devtools.kafka_local start"]
    assert len(starts) == 1, "the README's walkthrough on the local broker was not found"
    return [command for command in everything if command.block == starts[0]]


def test_every_command_is_run_or_skipped_with_a_reason(shell: Session) -> None:
    """Each command outside the walkthrough runs alone, in a fresh activated shell; the skipped ones are named."""
    walkthrough = set(_walkthrough())
    ran = []
    for command in commands():
        if command in walkthrough or skipped_because(command):
            continue
        shell.run(command.text)
        ran.append(command.text)
    assert ". .venv/bin/activate" in ran, "the set-up must say how the commands get on the PATH"
    assert "appmetrica-bridge --help" in ran
    assert any(text.startswith("appmetrica-bridge preview --config docs/examples/bridge.yaml --input") for text in ran)


def test_the_skip_list_names_only_printed_commands() -> None:
    printed = [command.text for command in commands()]
    for pattern in SKIPPED:
        assert any(re.fullmatch(pattern, text) for text in printed), f"{pattern!r} matches no printed command"


def test_the_walkthrough_runs_as_printed(shell: Session) -> None:
    """Create a topic, produce the sample, preview it, run the bridge, see the rows arrive, as the README types it."""
    taken = [port for port in WALKTHROUGH_PORTS if _port_taken(port)]
    if taken:
        pytest.skip(f"ports {taken} are in use; the walkthrough's commands name them as printed")
    outputs = {command.text: shell.run(command.text) for command in _walkthrough()}
    summary = next(out for text, out in outputs.items() if text.startswith("appmetrica-bridge dead-letters summary"))
    assert "2 dead letters" in summary
    preview = next(out for text, out in outputs.items() if text.startswith("appmetrica-bridge preview"))
    assert "6 records, 4 rows, 2 dead letters" in preview


# -- configuration examples ---------------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "kafka": {"bootstrap_servers": "127.0.0.1:19092", "topics": ["appmetrica.events"]},
    "avro": {"schema_registry_url": "http://127.0.0.1:8081"},
    "post_api": {"application_id": 1111},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


SECTIONS = {"kafka", "routes", "avro", "post_api", "batch", "upload", "buffer", "transform", "server", "log"}
EVENTS_PARAMETERS = {"application_id", "profile_id", "appmetrica_device_id", "event_name", "event_timestamp"}
EVENTS_PARAMETERS |= {"event_json", "session_type", "app_version_name", "google_aid"}
A_MAPPING = {"profile_id": "user.id", "event_name": "type", "event_timestamp": "ts"}


def _as_configuration(parsed: object) -> dict[str, Any] | None:
    """The bridge configuration a yaml block shows, or None when it shows something else (a chart, a manifest)."""
    if isinstance(parsed, dict) and parsed and set(parsed) <= SECTIONS:
        return parsed
    if isinstance(parsed, dict) and isinstance(parsed.get("config"), dict):  # Helm values: `config` is the file
        return _as_configuration(parsed["config"])
    if isinstance(parsed, list) and all(isinstance(route, dict) and "topics" in route for route in parsed):
        return {"routes": parsed}
    if isinstance(parsed, dict) and parsed and set(parsed) <= EVENTS_PARAMETERS:  # a recipe: lines of a mapping
        mapping = A_MAPPING | parsed
        if "appmetrica_device_id" in parsed and "profile_id" not in parsed:
            del mapping["profile_id"]
        return {"routes": [{"topics": ["docs.example"], "method": "events", "format": "json", "mapping": mapping}]}
    return None


def configuration_examples() -> list[tuple[str, dict[str, Any]]]:
    """Each yaml block that shows a bridge configuration (or a part of one), with where it is printed."""
    examples = []
    for path in DOCUMENTS:
        for language, first, lines in _blocks(path):
            if language != "yaml" or lines[0].startswith("{{"):  # a Helm template is not YAML until rendered
                continue
            configuration = _as_configuration(yaml.safe_load("\n".join(lines)))
            if configuration is not None:
                examples.append((f"{path.relative_to(ROOT)}:{first}", configuration))
    for path in sorted((ROOT / "docs" / "examples").glob("*.yaml")):
        examples.append((str(path.relative_to(ROOT)), yaml.safe_load(path.read_text())))
    return examples


@pytest.mark.parametrize(("where", "example"), configuration_examples(), ids=[w for w, _ in configuration_examples()])
def test_each_configuration_example_passes_check_config(
    where: str,
    example: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump(_merge(BASE, example)))
    monkeypatch.setenv("BRIDGE_POST_API_KEY", "docs-example-key")
    for name in ("KINOTEKA_POST_API_KEY",):
        monkeypatch.setenv(name, "docs-example-key")
    code = bridge_main(["check-config", "--config", str(config)])
    assert code == 0, f"{where}: {capsys.readouterr().err}"


def test_no_text_points_outside_the_project() -> None:
    """Docs and docstrings name only what a clone holds: no design notes beside the checkout, no link out of it."""
    outside = re.compile(r"\bshared/|\]\(\.\./|/work/")
    sources = [*DOCUMENTS, *ROOT.glob("*/**/*.py"), *ROOT.glob("helm/**/*.md")]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources
        if ".venv" not in path.parts and path != Path(__file__)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if outside.search(line)
    ]
    assert found == []
