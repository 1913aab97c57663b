"""Training-sample loaders with validation.

Formats (picked from the file's content, not only its name):
- RoleBench JSONL: ``role``, ``question``, ``generated`` (list of answers; the first unless
  ``answer_index`` says otherwise). A file holding many roles is filtered by ``role``.
- per-role JSON: a list of ``{input, output}`` objects (or ``{"role": ..., "samples": [...]}``).
- generic CSV / JSONL / parquet with a column mapping (defaults: input, output, role, id).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from sarft_core.errors import SarftError
from sarft_core.store import read_table
from sarft_core.data.names import match_role, normalise_name

DEFAULT_COLUMNS = {"input": "input", "output": "output", "role": "role", "id": "id"}
_INPUT_ALIASES = ("input", "question", "instruction", "prompt")
_OUTPUT_ALIASES = ("output", "answer", "response", "generated")


@dataclass(frozen=True)
class Sample:
    id: str
    role: str
    input: str
    output: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_text(text: str, where: str) -> str:
    """``text`` if it can be written as UTF-8; a lone surrogate (a ``\\ud800`` JSON escape) cannot,
    and would fail much later (tokenizer, output files), so it is refused where it comes in."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SarftError(
            f"{where} holds an invalid character {text[exc.start:exc.end]!r} at position {exc.start} (a lone surrogate, "
            "e.g. from a \\ud800 escape)",
            "fix the text: remove the escape or write the whole character (surrogate pairs must come in pairs)",
        ) from None
    return text


def _samples_of(data: dict):
    """A JSON object ``{"role": ..., "samples": [...]}``: its samples, each with the role."""
    if not isinstance(data.get("samples"), list):
        return data
    role = data.get("role")
    return [dict(r, role=r.get("role", role)) if isinstance(r, dict) else r for r in data["samples"]]


