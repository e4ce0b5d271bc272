"""The result record: one `result.json` per run, written atomically, read back tolerantly.

Fields: schema, run_id, config_id, code, status (completed | failed | diverged), error, labels, overrides, config,
seed, metrics, cost, env, timestamps. `config_id` hashes the resolved config (`auto` fields resolved: device,
precision, kernels) minus where things are written and how they are logged; `run_id` hashes that and the code that
trains the run (harness/record/code.py), so the same experiment under the same code gets the same id wherever and
whenever it runs, and a change to a mixer gives its runs new ids. Under the results root, `.completed/<run_id>` names
a run's completed record (a rerun skips it) and `.in_progress/<config_id>` the checkpoint an interrupted attempt left
(a rerun resumes from it if the checkpoint's run_id is its own: never a checkpoint trained by other code).
"""

import json
import logging
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from harness.record import keys

try:
    import orjson as _orjson
except ImportError:  # optional: only speed depends on it
    _orjson = None

log = logging.getLogger(__name__)

SCHEMA = 1
RECORD = "result.json"
STATUSES = ("completed", "failed", "diverged")


@dataclass
class Record:
    """One run's result record, as result.json holds it (schema SCHEMA); the CLI writes it, the wandb reader builds
    it from a wandb run, and the board, the race and a search read it back as the dict `to_dict` gives."""

    run_id: str  # keys.run_id of the resolved config and the code
    labels: dict  # the labelled group choices (keys.LABELS), e.g. {"mixer": "hyena", "task": "mqar"}
    overrides: list[str] | None  # the command line's overrides (None: unknown, e.g. a run logged without them)
    config: dict  # the resolved config
    seed: int | None
    status: str | None = None  # one of STATUSES; None while the run runs (an interrupted run writes no record)
    error: str | None = None  # why a run failed or diverged
    derived: list[str] = field(default_factory=list)  # fields interpolated from others (not a variant of their own)
    metrics: dict = field(default_factory=dict)  # "<split>/<metric>" -> value
    cost: dict = field(default_factory=dict)  # params, flops_per_token, wall_seconds, tokens_per_second, ...
    env: dict = field(default_factory=dict)  # environment(): versions, device, threads
    timestamps: dict = field(default_factory=dict)  # started, finished (ISO 8601, UTC)
    history: list | None = None  # the evaluations during training (completed runs)
    config_id: str | None = None  # keys.run_id of the resolved config alone: shared by runs under other code
    code: dict | None = None  # harness/record/code.py: fingerprint, modules (name -> hash), kernels; None: unknown
    files: dict = field(default_factory=dict)  # what the run left in its folder, by role: {"weights": <file>}
    schema: int = SCHEMA

    def to_dict(self) -> dict:
        """The record as JSON holds it: the schema first, then the fields above; history only where there is one."""
        out = {"schema": self.schema, **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "schema"}}
        if out["history"] is None:
            del out["history"]
        return out


def run_id(config: dict) -> str:
    """The run's id: harness/record/keys.py declares which keys it leaves out."""
    return keys.run_id(config)


def file_mode() -> int:
    """The mode a plainly created file gets here (0o666 less the umask): mkstemp's temporary files are 0o600, and a
    record renamed from one would be unreadable to the rest of a group sharing a results folder."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_json_atomic(path: Path, obj: object) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers see all of it or none."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    """`text` to `path` through a temporary file in the same folder (fsync, rename), with a plain file's mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, file_mode())
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_sha": _git_sha(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _git_sha() -> str | None:
    """The commit of archbench's checkout, where it runs from one: None for a wheel or sdist install, even one inside
    another git repository (a venv in a project), whose HEAD says nothing of this code. The run's identity does not
    rest on it: `code` (harness/record/code.py) fingerprints the code itself."""
    here = Path(__file__).resolve()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=here.parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() / "harness/record/results.py" != here:
        return None
    return lines[1]


def _parse(data: bytes):
    """JSON with orjson where installed (3x faster: the leaderboard reads thousands of records), else json; records
    holding NaN or Infinity (a diverged run's loss), which orjson rejects, go through json."""
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(data)


def load_record(path: Path) -> dict | None:
    """The record at `path`, or None (with a warning naming the file and why) if it cannot be counted."""
    record, reason = read_record(path)
    if record is None:
        log.warning("skipping %s: %s", path, reason)
    return record


