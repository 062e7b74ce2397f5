"""Which numeric code paths a run takes: the CPU's own fastest (``native``) or capped ones (``portable``).

The same preset moves by points of accuracy between CPU kinds because the libraries under torch
pick their kernels by the processor they find: ATen's vectorised kernels (``normal_`` itself, so
even the initial weights), oneDNN's (the LSTM/GRU/RNN cells) and MKL's (every matrix product of
a linear layer). Each library reads a variable that caps that choice, once, when it loads:

- ``ATEN_CPU_CAPABILITY`` (ATen's kernels: ``avx2`` on every x86-64 CPU that has AVX2),
- ``ONEDNN_MAX_CPU_ISA`` (oneDNN's jit kernels: ``AVX2``),
- ``MKL_CBWR`` (MKL's conditional numerical reproducibility; on a CPU not made by Intel only
  ``AUTO`` and ``COMPATIBLE`` are honoured, so a cap that holds across vendors is ``COMPATIBLE``),

and the split of each reduction between threads follows the thread count, so ``portable`` fixes
that too. None of them can be changed after torch is imported: ``rnnlab.cli`` starts the process
again with them set (``environment``/``unmet``), and the run reads back what is in effect
(``in_effect``: torch's capability and thread count, oneDNN's and MKL's own words about their
choice) into ``provenance.json``. This module imports torch only inside the functions that read
it back, so the entry point can decide before anything loads it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from rnnlab.errors import ConfigError

MODES = ("native", "portable")
ATEN_CAPABILITIES = ("default", "avx2", "avx512", "avx512_vnni", "avx512_bf16", "avx512_fp16", "zvector")
# oneDNN's names (``dnnl_cpu_isa_t``) as ONEDNN_MAX_CPU_ISA takes them
ONEDNN_ISAS = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX10_1_512",
    "AVX512_CORE_AMX",
    "AVX10_1_512_AMX_FP16",
    "ALL",
)
MKL_BRANCHES = ("OFF", "AUTO", "COMPATIBLE", "SSE2", "SSE4_2", "AVX", "AVX2", "AVX512", "AVX512_E1")
# every variable a setting here can ask for
VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_CBWR",
    "MKL_DYNAMIC",
)
# how a process that started itself again for its numerics knows it did (a second try would loop)
REEXEC_MARK = "RNNLAB_NUMERICS_REEXEC"


@dataclass(frozen=True)
class NumericsSettings:
    """The ``numerics`` node: a label, the thread count and the three caps (``None``: leave as found)."""

    mode: str = "native"
    threads: int | None = None
    aten_cpu_capability: str | None = None
    onednn_max_cpu_isa: str | None = None
    mkl_cbwr: str | None = None
    mkl_dynamic: bool | None = None

    def __post_init__(self) -> None:
        _one_of("mode", self.mode, MODES)
        for key in ("aten_cpu_capability", "onednn_max_cpu_isa", "mkl_cbwr"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise ConfigError(f"numerics.{key}={getattr(self, key)!r} must be a name (or null)")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)):
            raise ConfigError(f"numerics.threads={self.threads!r} must be a whole number of threads (or null)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"numerics.threads={self.threads} must be at least 1 (or null: torch's default)")
        if self.aten_cpu_capability is not None:
            _one_of("aten_cpu_capability", self.aten_cpu_capability.lower(), ATEN_CAPABILITIES)
        if self.onednn_max_cpu_isa is not None:
            _one_of("onednn_max_cpu_isa", self.onednn_max_cpu_isa.upper(), ONEDNN_ISAS)
        if self.mkl_cbwr is not None:
            _one_of("mkl_cbwr", self.mkl_cbwr.upper().split(",")[0], MKL_BRANCHES)
        if self.mkl_dynamic is not None and not isinstance(self.mkl_dynamic, bool):
            raise ConfigError(f"numerics.mkl_dynamic={self.mkl_dynamic!r} must be true, false or null")
        if self.mode == "portable" and None in (self.threads, self.aten_cpu_capability, self.onednn_max_cpu_isa):
            raise ConfigError(
                "numerics.mode=portable needs numerics.threads, numerics.aten_cpu_capability and "
                "numerics.onednn_max_cpu_isa set (numerics=portable sets them all)"
            )

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> NumericsSettings:
        """The settings of a composed config's ``numerics`` node; none (an older config) is native."""
        node = dict(node or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(node) - known)
        if unknown:
            raise ConfigError(f"numerics.{unknown[0]} is not a setting; the settings are {', '.join(sorted(known))}")
        return cls(**node)

    def environment(self) -> dict[str, str]:
        """The variables these settings need in the process before torch loads."""
        env: dict[str, str] = {}
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        if self.aten_cpu_capability is not None:
            env["ATEN_CPU_CAPABILITY"] = self.aten_cpu_capability.lower()
        if self.onednn_max_cpu_isa is not None:
            env["ONEDNN_MAX_CPU_ISA"] = self.onednn_max_cpu_isa.upper()
        if self.mkl_cbwr is not None:
            env["MKL_CBWR"] = self.mkl_cbwr.upper()
        if self.mkl_dynamic is not None:
            env["MKL_DYNAMIC"] = "TRUE" if self.mkl_dynamic else "FALSE"
        return env

    def unmet(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The variables (with the values needed) that ``environ`` (this process's) does not yet have."""
        environ = os.environ if environ is None else environ
        return {key: value for key, value in self.environment().items() if environ.get(key) != value}

    def apply(self) -> None:
        """Fix torch's thread count (the variables have done the rest); refuse a run they could not reach.

        ``unmet()`` must be empty: the caps are read when torch loads, and calling this with them
        missing would record a run as portable that is not.
        """
        missing = self.unmet()
        if missing:
            names = " ".join(f"{k}={v}" for k, v in missing.items())
            raise ConfigError(
                f"numerics={self.mode} needs {names} set before torch loads: export them, or run it "
                "through scripts/train.py (or another rnnlab entry point), which sets them"
            )
        import torch

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        wanted = (self.aten_cpu_capability or "").upper()
        found = torch.backends.cpu.get_cpu_capability().upper()
        if wanted and found != wanted and wanted != "DEFAULT":
            raise ConfigError(
                f"numerics.aten_cpu_capability={self.aten_cpu_capability} is not available on this CPU "
                f"(torch runs {found}): numerics=portable needs an x86-64 CPU with AVX2; use numerics=native"
            )


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"numerics.{key}={value!r} is not one of {', '.join(allowed)}")


def captured_stdout(action: Callable[[], Any]) -> str:
    """What ``action`` writes on file descriptor 1 (where oneDNN and MKL print), not shown on the terminal."""
    sys.stdout.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1)
        os.dup2(sink.fileno(), 1)
        try:
            action()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        sink.seek(0)
        return sink.read().decode(errors="replace")


