"""Throughput and peak memory against ResNeXt-50, all measured in one process (``sknet bench``).

Every model is built once; after a warm-up, rounds interleave the models (round 1: A, B, C;
round 2: A, B, C; ...) so that a slow spell of a shared machine hits them all alike, and the
median over rounds is reported with the ratio to the reference model of the same run.

Model specs:

- a registered sknet model (``sknet50``), with the fast SK path (the default);
- ``sknet50@IMPL``: the same model built with ``create_model("sknet50", sk_impl=IMPL)``:
  ``@reference`` is the plain reference SK path; ``@nolean``, ``@nofold``, ``@nosubsample``
  (combinable: ``@nolean,nofold``) switch off the fast path's memory-lean training step, its
  eval-mode BN folding, or its stride-1 rewrite of strided dilated branches (the ablation);
- ``sknet50+fuse``: after :func:`sknet.fuse` (inference only);
- ``torchvision:resnext50_32x4d`` and ``timm:skresnext50_32x4d`` (random weights; suffix
  ``+fuse`` works for torchvision ResNets too).

Peak memory is the largest total of live tensor bytes during one step (an inference batch, or
forward + backward + optimizer step) that belong to the model being measured: the bytes of its
tensors live before the step (parameters, buffers, optimizer state, the input batch; gradients
are freed by ``zero_grad``) plus the peak of what the step allocates on top. On CUDA the latter
is ``torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()`` around the step (after
resetting the peak), so the other models held for the interleaved rounds do not count. The CPU
has no allocator statistics; there it is replayed from the PyTorch profiler's memory events
(``profile_memory=True``: every allocation and free of the CPU allocator, with its address, in
order). Process RSS is not used: it includes the allocator's cached pages, the Python heap and
libraries, and never goes down.

On the CPU the benchmark first tells glibc's malloc to keep freed memory
(:func:`keep_freed_memory`; ``--system-malloc`` leaves it as it is): otherwise each step's
feature maps are mapped afresh and page-faulted, a cost that depends on the process's history
and blurs the ratios. Each result also records the minor page faults per timed step.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .deploy.fusion import fuse
from .models import create_model, get_model_entry

DEFAULT_MODELS = ("sknet50", "torchvision:resnext50_32x4d", "timm:skresnext50_32x4d")
DEFAULT_REFERENCE = "torchvision:resnext50_32x4d"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
MODES = ("inference", "train")
_log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """What to measure; the CLI flags map one to one onto these fields."""

    models: tuple[str, ...] = DEFAULT_MODELS
    reference: str = DEFAULT_REFERENCE
    modes: tuple[str, ...] = MODES
    device: str = "cpu"
    batch_size: int = 8
    train_batch_size: int | None = None  # None: same as batch_size
    input_size: int = 224
    dtype: str = "fp32"
    memory_format: str = "channels_last"
    compile: bool = False
    threads: int | None = None  # None: PyTorch's default
    warmup: int = 2
    rounds: int = 5
    iters: int = 1  # steps per timed measurement
    memory: bool = True
    num_classes: int = 1000
    keep_freed_memory: bool = True  # CPU: see keep_freed_memory(); False = the allocator as it is

    def check(self) -> None:
        if not self.models:
            raise ValueError("give at least one model to benchmark")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"--memory-format must be one of {list(MEMORY_FORMATS)}, got {self.memory_format!r}")
        for mode in self.modes:
            if mode not in MODES:
                raise ValueError(f"--modes entries must be in {MODES}, got {mode!r}")
        for name, v in [("batch size", self.batch_size), ("input size", self.input_size), ("rounds", self.rounds)]:
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if self.warmup < 0 or self.iters < 1:
            raise ValueError(f"need warmup >= 0 and iters >= 1, got {self.warmup} and {self.iters}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but torch.cuda.is_available() is False; use --device cpu")


@dataclass
class Result:
    model: str
    mode: str
    batch_size: int
    img_per_s: float  # median over rounds
    img_per_s_rounds: list[float] = field(default_factory=list)
    peak_mem_mb: float | None = None
    minor_faults_per_step: float | None = None  # median over rounds (CPU page faults; Unix only)
    ratio: float | None = None  # throughput / reference's (ratio of the medians)
    paired_ratio: float | None = None  # median over rounds of this round's throughput / the reference's
    mem_ratio: float | None = None  # peak memory / reference's
    error: str | None = None


# --------------------------------------------------------------------------- models


def input_channels(spec: str) -> int:
    """Image channels a spec's model takes (3 for torchvision / timm models)."""
    name = spec.removesuffix("+fuse").split("@", 1)[0]
    if ":" in name:
        return 3
    return get_model_entry(name).input_size[0]


