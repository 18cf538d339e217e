"""Image classification data read from the standard idx files (MNIST, Fashion-MNIST).

Nothing is downloaded: the files must be on disk (Debian's ``dataset-fashion-mnist`` package
installs Fashion-MNIST under /usr/share/datasets/fashion-mnist), or in any directory a user
names.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

DEFAULT_DIRS = {
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
    "mnist": Path("/usr/share/datasets/mnist"),
}
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
INSTALL_HINT = {
    "fashion-mnist": "install Debian's package dataset-fashion-mnist "
                     "(apt-get install dataset-fashion-mnist)",
    "mnist": "put the four MNIST idx files there",
}


@dataclass(frozen=True)
class ImageData:
    train_x: np.ndarray  # float32 (N, 1, H, W), scaled to [0, 1]
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    name: str
    val_x: np.ndarray | None = None  # held out of the training images (hold_out_validation)
    val_y: np.ndarray | None = None

    @property
    def classes(self) -> int:
        return int(max(self.train_y.max(), self.test_y.max())) + 1


def hold_out_validation(data: ImageData, count: int, seed: int = 0) -> ImageData:
    """``count`` training images, drawn at random (the same ones for every ``seed`` of
    training), moved to a validation split that model selection reads instead of the test set."""
    if not 0 < count < len(data.train_x):
        raise HarnessError(f"a validation split of {count} images needs more than {count} "
                           f"training images (there are {len(data.train_x)})")
    order = np.random.default_rng(seed).permutation(len(data.train_x))
    val, train = np.sort(order[:count]), np.sort(order[count:])
    return replace(data, train_x=data.train_x[train], train_y=data.train_y[train],
                   val_x=data.train_x[val], val_y=data.train_y[val])


def read_idx(path: Path) -> np.ndarray:
    """One idx file (optionally gzipped): magic, dimensions, then unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise HarnessError(f"{path}: cannot read idx file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise HarnessError(f"{path}: not an unsigned-byte idx file")
    ndim = data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise HarnessError(f"{path}: idx header cut short")
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    expected = int(np.prod(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != expected:
        raise HarnessError(f"{path}: holds {body.size} values, its header says {expected}")
    return body.reshape(dims)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).exists():
            return directory / name
    return None


def load_idx_dataset(name: str, directory: str | Path | None = None) -> ImageData:
    directory = Path(directory) if directory else DEFAULT_DIRS.get(name)
    if directory is None:
        raise HarnessError(f"unknown dataset {name!r} (known: {', '.join(DEFAULT_DIRS)})")
    paths = {k: _find(directory, stem) for k, stem in FILES.items()}
    missing = [FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise HarnessError(f"{name} not found in {directory} (missing {missing[0]}[.gz]): "
                           f"{INSTALL_HINT.get(name, 'put its idx files there')}, or give a "
                           "directory holding the idx files")
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise HarnessError(f"{directory}: {split} images and labels differ in count")

    def images(a):
        return (a.astype(np.float32) / 255.0)[:, None, :, :]
    return ImageData(images(arrays["train_images"]), arrays["train_labels"].astype(np.int64),
                     images(arrays["test_images"]), arrays["test_labels"].astype(np.int64), name)


def synthetic_dataset(n_train: int = 600, n_test: int = 200, size: int = 12, classes: int = 4,
                      seed: int = 0) -> ImageData:
    """Small learnable images (each class a bar of its own orientation and place, plus noise)
    for tests and demonstrations without data files."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, classes, n)
        x = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
        for i, c in enumerate(y):
            pos = 2 + (c * 3) % (size - 4)
            if c % 2:
                x[i, 0, :, pos:pos + 2] += 1.0
            else:
                x[i, 0, pos:pos + 2, :] += 1.0
        return x, y.astype(np.int64)
    (a, b), (c, d) = make(n_train), make(n_test)
    return ImageData(a, b, c, d, "synthetic")
