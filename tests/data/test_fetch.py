"""Downloads against a loopback server: checksums, retries, resume, errors; safe extraction."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.loopback import Behaviour, Served, serve
from trackvision.data.fetch import Downloader, RemoteFile, safe_extract
from trackvision.errors import DataError

BODY = bytes(range(256)) * 4096  # 1 MiB
MD5 = hashlib.md5(BODY).hexdigest()


def _downloader(tmp_path: Path, url: str) -> Downloader:
    return Downloader(cache_dir=tmp_path / "cache", mirror=url, retries=3, backoff=0.01, timeout=5)


def test_download_via_mirror_checks_md5_and_caches(tmp_path: Path) -> None:
    with serve(Served(files={"a.bin": BODY})) as srv:
        dl = _downloader(tmp_path, srv.url)
        path = dl.fetch(RemoteFile("http://unreachable.invalid/a.bin", "a.bin", MD5))
        assert path.read_bytes() == BODY
        assert not path.with_name("a.bin.part").exists()
        dl.fetch(RemoteFile("http://unreachable.invalid/a.bin", "a.bin", MD5))
    assert [name for name, _ in srv.requests] == ["a.bin"]  # the second call used the cache


def test_checksum_mismatch_fails_and_leaves_nothing(tmp_path: Path) -> None:
    with serve(Served(files={"a.bin": BODY})) as srv:
        dl = _downloader(tmp_path, srv.url)
        with pytest.raises(DataError, match=r"a\.bin: checksum mismatch .*expected 0+"):
            dl.fetch(RemoteFile("x", "a.bin", "0" * 32))
    assert list((tmp_path / "cache").iterdir()) == []


def test_dropped_connection_resumes_with_range(tmp_path: Path) -> None:
    served = Served(files={"a.bin": BODY}, behaviour={"a.bin": Behaviour(drop_after=300_000)})
    with serve(served) as srv:
        path = _downloader(tmp_path, srv.url).fetch(RemoteFile("x", "a.bin", MD5))
    assert path.read_bytes() == BODY
    assert srv.requests == [("a.bin", None), ("a.bin", "bytes=300000-")]


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path) -> None:
    how = Behaviour(drop_after=300_000, ignore_range=True)
    with serve(Served(files={"a.bin": BODY}, behaviour={"a.bin": how})) as srv:
        path = _downloader(tmp_path, srv.url).fetch(RemoteFile("x", "a.bin", MD5))
    assert path.read_bytes() == BODY


def test_5xx_is_retried_then_succeeds(tmp_path: Path) -> None:
    served = Served(files={"a.bin": BODY}, behaviour={"a.bin": Behaviour(fail_with=[500, 503])})
    with serve(served) as srv:
        path = _downloader(tmp_path, srv.url).fetch(RemoteFile("x", "a.bin", MD5))
    assert path.read_bytes() == BODY and len(srv.requests) == 3


def test_persistent_500_fails_naming_the_url_and_the_way_out(tmp_path: Path) -> None:
    served = Served(files={"a.bin": BODY}, behaviour={"a.bin": Behaviour(fail_with=[500] * 10)})
    with serve(served) as srv, pytest.raises(DataError) as err:
        _downloader(tmp_path, srv.url).fetch(RemoteFile("x", "a.bin", MD5))
    message = str(err.value)
    assert f"{srv.url}/a.bin" in message and "HTTP 500" in message
    assert "dvc pull" in message and str(tmp_path / "cache" / "a.bin") in message
    assert len(srv.requests) == 4  # first try + 3 retries


def test_404_fails_at_once(tmp_path: Path) -> None:
    with serve(Served()) as srv, pytest.raises(DataError, match="HTTP 404"):
        _downloader(tmp_path, srv.url).fetch(RemoteFile("x", "missing.zip"))
    assert len(srv.requests) == 1


def test_dead_network_is_a_clear_error(tmp_path: Path) -> None:
    dl = Downloader(cache_dir=tmp_path, mirror="http://127.0.0.1:9", retries=1, backoff=0.01)
    with pytest.raises(DataError, match=r"http://127\.0\.0\.1:9/a\.zip: download failed"):
        dl.fetch(RemoteFile("x", "a.zip"))


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "bad", ["../evil.txt", "ok/../../evil.txt", "/etc/evil.txt", "..\\evil.txt", "C:/evil.txt"]
)
def test_zip_escaping_its_folder_is_refused(tmp_path: Path, bad: str) -> None:
    archive = _zip(tmp_path / "a.zip", {"fine.txt": b"x", bad: b"y"})
    with pytest.raises(DataError, match="outside the target"):
        safe_extract(archive, tmp_path / "out", max_bytes=1 << 20)
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "fine.txt").exists()  # nothing extracted at all


def test_tar_symlink_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        link = tarfile.TarInfo("link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(DataError, match="non-regular"):
        safe_extract(archive, tmp_path / "out", max_bytes=1 << 20)


def test_archive_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"big.bin": b"\0" * 10_000})
    with pytest.raises(DataError, match="over the limit"):
        safe_extract(archive, tmp_path / "out", max_bytes=1_000)


def test_good_archives_extract(tmp_path: Path) -> None:
    _zip(tmp_path / "a.zip", {"d/x.txt": b"zip"})
    safe_extract(tmp_path / "a.zip", tmp_path / "z", max_bytes=1 << 20)
    assert (tmp_path / "z" / "d" / "x.txt").read_bytes() == b"zip"
    buf = io.BytesIO(b"tar")
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("d/y.txt")
        info.size = 3
        tf.addfile(info, buf)
    safe_extract(tmp_path / "a.tar.gz", tmp_path / "t", max_bytes=1 << 20)
    assert (tmp_path / "t" / "d" / "y.txt").read_bytes() == b"tar"