def build_model(spec: str, num_classes: int = 1000) -> nn.Module:
    """A model from a spec (module docstring). Random weights: nothing is downloaded."""
    name, fused = (spec[: -len("+fuse")], True) if spec.endswith("+fuse") else (spec, False)
    name, _, impl = name.partition("@")
    if impl and ":" in name:
        raise ValueError(f"{spec!r}: @IMPL chooses the SK implementation of sknet's own models only")
    if name.startswith("torchvision:"):
        import torchvision

        model = torchvision.models.get_model(name.split(":", 1)[1], weights=None, num_classes=num_classes)
    elif name.startswith("timm:"):
        import timm

        model = timm.create_model(name.split(":", 1)[1], pretrained=False, num_classes=num_classes)
    else:
        model = create_model(name, num_classes=num_classes, **({"sk_impl": impl} if impl else {}))
    return fuse(model) if fused else model


# --------------------------------------------------------------------------- measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, rounds: int = 7, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in ms over ``rounds`` calls after ``warmup`` untimed ones,
    synchronising CUDA around each call (for the op-level micro-benchmarks in scripts/)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            s = t.untyped_storage()
            if s.data_ptr() not in seen:
                seen.add(s.data_ptr())
                total += s.nbytes()
    return total


def _cpu_peak_alloc_bytes(fn) -> int:
    """Peak of the bytes allocated during ``fn()`` and still live, from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with _without_profiler_chatter(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    mem = [e for e in events if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0]
    mem.sort(key=lambda e: (e["ts"], e["args"].get("Ev Idx", 0)))
    live: dict[int, int] = {}
    current = peak = 0
    for e in mem:
        nbytes, addr = int(e["args"]["Bytes"]), e["args"]["Addr"]
        if nbytes > 0:
            live[addr] = live.get(addr, 0) + nbytes
            current += nbytes
            peak = max(peak, current)
        elif addr in live:  # frees of tensors allocated before fn() do not count
            freed = min(-nbytes, live[addr])
            live[addr] -= freed
            current -= freed
            if live[addr] == 0:
                del live[addr]
    return peak


# What the profiler's C++ side (Kineto) writes to stderr on every start and stop, e.g.
# "USDT:2026-12-01 14:17:25 9063:9063 SyncActivityProfilerHandler.cpp:39] profiler_start".
_KINETO_LINE = re.compile(r"^[A-Z]+:\d{4}-\d\d-\d\d \S+ \d+:\d+ \S+\.cpp:\d+\] ")


@contextlib.contextmanager
def _without_profiler_chatter():
    """Drop the profiler's own log lines from the process's stderr (file descriptor 2, which the C++
    side writes to); anything else written meanwhile is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not _KINETO_LINE.match(line)]  # fmt: skip
            sys.stderr.write("".join(kept))


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, glibc's <malloc.h>


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory in the process; True if it took effect.

    By default glibc serves large blocks (a feature map) with ``mmap`` and returns them to the
    OS on free, or trims the heap; the next step then page-faults on fresh zeroed pages. How
    much of that a step pays depends on malloc's adaptive thresholds, i.e. on what the process
    did before, and it adds a roughly model-independent cost that pulls every throughput ratio
    towards 1 (docs/performance.md measures it). ``sknet bench`` therefore sets the mmap threshold
    to 1 GiB and turns trimming off (``mallopt``, what ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_`` do), as jemalloc or tcmalloc would, for the whole process.
    Anything but Linux with glibc: nothing is changed.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap_ok = mallopt(M_MMAP_THRESHOLD, 2**30) == 1 or mallopt(M_MMAP_THRESHOLD, 32 * 2**20) == 1
    return mmap_ok and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1