def _after(text: str, marker: str) -> str | None:
    """The words after ``marker`` on the first line of a library's verbose output that has it."""
    for line in text.splitlines():
        if marker in line:
            return line.split(marker, 1)[1].strip()
    return None


@functools.cache  # oneDNN names its ISA once per process, and neither choice changes after loading
def library_choices() -> dict[str, str | None]:
    """The ISA oneDNN runs and the branch MKL runs, in their own words (each says so when asked to be verbose)."""
    import torch

    def onednn() -> None:
        with torch.random.fork_rng(devices=[]), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            torch.nn.LSTM(2, 2)(torch.zeros(1, 1, 2))  # its initial weights draw from a copy of the RNG

    def mkl() -> None:
        with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
            torch.ones(4, 4) @ torch.ones(4, 4)

    found: dict[str, str | None] = {"onednn_isa": None, "mkl_cbwr": None}
    # RuntimeError, OSError: no oneDNN or MKL in this torch, or no file descriptor 1 to borrow
    with contextlib.suppress(RuntimeError, OSError):
        found["onednn_isa"] = _after(captured_stdout(onednn), "cpu,isa:")  # "Intel AVX2"
    with contextlib.suppress(RuntimeError, OSError):
        branch = _after(captured_stdout(mkl), " CNR:")  # "COMPATIBLE Dyn:1 FastMM:1 ..."
        found["mkl_cbwr"] = branch.split()[0] if branch else None
    return found


def in_effect(requested: NumericsSettings | None = None) -> dict[str, Any]:
    """What the run computes with, read back from torch and its libraries, beside what was asked."""
    import torch

    requested = requested or NumericsSettings()
    return {
        "mode": requested.mode,
        "requested": requested.environment(),
        "honoured": not requested.unmet(),
        "environment": {key: os.environ[key] for key in VARIABLES if key in os.environ},
        "threads": torch.get_num_threads(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **library_choices(),
        "blas": _build_setting("BLAS_INFO"),
    }


def _build_setting(name: str) -> str | None:
    """One ``NAME=value`` of torch's build settings (``torch.__config__.show()``)."""
    import torch

    found = re.search(rf"\b{name}=([^,\s]+)", torch.__config__.show())
    return found.group(1) if found else None


# what a rerun compares: the values in effect that choose kernels (the label and the request follow them)
COMPARED = ("mode", "threads", "aten_cpu_capability", "onednn_isa", "mkl_cbwr")


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(what, original, rerun)`` for each numeric setting in effect that differs between two provenances.

    A record from before numerics were recorded says only that (one entry, not one per setting).
    """
    a, b = (((record.get("platform") or {}).get("numerics") or {}) for record in (old, new))
    if not a or not b:
        return [] if a == b else [("numerics", a.get("mode", "not recorded"), b.get("mode", "not recorded"))]
    return [(f"numerics {key}", a.get(key), b.get(key)) for key in COMPARED if a.get(key) != b.get(key)]
