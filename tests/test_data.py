import functools
import gzip
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest
import torch

from webmm_lab.data import DownloadError, available, download, load
from webmm_lab.data.images import load_mnist, read_idx


def test_registry_lists_and_refuses_unknown_names():
    assert {"digits", "mnist", "handwritten", "python-docs", "python-source"} <= set(available())
    with pytest.raises(KeyError, match="available: "):
        load("imagenet")


def test_digits_are_real_images_with_a_fixed_disjoint_split():
    train, test = load("digits", split="train"), load("digits", split="test")
    assert train.images.shape[1:] == (1, 8, 8) and len(train) + len(test) == 1797
    assert train.images.dtype == torch.float32 and 0 <= train.images.min() and train.images.max() <= 1
    assert set(train.labels.tolist()) == set(range(10))
    a = {x.numpy().tobytes() for x in train.images}
    b = {x.numpy().tobytes() for x in test.images}
    assert len(b - a) > 0.9 * len(b)     # the split is by sample (a few digits repeat exactly)
    assert torch.equal(load("digits", split="test").images, test.images)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load("digits", split="val")


def test_handwritten_uses_embedded_digits_outside_gpu(monkeypatch):
    monkeypatch.setenv("WEBMM_PROFILE", "cpu")
    assert load("handwritten").name == "digits"


@pytest.mark.parametrize("name", ["python-docs", "python-source"])
def test_text_corpora_split_by_document(name):
    kw = {"max_chars": 300_000} if name == "python-source" else {}
    train, val = load(name, split="train", **kw), load(name, split="val", **kw)
    assert len(train) > 100_000 and len(val) > 10_000
    if name == "python-docs":                     # every tenth passage is validation
        assert 0.07 < len(val) / (len(train) + len(val)) < 0.13
    assert val.text[:2000] not in train.text


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def server(tmp_path):
    """A file server on 127.0.0.1 serving tmp_path/www (never the internet)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def fake_mnist(www):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    labels = np.arange(5)
    files = {}
    for name, arr in [("t10k-images-idx3-ubyte.gz", images), ("t10k-labels-idx1-ubyte.gz", labels)]:
        data = _idx(arr)
        (www / name).write_bytes(data)
        files[name] = hashlib.sha256(data).hexdigest()
    return images, files


def test_mnist_downloads_checks_and_caches(server, tmp_path):
    www, url = server
    images, files = fake_mnist(www)
    cache = tmp_path / "cache"
    ds = load_mnist("test", root=cache, mirrors=["http://127.0.0.1:9/nothing/", url], files=files)
    assert ds.name == "mnist" and ds.images.shape == (5, 1, 28, 28)
    assert torch.allclose(ds.images[:, 0] * 255, torch.tensor(images, dtype=torch.float32))
    assert ds.labels.tolist() == [0, 1, 2, 3, 4]
    for f in www.iterdir():
        f.unlink()                                   # now only the cache can serve it
    assert load_mnist("test", root=cache, mirrors=[url], files=files).name == "mnist"


def test_checksum_mismatch_is_refused(server, tmp_path):
    www, url = server
    (www / "f.bin").write_bytes(b"tampered")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(url + "f.bin", tmp_path / "f.bin", sha256="0" * 64)
    assert not (tmp_path / "f.bin").exists()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_offline_falls_back_to_digits_with_a_message(tmp_path, capsys):
    ds = load_mnist("test", root=tmp_path, mirrors=[f"http://127.0.0.1:{_closed_port()}/"])
    assert ds.name == "digits" and ds.images.shape[1:] == (1, 8, 8)
    out = capsys.readouterr().out
    assert "MNIST unavailable" in out and "Falling back to scikit-learn's embedded 8x8 digits" in out
    with pytest.raises(DownloadError, match="could not download"):
        load_mnist("test", root=tmp_path, mirrors=[f"http://127.0.0.1:{_closed_port()}/"], fallback=False)


def test_no_download_when_the_profile_forbids_it(tmp_path, capsys):
    assert load_mnist("train", root=tmp_path, download_ok=False).name == "digits"
    assert "downloads are off" in capsys.readouterr().out


def test_no_download_when_the_profile_forbids_it_even_for_a_corrupt_cache(server, tmp_path, capsys):
    www, url = server
    images, files = fake_mnist(www)
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in files:
        (cache / name).write_bytes(b"damaged")                  # the right names, the wrong bytes
    ds = load_mnist("test", root=cache, mirrors=[url], files=files, download_ok=False)
    assert ds.name == "digits"
    assert "is corrupt (wrong sha256" in capsys.readouterr().out
    assert all((cache / name).read_bytes() == b"damaged" for name in files)   # nothing fetched
    assert load_mnist("test", root=cache, mirrors=[url], files=files).name == "mnist"  # allowed: fetched


def test_read_idx_refuses_other_files(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + b"\x00\x00\x00\x02" + b"xx"))
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2])))   # says 9, has 2
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)


def test_a_dry_run_offline_gets_an_mnist_sized_stand_in(tmp_path, monkeypatch, capsys):
    from webmm_lab.data import load_mnist
    monkeypatch.setenv("WEBMM_DRY_RUN", "2")
    monkeypatch.setenv("WEBMM_OFFLINE", "1")
    test = load_mnist("test", root=tmp_path)
    assert test.images.shape == (10000, 1, 28, 28) and test.labels.shape == (10000,)
    assert "stand in" in capsys.readouterr().out and "stand-in" in test.source
    assert 0 <= test.images.min() and test.images.max() <= 1


def test_photos_ship_with_scikit_image():
    photos = load("photos", size=32)
    assert list(photos) == ["astronaut", "coffee", "chelsea"]
    assert all(p.shape[0] == 3 and min(p.shape[1:]) == 32 and 0 <= p.min() and p.max() <= 1
               for p in photos.values())
    with pytest.raises(ValueError, match="unknown photo"):
        load("photos", names=("lena",))
