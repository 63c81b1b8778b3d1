"""Download public shower data sets: resumable, verified, with a progress bar.

Known data sets live in :data:`DATASETS`. A download is verified against the checksum the
publisher lists (Zenodo lists an MD5 per file; SHA-256 where a publisher gives one). Where
no published checksum is known we say so. Either way the SHA-256 we computed is written
next to the file (``NAME.sha256``) so later fetches and colleagues can verify against it.
Data sets whose file list is not recorded here (:data:`ZENODO_LISTED`) are listed, with
their MD5s, from the Zenodo record when fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from caloforge.errors import CaloforgeError

__all__ = ["RemoteFile", "DATASETS", "ZENODO_LISTED", "fetch_dataset", "download",
           "sha256sum", "md5sum", "zenodo_files", "describe_datasets"]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a public data set.

    Attributes:
        name: local file name.
        url: where to download it from.
        sha256: published SHA-256, or ``None``.
        geometry: the caloforge geometry the file holds.
        unpack: a zip archive whose members are extracted next to it.
        md5: published MD5 (what Zenodo lists per file), or ``None``.
    """

    name: str
    url: str
    sha256: str | None = None
    geometry: str = ""
    unpack: bool = False
    md5: str | None = None

    @property
    def checksum_note(self) -> str:
        """How a download of this file is verified, in words."""
        if self.sha256:
            return "SHA-256 published"
        if self.md5:
            return "MD5 published"
        return "no published checksum found; verified against the SHA-256 of the first fetch"


def _zenodo(record: str, name: str, geometry: str, md5: str | None = None) -> RemoteFile:
    return RemoteFile(name, f"https://zenodo.org/records/{record}/files/{name}?download=1",
                      geometry=geometry, md5=md5)


# The MD5 Zenodo lists for each file of the CaloChallenge records 8099322, 6366271 and
# 6366324, as transcribed from the record pages by several public projects that download
# these files (the copies agree); caloforge could not reach Zenodo when recording them. A
# download that does not match is kept aside (NAME.part.bad), never used.
_MD5 = {
    "dataset_1_photons_1.hdf5": "005d2adeda7db034b388112661265656",
    "dataset_1_photons_2.hdf5": "4767715ed56e99565fd9c67340661e70",
    "dataset_1_pions_1.hdf5": "6a5f52722064a1bcd8a0bc002f16515d",
    "dataset_1_pions_2.hdf5": "fee7457b40127bc23c8ab909e2638ca0",
    "dataset_2_1.hdf5": "e590333e9a2da51b258288d74bd8357a",
    "dataset_2_2.hdf5": "7a56fd68aa53ded37c2ac445694d9736",
    "dataset_3_1.hdf5": "d33f03418aa311b0965452fcbef1ff87",
    "dataset_3_2.hdf5": "911dec2c40aafa64a07b7450b80881bf",
    "dataset_3_3.hdf5": "5ea62f6831a1821bb5035fafc9f030e8",
    "dataset_3_4.hdf5": "5e8d82e6a6c28c6914a3b602a1cfa299",
}


def _challenge(record: str, name: str, geometry: str) -> RemoteFile:
    return _zenodo(record, name, geometry, _MD5[name])




DATASETS: dict[str, tuple[str, tuple[RemoteFile, ...]]] = {
    "calogan": (
        "CaloGAN Geant4 showers, e+ / gamma / pi+, 1-100 GeV (Mendeley Data "
        "doi:10.17632/pvn3xc3wy5.1); a zip holding eplus.hdf5, gamma.hdf5, piplus.hdf5",
        (RemoteFile("CaloGAN.zip", "https://data.mendeley.com/archiver/pvn3xc3wy5?version=1",
                    geometry="calogan", unpack=True),),
    ),
    "calochallenge-ds1-photons": (
        "CaloChallenge dataset 1 photons, 368 voxels (Zenodo doi:10.5281/zenodo.8099322)",
        tuple(_challenge("8099322", f"dataset_1_photons_{i}.hdf5", "calochallenge_ds1_photons")
              for i in (1, 2)),
    ),
    "calochallenge-ds1-pions": (
        "CaloChallenge dataset 1 pions, 533 voxels (Zenodo doi:10.5281/zenodo.8099322)",
        tuple(_challenge("8099322", f"dataset_1_pions_{i}.hdf5", "calochallenge_ds1_pions")
              for i in (1, 2)),
    ),
    "calochallenge-ds2": (
        "CaloChallenge dataset 2 electrons, 6480 voxels (Zenodo doi:10.5281/zenodo.6366271)",
        tuple(_challenge("6366271", f"dataset_2_{i}.hdf5", "calochallenge_ds2")
              for i in (1, 2)),
    ),
    "calochallenge-ds3": (
        "CaloChallenge dataset 3 electrons, 40500 voxels (Zenodo doi:10.5281/zenodo.6366324)",
        tuple(_challenge("6366324", f"dataset_3_{i}.hdf5", "calochallenge_ds3")
              for i in (1, 2, 3, 4)),
    ),
    "caloflow-calogan": (
        "CaloFlow Geant4 showers in the CaloGAN geometry, e+ / gamma / pi+, 100k each "
        "(Krause and Shih, Zenodo doi:10.5281/zenodo.5904188)",
        (),  # the file names and MD5s are read from the Zenodo record: see ZENODO_LISTED
    ),
}

