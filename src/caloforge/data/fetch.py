"""Download public shower data sets: resumable, verified, with a progress bar.

Known data sets live in :data:`DATASETS`. Where the publisher gives no checksum we say so,
and write the SHA-256 we computed next to the file (``NAME.sha256``) so later fetches and
colleagues can verify against it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from caloforge.errors import CaloforgeError

__all__ = ["RemoteFile", "DATASETS", "fetch_dataset", "download", "sha256sum"]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a public data set.

    Attributes:
        name: local file name.
        url: where to download it from.
        sha256: published checksum, or ``None`` where the publisher gives none.
        geometry: the caloforge geometry the file holds.
        unpack: a zip archive whose members are extracted next to it.
    """

    name: str
    url: str
    sha256: str | None = None
    geometry: str = ""
    unpack: bool = False


def _zenodo(record: str, name: str, geometry: str) -> RemoteFile:
    return RemoteFile(name, f"https://zenodo.org/records/{record}/files/{name}?download=1",
                      geometry=geometry)




DATASETS: dict[str, tuple[str, tuple[RemoteFile, ...]]] = {
    "calogan": (
        "CaloGAN Geant4 showers, e+ / gamma / pi+, 1-100 GeV (Mendeley Data "
        "doi:10.17632/pvn3xc3wy5.1); a zip holding eplus.hdf5, gamma.hdf5, piplus.hdf5",
        (RemoteFile("CaloGAN.zip", "https://data.mendeley.com/archiver/pvn3xc3wy5?version=1",
                    geometry="calogan", unpack=True),),
    ),
    "calochallenge-ds1-photons": (
        "CaloChallenge dataset 1 photons, 368 voxels (Zenodo doi:10.5281/zenodo.8099322)",
        tuple(_zenodo("8099322", f"dataset_1_photons_{i}.hdf5", "calochallenge_ds1_photons")
              for i in (1, 2)),
    ),
    "calochallenge-ds1-pions": (
        "CaloChallenge dataset 1 pions, 533 voxels (Zenodo doi:10.5281/zenodo.8099322)",
        tuple(_zenodo("8099322", f"dataset_1_pions_{i}.hdf5", "calochallenge_ds1_pions")
              for i in (1, 2)),
    ),
    "calochallenge-ds2": (
        "CaloChallenge dataset 2 electrons, 6480 voxels (Zenodo doi:10.5281/zenodo.6366271)",
        tuple(_zenodo("6366271", f"dataset_2_{i}.hdf5", "calochallenge_ds2") for i in (1, 2)),
    ),
    "calochallenge-ds3": (
        "CaloChallenge dataset 3 electrons, 40500 voxels (Zenodo doi:10.5281/zenodo.6366324)",
        tuple(_zenodo("6366324", f"dataset_3_{i}.hdf5", "calochallenge_ds3")
              for i in (1, 2, 3, 4)),
    ),
}


def sha256sum(path: str | Path, block: int = 1 << 20) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, path: str | Path, sha256: str | None = None, progress: bool = True,
             timeout: float = 30.0) -> Path:
    """Download ``url`` to ``path``, resuming a previous partial download.

    Data go to ``PATH.part``; an interrupted download continues from there with an HTTP
    Range request. The file is renamed to ``PATH`` only after the checksum (if given)
    matches, so ``PATH`` is always complete.

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
    digest = sha256sum(part)
    if sha256 is not None and digest != sha256.lower():
        bad = part.with_name(part.name + ".bad")
        os.replace(part, bad)
        raise CaloforgeError(
            f"checksum mismatch for {path.name}: expected {sha256}, got {digest}; the data "
            f"were moved to {bad}"
        )
    os.replace(part, path)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return path


def fetch_dataset(name: str, directory: str | Path = ".", progress: bool = True,
                  base_url: str | None = None) -> list[Path]:
    """Fetch every file of a known data set into ``directory``.

    Files already present are verified (against the published checksum, or the one we
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
    paths = []
    for remote in DATASETS[name][1]:
        target = directory / remote.name
        url = f"{base_url.rstrip('/')}/{remote.name}" if base_url else remote.url
        if target.exists():
            recorded = target.with_name(target.name + ".sha256")
            expected = remote.sha256 or (
                recorded.read_text().split()[0] if recorded.exists() else None
            )
            if expected is not None and sha256sum(target) != expected:
                raise CaloforgeError(
                    f"{target} exists but its checksum does not match; delete it to fetch again"
                )
        else:
            download(url, target, remote.sha256, progress=progress)
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
