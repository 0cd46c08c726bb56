"""Reading MuseV checkpoints and telling them apart from other model files.

A MuseV motion checkpoint (`musev/unet/diffusion_pytorch_model.safetensors` in TMElyralab/MuseV) is a FULL 3-D UNet
under diffusers key names: the 686 SD1.5 UNet keys plus MuseV's own keys. MuseV's loader overwrites every SD key
with the chosen text-to-image base (spec/musev.md §1.9), so only the MuseV keys are used here; the SD part comes
from the user's MODEL.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch

#: Families of keys that MuseV adds to an SD1.5 UNet (spec/musev.md §1.8).
MUSEV_KEY_PATTERNS = {
    "temp_convs": re.compile(r"(^|\.)temp_convs\.\d+\."),
    "temp_attentions": re.compile(r"(^|\.)temp_attentions\.\d+\."),
    "transformer_in": re.compile(r"^transformer_in\."),
    "frame_embedding": re.compile(r"^frame_embedding\."),
    "refer_emb_attns": re.compile(r"(^|\.)(first_|mid_block_)?refer_emb_attns\."),
    "ip_adapter_kv": re.compile(r"\.attn2\.to_[kv]_ip\.weight$"),
}

#: Key families of a plain diffusers SD1.5 UNet.
SD_UNET_KEY_PATTERN = re.compile(
    r"^(conv_in|conv_out|conv_norm_out|time_embedding)\.|"
    r"^(down_blocks\.\d+\.(resnets|attentions|downsamplers)|mid_block\.(resnets|attentions)|"
    r"up_blocks\.\d+\.(resnets|attentions|upsamplers))\.\d+\."
)

#: MuseV key families of the referencenet flavour that are not temporal modules (fusion attentions, IP K/V).
REFERENCE_FAMILIES = ("refer_emb_attns", "ip_adapter_kv")

FLAVOUR_MUSEV = "musev"
FLAVOUR_REFERENCENET = "musev_referencenet"


class CheckpointError(ValueError):
    """A model file is missing, unreadable, or not the kind of file the node expects."""


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name in ("float8_e4m3fn", "float8_e5m2"):
    if hasattr(torch, _name):
        _SAFETENSORS_DTYPES["F8_E4M3" if _name.endswith("fn") else "F8_E5M2"] = getattr(torch, _name)

_UNSAFE_GLOBAL = re.compile(r"(?:GLOBAL|global)\s+([\w.]+)")


def _release_pages(tensor: torch.Tensor) -> None:
    """Drop the pages of a file-mapped tensor from this process (Linux `madvise(MADV_DONTNEED)`).

    The tensors of `safe_open` and of `torch.load(mmap=True)` are views of a read-only file mapping; once copied,
    their pages would otherwise stay resident until the whole mapping is released, doubling the peak memory of a
    load. The mapping is never written, so dropping its pages only means they are read again if touched.
    Silently does nothing where `madvise` is unavailable.
    """
    global _MADVISE
    if _MADVISE is None:
        try:
            import ctypes
            import mmap
            libc = ctypes.CDLL(None, use_errno=True)
            page = mmap.PAGESIZE

            def advise(start: int, length: int) -> None:
                first = start - start % page
                last = -(-(start + length) // page) * page
                libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), 4)  # MADV_DONTNEED

            _MADVISE = advise if os.name == "posix" and hasattr(libc, "madvise") else False
        except Exception:  # no libc (Windows): keep the pages
            _MADVISE = False
    if _MADVISE and tensor.device.type == "cpu" and tensor.numel():
        _MADVISE(tensor.data_ptr(), tensor.numel() * tensor.element_size())


_MADVISE = None
#: Bytes copied (and their file pages released) at a time when reading a tensor.
_COPY_BLOCK_BYTES = 2 ** 20


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether a floating-point tensor holds no NaN and no +-inf.

    Uses `aminmax` (NaN propagates to both results, infinities show as the extremes): one pass without a mask,
    about 20x faster on CPU than `isfinite(...).all()`. Dtypes without `aminmax` (fp8) are widened first.
    """
    if tensor.numel() == 0:
        return True
    try:
        low, high = torch.aminmax(tensor)
    except (RuntimeError, NotImplementedError):
        low, high = torch.aminmax(tensor.to(torch.float32))
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _flatten(tree: dict, prefix: str, out: dict, name: str) -> None:
    for key, value in tree.items():
        if isinstance(value, torch.Tensor):
            out[prefix + str(key)] = value
        elif isinstance(value, dict):
            _flatten(value, f"{prefix}{key}.", out, name)
        else:
            raise CheckpointError(f"{name} does not hold a flat state dict of tensors ('{prefix}{key}' is a "
                                  f"{type(value).__name__})")


