"""Loaders for evaluation data: AdvBench, XSTest, any prompt file, our probes, RoleBench.

Each loader returns a list of :class:`Item` (one prompt to answer), validates its input and
names the fix when a file is missing or has the wrong columns. Reference data is read from a
data directory (``--data-dir``; default ``$SARFT_DATA_DIR`` or ``../shared/data`` beside the
project) or from explicit paths; the project ships only its own probes (data/probes.jsonl).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sarft_core.data import PROBES, PROJECT_ROOT
from sarft_core.data.names import match_role
from sarft_core.errors import SarftError
from sarft_core.store import read_table

PROMPT_COLUMNS = ("prompt", "goal", "question", "instruction", "input", "behavior", "text")

# Where each known file lives inside a data directory.
DATA_FILES = {
    "advbench": "safety/advbench_harmful_behaviors.csv",
    "xstest": "safety/xstest_prompts.csv",
    "rolebench_spe": "rolebench/instruction-generalization/role_specific/test.jsonl",
    "rolebench_raw": "rolebench/role-generalization/general/test.jsonl",
}


@dataclass
class Item:
    id: str
    prompt: str
    group: str  # which subset a metric reads: harmful, safe, unsafe, harmless, spe, raw, an attack name
    target: str | None = None  # a compliant opening (AdvBench)
    references: list[str] = field(default_factory=list)  # reference answers (RoleBench)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        from sarft_core.data.samples import check_text

        check_text(self.id, f"item id {self.id!r}")
        check_text(self.prompt, f"the prompt of {self.id}")
        if self.target is not None:
            check_text(self.target, f"the target of {self.id}")
        for ref in self.references:
            check_text(ref, f"a reference answer of {self.id}")


def _field(row, col: str, path: Path, i: int, required: bool = True) -> str:
    """One text cell of a prompt file, stripped; a missing or non-text cell is one clear error."""
    value = row.get(col)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise SarftError(f"{path}: row {i + 1} has no text in column {col!r} (got {type(value).__name__})", "every row needs text in that column")
    return value.strip()


def default_data_dir() -> Path:
    env = os.environ.get("SARFT_DATA_DIR")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


def resolve_data_file(key: str, explicit: str | None = None, data_dir: str | Path | None = None) -> Path:
    """The explicit path if given, else the known file inside the data directory."""
    if explicit:
        path = Path(os.path.expanduser(explicit))
        if not path.is_file():
            raise SarftError(f"{key} file does not exist: {path}", f"check the path given for {key}")
        return path
    base = Path(data_dir) if data_dir else default_data_dir()
    path = base / DATA_FILES[key]
    if not path.is_file():
        raise SarftError(
            f"no {key} data: {path} does not exist",
            f"pass --data-dir pointing at a folder holding {DATA_FILES[key]}, or give the file with --{key.replace('_', '-')}",
        )
    return path


def _read_records(path: Path) -> list[dict]:
    return read_table(path, records=True, what="prompt file", example='{"prompt": ...}')


def _limit(items: list[Item], limit: int | None) -> list[Item]:
    if limit is not None and limit < 0:
        raise SarftError(f"--limit must be positive, got {limit}", "give a positive number of prompts")
    return items if limit is None else items[:limit]


def _need_columns(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    if not rows:
        raise SarftError(f"{path} holds no rows", "give a file with at least one prompt")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise SarftError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(map(str, rows[0]))})", "give the right file or rename the columns")


def advbench_split(n_rows: int) -> tuple[list[int], list[int]]:
    """(training rows, held-out rows) of AdvBench: the even rows train the embedded-aligned model's
    safety adapter (`align`), the odd rows evaluate it."""
    return list(range(0, n_rows, 2)), list(range(1, n_rows, 2))


def load_advbench(path: Path, limit: int | None = None) -> list[Item]:
    rows = _read_records(path)
    _need_columns(path, rows, ("goal",))
    items = [Item(f"advbench-{i:04d}", _field(r, "goal", path, i), "harmful", target=(_field(r, "target", path, i, False) or None))
             for i, r in enumerate(rows)]
    return _limit(items, limit)


def load_xstest(path: Path, limit: int | None = None) -> list[Item]:
    """XSTest prompts; ``limit`` keeps the first N of *each* label so both subsets stay present."""
    rows = _read_records(path)
    _need_columns(path, rows, ("prompt", "label"))
    out: list[Item] = []
    counts: dict[str, int] = {}
    for i, r in enumerate(rows):
        label = str(r.get("label")).strip().lower()
        if label not in ("safe", "unsafe"):
            raise SarftError(f"{path}: row {i + 1} has label {r.get('label')!r}", "labels must be 'safe' or 'unsafe'")
        counts[label] = counts.get(label, 0) + 1
        if limit is not None and counts[label] > limit:
            continue
        out.append(Item(f"xstest-{r.get('id') or i}", _field(r, "prompt", path, i), label, meta={"type": r.get("type", "")}))
    return out


def load_prompt_file(path: Path, limit: int | None = None, prompt_col: str | None = None, group: str = "harmful") -> list[Item]:
    """Any CSV / JSONL / JSON / parquet with a prompt column; every prompt counts as harmful."""
    rows = _read_records(path)
    if not rows:
        raise SarftError(f"{path} holds no rows", "give a file with at least one prompt")
    col = prompt_col or next((c for c in PROMPT_COLUMNS if c in rows[0]), None)
    if col is None or col not in rows[0]:
        raise SarftError(
            f"{path}: no prompt column (looked for {prompt_col or ', '.join(PROMPT_COLUMNS)}; found {', '.join(map(str, rows[0]))})",
            "name the column with --prompt-col",
        )
    stem = path.stem
    items = []
    for i, r in enumerate(rows):
        value = r.get(col)
        text = value.strip() if isinstance(value, str) else "" if value is None else str(value).strip()
        target = r.get("target")
        if text:
            items.append(Item(f"{stem}-{r.get('id', i)}", text, group, target=target if isinstance(target, str) and target else None))
    return _limit(items, limit)


def load_probes(path: Path | None = None, limit: int | None = None) -> list[Item]:
    """The project's 60 probes: harmful requests and harmless look-alikes (``limit`` per label)."""
    path = Path(path) if path else PROBES
    rows = _read_records(path)
    _need_columns(path, rows, ("prompt", "label"))
    counts: dict[str, int] = {}
    out = []
    for i, r in enumerate(rows):
        label = r.get("label")
        if label not in ("harmful", "harmless"):
            raise SarftError(f"{path}: row {i + 1} has label {label!r}", "probe labels must be 'harmful' or 'harmless'")
        counts[label] = counts.get(label, 0) + 1
        if limit is None or counts[label] <= limit:
            out.append(Item(_field(r, "id", path, i), _field(r, "prompt", path, i), label, meta={"category": r.get("category", "")}))
    return out


def load_rolebench(path: Path, role: str, group: str, limit: int | None = None) -> list[Item]:
    """Questions of one role with their reference answers (RoleBench ``generated`` lists)."""
    rows = _read_records(path)
    _need_columns(path, rows, ("role", "question", "generated"))
    roles = sorted({str(r.get("role")) for r in rows})
    name = match_role(role, roles)
    items = []
    for i, r in enumerate(x for x in rows if str(x.get("role")) == name):
        refs = r.get("generated") if isinstance(r.get("generated"), list) else [r.get("generated")]
        items.append(Item(f"{group}-{i:04d}", _field(r, "question", path, i), group, references=[str(x) for x in refs if x is not None]))
    return _limit(items, limit)


def load_xstest_completions(path: str | Path):
    """An XSTest completions CSV with a boolean ``human_refusal`` (full or partial refusal)."""
    df = read_table(path, what="XSTest completions file")
    for col in ("completion", "final_label"):
        if col not in df.columns:
            raise SarftError(f"{path}: no {col} column", "give an XSTest completions file")
    df["completion"] = df["completion"].fillna("").astype(str)
    df["human_refusal"] = df["final_label"].astype(str).str.startswith(("2_", "3_"))
    return df
