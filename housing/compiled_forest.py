"""LightGBM forests compiled to native code with lleaves, cached by content, with the booster as fallback.

A compiled forest computes the booster's raw scores (equal to ~1e-13) several
times faster: each tree becomes straight-line branches instead of node arrays
walked by an interpreter. Compiling costs seconds to minutes, so an artefact is
made once per (model text, toolchain, CPU architecture) and cached under that
key. It is native code for one architecture, so it is never committed nor put
in a bento: the pipeline's register stage, the image build and, failing those, a
starting service each compile for the machine they run on.

Compilation runs in a child process (``python -m housing.compiled_forest``), so
a crash or a runaway compile cannot take a serving worker with it, and under a
file lock, so two workers compile a model once between them.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import hashlib
import logging
import platform
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

log = logging.getLogger(__name__)

# Inlining makes each tree's code a little faster to run but several times slower to compile, and so
# would smaller cache blocks than lleaves' 34 trees (reports/model_search.md has the figures); the
# portable CPU baseline of each architecture keeps an artefact valid on every machine of that
# architecture, not only the one that built it.
INLINE = False
PORTABLE_CPU = {"x86_64": "x86-64", "amd64": "x86-64", "aarch64": "generic", "arm64": "generic"}
# Compiled scores must equal the booster's this closely (relative) on the probe rows, or are not used.
PROBE_RTOL = 1e-9
COMPILE_TIMEOUT_S = 1800.0
# llvmlite's global LLVM context is not thread-safe: every in-process compile or load (the price forest's and the
# scale model's, each started on its own thread) holds this lock.
LLVM_LOCK = threading.Lock()


class Booster(Protocol):
    """What this module needs of ``lightgbm.Booster``."""

    def model_to_string(self) -> str: ...

    def predict(self, data: Any, *, num_threads: int = ..., raw_score: bool = ...) -> Any: ...


def toolchain() -> str:
    """The compiler versions and options an artefact depends on."""
    versions = []
    for package in ("lleaves", "llvmlite"):
        try:
            versions.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package}=missing")
    return ";".join([*versions, f"inline={INLINE}", f"cpu={portable_cpu()}"])


def portable_cpu() -> str:
    """LLVM's baseline CPU name for this machine's architecture."""
    return PORTABLE_CPU.get(platform.machine().lower(), "generic")


def artefact_path(cache_dir: Path, model_text: str) -> Path:
    """Where the compiled code of ``model_text`` for this architecture and toolchain lives in ``cache_dir``."""
    digest = hashlib.sha256(f"{toolchain()}\n{model_text}".encode()).hexdigest()[:32]
    return cache_dir / f"forest-{digest}-{platform.machine().lower()}.so"


def is_cached(artefact: Path) -> bool:
    """Whether ``artefact`` is whole: its bytes hash to what was recorded beside it when it was compiled.

    Object code is loaded without any check of its own, so a truncated or altered
    file must never reach the loader.
    """
    digest = artefact.with_suffix(".sha256")
    if not (artefact.is_file() and digest.is_file()):
        return False
    return hashlib.sha256(artefact.read_bytes()).hexdigest() == digest.read_text().strip()


def compile_forest(model_text: str, cache_dir: Path, timeout_s: float = COMPILE_TIMEOUT_S) -> Path:
    """The compiled artefact of ``model_text``: from the cache, else compiled now in a child process.

    Raises ``RuntimeError`` when compilation fails, ``subprocess.TimeoutExpired`` when it takes too long.
    """
    target = artefact_path(cache_dir, model_text)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with target.with_suffix(".lock").open("w") as lock:
        # Another worker (or the pipeline) may be compiling the same model: wait for it instead.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_cached(target):
            return target
        with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
            model_file, partial = Path(scratch) / "model.txt", Path(scratch) / "forest.so"
            model_file.write_text(model_text)
            command = [sys.executable, "-m", "housing.compiled_forest", str(model_file), str(partial)]
            # Our own interpreter and module, on files this function wrote: no outside input reaches the command.
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)  # noqa: S603
            if done.returncode != 0 or not partial.exists():
                raise RuntimeError(f"lleaves failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
            digest = Path(scratch) / "forest.sha256"
            digest.write_text(hashlib.sha256(partial.read_bytes()).hexdigest() + "\n")
            # Each rename is atomic; the digest goes first, so a whole file is never taken for a broken one.
            digest.replace(target.with_suffix(".sha256"))
            partial.replace(target)
    return target


def _compiled(model_file: Path, cache: Path) -> Any:
    """The lleaves model of ``model_file``, compiled into ``cache`` or, when that exists, loaded from it.

    Compiling and loading share these options: object code cached under one set is only valid under the same.
    """
    import lleaves

    model = lleaves.Model(model_file=str(model_file))
    with LLVM_LOCK:
        model.compile(cache=str(cache), finline=INLINE, target_cpu=portable_cpu(), target_cpu_features="")
    return model


def native_rows(features: Any, n_features: int) -> np.ndarray:
    """``features`` as C-contiguous float64 rows of shape (n_rows, ``n_features``), for native code to read.

    Native code (a compiled forest) indexes each row's columns unchecked: rows of
    another width are refused here with a ``ValueError``.
    """
    rows = np.ascontiguousarray(features, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != n_features:
        raise ValueError(f"features: expected shape (n, {n_features}), got {rows.shape}")
    return rows


class CompiledForest:
    """A compiled lleaves model and its entry point, called directly on one thread.

    ``lleaves.Model.predict`` converts and checks its input and makes two ctypes
    pointers on every call: 10 µs of the 60 µs one served house's forest takes.
    Here the rows are checked once (:func:`native_rows`) and their addresses passed as integers.

    Parameters
    ----------
    model : lleaves.Model
        The compiled model; it owns the code the entry point runs, so it is kept.
    n_features : int
        Columns every row must have: native code reads them unchecked.
    """

    def __init__(self, model: Any, n_features: int) -> None:
        self.model = model
        self.n_features = n_features
        # The entry point is (rows, out, first row, end row) over float64 rows; as addresses, not typed pointers.
        address = ctypes.cast(model._c_entry_func, ctypes.c_void_p).value
        if not address:
            raise RuntimeError("the compiled model has no entry point")
        self._entry = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)(address)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Raw scores of shape (n_rows,) for features of shape (n_rows, ``n_features``), on this thread."""
        rows = native_rows(features, self.n_features)
        scores = np.zeros(len(rows))
        self._entry(rows.ctypes.data, scores.ctypes.data, 0, len(rows))
        return scores