def _refused_pickle_message(name: str, exc: Exception) -> str | None:
    """The message for a `.bin` that `weights_only` refused, or None if `exc` is another kind of failure."""
    text = str(exc)
    if "Weights only load failed" not in text:  # torch's words for an unpickler refusal (torch >= 1.13)
        return None
    found = _UNSAFE_GLOBAL.search(text)
    what = f" (it imports '{found.group(1)}')" if found else ""
    return (f"could not read {name}: the file contains code{what} besides tensors and was refused for safety; "
            f"only files of plain tensors are loaded. Use the file as released (or its .safetensors version)")


class CheckpointFile:
    """A model file opened for reading single tensors: names, shapes and dtypes without reading any data.

    `.safetensors` files are opened with `safetensors.safe_open`; pickled `.bin/.pt/.pth/.ckpt` files with
    `torch.load(weights_only=True, mmap=True)` (zip format), falling back to a full `torch.load(weights_only=True)`
    for the legacy format. `read` copies only the tensors asked for, one at a time, and releases the file pages
    of each, so a load holds the kept tensors and little else. Nested dicts (`{"image_proj": {...}}`) are
    flattened to dotted keys; a top-level `{"state_dict": {...}}` is unwrapped.

    Use as a context manager, or call `close()`.

    Args:
        path: file path.
        name: file name for messages (default: the base name).
    Raises:
        CheckpointError: missing file, truncated or unreadable file, a pickle that would run code (refused for
            safety), or a file that is not a state dict of tensors.
    """

    def __init__(self, path: str, name: str | None = None):
        self.path = path
        self.name = name or os.path.basename(path)
        self._safe = None
        self._tensors: dict[str, torch.Tensor] = {}
        self._meta: dict[str, torch.Tensor] = {}
        self._mapped = False  # tensors are views of a file mapping (their pages may be released)
        if not os.path.isfile(path):
            raise CheckpointError(f"model file not found: {path}")
        is_safetensors = path.endswith(".safetensors")
        try:
            if is_safetensors:
                from safetensors import safe_open
                self._safe = safe_open(path, framework="pt", device="cpu")
                self._mapped = True
                for key in self._safe.keys():
                    info = self._safe.get_slice(key)
                    dtype = _SAFETENSORS_DTYPES.get(info.get_dtype())
                    if dtype is None:
                        raise CheckpointError(f"{self.name}: tensor '{key}' has the unsupported dtype "
                                              f"{info.get_dtype()}")
                    self._meta[key] = torch.empty(info.get_shape(), dtype=dtype, device="meta")
            else:
                loaded = self._load_pickle(path)
                if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
                    loaded = loaded["state_dict"]
                if not isinstance(loaded, dict):
                    raise CheckpointError(f"{self.name} does not hold a flat state dict of tensors")
                _flatten(loaded, "", self._tensors, self.name)
                self._meta = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in self._tensors.items()}
        except CheckpointError:
            self.close()
            raise
        except Exception as exc:  # safetensors and torch raise several types for damaged files
            self.close()
            refused = None if is_safetensors else _refused_pickle_message(self.name, exc)
            if refused:
                raise CheckpointError(refused) from None
            detail = "" if "weights_only" in str(exc) else f" ({exc})"
            raise CheckpointError(
                f"could not read {self.name}: the file is truncated or not a "
                f"{'safetensors' if is_safetensors else 'PyTorch state-dict'} file{detail}") from exc

    def _load_pickle(self, path: str):
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            self._mapped = True
            return loaded
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
        return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format: no mmap

    def __enter__(self) -> "CheckpointFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the file (tensors already read stay valid)."""
        self._safe = None
        self._tensors = {}

    def keys(self) -> list[str]:
        """Every tensor name of the file, in file order."""
        return list(self._meta)

    def __contains__(self, key: str) -> bool:
        return key in self._meta

    def meta_state_dict(self) -> dict[str, torch.Tensor]:
        """`{key: tensor on the meta device}` with the stored shapes and dtypes (no data)."""
        return dict(self._meta)

    def read(self, keys, dtype: torch.dtype | None = None, device=None) -> dict[str, torch.Tensor]:
        """Copy the named tensors out of the file, each checked finite.

        Args:
            keys: names to read (any iterable); other tensors of the file are never read.
            dtype: convert floating-point tensors to this dtype (None keeps the stored dtype).
            device: where the copies go (default CPU).
        Returns:
            `{key: tensor}` owning their memory (not views of the file).
        Raises:
            CheckpointError: a key the file lacks, or a tensor holding NaN or infinite values (naming the file and
                the first such tensor).
        """
        out = {}
        for key in keys:
            if key not in self._meta:
                raise CheckpointError(f"{self.name} lacks the tensor '{key}'")
            source = self._safe.get_tensor(key) if self._safe is not None else self._tensors[key]
            target = dtype if dtype is not None and source.is_floating_point() else source.dtype
            tensor = torch.empty(source.shape, dtype=target, device=device or "cpu")
            # copy in 1 MB blocks of rows, releasing each block's file pages, so a large tensor (e.g. the 12 MB of an
            # image projection, most of its file) never sits in memory twice
            row_bytes = max(1, source[0].numel() * source.element_size()) if source.dim() else 1
            rows = max(1, _COPY_BLOCK_BYTES // row_bytes) if source.dim() else 1
            for start in range(0, source.shape[0] if source.dim() else 1, rows):
                block = source[start:start + rows] if source.dim() else source
                (tensor[start:start + rows] if source.dim() else tensor).copy_(block)
                if self._mapped:
                    _release_pages(block)
            del source
            if tensor.is_floating_point() and not all_finite(tensor):
                stored = self._meta[key].dtype
                why = "NaN or infinite values" if target == stored else \
                    f"NaN or infinite values (stored as {stored}, converted to {target})"
                raise CheckpointError(f"{self.name} is damaged: tensor '{key}' holds {why}; re-download the file")
            out[key] = tensor
        return out


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read every tensor of a `.safetensors` file or a pickled `.bin/.pt/.pth/.ckpt` (`weights_only=True`).

    Prefer `CheckpointFile` to read only some tensors.

    Args:
        path: file path.
    Returns:
        `{key: tensor}` on the CPU, as stored (dtype unchanged), each checked finite.
    Raises:
        CheckpointError: the file is missing, truncated, not a state dict, refused for safety, or holds NaN/inf.
    """
    with CheckpointFile(path) as checkpoint:
        return checkpoint.read(checkpoint.keys())


def musev_key_family(key: str) -> str | None:
    """Name of the MuseV key family `key` belongs to, or None for any other key."""
    for family, pattern in MUSEV_KEY_PATTERNS.items():
        if pattern.search(key):
            return family
    return None


def describe_foreign_file(keys: list[str]) -> str:
    """Best guess, in words, of what a state dict that is not a MuseV motion UNet is."""
    if not keys:
        return "an empty file"
    if any("motion_modules." in k for k in keys):
        return "an AnimateDiff motion module (keys '...motion_modules...'); load it with AnimateDiff-Evolved"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return ("a single-file Stable Diffusion checkpoint (keys 'model.diffusion_model...'); "
                "put it in models/checkpoints and load it with Load Checkpoint")
    if any(k.startswith(("proj.", "norm.")) for k in keys) and len(keys) <= 8:
        return "an IP-Adapter image projection (keys 'proj.*', 'norm.*')"
    sd_keys = [k for k in keys if SD_UNET_KEY_PATTERN.search(k)]
    if sd_keys and len(sd_keys) == len(keys):
        if not any(k.startswith("up_blocks.") for k in keys):
            return "a MuseV ReferenceNet (SD1.5 encoder keys only, no temporal layers); use it with the ReferenceNet node"
        return "a plain SD1.5 UNet in diffusers layout (no MuseV temporal layers)"
    return f"an unknown model ({len(keys)} keys, first: {sorted(keys)[:3]})"


@dataclass
class LevelLayout:
    """Temporal modules of one UNet level (a diffusers down/up block) or of the mid block."""

    channels: int
    temp_convs: int
    temp_attentions: int


@dataclass
class MotionLayout:
    """Geometry and flavour of a MuseV motion checkpoint, inferred from its MuseV keys.

    Attributes:
        flavour: `musev` or `musev_referencenet`.
        down, up: per-level temporal module counts and channels (diffusers block order).
        mid: the mid block's temporal modules.
        transformer_in: whether a temporal transformer follows conv_in (`musev` only).
        frame_channels: sinusoid width of the frame embedding (320 for SD1.5).
        femb_channels: frame-embedding width (1280 for SD1.5).
        extra_families: key counts of the referencenet-only families (`refer_emb_attns`, `ip_adapter_kv`).
        fusion_channels: `{prefix: C}` of every reference-fusion attention (`first_refer_emb_attns`,
            `down_blocks.N.refer_emb_attns.M`, `mid_block_refer_emb_attns`); empty for `musev`.
        ip_shapes: `{prefix: (C, context_dim)}` of every IP-Adapter K/V pair, prefix up to `attn2`
            (`down_blocks.0.attentions.0.transformer_blocks.0.attn2`); empty for `musev`.
    """

    flavour: str
    down: list[LevelLayout]
    mid: LevelLayout
    up: list[LevelLayout]
    transformer_in: bool
    frame_channels: int
    femb_channels: int
    transformer_in_channels: int = 0
    extra_families: dict[str, int] = field(default_factory=dict)
    fusion_channels: dict[str, int] = field(default_factory=dict)
    ip_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def layers_per_block(self) -> int:
        """ResBlocks per down block (one temporal conv each)."""
        return self.down[0].temp_convs if self.down else 0


def split_motion_state_dict(state_dict: dict[str, torch.Tensor], name: str = "checkpoint"):
    """Split a MuseV motion UNet state dict into its MuseV keys and its SD1.5 keys.

    Accepts the diffusers layout of TMElyralab/MuseV (optionally under a `unet.` prefix).

    Args:
        state_dict: the file's tensors.
        name: file name used in error messages.
    Returns:
        `(musev_state_dict, sd_keys)`: the MuseV keys with their tensors, and the list of SD1.5 UNet keys that are
        ignored because the SD part comes from the user's base model.
    Raises:
        CheckpointError: when the file is not a MuseV motion UNet (the message says what it looks like instead),
        or holds keys that are neither SD1.5 UNet keys nor MuseV keys.
    """
    keys = list(state_dict.keys())
    if keys and all(k.startswith("unet.") for k in keys):
        state_dict = {k[len("unet."):]: v for k, v in state_dict.items()}
        keys = list(state_dict.keys())
    musev, sd_keys, unknown = {}, [], []
    for key in keys:
        if musev_key_family(key) is not None:
            musev[key] = state_dict[key]
        elif SD_UNET_KEY_PATTERN.search(key):
            sd_keys.append(key)
        else:
            unknown.append(key)
    required = ("temp_convs", "temp_attentions", "frame_embedding")
    present = {musev_key_family(k) for k in musev}
    if not all(family in present for family in required):
        raise CheckpointError(
            f"{name} is not a MuseV motion checkpoint: expected a MuseV UNet with temporal layers "
            f"(keys like 'down_blocks.0.temp_convs.0.conv1.0.weight', 'frame_embedding.linear_1.weight'), "
            f"found {describe_foreign_file(keys)}"
        )
    if unknown:
        raise CheckpointError(
            f"{name} holds {len(unknown)} keys that belong neither to an SD1.5 UNet nor to MuseV, "
            f"e.g. {sorted(unknown)[:3]}; expected a MuseV motion UNet in diffusers layout"
        )
    return musev, sd_keys


def _count_indices(keys, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in keys for m in [pattern.match(k)] if m}
    return max(found) + 1 if found else 0


def infer_motion_layout(musev_state_dict: dict[str, torch.Tensor], name: str = "checkpoint") -> MotionLayout:
    """Infer geometry and flavour from the MuseV keys of a motion checkpoint.

    Channels come from the temporal modules' GroupNorm weights; module counts from key indices.

    Raises:
        CheckpointError: when a module's keys are incomplete in a way that prevents reading its size.
    """
    keys = list(musev_state_dict)

    def level(prefix: str) -> LevelLayout:
        n_conv = _count_indices(keys, prefix + "temp_convs.")
        n_attn = _count_indices(keys, prefix + "temp_attentions.")
        weight_key = prefix + "temp_convs.0.conv1.0.weight"
        if n_conv and weight_key not in musev_state_dict:
            raise CheckpointError(f"{name} is incomplete: missing '{weight_key}'")
        channels = int(musev_state_dict[weight_key].shape[0]) if n_conv else 0
        return LevelLayout(channels, n_conv, n_attn)

    n_down = _count_indices(keys, "down_blocks.")
    n_up = _count_indices(keys, "up_blocks.")
    down = [level(f"down_blocks.{i}.") for i in range(n_down)]
    up = [level(f"up_blocks.{i}.") for i in range(n_up)]
    mid = level("mid_block.")
    for key in ("frame_embedding.linear_1.weight",):
        if key not in musev_state_dict:
            raise CheckpointError(f"{name} is incomplete: missing '{key}'")
    femb_channels, frame_channels = (int(s) for s in musev_state_dict["frame_embedding.linear_1.weight"].shape)
    transformer_in = any(k.startswith("transformer_in.") for k in keys)
    transformer_in_channels = 0
    if transformer_in:
        norm_key = "transformer_in.norm.weight"
        if norm_key not in musev_state_dict:
            raise CheckpointError(f"{name} is incomplete: missing '{norm_key}'")
        transformer_in_channels = int(musev_state_dict[norm_key].shape[0])
    extra = {}
    fusion_channels, ip_shapes = {}, {}
    for key in keys:
        family = musev_key_family(key)
        if family in REFERENCE_FAMILIES:
            extra[family] = extra.get(family, 0) + 1
        if family == "refer_emb_attns" and key.endswith(".to_q.weight"):
            fusion_channels[key[:-len(".to_q.weight")]] = int(musev_state_dict[key].shape[0])
        elif family == "ip_adapter_kv" and key.endswith(".to_k_ip.weight"):
            shape = musev_state_dict[key].shape
            ip_shapes[key[:-len(".to_k_ip.weight")]] = (int(shape[0]), int(shape[1]))
    flavour = FLAVOUR_REFERENCENET if "refer_emb_attns" in extra else FLAVOUR_MUSEV
    return MotionLayout(flavour=flavour, down=down, mid=mid, up=up, transformer_in=transformer_in,
                        frame_channels=frame_channels, femb_channels=femb_channels,
                        transformer_in_channels=transformer_in_channels, extra_families=extra,
                        fusion_channels=fusion_channels, ip_shapes=ip_shapes)