def _own_id(value) -> str | None:
    """A row's own id as text, or None where it has none (absent, null, NaN, blank)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an integer id column with a gap reads back as floats
    text = str(value)
    return text if text.strip() else None


def _position_id(position: int) -> str:
    """The id of a row without one: its position among the role's rows, counting skipped rows,
    so that a skipped row never hands its id to the next (overrides and reviews name samples by id)."""
    return f"{position:05d}"


def _id_clash(path: Path, sid: str, row: int, made_up: bool, first_row: int, first_made_up: bool) -> SarftError:
    """The error for two rows with one id, naming the rows and which id was made from a position."""
    if made_up or first_made_up:
        blank, other = (row, first_row) if made_up else (first_row, row)
        return SarftError(f"{path}: row {blank} has no id, and the id made from its position, {sid!r}, is the id of row {other}",
                          f"give row {blank} an id of its own, or leave the id column out so that every id comes from the row's position")
    return SarftError(f"{path}: sample id {sid!r} is used by rows {first_row} and {row}", "make the id column unique or drop it")


def _read_rows(path: Path) -> list[dict]:
    return read_table(path, records=True, what="data file", example='{"input": ..., "output": ...}', from_object=_samples_of)


def _pick(row: dict, explicit: str | None, aliases: tuple[str, ...]) -> str | None:
    if explicit:
        return explicit if explicit in row else None
    for name in aliases:
        if name in row:
            return name
    return None


def load_samples(
    path: str | Path,
    role: str | None = None,
    columns: dict | None = None,
    answer_index: int = 0,
    limit: int | None = None,
) -> list[Sample]:
    """Load training samples for one role (or all roles when ``role`` is None)."""
    path = Path(path)
    if answer_index < 0:
        raise SarftError(f"answer index {answer_index} is negative", "give --answer-index 0 (the first answer) or higher")
    if limit is not None and limit < 1:
        raise SarftError(f"limit {limit} is not a positive number of samples", "give --limit 1 or more, or leave it out for all samples")
    if not path.exists():
        raise SarftError(f"data file does not exist: {path}", "check the path given to --data")
    if path.is_dir():
        raise SarftError(f"{path} is a directory", "give a .jsonl, .json, .csv or .parquet file")
    rows = _read_rows(path)
    if not rows:
        raise SarftError(f"{path} holds no samples", "give a file with at least one sample")
    explicit = columns or {}
    unknown = sorted(set(explicit) - set(DEFAULT_COLUMNS))
    if unknown:
        raise SarftError(f"unknown --columns field(s): {', '.join(unknown)}", "map only input, output, role and id, e.g. --columns input=question,output=answer")
    found = ", ".join(map(str, rows[0].keys()))
    for key in ("role", "id"):
        # a mapped column that is missing must not silently switch a filter off (or the ids)
        if explicit.get(key) and explicit[key] not in rows[0]:
            raise SarftError(f"{path}: no column {explicit[key]!r} for {key} (columns found: {found})", f"fix --columns {key}=COL")
    cols = dict(DEFAULT_COLUMNS, **explicit)
    in_col = _pick(rows[0], explicit.get("input"), _INPUT_ALIASES)
    out_col = _pick(rows[0], explicit.get("output"), _OUTPUT_ALIASES)
    missing = [name for name, col in (("input", in_col), ("output", out_col)) if col is None]
    if missing:
        raise SarftError(
            f"{path}: no column for {', '.join(missing)} (columns found: {', '.join(map(str, rows[0].keys()))})",
            "map them with --columns input=COL,output=COL",
        )
    role_col = cols["role"] if cols["role"] in rows[0] else None
    file_roles = sorted({str(r.get(role_col, "")) for r in rows}) if role_col else []
    chosen_role = None
    if role and role_col:
        chosen_role = match_role(role, file_roles)
    samples: list[Sample] = []
    id_rows: dict[str, tuple[int, bool]] = {}  # id -> (row number, made from the position)
    position = -1
    for i, r in enumerate(rows):
        r_role = str(r.get(role_col, "")) if role_col else (role or "")
        if chosen_role is not None and normalise_name(r_role) != normalise_name(chosen_role):
            continue
        position += 1
        x, y = r.get(in_col), r.get(out_col)
        if hasattr(y, "tolist") and not isinstance(y, str):  # a parquet list column reads back as an array
            y = y.tolist()
        if isinstance(y, (list, tuple)):
            if not y:
                raise SarftError(f"{path}: row {i + 1} has an empty answer list", "drop the row or give at least one answer")
            if answer_index >= len(y):
                raise SarftError(f"{path}: row {i + 1} has {len(y)} answer(s), so --answer-index {answer_index} does not exist",
                                 f"give --answer-index between 0 and {len(y) - 1}, or a file where every row has {answer_index + 1} or more answers")
            y = y[answer_index]
        elif answer_index and isinstance(y, str):
            raise SarftError(f"{path}: row {i + 1} has one answer, not a list, so --answer-index {answer_index} does not exist",
                             "leave --answer-index out (it picks one of several RoleBench answers)")
        if not isinstance(x, str) or not isinstance(y, str):
            raise SarftError(
                f"{path}: row {i + 1} has a non-text input or output ({type(x).__name__}, {type(y).__name__})",
                "inputs and outputs must be strings",
            )
        x, y = x.strip(), y.strip()
        if not x or not y:
            continue
        check_text(x, f"{path}: row {i + 1} input")
        check_text(y, f"{path}: row {i + 1} output")
        own = _own_id(r.get(cols["id"]))
        sid = own if own is not None else _position_id(position)
        check_text(sid, f"{path}: row {i + 1} id")
        check_text(r_role, f"{path}: row {i + 1} role")
        if sid in id_rows:
            raise _id_clash(path, sid, i + 1, own is None, *id_rows[sid])
        id_rows[sid] = (i + 1, own is None)
        samples.append(Sample(id=sid, role=chosen_role or r_role, input=x, output=y))
        if limit and len(samples) >= limit:
            break
    if not samples:
        raise SarftError(f"{path}: no usable samples" + (f" for role {role!r}" if role else ""), "check the role name and that inputs and outputs are non-empty")
    return samples


def load_role_samples(paths: list[str], role: str, limit: int | None, answer_index: int = 0) -> list:
    """The role's samples from one or several files (e.g. RoleBench test + RoleGPT), ids kept unique."""
    if not paths:
        raise SarftError("no samples file given", "give one or more data files (the survey's default is the demo data)")
    out: list = []
    for k, path in enumerate(paths):
        left = None if limit is None else limit - len(out)
        if left is not None and left <= 0:
            break
        part = load_samples(path, role=role, answer_index=answer_index, limit=left)
        if len(paths) > 1:
            part = [Sample(id=f"{Path(path).stem}:{s.id}", role=s.role, input=s.input, output=s.output) for s in part]
        out.extend(part)
    return out
