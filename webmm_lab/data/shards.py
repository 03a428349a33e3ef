"""Image / caption pairs in tar shards, the way web-scale data sets are stored and streamed
(LAION, DataComp and open_clip read WebDataset shards): each shard a plain tar file holding,
per sample, `<key>.png` and `<key>.txt`. Written and read with the `webdataset` package.

    paths = write_shards(images, captions, "results/shards", per_shard=1000)   # web-000000.tar, ...
    for image, caption in read_shards(paths):                                  # streamed, in order
        ...

A training job gives each process (and each data-loader worker) its own shards, so no machine
ever holds the whole data set; `webdataset.split_by_node` does that split under torchrun.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import numpy as np
import torch


def _png(image: torch.Tensor) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return buf.getvalue()


def write_shards(images: torch.Tensor, captions: list[str], folder: str | Path, per_shard: int = 1000,
                 prefix: str = "web") -> list[Path]:
    """Write images (n, 3, H, W) uint8 and their captions to tar shards of `per_shard` samples
    in `folder` (`prefix-000000.tar`, ...). Returns the shard paths, in order."""
    import webdataset as wds

    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (n, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{prefix}-*.tar"):           # a shorter rewrite leaves no stale shard
        old.unlink()
    pattern = str(folder / f"{prefix}-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=per_shard, verbose=0) as sink:
        for i, (image, text) in enumerate(zip(images, captions)):
            sink.write({"__key__": f"{i:08d}", "png": _png(image), "txt": text})
    return sorted(folder.glob(f"{prefix}-*.tar"))


class ShardError(ValueError):
    """A shard that cannot be read: corrupt, truncated, or a sample without its image or caption."""


def read_shards(paths: list[str | Path]) -> Iterator[tuple[torch.Tensor, str]]:
    """Stream (image (3, H, W) uint8, caption) from tar shards, shard by shard, in order. A
    corrupt shard or image raises ShardError naming the file (and the sample) and what to do."""
    import webdataset as wds
    from PIL import Image

    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"no such shard: {missing[0]}; write them with write_shards first")
    fix = "write the shards again with write_shards (or delete this one)"
    for path in map(str, paths):
        samples = iter(wds.WebDataset([path], shardshuffle=False, empty_check=False))
        while True:
            try:
                sample = next(samples)
            except StopIteration:
                break
            except Exception as e:        # tarfile, webdataset and OS errors, whatever the damage
                raise ShardError(f"shard {path} is corrupt or truncated ({type(e).__name__}: "
                                 f"{str(e)[:120]}); {fix}") from None
            key = sample.get("__key__", "?")
            if "png" not in sample or "txt" not in sample:
                raise ShardError(f"sample {key} in shard {path} lacks its "
                                 f"{'image' if 'png' not in sample else 'caption'}; {fix}")
            try:
                image = np.array(Image.open(io.BytesIO(sample["png"])).convert("RGB"))
                caption = sample["txt"].decode("utf-8")
            except Exception as e:        # PIL's errors for damaged bytes, or bad UTF-8
                raise ShardError(f"sample {key} in shard {path}: its image or caption is corrupt "
                                 f"({type(e).__name__}: {str(e)[:120]}); {fix}") from None
            yield torch.from_numpy(image).permute(2, 0, 1).contiguous(), caption


__all__ = ["write_shards", "read_shards", "ShardError"]
