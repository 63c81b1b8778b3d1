"""Downloads, tested against an HTTP server on 127.0.0.1 (never the internet)."""

import hashlib
import http.server
import json
import threading
import zipfile
from functools import partial

import pytest

from caloforge import CaloforgeError
from caloforge.data import fetch as fetch_mod
from caloforge.data.fetch import RemoteFile, download, fetch_dataset


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; can cut a response short to simulate a drop."""

    cut_after: int | None = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path.split("?")[0])
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None and start == 0:
            self.wfile.write(body[: self.cut_after])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = type("H", (_RangeHandler,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()


def test_download_verifies_checksum(server, tmp_path):
    root, url, _ = server
    payload = bytes(range(256)) * 1000
    (root / "f.hdf5").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    out = download(f"{url}/f.hdf5", tmp_path / "dl" / "f.hdf5", sha256=good, progress=False)
    assert out.read_bytes() == payload
    assert (tmp_path / "dl" / "f.hdf5.sha256").read_text().startswith(good)
    with pytest.raises(CaloforgeError, match="checksum mismatch"):
        download(f"{url}/f.hdf5", tmp_path / "dl" / "g.hdf5", sha256="0" * 64, progress=False)
    assert not (tmp_path / "dl" / "g.hdf5").exists()


def test_interrupted_download_resumes(server, tmp_path):
    root, url, handler = server
    payload = b"calorimeter" * 50_000
    (root / "f.hdf5").write_bytes(payload)
    handler.cut_after = 100_000
    target = tmp_path / "f.hdf5"
    with pytest.raises(CaloforgeError):
        download(f"{url}/f.hdf5", target, progress=False, timeout=5)
    assert not target.exists()
    part = tmp_path / "f.hdf5.part"
    assert 0 < part.stat().st_size < len(payload)
    handler.cut_after = None
    download(f"{url}/f.hdf5", target, sha256=hashlib.sha256(payload).hexdigest(),
             progress=False)
    assert target.read_bytes() == payload and not part.exists()


def test_offline_is_one_clear_error(tmp_path):
    with pytest.raises(CaloforgeError, match="offline"):
        download("http://127.0.0.1:9/nothing.hdf5", tmp_path / "x.hdf5", progress=False,
                 timeout=2)


def test_http_error(server, tmp_path):
    _, url, _ = server
    with pytest.raises(CaloforgeError, match="HTTP 404"):
        download(f"{url}/missing.hdf5", tmp_path / "m.hdf5", progress=False)


def test_fetch_dataset_from_mirror_with_zip(server, tmp_path, monkeypatch):
    root, url, _ = server
    with zipfile.ZipFile(root / "pack.zip", "w") as zf:
        zf.writestr("CaloGAN/eplus.hdf5", b"not physics: test bytes")
    monkeypatch.setitem(fetch_mod.DATASETS, "testset", (
        "a test data set", (RemoteFile("pack.zip", "unused", unpack=True),)))
    paths = fetch_dataset("testset", tmp_path / "data", progress=False, base_url=url)
    assert [p.name for p in paths] == ["eplus.hdf5"]
    assert paths[0].read_bytes() == b"not physics: test bytes"
    # a second fetch verifies and does not download again
    (root / "pack.zip").unlink()
    assert fetch_dataset("testset", tmp_path / "data", progress=False, base_url=url) == paths


def test_unknown_dataset():
    with pytest.raises(CaloforgeError, match="unknown data set"):
        fetch_dataset("nope")


def test_download_verifies_a_published_md5(server, tmp_path):
    root, url, _ = server
    payload = b"showers" * 10_000
    (root / "f.hdf5").write_bytes(payload)
    good = hashlib.md5(payload).hexdigest()
    out = download(f"{url}/f.hdf5", tmp_path / "f.hdf5", md5=good, progress=False)
    assert out.read_bytes() == payload
    with pytest.raises(CaloforgeError, match="publisher lists MD5"):
        download(f"{url}/f.hdf5", tmp_path / "g.hdf5", md5="0" * 32, progress=False)
    assert not (tmp_path / "g.hdf5").exists()
    assert (tmp_path / "g.hdf5.part.bad").read_bytes() == payload


def test_public_files_carry_the_published_md5():
    for name in ("calochallenge-ds1-photons", "calochallenge-ds1-pions", "calochallenge-ds2",
                 "calochallenge-ds3"):
        for remote in fetch_mod.DATASETS[name][1]:
            assert remote.md5 is not None and len(remote.md5) == 32, remote.name
            assert remote.checksum_note == "MD5 published"
    mendeley = fetch_mod.DATASETS["calogan"][1][0]
    assert mendeley.md5 is None and "no published checksum" in mendeley.checksum_note


def test_caloflow_files_are_listed_from_the_zenodo_record(server, tmp_path, monkeypatch):
    root, url, _ = server
    payload = {"eplus.hdf5": b"e+ showers", "gamma.hdf5": b"photon showers"}
    files = []
    for name, data in payload.items():
        (root / name).write_bytes(data)
        files.append({"key": name, "checksum": "md5:" + hashlib.md5(data).hexdigest()})
    (root / "records").mkdir()
    (root / "records" / "5904188").write_text(json.dumps({"files": files}))
    monkeypatch.setenv("CALOFORGE_ZENODO_API", url)
    listed = fetch_mod.zenodo_files("5904188", "calogan")
    assert [r.name for r in listed] == ["eplus.hdf5", "gamma.hdf5"]
    assert listed[0].url == "https://zenodo.org/records/5904188/files/eplus.hdf5?download=1"
    paths = fetch_dataset("caloflow-calogan", tmp_path / "d", progress=False, base_url=url)
    assert [p.read_bytes() for p in paths] == list(payload.values())
    # a file changed on disk is caught against the published MD5
    paths[0].write_bytes(b"tampered")
    with pytest.raises(CaloforgeError, match="checksum does not match"):
        fetch_dataset("caloflow-calogan", tmp_path / "d", progress=False, base_url=url)


def test_zenodo_listing_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("CALOFORGE_ZENODO_API", "http://127.0.0.1:9")
    with pytest.raises(CaloforgeError, match="offline"):
        fetch_mod.zenodo_files("5904188", timeout=2)


def test_data_list_says_how_each_file_is_verified(capsys):
    from cli_helpers import run_cli

    code, out, err = run_cli(["data", "list"], capsys)
    assert code == 0, err
    assert "caloflow-calogan" in out and "10.5281/zenodo.5904188" in out
    assert "dataset_2_1.hdf5  [calochallenge_ds2; MD5 published]" in out
    assert "CaloGAN.zip  [calogan; no published checksum found" in out