#: data sets whose files (names, MD5s) are listed from their Zenodo record when fetched:
#: name -> (record, geometry of the files)
ZENODO_LISTED: dict[str, tuple[str, str]] = {"caloflow-calogan": ("5904188", "calogan")}
_ZENODO_API = "https://zenodo.org/api"


def zenodo_files(record: str, geometry: str = "", api: str | None = None,
                 timeout: float = 30.0) -> tuple[RemoteFile, ...]:
    """The files of a Zenodo record with the MD5 Zenodo lists for each.

    Args:
        record: the record number (``"5904188"``).
        geometry: the caloforge geometry the files hold.
        api: the Zenodo API base URL (default ``https://zenodo.org/api``, or the
            ``CALOFORGE_ZENODO_API`` environment variable).

    Raises:
        CaloforgeError: offline, HTTP error, or an answer that is not a record.
    """
    api = (api or os.environ.get("CALOFORGE_ZENODO_API") or _ZENODO_API).rstrip("/")
    url = f"{api}/records/{record}"
    request = urllib.request.Request(url, headers={"User-Agent": "caloforge",
                                                   "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read().decode())
    except urllib.error.HTTPError as err:
        raise CaloforgeError(f"cannot list Zenodo record {record}: HTTP {err.code} "
                             f"{err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CaloforgeError(f"cannot reach {url} to list the files of Zenodo record "
                             f"{record} ({reason}); are you offline?") from None
    except ValueError:
        raise CaloforgeError(f"{url} did not answer with a Zenodo record (not JSON)") from None
    entries = answer.get("files") if isinstance(answer, dict) else None
    if isinstance(entries, dict):  # newer API: {"entries": {...}}
        entries = list((entries.get("entries") or {}).values())
    if not isinstance(entries, list) or not entries:
        raise CaloforgeError(f"Zenodo record {record} lists no files")
    files = []
    for entry in entries:
        name = entry.get("key") or entry.get("filename")
        if not name:
            continue
        checksum = str(entry.get("checksum") or "")
        md5 = checksum.split(":", 1)[1] if checksum.startswith("md5:") else None
        files.append(_zenodo(record, name, geometry, md5))
    return tuple(sorted(files, key=lambda r: r.name))


def describe_datasets() -> list[str]:
    """The lines of ``caloforge data list``: each data set, its files and how they are
    verified."""
    lines = []
    for name, (description, files) in DATASETS.items():
        lines.append(f"{name}: {description}")
        for remote in files:
            lines.append(f"    {remote.name}  [{remote.geometry}; {remote.checksum_note}]")
        if name in ZENODO_LISTED:
            record, geometry = ZENODO_LISTED[name]
            lines.append(f"    files and their MD5s listed by Zenodo record {record} when "
                         f"fetched  [{geometry}; MD5 published]")
    return lines


def _digests(path: str | Path, block: int = 1 << 20) -> tuple[str, str]:
    """(SHA-256, MD5) of a file, read once in blocks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def sha256sum(path: str | Path, block: int = 1 << 20) -> str:
    """SHA-256 of a file, read in blocks."""
    return _digests(path, block)[0]


def md5sum(path: str | Path, block: int = 1 << 20) -> str:
    """MD5 of a file, read in blocks (the checksum Zenodo lists)."""
    return _digests(path, block)[1]


def download(url: str, path: str | Path, sha256: str | None = None, progress: bool = True,
             timeout: float = 30.0, md5: str | None = None) -> Path:
    """Download ``url`` to ``path``, resuming a previous partial download.

    Data go to ``PATH.part``; an interrupted download continues from there with an HTTP
    Range request. The file is renamed to ``PATH`` only after the checksums given (SHA-256,
    MD5) match, so ``PATH`` is always complete.

    Raises:
        CaloforgeError: unreachable host (offline), HTTP error, or checksum mismatch.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "caloforge"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # range not satisfiable: the .part is already whole
            response = None
        else:
            raise CaloforgeError(
                f"download of {url} failed: HTTP {err.code} {err.reason}"
            ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CaloforgeError(
            f"cannot reach {url} ({reason}); are you offline? Partial data, if any, is kept "
            f"in {part} and the next fetch resumes from it"
        ) from None
    if response is not None:
        with response:
            resumed = offset and response.status == 206
            if not resumed:
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with open(part, "ab" if resumed else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=path.name,
                disable=not progress,
            ) as bar:
                try:
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
                except (OSError, urllib.error.URLError) as err:
                    raise CaloforgeError(
                        f"download of {url} interrupted ({err}); run the same command again "
                        "to resume"
                    ) from None
        received = part.stat().st_size
        if total is not None and received < total:
            raise CaloforgeError(
                f"download of {url} interrupted after {received} of {total} bytes; run the "
                "same command again to resume"
            )
    digest, md5_digest = _digests(part)
    for kind, expected, got in (("SHA-256", sha256, digest), ("MD5", md5, md5_digest)):
        if expected is not None and got != expected.lower():
            bad = part.with_name(part.name + ".bad")
            os.replace(part, bad)
            raise CaloforgeError(
                f"checksum mismatch for {path.name}: the publisher lists {kind} {expected}, "
                f"the download has {got}; the data were moved to {bad}"
            )
    os.replace(part, path)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return path


def fetch_dataset(name: str, directory: str | Path = ".", progress: bool = True,
                  base_url: str | None = None) -> list[Path]:
    """Fetch every file of a known data set into ``directory``.

    Files already present are verified (against the published checksums, or the SHA-256 we
    recorded when we first fetched them) and not downloaded again.

    Args:
        name: a key of :data:`DATASETS`.
        directory: where to put the files.
        base_url: a mirror to use instead of the publisher (files under ``BASE_URL/NAME``);
            also read from the ``CALOFORGE_DATA_MIRROR`` environment variable.
    """
    if name not in DATASETS:
        raise CaloforgeError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    base_url = base_url or os.environ.get("CALOFORGE_DATA_MIRROR")
    directory = Path(directory)
    made = not directory.exists()
    try:
        return _fetch(name, directory, progress, base_url)
    except BaseException:
        if made:  # a failed first fetch leaves no empty folder behind
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def _fetch(name: str, directory: Path, progress: bool, base_url: str | None) -> list[Path]:
    paths = []
    files = DATASETS[name][1]
    if name in ZENODO_LISTED:
        record, geometry = ZENODO_LISTED[name]
        files = zenodo_files(record, geometry)
    for remote in files:
        target = directory / remote.name
        url = f"{base_url.rstrip('/')}/{remote.name}" if base_url else remote.url
        if target.exists():
            recorded = target.with_name(target.name + ".sha256")
            sha = remote.sha256 or (
                recorded.read_text().split()[0] if recorded.exists() else None
            )
            if sha is not None or remote.md5 is not None:
                got_sha, got_md5 = _digests(target)
                if (sha is not None and got_sha != sha.lower()) or (
                        remote.md5 is not None and got_md5 != remote.md5.lower()):
                    raise CaloforgeError(f"{target} exists but its checksum does not match; "
                                         "delete it to fetch again")
        else:
            download(url, target, remote.sha256, progress=progress, md5=remote.md5)
        paths.extend(_unpack(target) if remote.unpack else [target])
    return paths


def _unpack(archive: Path) -> list[Path]:
    """Extract a zip archive's members next to it (members already there are kept)."""
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zf:
            out = []
            for member in zf.namelist():
                if member.endswith("/"):
                    continue
                target = archive.parent / Path(member).name
                if not target.exists():
                    with zf.open(member) as src, open(target, "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                out.append(target)
            return out
    except zipfile.BadZipFile:
        raise CaloforgeError(
            f"{archive} is not a valid zip archive; delete it and fetch again"
        ) from None
