"""The run directory: the only channel between stages.

A stage writes into `<stage>.partial/`, then renames it to `<stage>/` and records a
completion marker holding its fingerprint (a hash of its config and its inputs). So:

- a finished stage whose fingerprint is unchanged is skipped on re-run;
- an interrupted stage leaves only `<stage>.partial/`, which nothing downstream trusts;
  a re-run with the same fingerprint hands that folder back to the stage so it can resume
  (training restarts from its last checkpoint); a different fingerprint wipes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from langadapt.errors import StageError

STAGES = ("corpus", "tokenizer", "scratch-tokenizer", "init", "train", "reference", "eval", "distill", "report")
FOLDERS = {"init": "model-init"}  # stage name -> folder name, where they differ
MARKER = ".complete.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(*parts: Any) -> str:
    """Stable hash of JSON-serialisable parts (configs, upstream fingerprints, file hashes)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("langadapt", "torch", "transformers", "tokenizers", "peft", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@dataclass
class StageContext:
    """What a running stage gets: where to write, and whether it is resuming."""

    name: str
    out: Path  # the .partial folder; becomes <run>/<name>/ on success
    resuming: bool
    fingerprint: str


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- paths ------------------------------------------------------------------------
    def path(self, stage: str) -> Path:
        return self.root / FOLDERS.get(stage, stage)

    def partial(self, stage: str) -> Path:
        return self.root / f"{FOLDERS.get(stage, stage)}.partial"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    # -- state ------------------------------------------------------------------------
    def marker(self, stage: str) -> dict[str, Any] | None:
        m = self.path(stage) / MARKER
        return read_json(m) if m.is_file() else None

    def is_complete(self, stage: str, fp: str | None = None) -> bool:
        m = self.marker(stage)
        return m is not None and (fp is None or m.get("fingerprint") == fp)

    def fingerprint_of(self, stage: str) -> str:
        m = self.marker(stage)
        if m is None:
            raise StageError(
                f"stage '{stage}' has not finished in {self.root}",
                hint=f"run it first: langadapt {stage} RECIPE (or langadapt run RECIPE for the whole pipeline)",
            )
        return str(m["fingerprint"])

    def require(self, stage: str, *files: str) -> Path:
        """The finished output folder of an upstream stage, checking the named files exist."""
        self.fingerprint_of(stage)
        base = self.path(stage)
        missing = [f for f in files if not (base / f).exists()]
        if missing:
            raise StageError(
                f"stage '{stage}' in {self.root} is missing {', '.join(missing)}",
                hint=f"re-run it: langadapt {stage} RECIPE --force",
            )
        return base

    def manifest(self) -> dict[str, Any]:
        return read_json(self.manifest_path) if self.manifest_path.is_file() else {"stages": {}}

    def _update_manifest(self, stage: str, entry: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        man = self.manifest()
        man.setdefault("stages", {})[stage] = entry
        man["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(self.manifest_path, man)

    # -- running a stage ----------------------------------------------------------------
    @contextmanager
    def stage(self, name: str, fp: str, inputs: dict[str, Any]) -> Iterator[StageContext]:
        """Run a stage into `<name>.partial/` and publish it atomically on success."""
        self.root.mkdir(parents=True, exist_ok=True)
        part = self.partial(name)
        fp_file = part / ".fingerprint"
        resuming = part.is_dir() and fp_file.is_file() and fp_file.read_text().strip() == fp
        if part.exists() and not resuming:
            shutil.rmtree(part)
        part.mkdir(parents=True, exist_ok=True)
        fp_file.write_text(fp)
        started = time.time()
        entry = {
            "status": "running",
            "fingerprint": fp,
            "inputs": inputs,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "resumed": resuming,
            "versions": library_versions(),
        }
        self._update_manifest(name, entry)
        try:
            yield StageContext(name=name, out=part, resuming=resuming, fingerprint=fp)
        except BaseException as e:
            entry.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=str(e)[:500])
            entry["seconds"] = round(time.time() - started, 2)
            self._update_manifest(name, entry)
            raise
        final = self.path(name)
        outputs = sorted(
            str(p.relative_to(part)) for p in part.rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        fp_file.unlink()
        write_json(part / MARKER, {"fingerprint": fp, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        if final.exists():
            shutil.rmtree(final)
        os.replace(part, final)
        entry.update(status="complete", seconds=round(time.time() - started, 2), outputs=outputs[:200])
        if len(outputs) > 200:
            entry["outputs_not_listed"] = len(outputs) - 200
        self._update_manifest(name, entry)

    def invalidate_from(self, stage: str) -> None:
        """Remove the completion of `stage` and every later stage (used by --force)."""
        for s in STAGES[STAGES.index(stage) :]:
            marker = self.path(s) / MARKER
            if marker.exists():
                marker.unlink()

    def record_skip(self, name: str) -> None:
        man = self.manifest()
        entry = man.get("stages", {}).get(name)
        if entry:
            entry["last_skipped"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            self._update_manifest(name, entry)
