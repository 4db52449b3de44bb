"""Downloads (local HTTP server: resume, checksum), safe extraction, and the data_scripts/ tools."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from voslab.data.davis import DAVIS
from voslab.data.download import download, extract, sha256sum
from voslab.data.io import read_mask, write_image, write_mask
from voslab.data.youtubevos import YouTubeVOS, meta_from_annotations, write_meta
from voslab.errors import VOSDataError

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "data_scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"data_scripts_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ a local HTTP server with Range support
class FileServer:
    """Serves ``files`` {path: bytes}; honours ``Range`` unless ``ranges=False``; ``truncate_once``
    makes the next response stop after that many bytes (an interrupted download)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges, self.truncate_once, self.range_headers = True, None, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                header = self.headers.get("Range")
                server.range_headers.append(header)
                if header and server.ranges:
                    start = int(header.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                payload = body[start:]
                if server.truncate_once is not None:
                    payload, server.truncate_once = payload[:server.truncate_once], None
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


BLOB = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


def test_download_with_checksum(server: FileServer, tmp_path: Path) -> None:
    server.files["/data/blob.bin"] = BLOB
    path = download(f"{server.url}/data/blob.bin", tmp_path, sha256=BLOB_SHA, progress=False)
    assert path == tmp_path / "blob.bin" and path.read_bytes() == BLOB
    assert not (tmp_path / "blob.bin.part").exists()
    assert sha256sum(path) == BLOB_SHA
    n = len(server.range_headers)
    download(f"{server.url}/data/blob.bin", tmp_path, sha256=BLOB_SHA, progress=False)
    assert len(server.range_headers) == n  # already there and verified: no request


def test_interrupted_download_resumes_with_range(server: FileServer, tmp_path: Path) -> None:
    server.files["/blob.bin"] = BLOB
    server.truncate_once = 100_000
    with pytest.raises(ConnectionError, match="run it again to resume"):
        download(f"{server.url}/blob.bin", tmp_path / "x.bin", progress=False)
    part = tmp_path / "x.bin.part"
    assert part.stat().st_size == 100_000 and not (tmp_path / "x.bin").exists()
    path = download(f"{server.url}/blob.bin", tmp_path / "x.bin", sha256=BLOB_SHA, progress=False)
    assert server.range_headers[-1] == "bytes=100000-"
    assert path.read_bytes() == BLOB and not part.exists()


def test_server_without_range_restarts(server: FileServer, tmp_path: Path) -> None:
    server.files["/blob.bin"] = BLOB
    server.ranges = False
    (tmp_path / "x.bin.part").write_bytes(b"garbage that must not be kept")
    path = download(f"{server.url}/blob.bin", tmp_path / "x.bin", sha256=BLOB_SHA, progress=False)
    assert path.read_bytes() == BLOB


def test_checksum_mismatch_deletes_and_explains(server: FileServer, tmp_path: Path) -> None:
    server.files["/blob.bin"] = BLOB
    with pytest.raises(VOSDataError, match=r"checksum mismatch.*expected sha256 0{64}"):
        download(f"{server.url}/blob.bin", tmp_path / "x.bin", sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_errors_name_the_url(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(ConnectionError, match="HTTP 404"):
        download(f"{server.url}/missing.zip", tmp_path, progress=False)


# ------------------------------------------------------------------ extraction
def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_extract_zip_and_tar(tmp_path: Path) -> None:
    (tmp_path / "a.zip").write_bytes(zip_bytes({"top/x.txt": b"hello", "top/sub/y.txt": b"world"}))
    extract(tmp_path / "a.zip", tmp_path / "z")
    assert (tmp_path / "z/top/sub/y.txt").read_bytes() == b"world"
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "z/top", arcname="top")
    extract(tmp_path / "a.tar.gz", tmp_path / "t")
    assert (tmp_path / "t/top/x.txt").read_bytes() == b"hello"


def test_extract_refuses_path_traversal(tmp_path: Path) -> None:
    (tmp_path / "evil.zip").write_bytes(zip_bytes({"ok.txt": b"", "../escaped.txt": b"x"}))
    with pytest.raises(VOSDataError, match="path traversal"):
        extract(tmp_path / "evil.zip", tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out/ok.txt").exists()
    with tarfile.open(tmp_path / "evil.tar", "w") as tf:
        info = tarfile.TarInfo("/etc/evil")
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(VOSDataError, match="path traversal"):
        extract(tmp_path / "evil.tar", tmp_path / "out2")
    with tarfile.open(tmp_path / "link.tar", "w") as tf:
        link = tarfile.TarInfo("data/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
        tf.addfile(link)
    with pytest.raises(VOSDataError, match="path traversal"):
        extract(tmp_path / "link.tar", tmp_path / "out3")


def test_extract_rejects_non_archives(tmp_path: Path) -> None:
    (tmp_path / "half.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(VOSDataError, match="not a zip or tar"):
        extract(tmp_path / "half.zip", tmp_path / "out")


# ------------------------------------------------------------------ download_davis.py
def tiny_davis_zip(tmp_path: Path) -> bytes:
    """A DAVIS-2016-like release: DAVIS/JPEGImages/480p/..., grey masks, ImageSets/480p."""
    src = tmp_path / "src/DAVIS"
    for seq in ("bear", "boat"):
        for t in range(3):
            write_image(src / "JPEGImages/480p" / seq / f"{t:05d}.jpg", np.full((8, 12, 3), 60 * t, np.uint8))
            mask = np.zeros((8, 12), np.uint8)
            mask[2:5, 3:8] = 255
            (src / "Annotations/480p" / seq).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask, mode="L").save(src / "Annotations/480p" / seq / f"{t:05d}.png")
    (src / "ImageSets/480p").mkdir(parents=True)
    (src / "ImageSets/480p/train.txt").write_text("/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png\n")
    (src / "ImageSets/480p/val.txt").write_text("/JPEGImages/480p/boat/00000.jpg /Annotations/480p/boat/00000.png\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(src.parent).as_posix())
    return buffer.getvalue()


def test_download_davis_script(server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    payload = tiny_davis_zip(tmp_path)
    server.files["/DAVIS-data.zip"] = payload
    script = load_script("download_davis")
    assert "DAVIS-data.zip" in script.URLS[2016] and "2017-trainval-480p" in script.URLS[2017]
    root = tmp_path / "data/DAVIS2016"
    sha = hashlib.sha256(payload).hexdigest()
    assert script.main(["--root", str(root), "--url", f"{server.url}/DAVIS-data.zip", "--sha256", sha,
                        "--no-progress"]) == 0
    assert DAVIS(root, "train").names == ["bear"] and DAVIS(root, "val").names == ["boat"]
    assert "train: 1 sequences, 3 frames (480p layout)" in capsys.readouterr().out
    assert not (tmp_path / "data/DAVIS-data.zip").exists()  # archive removed unless --keep-archive
    # from a user-downloaded archive, into another folder
    (tmp_path / "DAVIS-data.zip").write_bytes(payload)
    assert script.main(["--root", str(tmp_path / "other"), "--archive", str(tmp_path / "DAVIS-data.zip")]) == 0
    assert set(np.unique(DAVIS(tmp_path / "other", "val")[0].masks())) == {0, 1}
    with pytest.raises(VOSDataError, match="checksum mismatch"):
        script.main(["--root", str(tmp_path / "third"), "--url", f"{server.url}/DAVIS-data.zip",
                     "--sha256", "1" * 64, "--no-progress"])


# ------------------------------------------------------------------ download_youtubevos.py
def test_download_youtubevos_script(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    script = load_script("download_youtubevos")
    assert script.main([]) == 1 and "registration" in capsys.readouterr().out
    split = tmp_path / "src/train"
    for t in range(0, 10):
        write_image(split / "JPEGImages/vid1" / f"{t:05d}.jpg", np.zeros((8, 8, 3), np.uint8))
    for t in (0, 5):
        mask = np.zeros((8, 8), np.uint8)
        mask[2:4, 2:4] = 1
        write_mask(split / "Annotations/vid1" / f"{t:05d}.png", mask)
    write_meta(split / "meta.json", meta_from_annotations(split, "dog"))
    with zipfile.ZipFile(tmp_path / "train.zip", "w") as zf:
        for path in sorted(split.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(split.parent).as_posix())
    assert script.main(["--archive", str(tmp_path / "train.zip"), "--root", str(tmp_path / "ytvos")]) == 0
    assert "1 videos, 10 frames, 2 annotated frames, 1 objects" in capsys.readouterr().out
    seq = YouTubeVOS(tmp_path / "ytvos", "train")["vid1"]
    assert seq.annotated_indices == [0, 5] and seq.objects_meta[1]["category"] == "dog"


# ------------------------------------------------------------------ convert_fbms.py
def test_convert_fbms(tmp_path: Path) -> None:
    src = tmp_path / "FBMS/Trainingset"
    seq = src / "cars1"
    for t in range(1, 7):  # frames cars1_01 .. cars1_06 (1-based, as in FBMS)
        write_image(seq / f"cars1_{t:02d}.jpg", np.full((10, 14, 3), 20 * t, np.uint8))
    (seq / "GroundTruth").mkdir()
    labels = {}
    for t in (1, 4):  # sparse labels; white background, objects grey 0 and 128
        grey = np.full((10, 14), 255, np.uint8)
        grey[2:5, 2:6] = 0
        if t == 4:
            grey[6:9, 8:12] = 128
        labels[t] = grey
        Image.fromarray(grey, mode="L").save(seq / "GroundTruth" / f"cars1_{t:02d}_gt.pgm")
    Image.fromarray(labels[1], mode="L").save(seq / "GroundTruth" / "cars1Def.png")  # ignored: no number
    out = tmp_path / "fbms-davis"
    assert load_script("convert_fbms").main(["--src", str(src), "--out", str(out), "--split", "train"]) == 0
    ds = DAVIS(out, "train", year=2017)
    converted = ds["cars1"]
    assert len(converted) == 6 and converted.annotated_indices == [0, 3]
    expected = np.zeros((10, 14), np.uint8)
    expected[2:5, 2:6] = 1  # grey 0 -> id 1, grey 128 -> id 2 (sorted), white background -> 0
    np.testing.assert_array_equal(converted.mask(0), expected)
    expected[6:9, 8:12] = 2
    np.testing.assert_array_equal(converted.mask(3), expected)
    assert converted.object_ids == [1, 2]
    assert (converted.frame(5).astype(int) - 120).__abs__().max() <= 2  # frame order kept
    assert DAVIS(out, "train", year=2016)["cars1"].mask(3).max() == 1


def test_convert_fbms_colour_labels(tmp_path: Path) -> None:
    seq = tmp_path / "src/dogs01"
    for t in range(1, 4):
        write_image(seq / f"dogs01_{t:03d}.jpg", np.zeros((6, 6, 3), np.uint8))
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[1:3, 1:3] = (255, 0, 0)
    rgb[3:5, 3:5] = (0, 0, 255)
    (seq / "GroundTruth").mkdir()
    Image.fromarray(rgb).save(seq / "GroundTruth/dogs01_002_gt.ppm")
    load_script("convert_fbms").main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "out")])
    mask = read_mask(tmp_path / "out/Annotations/dogs01/00001.png")
    assert mask[1, 1] == 2 and mask[3, 3] == 1 and mask[0, 0] == 0  # codes: blue 255 < red 16711680


# ------------------------------------------------------------------ convert_segtrackv2.py
def test_convert_segtrackv2(tmp_path: Path) -> None:
    src = tmp_path / "SegTrackv2"
    for t in range(3):
        write_image(src / "JPEGImages/bmx" / f"bmx_{t:05d}.png", np.full((8, 10, 3), 50 * t, np.uint8))
        write_image(src / "JPEGImages/girl" / f"{t:05d}.bmp", np.zeros((8, 10, 3), np.uint8))
    objects = {1: (slice(1, 4), slice(1, 5)), 2: (slice(2, 6), slice(3, 8))}  # overlapping boxes
    for obj, box in objects.items():
        for t in range(3):
            m = np.zeros((8, 10), np.uint8)
            m[box] = 255
            (src / f"GroundTruth/bmx/{obj}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(m, mode="L").save(src / f"GroundTruth/bmx/{obj}/bmx_{t:05d}.png")
    (src / "GroundTruth/girl").mkdir(parents=True)
    for t in range(3):  # label names differ from frame names: matched by order
        m = np.zeros((8, 10, 3), np.uint8)
        m[4:, :5] = 255
        Image.fromarray(m).save(src / f"GroundTruth/girl/gt{t}.png")
    out = tmp_path / "out"
    assert load_script("convert_segtrackv2").main(["--src", str(src), "--out", str(out)]) == 0
    ds = DAVIS(out, "all", year=2017)
    assert ds.names == ["bmx", "girl"]
    expected = np.zeros((8, 10), np.uint8)
    expected[objects[1]] = 1
    expected[objects[2]] = 2  # the later object wins where they overlap
    np.testing.assert_array_equal(ds["bmx"].masks(), np.stack([expected] * 3))
    assert ds["bmx"].object_ids == [1, 2] and ds["girl"].object_ids == [1]
    assert abs(int(ds["bmx"].frame(2)[0, 0, 0]) - 100) <= 2


def test_convert_segtrackv2_label_count_mismatch(tmp_path: Path) -> None:
    src = tmp_path / "S"
    for t in range(2):
        write_image(src / "JPEGImages/a" / f"{t}.png", np.zeros((4, 4, 3), np.uint8))
    (src / "GroundTruth/a").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(src / "GroundTruth/a/x.png")
    with pytest.raises(VOSDataError, match="1 label files for 2 frames"):
        load_script("convert_segtrackv2").main(["--src", str(src), "--out", str(tmp_path / "o")])


# ------------------------------------------------------------------ every script has --help
@pytest.mark.parametrize("name", ["download_davis", "download_youtubevos", "convert_fbms", "convert_segtrackv2"])
def test_scripts_help(name: str) -> None:
    result = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "usage:" in result.stdout
