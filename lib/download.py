"""Dataset and weight downloads: resumable HTTP with progress and MD5 check, tar extraction, counts.

StreetHazards (public, no login)::

    from lib.download import download_streethazards
    download_streethazards("data/streethazards")        # or: python scripts/download.py streethazards

downloads ``streethazards_train.tar`` (train + validation, about 9 GB) and
``streethazards_test.tar`` (about 2 GB), resuming an interrupted transfer from its ``.part`` file
with HTTP Range requests, checks each tar's MD5, extracts it (files already there with the right
size are skipped, and a finished tar leaves a ``.extracted_<part>`` marker so a re-run skips it),
deletes the tar, and finally counts the images of every split (5,125 train / 1,031 val / 1,500 test
for the real release; `expected_counts` changes or disables that check).

MD5: a digest may be given in full (32 hex digits), as a prefix (``"cd2d1a86"``), or as prefix and
suffix around an ellipsis (``"cd2d1a86…d2090"``, how some references print them); only the given
digits are compared. The StreetHazards sums below are the full ones pytorch-ood publishes.

Cityscapes needs an account (https://www.cityscapes-dataset.com/register/), so nothing here
downloads it. With ``pip install cityscapesscripts``::

    csDownload -l                                                   # list packages (asks for the login)
    csDownload -d data/cityscapes gtFine_trainvaltest.zip leftImg8bit_trainvaltest.zip
    cd data/cityscapes && unzip -q gtFine_trainvaltest.zip && unzip -q leftImg8bit_trainvaltest.zip

(``csDownload -r`` resumes.) Or download the same two zips in a browser from
https://www.cityscapes-dataset.com/downloads/ and unzip them into one folder, which then holds
``leftImg8bit/`` and ``gtFine/`` (`lib.datasets.Cityscapes` reads it as ``root``).

Google-Drive files (e.g. the pretrained DeepLabv3+ checkpoints) go through `download_gdrive`,
a thin wrapper over ``gdown``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from lib.layout import STREETHAZARDS_SPLITS

STREETHAZARDS_BASE_URL = "https://people.eecs.berkeley.edu/~hendrycks"
#: part -> (tar name, MD5). The sums are the full digests published by pytorch-ood. Which split
#: each part holds: `lib.layout.STREETHAZARDS_SPLITS` (``part``).
STREETHAZARDS_TARS: dict[str, tuple[str, str]] = {
    "train": ("streethazards_train.tar", "cd2d1a8649848afb85b5059d227d2090"),
    "test": ("streethazards_test.tar", "8c547c1346b00c21b2483887110bfea7"),
}
#: Images per split of the real release.
STREETHAZARDS_COUNTS: dict[str, int] = {"train": 5125, "val": 1031, "test": 1500}

_RETRYABLE = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)


class DownloadError(RuntimeError):
    """A download, checksum or extraction problem; the message names the file and the fix."""


# ----------------------------------------------------------------------------- checksums


def md5sum(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in chunks (constant memory)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def md5_matches(actual: str, expected: str) -> bool:
    """Whether a full hex digest matches `expected`: a full digest, a prefix, or ``prefix…suffix``.

    Raises:
        ValueError: `expected` is not hex (apart from one ellipsis) or has fewer than 6 digits.
    """
    expected = expected.strip().lower().replace("...", "…")
    prefix, _, suffix = expected.partition("…")
    if not re.fullmatch(r"[0-9a-f]*", prefix + suffix) or len(prefix + suffix) < 6:
        raise ValueError(
            f"expected MD5 {expected!r} must be at least 6 hex digits (full, prefix or prefix…suffix)"
        )
    actual = actual.lower()
    return actual.startswith(prefix) and actual.endswith(suffix)


# ----------------------------------------------------------------------------- HTTP


def _progress_bar(total: int | None, initial: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        disable=not enabled,
    )


def _content_range_total(value: str | None) -> int | None:
    """Total size from a ``Content-Range: bytes a-b/total`` (or ``bytes */total``) header."""
    match = re.search(r"/(\d+)\s*$", value or "")
    return int(match.group(1)) if match else None


def _transfer(url: str, part: Path, *, timeout: float, chunk_size: int, progress: bool) -> bool:
    """One HTTP request that appends to `part` (resuming with a Range header when it has bytes).

    Returns:
        True when the file is complete (its size equals the size the server announced, or the
        server announced none and closed normally).
    """
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "streetseg-downloader"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left past `offset`: complete, or a bigger stale file
            total = _content_range_total(err.headers.get("Content-Range"))
            if total == offset:
                return True
            part.unlink()  # the .part does not fit the remote file: start again
            return False
        raise DownloadError(
            f"{url}: HTTP {err.code} {err.reason}; check the URL or try again later"
        ) from None
    with response:
        if offset and response.status == 206:
            start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != offset:
                raise DownloadError(
                    f"{url}: the server resumed at the wrong offset; delete {part} and run again"
                )
            mode, total = "ab", _content_range_total(response.headers.get("Content-Range"))
        else:  # 200: the server ignored the range (or there was none): start from zero
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
        with (
            open(part, mode) as f,
            _progress_bar(total, offset, part.name.removesuffix(".part"), progress) as bar,
        ):
            while chunk := response.read(chunk_size):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    return total is None or size == total


def download_file(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    retry_wait: float = 2.0,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest`, resumably, and check its MD5.

    Bytes go to ``dest + ".part"``; an interrupted transfer (dropped connection, timeout, short
    body) is resumed from the bytes already there with an HTTP Range request, at most `retries`
    times, and a ``.part`` left by an earlier run is resumed the same way. The finished file is
    renamed to `dest`. An existing `dest` is only checked.

    Args:
        md5: expected digest: full, prefix, or ``prefix…suffix`` (see `md5_matches`); None skips it.
        retries: resumptions allowed after the first request.
        timeout: seconds a connect or a read may block.
        retry_wait: seconds between attempts (doubled each time).

    Returns:
        `dest`.

    Raises:
        DownloadError: HTTP error, too many interruptions, or checksum mismatch (the corrupted
            download is deleted so that a re-run starts clean; an existing `dest` is left alone).
    """
    dest = Path(dest)
    if dest.exists():
        if md5 is not None:
            actual = md5sum(dest)  # once: the file may be a 9 GB archive
            if not md5_matches(actual, md5):
                raise DownloadError(
                    f"{dest} exists but its MD5 is {actual}, expected {md5}: the file is corrupted or "
                    "incomplete; delete it and run the download again"
                )
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            if _transfer(url, part, timeout=timeout, chunk_size=chunk_size, progress=progress):
                break
            problem = "the connection closed before the end of the file"
        except _RETRYABLE as err:
            problem = f"{type(err).__name__}: {err}"
        if attempt == retries:
            raise DownloadError(
                f"downloading {url} failed {retries + 1} times (last: {problem}); {part} keeps the "
                f"{part.stat().st_size if part.exists() else 0} bytes received: run again to resume"
            )
        time.sleep(retry_wait * 2**attempt)
    if md5 is not None:
        actual = md5sum(part)
        if not md5_matches(actual, md5):
            part.unlink()
            raise DownloadError(
                f"MD5 of the downloaded {dest.name} is {actual}, expected {md5}: the download is corrupted "
                f"(deleted {part}); run the download again, and if it fails again check the URL {url}"
            )
    os.replace(part, dest)
    return dest


