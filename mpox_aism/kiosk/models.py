"""The box's model slots: a new head runs in shadow beside the current one until an admin promotes it.

``<state dir>/models/<model_version>/`` holds an installed copy of each model directory (copied, so a
later edit or deletion of the source cannot change what the kiosk runs) and ``models/active.json`` names
three slots — ``current`` (decides: its version goes into every event), ``shadow`` (classifies every
crop the current one does, its decisions only counted) and ``previous`` (what ``rollback`` returns to).
The file is replaced atomically (write, fsync, rename) under a lock, so the daemon never reads half of
it and two admins never interleave. Changes take effect when the daemon restarts.

What ``install`` refuses, and why: a directory that is not a model; a site head whose own checks failed
(``metrics.json`` ``site.passed`` false — ``mpox-aism adapt`` wrote it and said it must not be
installed); a head on another backbone than the current model (architecture or input size, or a site
head fitted on neither the current model nor the current's own base), because its figures were
measured on features this box does not compute. Reading a model's record needs no torch when it has
``model.onnx``.

``rollback`` is the exact inverse of ``promote``: the promoted head goes back to the shadow slot (it
keeps being compared, never decides), unless another head was installed in shadow since, which stays;
then the rolled-back head leaves the slots (its files stay until a later install of the same version
replaces them).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mpox_aism.kiosk.accounts import Accounts

log = logging.getLogger(__name__)
MODELS = "models"  # under the state directory
ACTIVE = "active.json"
AUDIT_STORE = "staff.sqlite3"  # the staff accounts' append-only audit trail (kiosk.accounts)
RESTART_HINT = "takes effect when the daemon restarts: systemctl restart mpox-aism"


class ModelError(ValueError):
    """A request the slot store refuses; the message says why (the CLI exits 2 with it)."""


@dataclass(frozen=True)
class ModelSummary:
    """What the slot rules need to know about a model directory, read without loading its weights."""

    path: Path
    model_version: str
    arch: str
    image_size: int
    base_model_version: str | None = None  # a site head's base (None: not a site head)
    refused: tuple[str, ...] = ()  # a site head's failed checks (metrics.json site.refused)
    passed: bool = True  # metrics.json site.passed (True for a model that is not a site head)


@dataclass(frozen=True)
class Slots:
    """``active.json``: which installed version decides, which runs in shadow, which rollback returns to."""

    current: str | None = None
    shadow: str | None = None
    previous: str | None = None

    @classmethod
    def from_json(cls, text: str, source: str) -> Slots:
        try:
            d = json.loads(text)
            return cls(**{k: (str(d[k]) if d.get(k) else None) for k in ("current", "shadow", "previous")})
        except (ValueError, TypeError, AttributeError) as e:
            raise ModelError(f"{source}: not a model slot file ({e})") from None


def _site(path: Path) -> dict | None:
    """``metrics.json``'s ``site`` object (``mpox-aism adapt``'s report), or None for a model that has none."""
    m = path / "metrics.json"
    if not m.is_file():
        return None
    try:
        site = json.loads(m.read_text()).get("site")
    except (ValueError, OSError, AttributeError) as e:
        raise ModelError(f"{m}: unreadable ({e})") from None
    return site if isinstance(site, dict) else None


def describe(path: str | Path) -> ModelSummary:
    """The record of a model directory: ONNX metadata when there is ``model.onnx`` (no torch), else ``model.pt``."""
    p = Path(path)
    if not p.is_dir():
        raise ModelError(f"{p}: not a directory")
    onnx_file, pt_file = p / "model.onnx", p / "model.pt"
    if not onnx_file.is_file() and not pt_file.is_file():
        raise ModelError(f"{p}: not a model directory (no model.onnx or model.pt)")
    base: str | None = None
    try:
        if onnx_file.is_file():
            from mpox_aism.inference.metadata import read_onnx_meta

            meta = read_onnx_meta(onnx_file)
            version, arch, size = meta.model_version, meta.arch, meta.image_size
        else:
            from mpox_aism.model.modeldir import load_model

            _, info = load_model(p)
            version, arch, size = info.model_version, info.arch, info.image_size
            base = info.recipe.get("base_model_version")
    except ModelError:
        raise
    except Exception as e:  # a broken file of any kind: refuse, naming it
        raise ModelError(f"{p}: unreadable model metadata ({type(e).__name__}: {e})") from None
    if not version or not arch:
        raise ModelError(f"{p}: its metadata names no model_version or architecture")
    site = _site(p)
    if site is None:
        return ModelSummary(p, version, arch, int(size), base)
    refused = tuple(str(r) for r in site.get("refused") or ())
    passed = bool(site.get("passed", not refused))
    return ModelSummary(p, version, arch, int(size), str(site.get("base_model_version") or base or "") or None,
                        refused, passed)


def check_compatible(candidate: ModelSummary, current: ModelSummary) -> None:
    """Refuse a head that failed its own checks or sits on another backbone than ``current``."""
    if not candidate.passed:
        why = "; ".join(candidate.refused) or "metrics.json site.passed is false"
        raise ModelError(f"{candidate.path}: site head {candidate.model_version} failed its own checks "
                         f"(mpox-aism adapt): {why}")
    diffs = [f"{k} {getattr(candidate, k)} ≠ current's {getattr(current, k)}"
             for k in ("arch", "image_size") if getattr(candidate, k) != getattr(current, k)]
    if diffs:
        raise ModelError(f"{candidate.path}: another backbone than the current model {current.model_version}: "
                         + ", ".join(diffs))
    if candidate.base_model_version is not None:
        allowed = {current.model_version, current.base_model_version} - {None}
        if candidate.base_model_version not in allowed:
            raise ModelError(f"{candidate.path}: site head fitted on base model {candidate.base_model_version}, "
                             f"but the current model is {current.model_version}"
                             + (f" (base {current.base_model_version})" if current.base_model_version else ""))


@dataclass(frozen=True)
class Change:
    """What one command did: the slots after it and one line for the admin (and the audit trail)."""

    slots: Slots
    message: str


class ModelStore:
    """The slots in ``<state_dir>/models``; every change is written atomically and audited."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / MODELS
        self.active_path = self.root / ACTIVE

    def path(self, version: str) -> Path:
        return self.root / version

    def slots(self) -> Slots:
        if not self.active_path.is_file():
            return Slots()
        return Slots.from_json(self.active_path.read_text(), str(self.active_path))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            yield

    def _write(self, slots: Slots) -> None:
        tmp = self.active_path.with_name(f".{ACTIVE}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(asdict(slots), indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.active_path)  # readers see the old file or the new one, never half
        with contextlib.suppress(OSError):  # the rename itself survives a power cut once the folder is synced
            fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _audit(self, by: str, action: str, detail: str) -> None:
        Accounts(self.state_dir / AUDIT_STORE).record(by, action, detail=detail)

    def current_summary(self, fallback: str | Path | None) -> ModelSummary:
        """The model deciding now: the current slot, else ``fallback`` (the config's classifier.model)."""
        cur = self.slots().current
        if cur:
            return describe(self.path(cur))
        from mpox_aism.contracts.model import default_model_dir

        return describe(Path(fallback) if fallback else default_model_dir())

    def install(self, source: str | Path, *, by: str, fallback: str | Path | None = None) -> Change:
        """Copy a checked model directory in and put it in the shadow slot."""
        _by(by)
        cand = describe(source)
        with self._locked():
            slots = self.slots()
            current = self.current_summary(fallback)
            if cand.model_version == current.model_version:
                raise ModelError(f"{cand.path}: model {cand.model_version} is already the current model")
            if cand.model_version == slots.shadow:
                raise ModelError(f"{cand.path}: model {cand.model_version} is already in shadow")
            check_compatible(cand, current)
            dest = self.path(cand.model_version)
            incoming = self.root / f".incoming-{uuid.uuid4().hex[:8]}"
            try:
                shutil.copytree(cand.path, incoming)
                if describe(incoming).model_version != cand.model_version:
                    raise ModelError(f"{cand.path}: changed while it was copied; try again")
                if dest.exists():  # an earlier copy of the same version, in no slot (checked above)
                    shutil.rmtree(dest)
                os.replace(incoming, dest)
            finally:
                shutil.rmtree(incoming, ignore_errors=True)
            replaced = slots.shadow
            if slots.current is None:  # the first install: the configured model becomes the current slot
                new = Slots(current=None, shadow=cand.model_version, previous=slots.previous)
            else:
                new = replace(slots, shadow=cand.model_version)
            self._write(new)
            detail = f"{cand.model_version} in shadow (current {current.model_version}" + (
                f", replaced shadow {replaced})" if replaced else ")")
            self._audit(by, "model installed", detail)
        return Change(new, f"installed {detail}; {RESTART_HINT}")

    def promote(self, *, by: str, fallback: str | Path | None = None) -> Change:
        """shadow → current; the old current → previous (what rollback returns to)."""
        _by(by)
        with self._locked():
            slots = self.slots()
            if not slots.shadow:
                raise ModelError("nothing to promote: no model in shadow (mpox-aism models install DIR)")
            old = slots.current or self._adopt(fallback)
            new = Slots(current=slots.shadow, shadow=None, previous=old)
            self._write(new)
            detail = f"{slots.shadow} now current (previous {old})"
            self._audit(by, "model promoted", detail)
        return Change(new, f"promoted {detail}; {RESTART_HINT}")

    def _adopt(self, fallback: str | Path | None) -> str:
        """The configured model, copied into the slots so that rollback has a directory to return to."""
        src = self.current_summary(fallback)
        dest = self.path(src.model_version)
        if not dest.is_dir():
            incoming = self.root / f".incoming-{uuid.uuid4().hex[:8]}"
            try:
                shutil.copytree(src.path, incoming)
                os.replace(incoming, dest)
            finally:
                shutil.rmtree(incoming, ignore_errors=True)
        return src.model_version

    def rollback(self, *, by: str) -> Change:
        """previous → current; the rolled-back head back to shadow (unless a newer one is there: then out)."""
        _by(by)
        with self._locked():
            slots = self.slots()
            if not slots.previous:
                raise ModelError("nothing to roll back to: no previous model (only a promote leaves one)")
            if not self.path(slots.previous).is_dir():
                raise ModelError(f"previous model {slots.previous}: its directory {self.path(slots.previous)} "
                                 "is missing")
            back = slots.current
            keep = slots.shadow or back
            new = Slots(current=slots.previous, shadow=keep, previous=None)
            self._write(new)
            where = "back in shadow" if keep == back else f"out of the slots (shadow {keep} kept)"
            detail = f"{slots.previous} current again; {back} {where}"
            self._audit(by, "model rolled back", detail)
        return Change(new, f"rolled back: {detail}; {RESTART_HINT}")


def _by(by: str) -> None:
    if not by or not by.strip():
        raise ModelError("say who does this: --by NAME (it goes into the audit trail)")


@dataclass(frozen=True)
class ActiveModels:
    """What the daemon runs: the current model's directory (None: the config's) and the shadow's, if any."""

    current: Path | None = None
    shadow: Path | None = None


def active_models(state_dir: str | Path) -> ActiveModels:
    """The installed slots for the daemon; a broken slot file or a missing directory is logged, never fatal
    (the configured model keeps deciding: the alerts matter more than the roll-out)."""
    store = ModelStore(state_dir)
    try:
        slots = store.slots()
    except (ModelError, OSError) as e:
        log.error("model slots not read (%s): running the configured model, no shadow", e)
        return ActiveModels()
    found: dict[str, Path | None] = {}
    for name in ("current", "shadow"):
        v = getattr(slots, name)
        p = store.path(v) if v else None
        if p is not None and not p.is_dir():
            log.error("model slot %s names %s, but %s is missing: %s", name, v, p,
                      "running the configured model" if name == "current" else "no shadow")
            p = None
        found[name] = p
    return ActiveModels(found["current"], found["shadow"])
