"""Downloads that survive real networks, and archive extraction that cannot escape its folder.

- Streamed to ``<cache>/<name>.part`` with a progress bar, renamed only once the checksum matches.
- Retries with exponential back-off on connection errors, timeouts and HTTP 5xx; 4xx fails at once.
- Resumes a partial file with an HTTP Range request (Flickr8k is 1 GB).
- A cache outside DVC's outputs, so no re-run or other experiment downloads a file twice.
- ``mirror``: fetch ``<mirror>/<file name>`` instead of the official URL.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from trackvision.errors import DataError

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: where it lives officially, its name, and its published checksum if any."""

    url: str
    name: str
    md5: str | None = None


@dataclass(frozen=True)
class Downloader:
    """Download settings (``download.*`` in params.yaml)."""

    cache_dir: Path
    mirror: str = ""
    retries: int = 4
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    timeout: float = 30.0
    max_extract_bytes: int = 5 << 30
    # file name -> md5 that replaces the published one (a mirror that repacks an archive); the
    # check itself is never skipped.
    checksums: Mapping[str, str] = field(default_factory=dict)

    def url_for(self, remote: RemoteFile) -> str:
        return f"{self.mirror.rstrip('/')}/{remote.name}" if self.mirror else remote.url

    def fetch(self, remote: RemoteFile) -> Path:
        """The cached file for ``remote``, downloading (or resuming) it first if needed."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if remote.name in self.checksums:
            remote = RemoteFile(remote.url, remote.name, self.checksums[remote.name])
        target = self.cache_dir / remote.name
        if target.is_file():
            if remote.md5 is None or file_digest(target, "md5") == remote.md5:
                log.info("cached: %s", target)
                return target
            log.warning("%s: checksum differs from the published one; downloading again", target)
            target.unlink()
        url = self.url_for(remote)
        part = target.with_name(target.name + ".part")
        for attempt in range(self.retries + 1):
            try:
                self._stream(url, part)
                break
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == self.retries:
                    raise self._unreachable(url, target, f"HTTP {exc.code} {exc.reason}") from exc
                reason = f"HTTP {exc.code}"
            except (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError) as exc:
                if attempt == self.retries:
                    raise self._unreachable(url, target, str(exc)) from exc
                reason = str(exc)
            delay = self.backoff * 2**attempt
            log.warning(
                "%s: %s; retry %d/%d in %.1fs", url, reason, attempt + 1, self.retries, delay
            )
            time.sleep(delay)
        if remote.md5 is not None:
            got = file_digest(part, "md5")
            if got != remote.md5:
                part.unlink()
                raise DataError(
                    f"{url}: checksum mismatch (md5 {got}, expected {remote.md5}); the partial "
                    "file was deleted. The server or mirror serves a different file."
                )
        os.replace(part, target)
        return target

    def fetch_extracted(self, remote: RemoteFile) -> tuple[Path, str]:
        """Fetch an archive and extract it once into the cache; returns (folder, archive sha256).

        The sha256 goes into the source's manifest, so a later run notices when a file without a
        published checksum has changed.
        """
        archive = self.fetch(remote)
        digest = file_digest(archive)
        folder = self.cache_dir / f"{remote.name}.{digest[:12]}.d"
        if not folder.is_dir():
            staging = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(staging, ignore_errors=True)
            safe_extract(archive, staging, self.max_extract_bytes)
            os.replace(staging, folder)
        return folder, digest

    def _stream(self, url: str, part: Path) -> None:
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            if have and response.status != 206:
                have = 0  # the server ignored the Range header: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with (
                open(part, "ab" if have else "wb") as out,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=part.stem,
                    disable=None,
                ) as bar,
            ):
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and part.stat().st_size < total:
                raise ConnectionError(
                    f"connection closed after {part.stat().st_size} of {total} bytes"
                )

    def _unreachable(self, url: str, target: Path, reason: str) -> DataError:
        return DataError(
            f"{url}: download failed ({reason}). Instead: `dvc pull` the prepared data, or put the "
            f"file at {target} yourself, or set download.mirror, or use an embedded source "
            "(data.source=synthetic_text or digits)."
        )


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check_member(name: str, archive: Path) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    # Absolute, parent-relative, or a Windows drive ("C:") all point outside the target.
    if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise DataError(f"{archive}: refusing entry {name!r}, which would write outside the target")


def safe_extract(archive: Path, dest: Path, max_bytes: int) -> None:
    """Extract a zip or tar archive into ``dest``; refuse escapes, links and oversized contents."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member(info.filename, archive)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise DataError(f"{archive}: refusing link entry {info.filename!r}")
            _check_size(archive, sum(i.file_size for i in infos), max_bytes)
            zf.extractall(dest)
        return
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                _check_member(member.name, archive)
                if not (member.isfile() or member.isdir()):
                    raise DataError(f"{archive}: refusing non-regular entry {member.name!r}")
            _check_size(archive, sum(m.size for m in members), max_bytes)
            tf.extractall(dest, filter="data")
        return
    raise DataError(f"{archive}: not a zip or tar archive")


def _check_size(archive: Path, total: int, max_bytes: int) -> None:
    if total > max_bytes:
        raise DataError(
            f"{archive}: would expand to {total:,} bytes, over the limit of {max_bytes:,} "
            "(download.max_extract_gb)"
        )
