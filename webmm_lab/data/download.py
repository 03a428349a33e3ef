"""Downloads: sha256-checked, written atomically into the cache, and a clear error when offline.

Set WEBMM_OFFLINE=1 to never touch the network.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..settings import settings


class DownloadError(OSError):
    """A file could not be fetched: offline, unreachable, or its checksum did not match."""


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(urls: str | list[str], dest: str | Path, sha256: str, timeout: float = 20.0) -> Path:
    """Fetch the first reachable of `urls` to `dest`, verify its sha256, and return `dest`.

    A file already at `dest` with the right checksum is not fetched again. Raises DownloadError
    (never a half-written file) when every URL fails or the checksum does not match.
    """
    dest = Path(dest)
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    if settings().offline:
        raise DownloadError(f"{dest.name}: not in the cache and WEBMM_OFFLINE is set")
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
                while block := r.read(1 << 20):
                    h.update(block)
                    f.write(block)
            if h.hexdigest() != sha256:
                errors.append(f"{url}: checksum mismatch (got sha256 {h.hexdigest()[:12]}…, "
                              f"expected {sha256[:12]}…)")
                continue
            os.replace(tmp, dest)
            return dest
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise DownloadError(f"could not download {dest.name}: " + "; ".join(errors))
