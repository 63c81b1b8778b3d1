"""Downloads, tested against an HTTP server on 127.0.0.1 (never the internet)."""

import hashlib
import http.server
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
