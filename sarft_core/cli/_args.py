"""Arguments and checks shared by the commands (each command's module imports them from here, not
from the package, which loads the commands)."""
from __future__ import annotations

import argparse
import os

from sarft_core.errors import SarftError


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=os.environ.get("SARFT_MODEL", ""), help="embedded-aligned (the default: SmolLM2-135M-Instruct with the project's safety adapter), embedded (raw SmolLM2), a hub id, a local directory, a .gguf file or a training run")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model directory (off by default)")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", required=True, help="character name (\"Dr. Hannibal Lecter\" matches \"Dr._Hannibal_Lecter\")")
    parser.add_argument("--data", default=None, help="samples file (.jsonl/.json/.csv/.parquet; default: the demo data)")
    parser.add_argument("--profiles", default=None, help="role profiles JSON (default: the demo profiles)")
    parser.add_argument("--columns", default=None, help="column mapping for generic files, e.g. input=question,output=answer")
    parser.add_argument("--answer-index", type=int, default=0, help="which RoleBench answer to use (default: the first)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N samples")


def parse_columns(text: str | None) -> dict | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise SarftError(f"bad --columns entry {part!r}", "write --columns input=COL,output=COL")
        key, value = (x.strip() for x in part.split("=", 1))
        if not key or not value:
            raise SarftError(f"bad --columns entry {part!r}: a field and a column name are both needed", "write --columns input=COL,output=COL")
        if key in out:
            raise SarftError(f"--columns maps {key} twice", "map each field once")
        out[key] = value
    return out


def _example_suffix(out, types: tuple[str, ...] | None) -> str:
    """The suffix of a file name a fix suggests: ``out``'s own where the command accepts it."""
    if out.suffix and (not types or out.suffix.lower() in types):
        return out.suffix
    return types[0] if types else ".csv"


def check_output(out, inputs: dict | None = None, writable: bool = True, types: tuple[str, ...] | None = None) -> None:
    """Before any work: ``out`` is none of the command's input files (it would overwrite one),
    with ``writable`` its location can be written (the folder exists or can be made), and its
    type is one of ``types`` (lower-case suffixes, the first the default). Every file name a fix
    suggests is one the command accepts."""
    from pathlib import Path

    from sarft_core.store import check_writable

    out = Path(out).expanduser()
    suffix = _example_suffix(out, types)
    if out.is_dir():
        raise SarftError(f"{out} is a folder, not a file", f"give --out a file path, e.g. {out / ('out' + suffix)}")
    for option, value in (inputs or {}).items():
        if not value:
            continue
        src = Path(value).expanduser()
        same = out.resolve() == src.resolve()
        if not same and out.exists() and src.exists():
            try:
                same = out.samefile(src)  # hard links and other spellings of one file
            except OSError:
                same = False
        if same:
            raise SarftError(f"--out {out} is the {option} input file: writing the results would overwrite it",
                             "give --out a new file, e.g. " + str(out.with_name(out.stem + ".out" + suffix)))
    if types and out.suffix.lower() not in types:  # before check_writable, which may make the folder
        raise SarftError(f"unsupported output type {out.suffix or '(none)'} for --out",
                         "use " + (", ".join(types[:-1]) + " or " + types[-1] if len(types) > 1 else types[0])
                         + f", e.g. {out.with_suffix(types[0]).name}")
    if writable:
        check_writable(out)