def read_record(path: str | Path) -> tuple[dict | None, str | None]:
    """(the record, None), or (None, why it cannot be counted)."""
    try:
        with open(path, "rb") as f:  # not Path: pathlib's overhead is a third of loading 10,000 records
            record = _parse(f.read())
    except IsADirectoryError:
        return None, "a folder named like a record, not a record"
    except (OSError, ValueError) as e:
        return None, f"not a readable result record ({type(e).__name__}: {e})"
    if not isinstance(record, dict):
        return None, f"not a result record (a JSON {type(record).__name__}, not an object)"
    if record.get("schema") != SCHEMA:
        return None, f"unknown schema {record.get('schema')!r} (this archbench reads schema {SCHEMA})"
    if record.get("status") not in STATUSES:
        return None, f"status {record.get('status')!r} is not one of {', '.join(STATUSES)}"
    if not _well_typed(record):
        return None, "no run_id, or a field of the wrong type"
    record["path"] = str(path)
    if record.get("code") is None:
        _resolve_legacy(record)
    return record, None


def resolved_precision(precision: str, device_type: str) -> str:
    """trainer.precision as run: auto is bf16 autocast on CUDA, fp32 elsewhere."""
    return ("bf16" if device_type == "cuda" else "fp32") if precision == "auto" else precision


def _resolve_legacy(record: dict) -> None:
    """A record written before code fingerprints (code unknown): its trainer.device and trainer.precision `auto`
    read as what they ran on (cost.device), as newer records hold them, and its config_id is its config's hash."""
    trainer, device = (record.get("config") or {}).get("trainer"), (record.get("cost") or {}).get("device")
    if isinstance(trainer, dict) and isinstance(device, str):
        if trainer.get("device") == "auto":
            trainer["device"] = device.split(":")[0]
        if trainer.get("precision") == "auto":
            trainer["precision"] = resolved_precision("auto", trainer["device"].split(":")[0])
    record["code"] = None
    record["config_id"] = keys.run_id(record.get("config") or {})


def _well_typed(record: dict) -> bool:
    """The fields the leaderboard reads have the types archbench writes: a record edited or damaged into valid JSON
    of other types is skipped, not allowed to crash the board."""
    if not isinstance(record.get("run_id"), str) or not all(
        isinstance(record.get(k, {}), dict) for k in ("labels", "config", "metrics", "cost", "timestamps")
    ):
        return False
    overrides, seed = record.get("overrides", []), record.get("seed")
    return (
        isinstance(overrides, list)
        and all(isinstance(o, str) for o in overrides)
        and all(v is None or isinstance(v, str) for v in record.get("labels", {}).values())
        and all(v is None or isinstance(v, str) for v in record.get("timestamps", {}).values())
        and (seed is None or (isinstance(seed, int) and not isinstance(seed, bool)))
    )


def find_records(roots: Iterable[str | Path]) -> list[Path]:
    return [Path(p) for p in _record_files(roots)]


def _record_files(roots: Iterable[str | Path]) -> list[str]:
    """Every result.json below `roots` (files, and folders so named, which are reported, not silently passed over),
    sorted per root; strings and os.walk, 3x faster than Path.rglob."""
    paths = []
    for root in map(str, roots):
        if os.path.isfile(root):
            paths.append(root)
            continue
        if not os.path.isdir(root):
            paths.append(root)  # reported as unreadable: a folder given that does not exist is no silent empty board
            continue
        paths.extend(
            sorted(os.path.join(d, RECORD) for d, dirs, files in os.walk(root) if RECORD in files or RECORD in dirs)
        )
    return paths


@dataclass
class Scan:
    """What reading a set of folders found: the records counted (each run once), and every file that was not, with
    why (`skipped`: unreadable or invalid; `duplicates`: another copy of a run already counted, e.g. the record a
    rerun of a sweep copies into its own folder)."""

    records: list[dict]
    files: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (path, the path of the copy counted)
    superseded: list[tuple[str, str]] = field(default_factory=list)  # (path, the record of newer code counted)

    def summary(self) -> str:
        parts = [f"read {self.files} record file{'s' * (self.files != 1)}", f"used {len(self.records)}"]
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicate{'s' * (len(self.duplicates) != 1)} of runs counted once")
        if self.superseded:
            parts.append(f"{len(self.superseded)} superseded: their config ran again under newer code (listed below)")
        unknown = sum(r.get("code") is None for r in self.records)
        if unknown:
            parts.append(f"{unknown} of the used predate code fingerprints (code unknown)")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} (listed below)")
        return "; ".join(parts)


