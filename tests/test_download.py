"""Downloads against a local HTTP server (127.0.0.1 only) with Range support and scripted failures."""

import hashlib
import http.server
import io
import re
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

import lib.download
from lib.data import StreetHazards
from lib.download import (
    DownloadError,
    check_streethazards_counts,
    count_streethazards_images,
    download_file,
    download_gdrive,
    download_streethazards,
    extract_tar,
    md5_matches,
)
from tests.conftest import write_split

ROOT = Path(__file__).resolve().parents[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` with Range support; ``server.drops`` lists byte counts after which
    successive responses are cut (one entry per response, then full responses)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        server = self.server
        server.log.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404, "not found")
            return
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        limit = server.drops.pop(0) if server.drops else None
        payload = body[start:] if limit is None else body[start : start + limit]
        self.wfile.write(payload)
        if limit is not None:
            self.wfile.flush()
            self.close_connection = True  # the client sees a short body: an interrupted transfer

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.drops, httpd.log = {}, [], []
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


FAST = dict(retries=3, timeout=5.0, retry_wait=0.0, chunk_size=1024, progress=False)


def test_full_download(server, tmp_path):
    data = bytes(range(256)) * 40
    server.files["/a.tar"] = data
    dest = download_file(f"{server.url}/a.tar", tmp_path / "a.tar", md5=_md5(data), **FAST)
    assert dest.read_bytes() == data and not (tmp_path / "a.tar.part").exists()
    assert server.log == [("/a.tar", None)]
    download_file(f"{server.url}/a.tar", dest, md5=_md5(data), **FAST)  # present: only checked
    assert len(server.log) == 1


def test_interrupted_transfer_resumes_with_a_range_request(server, tmp_path):
    data = bytes(range(256)) * 40
    server.files["/a.tar"] = data
    server.drops = [3000, 2500]  # two cut responses, then a full one
    dest = download_file(f"{server.url}/a.tar", tmp_path / "a.tar", md5=_md5(data), **FAST)
    assert dest.read_bytes() == data
    assert server.log == [("/a.tar", None), ("/a.tar", "bytes=3000-"), ("/a.tar", "bytes=5500-")]


def test_partial_file_from_an_earlier_run_is_continued(server, tmp_path):
    data = b"0123456789" * 500
    server.files["/a.tar"] = data
    (tmp_path / "a.tar.part").write_bytes(data[:1234])
    download_file(f"{server.url}/a.tar", tmp_path / "a.tar", md5=_md5(data), **FAST)
    assert (tmp_path / "a.tar").read_bytes() == data and server.log == [("/a.tar", "bytes=1234-")]


def test_complete_part_file_is_not_downloaded_again(server, tmp_path):
    data = b"x" * 3000
    server.files["/a.tar"] = data
    (tmp_path / "a.tar.part").write_bytes(data)
    download_file(f"{server.url}/a.tar", tmp_path / "a.tar", md5=_md5(data), **FAST)  # 416 -> complete
    assert (tmp_path / "a.tar").read_bytes() == data and server.log == [("/a.tar", "bytes=3000-")]


def test_corrupted_download_is_rejected_and_removed(server, tmp_path):
    data = b"the real archive" * 100
    server.files["/a.tar"] = data[:-1] + b"!"
    with pytest.raises(
        DownloadError, match=r"MD5 of the downloaded a.tar is [0-9a-f]{32}, expected .*run the download again"
    ):
        download_file(f"{server.url}/a.tar", tmp_path / "a.tar", md5=_md5(data), **FAST)
    assert not (tmp_path / "a.tar").exists() and not (tmp_path / "a.tar.part").exists()


def test_existing_corrupted_file_names_the_fix(server, tmp_path):
    (tmp_path / "a.tar").write_bytes(b"junk")
    with pytest.raises(DownloadError, match=f"{tmp_path / 'a.tar'} exists but its MD5 .*delete it and run"):
        download_file(f"{server.url}/a.tar", tmp_path / "a.tar", md5="0" * 32, **FAST)
    assert (tmp_path / "a.tar").read_bytes() == b"junk"  # a file we did not write is never deleted


@pytest.fixture
def md5_calls(monkeypatch) -> list[Path]:
    """The files `lib.download.md5sum` hashes (each a full read: 9 GB for the train archive)."""
    calls: list[Path] = []
    real = lib.download.md5sum

    def counting(path, **kwargs):
        calls.append(Path(path))
        return real(path, **kwargs)

    monkeypatch.setattr(lib.download, "md5sum", counting)
    return calls


def test_an_existing_file_is_hashed_once(server, tmp_path, md5_calls):
    dest = tmp_path / "a.tar"
    dest.write_bytes(b"junk")
    with pytest.raises(DownloadError, match=f"its MD5 is {_md5(b'junk')}, expected 0{{32}}"):
        download_file(f"{server.url}/a.tar", dest, md5="0" * 32, **FAST)  # mismatch
    assert md5_calls == [dest]
    download_file(f"{server.url}/a.tar", dest, md5=_md5(b"junk"), **FAST)  # match
    assert md5_calls == [dest, dest] and server.log == []


def test_a_downloaded_file_is_hashed_once(server, tmp_path, md5_calls):
    data = b"the real archive" * 100
    server.files["/a.tar"] = data[:-1] + b"!"
    with pytest.raises(DownloadError, match=f"is {_md5(data[:-1] + b'!')}, expected {_md5(data)}"):
        download_file(f"{server.url}/a.tar", tmp_path / "a.tar", md5=_md5(data), **FAST)  # mismatch
    assert md5_calls == [tmp_path / "a.tar.part"]
    server.files["/a.tar"] = data
    download_file(f"{server.url}/a.tar", tmp_path / "a.tar", md5=_md5(data), **FAST)  # match
    assert md5_calls == [tmp_path / "a.tar.part"] * 2


def test_too_many_interruptions_keep_the_partial_file(server, tmp_path):
    server.files["/a.tar"] = b"y" * 5000
    server.drops = [1000] * 10
    with pytest.raises(
        DownloadError, match="failed 2 times.*keeps the 2000 bytes received: run again to resume"
    ):
        download_file(f"{server.url}/a.tar", tmp_path / "a.tar", **{**FAST, "retries": 1})
    assert (tmp_path / "a.tar.part").stat().st_size == 2000


def test_http_error_names_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match=f"{server.url}/missing.tar: HTTP 404"):
        download_file(f"{server.url}/missing.tar", tmp_path / "m.tar", **FAST)


def test_md5_full_prefix_and_prefix_suffix():
    digest = "cd2d1a8649848afb85b5059d227d2090"
    assert md5_matches(digest, digest) and md5_matches(digest, "CD2D1A86")
    assert md5_matches(digest, "cd2d1a86…d2090") and md5_matches(digest, "cd2d1a86...d2090")
    assert not md5_matches(digest, "cd2d1a87") and not md5_matches(digest, "cd2d1a86…d2091")
    with pytest.raises(ValueError, match="at least 6 hex digits"):
        md5_matches(digest, "cd2")
    with pytest.raises(ValueError, match="hex"):
        md5_matches(digest, "not-a-digest")


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_extract_skips_what_is_there_and_rejects_unsafe_members(tmp_path):
    tar = tmp_path / "x.tar"
    tar.write_bytes(_tar_bytes({"d/a.txt": b"aaa", "d/b.txt": b"bbbb"}))
    out = tmp_path / "out"
    assert extract_tar(tar, out, progress=False) == 2
    assert extract_tar(tar, out, progress=False) == 0
    (out / "d/b.txt").write_bytes(b"b")  # a file cut short by an earlier, interrupted extraction
    assert extract_tar(tar, out, progress=False) == 1 and (out / "d/b.txt").read_bytes() == b"bbbb"
    tar.write_bytes(_tar_bytes({"../evil.txt": b"x"}))
    with pytest.raises(DownloadError, match="outside"):
        extract_tar(tar, out, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    tar.write_bytes(_tar_bytes({"d/c.txt": b"c" * 5000})[:1200])
    with pytest.raises(DownloadError, match="damaged: delete it and download it again"):
        extract_tar(tar, out, progress=False)


@pytest.fixture
def streethazards_tars(tmp_path):
    """The two StreetHazards tars in the release layout (tiny images), as the server would hold them."""
    staging = tmp_path / "staging"
    for k, split in enumerate(("train", "val", "test")):
        write_split(staging, split, 2 + k, seed=k)
    tars = {}
    for part in ("train", "test"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(staging / part, arcname=part)
        tars[part] = buffer.getvalue()
    return tars


def test_download_streethazards_end_to_end(server, tmp_path, streethazards_tars):
    for part, data in streethazards_tars.items():
        server.files[f"/sh/streethazards_{part}.tar"] = data
    server.drops = [700]  # the first response is cut: resumed
    root = tmp_path / "data"
    md5 = {part: _md5(data)[:8] for part, data in streethazards_tars.items()}  # prefix-only digests
    counts = download_streethazards(
        root,
        base_url=f"{server.url}/sh",
        md5=md5,
        expected_counts={"train": 2, "val": 3, "test": 4},
        retry_wait=0.0,
        progress=False,
    )
    assert counts == {"train": 2, "val": 3, "test": 4}
    assert (root / ".extracted_train").exists() and not list(root.glob("*.tar*"))
    assert len(StreetHazards(root, "val")) == 3 and StreetHazards(root, "test").validate() == 4
    requests = len(server.log)
    download_streethazards(root, base_url=f"{server.url}/sh", expected_counts={"test": 4}, progress=False)
    assert len(server.log) == requests  # extracted already: nothing downloaded
    with pytest.raises(
        DownloadError, match=r"training holds 2 images, expected 5125 .*delete .*\.extracted_train"
    ):
        check_streethazards_counts(root)


def test_complete_extraction_without_marker_is_not_downloaded_again(server, tmp_path, streethazards_tars):
    """Colab: the train archive was extracted by an earlier session (or by hand) but no marker was
    written; only the test archive, missing, is fetched."""
    server.files["/sh/streethazards_test.tar"] = streethazards_tars["test"]
    root = tmp_path / "data"
    write_split(root, "train", 2, seed=1)
    write_split(root, "val", 3, seed=2)
    counts = download_streethazards(
        root, base_url=f"{server.url}/sh", md5={"test": _md5(streethazards_tars["test"])},
        expected_counts={"train": 2, "val": 3, "test": 4}, retry_wait=0.0, progress=False,
    )  # fmt: skip
    assert counts == {"train": 2, "val": 3, "test": 4}
    assert [path for path, _ in server.log] == ["/sh/streethazards_test.tar"]
    assert (root / ".extracted_train").read_text() == "found complete\n"
    write_split(root, "val", 2, seed=3)  # one image fewer would not count as complete
    (root / "train/images/validation/t4/2.png").unlink()
    (root / ".extracted_train").unlink()
    with pytest.raises(DownloadError, match="HTTP 404"):  # so it tries to download the train archive
        download_streethazards(
            root, parts=("train",), base_url=f"{server.url}/sh", expected_counts={"train": 2, "val": 3},
            retries=0, retry_wait=0.0, progress=False,
        )  # fmt: skip


def test_counts_cover_every_town_folder_of_a_split(tmp_path):
    """The real test split has t5 and t6 (t5-6 in some copies); the counts search the split's folder."""
    write_split(tmp_path, "train", 2)
    write_split(tmp_path, "test", 3, odgt=False)
    for town, n in (("t6", 2), ("t5-6", 1)):
        for i in range(n):
            (tmp_path / "test/images/test" / town).mkdir(parents=True, exist_ok=True)
            (tmp_path / "test/images/test" / town / f"{i}.png").write_bytes(b"")  # counted, not read
    expected = {"train": 2, "val": 0, "test": 6}
    assert count_streethazards_images(tmp_path) == expected
    assert check_streethazards_counts(tmp_path, expected) == expected
    with pytest.raises(DownloadError, match=r"validation holds 0 images, expected 1 .*\.extracted_train"):
        check_streethazards_counts(tmp_path, {"train": 2, "val": 1, "test": 6})
    check_streethazards_counts(tmp_path, {"train": 2, "val": 1, "test": 6}, parts=("test",))  # val: train tar


def test_importing_the_downloader_does_not_import_torch():
    """lib.data (torch) is imported by the StreetHazards count functions when they run, not with the module."""
    code = (
        "import sys, lib.download; "
        "loaded = [m for m in ('lib.data', 'torch') if m in sys.modules]; "
        "assert not loaded, f'importing lib.download imported {loaded}'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_download_script_and_shell_wrapper(server, tmp_path, streethazards_tars, capsys):
    import importlib.util
    import subprocess

    spec = importlib.util.spec_from_file_location("download_script", ROOT / "scripts/download.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    server.files["/sh/streethazards_test.tar"] = streethazards_tars["test"]
    root = tmp_path / "sh"
    common = ["--parts", "test", "--base-url", f"{server.url}/sh"]
    assert script.main(["streethazards", "--root", str(root), *common, "--no-count-check"]) == 2  # wrong MD5
    assert "MD5 of the downloaded streethazards_test.tar" in capsys.readouterr().err
    server.files["/sh/streethazards_test.tar"] = b"not a tar"
    assert (
        script.main(
            [
                "streethazards",
                "--root",
                str(tmp_path / "x"),
                "--parts",
                "test",
                "--base-url",
                f"{server.url}/none",
            ]
        )
        == 2
    )
    assert "HTTP 404" in capsys.readouterr().err
    wrapper = ROOT / "scripts/download_streethazards.sh"
    assert 'download.py" streethazards --root' in wrapper.read_text()
    subprocess.run(["bash", "-n", str(wrapper)], check=True, timeout=30)


def test_gdrive_calls_gdown_with_id_and_output(tmp_path, monkeypatch):
    import gdown

    calls = []

    def fake_download(*, id, output, quiet, resume):
        assert resume  # an interrupted download continues (gdown -c)
        calls.append((id, output))
        Path(output).write_bytes(b"weights")
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    out = download_gdrive("FILE123", tmp_path / "w" / "best.pth", quiet=True)
    assert out.read_bytes() == b"weights" and calls == [("FILE123", str(tmp_path / "w" / "best.pth"))]
    download_gdrive("FILE123", out)  # present: gdown not called again
    assert len(calls) == 1
    monkeypatch.setattr(gdown, "download", lambda **kw: None)
    with pytest.raises(DownloadError, match="FILE123 .*shared publicly"):
        download_gdrive("FILE123", tmp_path / "other.pth")


def test_download_script_fetches_known_weights_by_name(tmp_path, monkeypatch, capsys):
    import importlib.util

    import gdown

    from lib.weights import WEIGHTS

    spec = importlib.util.spec_from_file_location("download_script", ROOT / "scripts/download.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ids = []

    def fake_download(*, id, output, quiet, resume):
        ids.append(id)
        Path(output).write_bytes(b"weights")
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    assert script.main(["weights", "streethazards-reference", "--dir", str(tmp_path)]) == 0
    assert ids == [WEIGHTS["streethazards-reference"].id]
    assert (tmp_path / WEIGHTS["streethazards-reference"].file_name).read_bytes() == b"weights"
    assert script.main(["weights", "--list"]) == 0
    assert "vainf_deeplabv3plus_resnet101_cityscapes_os16" in capsys.readouterr().out
    assert script.main(["weights", "no-such-file"]) == 2
    assert "unknown weights 'no-such-file'; known: streethazards-reference" in capsys.readouterr().err