class ForestRuntime:
    """Raw scores of a LightGBM booster: from compiled code once it is ready and proven, else from the booster.

    Parameters
    ----------
    booster : lightgbm.Booster
        The fitted forest.
    cache_dir : Path or None
        Where compiled artefacts are cached; None serves the booster only.
    probe : ndarray of shape (n_rows, n_features)
        Feature rows on which compiled scores must equal the booster's (``PROBE_RTOL``) before use.
    on_change : callable, optional
        Called with this runtime whenever :attr:`runtime` or :attr:`problem` changes.

    Attributes
    ----------
    runtime : {"lleaves", "lightgbm"}
        What computes the scores now.
    problem : str or None
        Why compiled code is not in use (missing, compiling, failed, unequal), None when it is.
    """

    def __init__(
        self,
        booster: Booster,
        cache_dir: Path | None,
        probe: np.ndarray,
        on_change: Callable[[ForestRuntime], None] | None = None,
    ) -> None:
        self.booster = booster
        self.cache_dir = cache_dir
        self.probe = np.ascontiguousarray(probe, dtype=np.float64)
        self.on_change = on_change
        self.runtime: Literal["lleaves", "lightgbm"] = "lightgbm"
        self.problem: str | None = "not compiled yet" if cache_dir else "compilation disabled"
        self._compiled: CompiledForest | None = None
        self._ready = threading.Event()

    def predict(self, features: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """Raw scores of shape (n_rows,) for features of shape (n_rows, n_features)."""
        compiled = self._compiled  # one read: a swap mid-call cannot mix runtimes
        if compiled is None:
            return np.asarray(self.booster.predict(features, num_threads=num_threads))
        if num_threads > 1:
            return np.asarray(compiled.model.predict(features, n_jobs=num_threads))
        return compiled.score(features)

    def start(self) -> None:
        """Use the cached artefact now if there is one; otherwise compile it in the background."""
        if self.cache_dir is None:
            self._ready.set()
            return
        model_text = self.booster.model_to_string()
        if is_cached(artefact_path(self.cache_dir, model_text)):
            self._use(model_text)
            return
        self._set_problem("compiling; the booster serves until compiled code is ready")
        log.warning("no compiled forest cached in %s: compiling in the background", self.cache_dir)
        threading.Thread(target=self._use, args=(model_text,), name="compile-forest", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`start` has settled which runtime serves; True if it has."""
        return self._ready.wait(timeout)

    def _use(self, model_text: str) -> None:
        try:
            if self.cache_dir is None:
                raise RuntimeError("compilation disabled")
            compiled = CompiledForest(self._load(compile_forest(model_text, self.cache_dir), model_text),
                                      self.probe.shape[1])  # fmt: skip
            if not self._equal(compiled):
                raise RuntimeError("compiled scores differ from the booster's on the probe rows")
        except Exception as error:  # any failure of an optional accelerator must leave the booster serving
            log.warning("serving the LightGBM booster: compiled forest unusable: %s", error)
            self._set_problem(f"failed: {error}"[:300])
        else:
            self._compiled, self.runtime = compiled, "lleaves"
            self._set_problem(None)
        finally:
            self._ready.set()

    @staticmethod
    def _load(artefact: Path, model_text: str) -> Any:
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as model_file:
            model_file.write(model_text)
            model_file.flush()
            return _compiled(Path(model_file.name), artefact)

    def _equal(self, compiled: CompiledForest) -> bool:
        """Whether both ways of calling ``compiled`` (one thread, and lleaves' threads) score as the booster."""
        expected = np.asarray(self.booster.predict(self.probe, num_threads=1))
        tolerance = {"rtol": PROBE_RTOL, "atol": PROBE_RTOL * np.abs(expected).max()}
        return all(np.allclose(got, expected, **tolerance)
                   for got in (compiled.score(self.probe), compiled.model.predict(self.probe, n_jobs=2)))  # fmt: skip

    def _set_problem(self, problem: str | None) -> None:
        self.problem = problem
        if self.on_change is not None:
            self.on_change(self)


def main(argv: list[str] | None = None) -> None:
    """Compile one LightGBM model file to an artefact (the child process of :func:`compile_forest`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_file", type=Path, help="LightGBM model as text (Booster.save_model)")
    parser.add_argument("out", type=Path, help="where to write the compiled object code")
    args = parser.parse_args(argv)
    _compiled(args.model_file, args.out)


if __name__ == "__main__":
    main()
