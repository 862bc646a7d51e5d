"""Compiled executables kept on disk, so a restart loads them instead of rebuilding them.

JAX's persistent compilation cache saves only XLA's compile: every (task, shape) is still
traced and lowered on each start before the cache is looked up (0.1-0.3 s per MiniLM shape on
a 2-core CPU, far more for a deep decoder). Here the compiled object itself is serialized
(`jax.experimental.serialize_executable`) and loaded back in 0.01-0.03 s per shape, with no
tracing at all. (`jax.export` was the other candidate: its deserialized module must still be
wrapped, lowered and looked up in the persistent cache, which is the cost being removed.)
The store takes the place of JAX's persistent cache, which tei_jax/compile_cache.py turns off
while the store is on: XLA:CPU cannot re-serialize an executable that cache read back (the
copy lacks some of its code and fails when run), so only fresh compilations are stored.

An entry is only valid for the exact program, so the folder of entries is named by a digest of
everything that changes it (`engine_key`): the model's config and sentence-transformers files
and its weights' names, shapes and dtypes, the pooling and head, the dtype, the attention
implementation, the shape set, the devices and their placement, and the jax, jaxlib and
tei_jax versions. Inside it, one file per (task, shape). A file carries a magic string and
the SHA-256 of its payload; one that is missing, truncated, corrupt, or built for other
arguments is rebuilt (with a warning unless it was simply missing) and overwritten, never
served. Files are written to a temporary name and renamed, so two workers starting together
never read a half-written entry. Entries are pickles, read only from our own cache folder:
anyone who can write there can run code in the server, as with any cache of compiled code.

Key folders would pile up (every upgrade of jax or tei_jax, every changed model or setting
leaves one behind), so the first time a process stores an entry it prunes the folder
(`prune`): folders built by another store format, tei_jax, jax or jaxlib version and unused for
a day are removed (a day, not at once, so two installs sharing the folder do not wipe each
other's entries on every start), then the least recently used folders until the whole is under
`TEI_JAX_COMPILE_CACHE_MAX_MB` (default 2048; 0 turns the size cap off), and temporary files a
crashed writer left. A folder's last use is its modification time, touched when a process first
opens it. The folder in use is never removed; one removed under another process only makes that
process rebuild what it then misses.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import jax

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the file layout or the key changes meaning
MAGIC = b"TEIJAXX1"
DIR_NAME = "executables"
_HEADER = len(MAGIC) + 32  # magic + sha256 of the payload
# Files of a model folder that do not change the compiled program (tokenizer and weights' values).
_NOT_PROGRAM = re.compile(r"(^|/)(tokenizer(_config)?|special_tokens_map|vocab|added_tokens)\.json$")
MAX_MB_ENV = "TEI_JAX_COMPILE_CACHE_MAX_MB"
DEFAULT_MAX_MB = 2048
OTHER_VERSION_IDLE_S = 24 * 3600  # a folder of other versions is kept this long after its last use
STALE_TEMP_S = 3600  # a temporary file this old belongs to a writer that died
VERSION_FIELDS = ("format", "tei_jax", "tei_jax_code", "jax", "jaxlib")


@dataclasses.dataclass
class StoreStats:
    """What the store did since the process started: a warm restart only loads."""

    loaded: int = 0  # entries read back and served
    built: int = 0  # programs traced, lowered and compiled here (stored unless writing failed)
    rebuilt: int = 0  # of those, entries that existed but could not be used
    write_failures: int = 0


class ExecutableStore:
    """One model's compiled executables on disk: `get(name, build, check)`."""

    def __init__(self, root: Path | None, key: dict[str, Any] | None = None, max_bytes: int | None = -1):
        """`root` None turns the store off (every `get` builds). `max_bytes` caps the key
        folders under `root` together (pruned on the first store; -1: from
        TEI_JAX_COMPILE_CACHE_MAX_MB, None: no cap)."""
        self.root = None if root is None else Path(root)
        self.max_bytes = max_bytes_from_env() if max_bytes == -1 else max_bytes
        self.key = key or {}
        self.digest = hashlib.sha256(json.dumps(self.key, sort_keys=True, default=str).encode()).hexdigest()[:32]
        self.folder = None if root is None else Path(root) / self.digest
        self.stats = StoreStats()
        self._lock = threading.Lock()
        self._serializable = True
        self._described = False
        self._touched = False
        self._pruned = False

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def path(self, name: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{name}.jaxexe"

    def get(self, name: str, build: Callable[[], Any], check: Callable[[Any], bool] | None = None,
            devices: list | None = None) -> Any:
        """The compiled executable stored under `name`, else `build()` (then stored).

        `check(compiled)` says whether a loaded one takes the arguments it will be called with;
        `devices` are the ones it runs on (default: all of the default backend's)."""
        path = self.path(name)
        existed = False
        if path is not None:
            self._touch()
            try:
                compiled = self._load(path, devices)
            except FileNotFoundError:
                pass
            except Exception as exc:  # anything unreadable is rebuilt, never served
                existed = True
                log.warning("compiled executable %s is unusable (%s: %s); rebuilding it", path, type(exc).__name__, exc)
            else:
                if check is None or check(compiled):
                    log.debug("loaded %s", path)
                    with self._lock:
                        self.stats.loaded += 1
                    return compiled
                existed = True
                log.warning("compiled executable %s was built for other arguments; rebuilding it", path)
        _watch_cache_hits()
        _thread.cache_hit = False
        compiled = build()
        log.debug("built %s", name)
        with self._lock:
            self.stats.built += 1
            self.stats.rebuilt += existed
        if _thread.cache_hit:
            # XLA:CPU re-serializes an executable read back from JAX's persistent cache
            # without all of its code (running the copy fails), so such a one is not stored.
            log.warning("%s came from JAX's persistent compilation cache, which tei_jax turns off when "
                        "it stores executables; not storing it", name)
        elif path is not None and self._serializable:
            self._store(path, compiled)
        return compiled

    # Files -------------------------------------------------------------------------------
    def _load(self, path: Path, devices: list | None = None) -> Any:
        from jax.experimental.serialize_executable import deserialize_and_load

        data = path.read_bytes()
        if len(data) < _HEADER or data[: len(MAGIC)] != MAGIC:
            raise ValueError("not a tei-jax executable (bad magic or truncated)")
        payload = data[_HEADER:]
        if hashlib.sha256(payload).digest() != data[len(MAGIC):_HEADER]:
            raise ValueError("checksum mismatch (truncated or corrupted)")
        serialized, in_tree, out_tree = pickle.loads(payload)
        return deserialize_and_load(serialized, in_tree, out_tree, execution_devices=devices)

    def _store(self, path: Path, compiled: Any) -> None:
        from jax.experimental.serialize_executable import serialize

        try:
            payload = pickle.dumps(serialize(compiled), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # e.g. a backend that cannot serialize: keep serving, stop trying
            self._serializable = False
            with self._lock:
                self.stats.write_failures += 1
            log.warning("compiled executables cannot be serialized here (%s); the store is off", exc)
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._describe()
            write_atomic(path, MAGIC + hashlib.sha256(payload).digest() + payload)
        except OSError as exc:
            with self._lock:
                self.stats.write_failures += 1
            log.warning("could not store compiled executable %s: %s", path, exc)
            return
        self._prune_once()

    def _touch(self) -> None:
        """Mark the key folder used now (its modification time is what pruning reads)."""
        if self._touched or self.folder is None:
            return
        self._touched = True
        try:
            os.utime(self.folder)
        except OSError:
            pass  # not created yet: its first entry will date it

    def _prune_once(self) -> None:
        with self._lock:
            if self._pruned or self.folder is None:
                return
            self._pruned = True
        try:
            removed = prune(self.root, self.folder, self.key, self.max_bytes)
        except OSError as exc:
            log.warning("could not prune the executable store %s: %s", self.root, exc)
            return
        if removed:
            log.info("executable store: removed %d stale key folder(s), %.1f MB", len(removed),
                     sum(size for _, size in removed) / 1e6)

    def _describe(self) -> None:
        """key.json beside the entries: what they were built for, for a human reading the folder."""
        if self._described or self.folder is None:
            return
        self._described = True
        write_atomic(self.folder / "key.json", json.dumps(self.key, indent=1, sort_keys=True, default=str).encode())


def max_bytes_from_env() -> int | None:
    """The store's size cap from TEI_JAX_COMPILE_CACHE_MAX_MB (megabytes; 0: no cap)."""
    value = os.environ.get(MAX_MB_ENV, "").strip()
    try:
        megabytes = float(value) if value else DEFAULT_MAX_MB
    except ValueError:
        log.warning("%s=%r is not a number of megabytes; using %d", MAX_MB_ENV, value, DEFAULT_MAX_MB)
        megabytes = DEFAULT_MAX_MB
    return None if megabytes <= 0 else int(megabytes * 1e6)


def prune(root: Path, keep: Path, key: dict[str, Any], max_bytes: int | None,
          now: float | None = None) -> list[tuple[Path, int]]:
    """Remove stale key folders under `root` (never `keep`); returns (folder, bytes) removed.

    First the folders whose key.json names another store format or tei_jax / jax / jaxlib
    version than `key` (or has none) and that were last used over OTHER_VERSION_IDLE_S ago;
    then, while the folders together exceed `max_bytes`, the least recently used ones. Last
    use is a folder's modification time. Temporary files older than STALE_TEMP_S go too."""
    now = time.time() if now is None else now
    folders = []  # (last used, bytes, folder, same versions)
    in_use = 0
    for entry in os.scandir(root):
        folder = Path(entry.path)
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            used = entry.stat().st_mtime  # before removing temporary files changes it
            size = 0
            for item in os.scandir(folder):
                if not item.is_file(follow_symlinks=False):
                    continue
                info = item.stat()
                if item.name.endswith(".tmp") and now - info.st_mtime > STALE_TEMP_S:
                    _remove_file(Path(item.path))
                else:
                    size += info.st_size
        except OSError:  # removed or changed by another process meanwhile
            continue
        if folder == keep:
            in_use = size
        else:
            folders.append((used, size, folder, _same_versions(folder, key)))
    removed, kept = [], []
    for used, size, folder, same in folders:
        if not same and now - used > OTHER_VERSION_IDLE_S:
            removed.append((folder, size))
        else:
            kept.append((used, size, folder))
    if max_bytes is not None:
        total = in_use + sum(size for _, size, _ in kept)
        for used, size, folder in sorted(kept, key=lambda row: row[0]):
            if total <= max_bytes:
                break
            removed.append((folder, size))
            total -= size
    for folder, _ in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


def _same_versions(folder: Path, key: dict[str, Any]) -> bool:
    try:
        built_for = json.loads((folder / "key.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(built_for, dict) and all(built_for.get(f) == key.get(f) for f in VERSION_FIELDS)


def _remove_file(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


_thread = threading.local()
_watching = False


def _watch_cache_hits() -> None:
    """Note, per thread, when a compilation was answered by JAX's persistent cache (its
    listeners run in the compiling thread)."""
    global _watching
    if _watching:
        return
    _watching = True

    def on_event(event: str, **_) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            _thread.cache_hit = True

    jax.monitoring.register_event_listener(on_event)


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over `path`."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


# The key ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def engine_code_digest() -> str:
    """SHA-256 over the engine's own Python sources (tei_jax/**/*.py). The version string alone
    does not change when a checkout or an editable install is edited, and an entry compiled from
    other layer or attention code must never be served."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def model_files_digest(model_dir: Path) -> str:
    """SHA-256 over what a model folder says about the program: its JSON files (config,
    pooling, Dense modules, sentence-transformers settings; not the tokenizer's) and the
    headers of its safetensors files (tensor names, shapes, dtypes; not their values)."""
    digest = hashlib.sha256()
    folder = Path(model_dir)
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if not path.is_file() or relative.startswith("."):
            continue
        if path.suffix == ".json" and not _NOT_PROGRAM.search(relative):
            digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
        elif path.suffix == ".safetensors":
            digest.update(relative.encode() + b"\0" + _safetensors_header(path) + b"\0")
    return digest.hexdigest()


def _safetensors_header(path: Path) -> bytes:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return handle.read(min(length, 100_000_000))


def _abstract(tree) -> Any:
    return jax.tree_util.tree_map(lambda leaf: f"{tuple(leaf.shape)}:{leaf.dtype}", tree)


def _no_addresses(text: str) -> str:
    """A repr without object addresses, which change every run."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def engine_key(engine: "Engine", model_dir: Path | None, dtype: str, attention: str) -> dict[str, Any]:
    """Everything that changes the programs an engine compiles, as a JSON-able dict."""
    from . import __version__
    import jaxlib

    spec, arch = engine.spec, engine.arch
    return {
        "format": FORMAT,
        "tei_jax": __version__,
        "tei_jax_code": engine_code_digest(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "platform_version": jax.devices()[0].client.platform_version,
        "placement": engine.placement.key(),
        "devices": [f"{d.platform}:{d.device_kind}:{d.id}" for d in engine.placement.mesh.devices.flat],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
        "x64": bool(jax.config.jax_enable_x64),
        "model_files": model_files_digest(model_dir) if model_dir is not None else None,
        "config": json.dumps(spec.config, sort_keys=True, default=str),
        "kind": spec.kind,
        "pooling": spec.pooling,
        "position_offset": spec.position_offset,
        "dense": _no_addresses(repr(spec.dense)),
        "encoder": _no_addresses(repr(arch.encoder)),
        "head": _no_addresses(repr(arch.head)),
        "classifier_pooling": arch.classifier_pooling,
        "pooled_transform": getattr(arch.pooled_transform, "__qualname__", None),
        "dtype": dtype,
        "attention": attention,
        "params": _abstract(engine.params),
        "shape_policy": _no_addresses(repr(engine.policy)),
    }