def download_gdrive(file_id: str, output: str | Path, *, quiet: bool = False) -> Path:
    """Download a Google-Drive file (e.g. pretrained weights) with gdown; skipped if present.

    gdown writes to a temporary file beside `output` and renames it when complete; with ``resume``
    (``gdown -c``) a run after an interruption continues that temporary file.

    Raises:
        DownloadError: gdown returned no file (private file, quota exceeded, wrong id).
    """
    output = Path(output)
    if output.exists():
        return output
    import gdown

    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = gdown.download(id=file_id, output=str(output), quiet=quiet, resume=True)
    except Exception as err:  # gdown lets requests' connection errors and its own errors through
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise DownloadError(
            f"gdown could not fetch Google-Drive file {file_id} to {output} ({type(err).__name__}: {detail}); "
            "check the internet connection and run again (a partial download is resumed)"
        ) from None
    if result is None or not output.exists():
        raise DownloadError(
            f"gdown could not fetch Google-Drive file {file_id} to {output}; check that the file is "
            "shared publicly (or wait if its download quota is exceeded) and run again"
        )
    return output


# ----------------------------------------------------------------------------- extraction


def _safe_target(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if root.resolve() not in target.parents and target != root.resolve():
        raise DownloadError(
            f"tar member {name!r} would be written outside {root}; the archive is not trusted"
        )
    return target


def extract_tar(tar_path: str | Path, dest: str | Path, *, progress: bool = True) -> int:
    """Extract the regular files and folders of a tar into `dest`, skipping files already there
    with the right size (a re-run after an interrupted extraction only writes what is missing).

    Links and special files are not extracted; a member that would land outside `dest` is an error.

    Returns:
        The number of files written.

    Raises:
        DownloadError: a damaged tar or an unsafe member name.
    """
    from tqdm.auto import tqdm

    tar_path, dest = Path(tar_path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with (
            tarfile.open(tar_path) as tar,
            tqdm(desc=f"extracting {tar_path.name}", unit=" files", disable=not progress) as bar,
        ):
            for member in tar:
                target = _safe_target(dest, member.name)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    if target.is_file() and target.stat().st_size == member.size:
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(target.name + ".partial")
                    with tar.extractfile(member) as src, open(tmp, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    os.replace(tmp, target)
                    written += 1
                    bar.update(1)
    except (tarfile.TarError, EOFError) as err:
        raise DownloadError(
            f"cannot extract {tar_path} ({err}); the archive is damaged: delete it and download it again"
        ) from None
    except OSError as err:
        raise DownloadError(
            f"cannot extract {tar_path} into {dest}: {err}; free disk space or fix permissions"
        ) from None
    return written


# ----------------------------------------------------------------------------- StreetHazards


def count_streethazards_images(root: str | Path) -> dict[str, int]:
    """Images (PNG files) per StreetHazards split under `root`; 0 where a folder is missing."""
    root = Path(root)
    return {
        split: sum(1 for _ in (root / layout.image_dir).rglob("*.png"))
        for split, layout in STREETHAZARDS_SPLITS.items()
    }


def check_streethazards_counts(
    root: str | Path,
    expected: Mapping[str, int] = STREETHAZARDS_COUNTS,
    *,
    parts: Sequence[str] = ("train", "test"),
) -> dict[str, int]:
    """Count the images per split and compare with `expected` for the splits `parts` hold.

    Raises:
        DownloadError: a split with another number of images (naming the folder and the fix).
    """
    counts = count_streethazards_images(root)
    for split, layout in STREETHAZARDS_SPLITS.items():
        part, folder = layout.part, layout.image_dir
        if part in parts and split in expected and counts[split] != expected[split]:
            raise DownloadError(
                f"{Path(root) / folder} holds {counts[split]} images, expected {expected[split]} for the "
                f"{split} split: the extraction is incomplete; delete {Path(root) / f'.extracted_{part}'} "
                "and run the download again (it re-extracts only what is missing)"
            )
    return counts


def _part_complete(root: Path, part: str, expected: Mapping[str, int]) -> bool:
    """Whether every split a tar part holds has its expected number of images under `root`."""
    counts = count_streethazards_images(root)
    splits = [
        split for split, layout in STREETHAZARDS_SPLITS.items() if layout.part == part and split in expected
    ]
    return bool(splits) and all(counts[split] == expected[split] for split in splits)


def download_streethazards(
    root: str | Path = "data/streethazards",
    *,
    parts: Sequence[str] = ("train", "test"),
    base_url: str = STREETHAZARDS_BASE_URL,
    md5: Mapping[str, str | None] | None = None,
    expected_counts: Mapping[str, int] | None = STREETHAZARDS_COUNTS,
    keep_tars: bool = False,
    retries: int = 5,
    timeout: float = 60.0,
    retry_wait: float = 2.0,
    progress: bool = True,
) -> dict[str, int]:
    """Download, check and extract StreetHazards into `root`; safe to re-run (resumes, skips).

    Args:
        parts: which tars: ``train`` (train + val) and/or ``test``.
        base_url: where the tars are (``{base_url}/streethazards_{part}.tar``).
        md5: part -> expected digest (full, prefix or prefix…suffix; None skips); default the
            published sums.
        expected_counts: split -> images the finished folder must hold; None skips the check.
        keep_tars: keep the tars after extraction (default: delete them, they are 11 GB).
        retries, timeout, retry_wait: as in `download_file`.

    Returns:
        Images per split found under `root` at the end.

    Raises:
        DownloadError: download, checksum, extraction or count problem, naming the file and the fix.
    """
    root = Path(root)
    unknown = [p for p in parts if p not in STREETHAZARDS_TARS]
    if unknown:
        raise ValueError(f"unknown StreetHazards part(s) {unknown}; valid: {', '.join(STREETHAZARDS_TARS)}")
    sums = {part: digest for part, (_, digest) in STREETHAZARDS_TARS.items()}
    sums.update(md5 or {})
    root.mkdir(parents=True, exist_ok=True)
    for part in parts:
        marker = root / f".extracted_{part}"
        if marker.exists():
            if progress:
                print(f"{part}: already extracted in {root} ({marker.name} present)")
            continue
        if expected_counts is not None and _part_complete(root, part, expected_counts):
            marker.write_text("found complete\n")  # extracted by hand or by an older run: no download
            if progress:
                print(f"{part}: every image already in {root}; not downloading it")
            continue
        name = STREETHAZARDS_TARS[part][0]
        tar_path = download_file(
            f"{base_url.rstrip('/')}/{name}", root / name, md5=sums.get(part), retries=retries,
            timeout=timeout, retry_wait=retry_wait, progress=progress,
        )  # fmt: skip
        extract_tar(tar_path, root, progress=progress)
        marker.write_text(f"{name}\n")
        if not keep_tars:
            tar_path.unlink()
    if expected_counts is None:
        return count_streethazards_images(root)
    return check_streethazards_counts(root, expected_counts, parts=parts)
