"""Real photos that ship inside installed Python packages (docs/design.md, "Offline assets"), for demos and tests.

Nothing is downloaded: each entry is a file inside scikit-image, scikit-learn, matplotlib or
foolbox, found without importing those packages. Packages that are absent are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eupe.models.weights import package_file

# (package, file inside it, key). Colour natural photos only.
_PHOTOS = (
    ("skimage", "data/astronaut.png", "skimage_astronaut"),
    ("skimage", "data/chelsea.png", "skimage_chelsea"),
    ("skimage", "data/coffee.png", "skimage_coffee"),
    ("skimage", "data/rocket.jpg", "skimage_rocket"),
    ("skimage", "data/motorcycle_left.png", "skimage_motorcycle_left"),
    ("skimage", "data/motorcycle_right.png", "skimage_motorcycle_right"),
    ("skimage", "data/retina.jpg", "skimage_retina"),
    ("skimage", "data/hubble_deep_field.jpg", "skimage_hubble"),
    ("sklearn", "datasets/images/china.jpg", "sklearn_china"),
    ("sklearn", "datasets/images/flower.jpg", "sklearn_flower"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "mpl_grace_hopper"),
)


@dataclass(frozen=True)
class Photo:
    key: str
    path: Path
    label: int | None = None  # ImageNet class index where known

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


def bundled_photos() -> list[Photo]:
    """Unlabelled natural photos from installed packages (missing packages are skipped)."""
    photos = []
    for package, relative, key in _PHOTOS:
        path = package_file(package, relative)
        if path is not None:
            photos.append(Photo(key, path))
    return photos


def imagenet_photos() -> list[Photo]:
    """foolbox's 20 labelled ImageNet validation photos (``imagenet_<i>_<label>.jpg``)."""
    version = package_file("foolbox", "VERSION")
    if version is None:
        return []
    files = sorted((version.parent / "data").glob("imagenet_*.jpg"))
    return [Photo(f"foolbox_{f.stem}", f, int(f.stem.rsplit("_", 1)[1])) for f in files]


def encode_jpeg(path: Path, max_side: int | None = None, quality: int = 90) -> bytes:
    """A photo re-encoded as RGB JPEG, optionally downscaled so its longer side is ``max_side``."""
    import io

    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if max_side and max(image.size) > max_side:
            image.thumbnail((max_side, max_side), Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_photo_shards(out_dir: str | Path, photos: list[Photo] | None = None, per_shard: int = 8,
                       max_side: int | None = 320) -> list[str]:
    """Webdataset shards ``photos-%06d.tar`` of real bundled photos (labels as .cls where known)."""
    from eupe.data.shards import write_shards

    photos = photos if photos is not None else bundled_photos() + imagenet_photos()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = ((p.key, encode_jpeg(p.path, max_side), "jpg", p.label) for p in photos)
    return write_shards(samples, str(out_dir / "photos-%06d.tar"), per_shard)