def _minor_faults() -> int | None:
    """Minor page faults of this process so far (``getrusage``); None where unavailable."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Runner:
    """One model in one mode: builds the step, runs it, measures it."""

    def __init__(self, spec: str, mode: str, cfg: BenchConfig, device: torch.device) -> None:
        self.spec, self.mode, self.cfg, self.device = spec, mode, cfg, device
        self.batch = cfg.batch_size if mode == "inference" else (cfg.train_batch_size or cfg.batch_size)
        fmt = MEMORY_FORMATS[cfg.memory_format]
        model = build_model(spec, cfg.num_classes).to(device=device, memory_format=fmt)
        model.train(mode == "train")
        self.model = model
        self.step_model = torch.compile(model) if cfg.compile else model
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.batch, input_channels(spec), cfg.input_size, cfg.input_size, generator=g)
        self.x = x.to(device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, cfg.num_classes, (self.batch,), generator=g).to(device)
        self.optimizer = None
        if mode == "train":  # the usual ImageNet recipe's optimizer; a small lr keeps random data finite
            self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
        self.dtype = DTYPES[cfg.dtype]

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self) -> None:
        if self.mode == "inference":
            with torch.inference_mode(), self._autocast():
                self.step_model(self.x)
            return
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = F.cross_entropy(self.step_model(self.x), self.y)
        loss.backward()
        self.optimizer.step()

    def time_once(self) -> tuple[float, float | None]:
        """Images per second over ``iters`` steps, and the process's minor page faults per step."""
        _sync(self.device)
        faults = _minor_faults()
        t0 = time.perf_counter()
        for _ in range(self.cfg.iters):
            self.step()
        _sync(self.device)
        img_per_s = self.batch * self.cfg.iters / (time.perf_counter() - t0)
        if faults is not None:
            faults = (_minor_faults() - faults) / self.cfg.iters
        return img_per_s, faults

    def peak_memory_bytes(self) -> int:
        """This model's peak live bytes during one step (module docstring)."""
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        live = [*self.model.parameters(), *self.model.buffers(), self.x, self.y]
        if self.optimizer is not None:
            live += [v for state in self.optimizer.state.values() for v in state.values()]
        if self.device.type == "cuda":
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            self.step()
            _sync(self.device)
            return _storage_bytes(live) + torch.cuda.max_memory_allocated(self.device) - before
        return _storage_bytes(live) + _cpu_peak_alloc_bytes(self.step)


def run_bench(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> dict:
    """Measure every (model, mode) and return a JSON-ready report; ``log`` gets a line per round
    (default: the ``sknet.bench`` logger)."""
    log = log or _log.info
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    malloc = "as is"
    if device.type == "cpu" and cfg.keep_freed_memory:
        malloc = "glibc, freed memory kept (mallopt)" if keep_freed_memory() else "as is (not glibc)"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # pick the fastest kernels for these fixed shapes
    specs = list(dict.fromkeys([cfg.reference, *cfg.models]))  # reference first, no duplicates
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    t_start = time.time()
    results: list[Result] = []
    for mode in cfg.modes:
        runners: list[Runner] = []
        for spec in specs:
            if mode == "train" and spec.endswith("+fuse"):
                continue  # a fused model has no BatchNorm left to train
            runners.append(Runner(spec, mode, cfg, device))
        for r in runners:  # warm-up (and compilation)
            for _ in range(cfg.warmup):
                r.step()
        rounds: dict[str, list[float]] = {r.spec: [] for r in runners}
        faults: dict[str, list[float]] = {r.spec: [] for r in runners}
        for i in range(cfg.rounds):
            for r in runners:
                img_per_s, n_faults = r.time_once()
                rounds[r.spec].append(img_per_s)
                if n_faults is not None:
                    faults[r.spec].append(n_faults)
            log(f"[{mode}] round {i + 1}/{cfg.rounds}: " + ", ".join(f"{s} {v[-1]:.1f}" for s, v in rounds.items()))
        for r in runners:
            res = Result(r.spec, mode, r.batch, statistics.median(rounds[r.spec]), rounds[r.spec])
            if faults[r.spec]:
                res.minor_faults_per_step = statistics.median(faults[r.spec])
            if cfg.memory:
                res.peak_mem_mb = r.peak_memory_bytes() / 2**20
            results.append(res)
        del runners
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for res in results:
        ref = next((x for x in results if x.model == cfg.reference and x.mode == res.mode), None)
        if ref is not None:
            res.ratio = res.img_per_s / ref.img_per_s
            # Each round times every model back to back, so a slow spell of a shared machine
            # hits a model and the reference together: the per-round ratios are paired.
            res.paired_ratio = statistics.median(a / b for a, b in zip(res.img_per_s_rounds, ref.img_per_s_rounds))
            if res.peak_mem_mb and ref.peak_mem_mb:
                res.mem_ratio = res.peak_mem_mb / ref.peak_mem_mb
    return dict(
        config=asdict(cfg),
        environment={**environment(device), "malloc": malloc},
        load_average_before=load_before,
        load_average_after=os.getloadavg() if hasattr(os, "getloadavg") else None,
        wall_s=round(time.time() - t_start, 1),
        command=" ".join(sys.argv),
        results=[asdict(r) for r in results],
    )


def environment(device: torch.device) -> dict:
    env = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        platform=platform.platform(),
        cpu=_cpu_name(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        date_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    )
    for lib in ("torchvision", "timm"):
        with contextlib.suppress(ImportError):
            env[lib] = __import__(lib).__version__
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()
