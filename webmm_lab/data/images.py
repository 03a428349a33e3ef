"""Image data sets with labels: scikit-learn's 8x8 digits (embedded) and MNIST (downloaded),
both as an ImageSet with images (N, 1, H, W) as floats in [0, 1] and integer labels; and a few
real colour photographs that ship with scikit-image (no labels).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..paths import data_dir
from ..profiles import dry_run_steps
from .download import DownloadError, download, sha256_of

DIGIT_CLASSES = [str(i) for i in range(10)]


@dataclass
class ImageSet:
    """Images (N, C, H, W) in [0, 1], labels (N,), class names, and where they came from."""
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    source: str

    def __len__(self) -> int:
        return len(self.images)


def unit_float(images: torch.Tensor) -> torch.Tensor:
    """Images as float in [0, 1]: uint8 pixels (0..255) divided by 255, float images as they are."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def _split_indices(n: int, split: str, test_fraction: float, seed: int = 0) -> np.ndarray:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[:n_test] if split == "test" else perm[n_test:])


def load_digits(split: str = "train", test_fraction: float = 0.2) -> ImageSet:
    """scikit-learn's handwritten digits: 1,797 real 8x8 images, 16 grey levels, embedded.

    A fixed random split (seed 0): 1,438 train and 359 test images by default.
    """
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    idx = _split_indices(len(d.target), split, test_fraction)
    x = torch.tensor(d.images[idx], dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    y = torch.tensor(d.target[idx], dtype=torch.long)
    return ImageSet(x, y, DIGIT_CLASSES, "digits", "scikit-learn digits (8x8, embedded)")


def canvas_positions(n: int, size: tuple[int, int], canvas: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The (top, left) corners, (n,) each, at which `place_on_canvas` pastes n images of `size`
    (h, w) on a `canvas` with `seed`."""
    h, w = size
    if canvas < max(h, w):
        raise ValueError(f"a canvas of {canvas} pixels cannot hold {h}x{w} images")
    g = torch.Generator().manual_seed(seed)
    top = torch.randint(canvas - h + 1, (n,), generator=g)
    return top, torch.randint(canvas - w + 1, (n,), generator=g)


def paste(images: torch.Tensor, canvas: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Each image (N, C, h, w) pasted with its top-left corner at (top[i], left[i]) of a black
    canvas (N, C, canvas, canvas). One scatter, no loop over images."""
    N, C, h, w = images.shape
    rows = (top[:, None] + torch.arange(h))[:, :, None].expand(N, h, w)         # (N, h, w)
    cols = (left[:, None] + torch.arange(w))[:, None, :].expand(N, h, w)
    out = images.new_zeros(N, C, canvas, canvas)
    n = torch.arange(N)[:, None, None].expand(N, h, w)
    out.permute(0, 2, 3, 1)[n, rows, cols] = images.permute(0, 2, 3, 1)
    return out


def place_on_canvas(images: torch.Tensor, canvas: int, seed: int = 0) -> torch.Tensor:
    """Each image (N, C, h, w) pasted at a random position of a black canvas (N, C, canvas,
    canvas), the positions fixed by `seed` (`canvas_positions`)."""
    return paste(images, canvas, *canvas_positions(len(images), images.shape[-2:], canvas, seed))


CANVAS_SEEDS = {"train": 0, "test": 1}       # the positions of each split's digits on the canvas


def load_digits_on_canvas(split: str = "train", canvas: int = 12) -> ImageSet:
    """scikit-learn's digits, each pasted at a random position of a black `canvas` x `canvas`
    image (positions fixed per split): the same real digits, but no longer aligned, so that a
    linear classifier on raw pixels fails while features that do not depend on position work
    (notebook 03). Same split and labels as `load_digits`."""
    d = load_digits(split)
    x = place_on_canvas(d.images, canvas, seed=CANVAS_SEEDS[split])
    return ImageSet(x, d.labels, d.classes, "digits-canvas",
                    f"scikit-learn digits (8x8) at random positions on a {canvas}x{canvas} canvas")


def per_class_subset(labels: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Indices of `k` random examples of every class in `labels` (fewer if a class is smaller):
    the "few labels" of a label-efficiency experiment. Same seed, same subset."""
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in labels.unique(sorted=True).tolist():
        members = torch.nonzero(labels == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.cat(picks)


MNIST_MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"]
MNIST_FILES = {  # name: sha256 of the gzipped IDX file
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


def mnist_stand_in(split: str = "train") -> ImageSet:
    """For dry runs only: the digits upscaled to 28x28 and repeated to MNIST's 60,000 / 10,000
    images, so code meant for MNIST meets its shapes and sizes without the download."""
    digits = load_digits(split)
    n = 60000 if split == "train" else 10000
    idx = torch.arange(n) % len(digits)
    x = torch.nn.functional.interpolate(digits.images, size=(28, 28), mode="bilinear", align_corners=False)
    return ImageSet(x[idx], digits.labels[idx], digits.classes, "mnist",
                    "scikit-learn digits upscaled to 28x28 (a dry run's stand-in for MNIST)")


def read_idx(path: str | Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file; delete it and download again")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {arr.size} bytes")
    return arr.reshape(shape)


def load_mnist(split: str = "train", download_ok: bool = True, fallback: bool = True,
               root: str | Path | None = None, mirrors: list[str] | None = None,
               files: dict[str, str] | None = None) -> ImageSet:
    """MNIST (28x28): read from the cache, else downloaded (sha256-checked) and cached.

    When it cannot be had (offline, or `download_ok=False` and not cached) and `fallback` is
    set, prints why and returns scikit-learn's digits instead, so the same code runs on.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root else data_dir() / "mnist"
    mirrors = mirrors or MNIST_MIRRORS
    files = files or MNIST_FILES
    prefix = "train" if split == "train" else "t10k"
    names = [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"]
    try:
        paths = []
        for name in names:
            path = root / name
            if not download_ok and not (path.is_file() and sha256_of(path) == files[name]):
                where = str(root).replace(str(Path.home()), "~")
                state = (f"in the cache {where} is corrupt (wrong sha256: delete it)"
                         if path.is_file() else f"is not in the cache {where}")
                raise DownloadError(f"{name} {state}; downloads are off in this profile")
            paths.append(download([m + name for m in mirrors], path, files[name]))
    except DownloadError as e:
        if not fallback:
            raise
        if dry_run_steps() is not None:
            print(f"MNIST unavailable ({e}).\nDry run: scikit-learn's digits, upscaled to 28x28 and "
                  "repeated to MNIST's size, stand in for it, so the MNIST path's shapes and memory run.")
            return mnist_stand_in(split)
        print(f"MNIST unavailable ({e}).\nFalling back to scikit-learn's embedded 8x8 digits; "
              "the same code runs on them.")
        return load_digits(split)
    x = torch.from_numpy(read_idx(paths[0]).copy()).float().div_(255).unsqueeze(1)  # (N, 1, 28, 28)
    y = torch.from_numpy(read_idx(paths[1]).astype(np.int64))
    return ImageSet(x, y, DIGIT_CLASSES, "mnist", f"MNIST (28x28, cached in {root})")


PHOTOS = ("astronaut", "coffee", "chelsea")


def load_photos(names: tuple[str, ...] = PHOTOS, size: int | None = 128) -> dict[str, torch.Tensor]:
    """Colour photographs bundled with scikit-image (no download), each (3, H, W) in [0, 1],
    resized so that the shorter side is `size` pixels (None: as they are)."""
    import skimage.data

    photos = {}
    for name in names:
        if name not in PHOTOS:
            raise ValueError(f"unknown photo {name!r}; choose from {', '.join(PHOTOS)}")
        x = torch.from_numpy(getattr(skimage.data, name)().copy()).permute(2, 0, 1).float() / 255
        if size is not None:
            h, w = x.shape[1:]
            scale = size / min(h, w)
            x = torch.nn.functional.interpolate(x[None], size=(round(h * scale), round(w * scale)),
                                                mode="area")[0]
        photos[name] = x.clamp(0, 1)
    return photos