def scan(roots: Iterable[str | Path]) -> Scan:
    """Every record below `roots`, each run counted once: for a run_id seen several times (a rerun of a sweep), the
    completed record wins over failed ones, and the latest over earlier ones. Runs of one config (whatever their
    seed) under different code (or kernels) are never pooled: those of the code that ran last are counted, the others
    listed as superseded. Nothing is passed over in silence."""
    best: dict[str, dict] = {}
    skipped, dropped = [], []
    paths = _record_files(roots)
    for path in paths:
        record, reason = read_record(path)
        if record is None:
            log.warning("skipping %s: %s", path, reason)
            skipped.append((str(path), reason))
            continue
        rank = (record["status"] == "completed", record.get("timestamps", {}).get("finished") or "")
        old = best.get(record["run_id"])
        if old is None or rank > (old["status"] == "completed", old.get("timestamps", {}).get("finished") or ""):
            if old is not None:
                dropped.append(old)
            best[record["run_id"]] = record
        else:
            dropped.append(record)
    duplicates = [(r["path"], best[r["run_id"]]["path"]) for r in dropped]
    kept, superseded = _newest_code(list(best.values()))
    return Scan(kept, len(paths), skipped, duplicates, superseded)


def code_key(record: dict) -> str:
    """What a record's code identity is: the fingerprint and the kernels, or "unknown" for records without one."""
    code = record.get("code")
    return "unknown" if not code else json.dumps([code.get("fingerprint"), code.get("kernels")], default=str)


def _newest_code(records: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """Per config less its seed, the records of the code whose latest run started last (so seeds of an old code never
    join the seeds of a new one); (path, path of a kept run of the same config) for the rest. A run that failed
    before its code was known (a config a search could not build, a stale worker) has no say and is kept, as a
    failure of its cell."""
    voters = [r for r in records if r.get("code") is not None or r["status"] == "completed"]
    if len({code_key(r) for r in voters}) < 2:  # one code: nothing to supersede (no hashing needed)
        return records, []
    started = lambda r: (r.get("timestamps") or {}).get("started") or ""
    group = [keys.run_id({**(r.get("config") or {}), "seed": None}) for r in records]
    newest: dict[str, tuple[str, str]] = {}  # group -> (latest start, code_key)
    for g, r in zip(group, records, strict=True):
        if (r.get("code") is not None or r["status"] == "completed") and (g not in newest or started(r) > newest[g][0]):
            newest[g] = (started(r), code_key(r))
    kept, superseded, example = [], [], {}
    for g, r in zip(group, records, strict=True):
        if g not in newest or code_key(r) == newest[g][1] or (r.get("code") is None and r["status"] != "completed"):
            kept.append(r)
            example.setdefault(g, r["path"])
        else:
            superseded.append((r, g))
    return kept, [(r["path"], example.get(g, "")) for r, g in superseded]


def load_records(roots: Iterable[str | Path]) -> list[dict]:
    """The records `scan` counts."""
    return scan(roots).records


def completed_marker(results_root: Path, rid: str) -> Path:
    return Path(results_root) / ".completed" / rid


def find_completed(results_root: Path, rid: str) -> dict | None:
    """The completed record of run `rid` under results_root, if an earlier run left one."""
    marker = completed_marker(results_root, rid)
    if not marker.exists():
        return None
    record = load_record(Path(marker.read_text().strip()))
    return record if record is not None and record["status"] == "completed" else None


def mark_completed(results_root: Path, rid: str, record_path: Path) -> None:
    _write_marker(completed_marker(results_root, rid), record_path)


def in_progress_marker(results_root: Path, rid: str) -> Path:
    return Path(results_root) / ".in_progress" / rid


def find_checkpoint(results_root: Path, rid: str) -> Path | None:
    """The checkpoint an interrupted (killed, failed) attempt of run `rid` left, wherever its folder is."""
    marker = in_progress_marker(results_root, rid)
    if not marker.exists():
        return None
    path = Path(marker.read_text().strip())
    return path if path.exists() else None


def mark_in_progress(results_root: Path, rid: str, checkpoint_path: Path) -> None:
    _write_marker(in_progress_marker(results_root, rid), checkpoint_path)


def clear_in_progress(results_root: Path, rid: str) -> None:
    in_progress_marker(results_root, rid).unlink(missing_ok=True)


def _write_marker(marker: Path, target: Path) -> None:
    """A one-line file naming `target`, replaced atomically (joblib workers may write markers side by side)."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=marker.parent, prefix=f".{marker.name}.", suffix=".tmp")
    os.chmod(tmp, file_mode())
    with os.fdopen(fd, "w") as f:
        f.write(str(Path(target).resolve()))
    os.replace(tmp, marker)
