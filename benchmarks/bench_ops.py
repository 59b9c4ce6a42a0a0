"""Linear-layer op benchmark on one GPU: bf16 cuBLAS, torchao int4, HLWQ Q5/Q4, FWHT.

How it times (DESIGN.md section 3): one CUDA graph calls the op on enough
distinct weight copies to exceed the L2 cache several times, so every call
reads its weight from HBM and there are no launch gaps; the graph is replayed
many times and the median replay, divided by the number of copies, is the time
per call. ``triton.testing.do_bench``'s L2 flush is not used: its dirty lines
are written back inside the timed kernel and inflate small kernels.

    python benchmarks/bench_ops.py                      # M = 1, the six shapes
    python benchmarks/bench_ops.py --m 1 2 4 8 16 32 64 128 512 2048 --shapes 4096x14336 14336x4096

Prints a table (time, achieved GB/s, % of the measured copy bandwidth,
speedups) and writes ``--json`` and ``--plot`` files.

``--sustained SECONDS`` also times every method with its graph replayed back to
back for that long (after as long again untimed), as a long prefill or a busy
server runs it: under such a load the GPU's power limit lowers the SM clock,
more for some kernels than for others (H200, session 28: bf16 cuBLAS at M = 256
to a median 1395 MHz, the HLWQ kernel to 1755; 1980 at M <= 16). Those columns
("sus us", the median SM clock nvidia-smi reported meanwhile, and the ratio to
bf16 timed the same way) come beside the default ones, which time each replay
alone with a host sync after it (the clock there was not sampled).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F

import hlwq_ops
from hlwq_ops.utils import tensor_nbytes

L2_MULTIPLE = 4  # weight bytes per graph >= this many times the L2 size
SHAPES = ["4096x4096", "1024x4096", "14336x4096", "4096x14336", "12288x4096", "4096x12288"]


def copy_bandwidth(device) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), median of 20."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(25):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * src.numel() / statistics.median(times[5:])


def graph_time(calls: list[Callable[[], object]], replays: int = 30) -> tuple[float, float]:
    """Median and spread (max - min over 5 medians) of microseconds per call."""
    return burst_time(captured(calls), len(calls), replays)


def captured(calls: list[Callable[[], object]]) -> torch.cuda.CUDAGraph:
    """``calls`` warmed up (compiled, tuned, allocated; again on a side stream) and captured in one CUDA graph."""
    for call in calls:
        call()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls:
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    return graph


def burst_time(graph: torch.cuda.CUDAGraph, n_calls: int, replays: int = 30) -> tuple[float, float]:
    """:func:`graph_time` of a :func:`captured` graph of ``n_calls`` calls: each replay timed alone, a host sync after
    it."""
    medians = []
    for _ in range(5):
        times = []
        for _ in range(replays):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3 / n_calls)
        medians.append(statistics.median(times[3:]))
    return statistics.median(medians), max(medians) - min(medians)


def interleaved_times(graphs: list[torch.cuda.CUDAGraph], n_calls: int, rounds: int) -> list[list[float]]:
    """Each :func:`captured` graph's :func:`burst_time` (us per call, 3 decimals) in ``rounds`` rounds that replay
    every graph in turn, so that a drift of the clock or the machine hits all of them alike."""
    times = [[] for _ in graphs]
    for _ in range(rounds):
        for graph, mine in zip(graphs, times):
            mine.append(round(burst_time(graph, n_calls, replays=10)[0], 3))
    return times


def sustained_time(graph: torch.cuda.CUDAGraph, n_calls: int, seconds: float) -> tuple[float, float, float | None]:
    """Microseconds per call with a :func:`captured` graph of ``n_calls`` calls replayed back to back, no host sync
    between replays, for ``seconds`` (after as long again untimed, so the clock settles where the power limit holds
    it): the median and spread (max - min) over five equal timed segments, and the median SM clock in MHz sampled
    meanwhile (None where nvidia-smi cannot be run)."""
    start = time.perf_counter()
    graph.replay()
    torch.cuda.synchronize()
    per_replay = max(time.perf_counter() - start, 1e-6)
    n = max(1, int(seconds / 5 / per_replay))  # replays a segment
    for _ in range(5 * n):  # untimed, as long as the timed part
        graph.replay()
    events = [torch.cuda.Event(enable_timing=True) for _ in range(6)]
    with _ClockSampler() as clocks:
        events[0].record()
        for i in range(5):
            for _ in range(n):
                graph.replay()
            events[i + 1].record()
        events[5].synchronize()
    segments = [a.elapsed_time(b) * 1e3 / (n * n_calls) for a, b in itertools.pairwise(events)]
    return statistics.median(segments), max(segments) - min(segments), clocks.median()


class _ClockSampler:
    """The current GPU's SM clock from ``nvidia-smi`` every 50 ms while the block runs (:meth:`median` after it)."""

    def __init__(self):
        self.samples: list[int] = []
        uuid = str(getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "uuid", ""))
        self.cmd = ["nvidia-smi", "--query-gpu=clocks.sm", "--format=csv,noheader,nounits", "-lms", "50"]
        if uuid:
            self.cmd += ["-i", uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"]

    def __enter__(self):
        try:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.proc = None
            return self
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line))

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
            self.reader.join(timeout=1)
        return False

    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


def n_copies(weight_bytes: int, l2_bytes: int) -> int:
    return max(4, min(256, math.ceil(L2_MULTIPLE * l2_bytes / weight_bytes)))


def packed_copies(qdata: torch.Tensor, scale: torch.Tensor, l2_bytes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(qdata, scale)`` and copies of it, enough to exceed the L2 (:func:`n_copies`): one per call in a graph."""
    n = n_copies(qdata.nbytes + scale.nbytes, l2_bytes)
    return [(qdata, scale)] + [(qdata.clone(), scale.clone()) for _ in range(n - 1)]


def quantized_for_timing(w: torch.Tensor, bits: int, l2_bytes: int):
    """Quantize ``w`` (block 128) for a timing sweep: packed copies past the L2 (:func:`packed_copies`), the float64
    dequantized weight (the reference) and bfloat16 copies of it past the L2 (the cuBLAS baseline)."""
    qdata, scale = torch.ops.hlwq.quantize(w, bits, 128)
    w_hat = torch.ops.hlwq.dequantize(qdata, scale, bits, 128, w.shape[1], torch.float64)
    wb = w_hat.bfloat16()
    bf16s = [wb] + [wb.clone() for _ in range(n_copies(wb.nbytes, l2_bytes) - 1)]
    return packed_copies(qdata, scale, l2_bytes), w_hat, bf16s


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def sweep_parser(doc: str, ms: list[int], json_name: str) -> argparse.ArgumentParser:
    """The arguments of a diagnostic sweep over :func:`linear_cases`: ``--shapes``, ``--bits``, ``--m``, ``--json``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["14336x4096", "4096x14336", "4096x4096", "1024x4096"])
    p.add_argument("--bits", nargs="+", type=int, default=[5, 4])
    p.add_argument("--m", nargs="+", type=int, default=ms)
    p.add_argument("--json", default=json_name)
    return p


@contextlib.contextmanager
def tuner_choices():
    """The tuning keys asked for inside, with the config each gave: what the calls there ran (a resolved call asks
    nothing, but replacing ``tuning.config_for`` sends every call to it again)."""
    from hlwq_ops.kernels import tuning

    asked, original = {}, tuning.config_for

    def config_for(kernel, M, N, k_pad, bits, weight, run):
        asked[kernel + tuning._layer_key(M, N, k_pad, bits)] = config = original(kernel, M, N, k_pad, bits, weight, run)
        return config

    tuning.config_for = config_for
    try:
        yield asked
    finally:
        tuning.config_for = original


def linear_cases(shapes: list[str], bits_list: list[int], ms: list[int], l2_bytes: int):
    """The cases of a diagnostic sweep (``diag_rows.py``, ``diag_tcgemv.py``): for each shape, bits and M, a dict
    with ``shape, N, K, bits, M``, the packed ``copies`` past the L2 (:func:`quantized_for_timing`), bfloat16
    activations ``x``, the float64 ``ref``, and bf16 ``F.linear`` and ``hlwq.linear`` on its default path timed
    (``bf16_us``, ``path``, ``path_us``, ``path_err``; printed as a line)."""
    from hlwq_ops import kernels
    from hlwq_ops.kernels import tuning

    for shape in shapes:
        N, K = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        w = torch.randn(N, K, device="cuda") * 0.02
        for bits in bits_list:
            copies, w_hat, bf16s = quantized_for_timing(w, bits, l2_bytes)
            for M in ms:
                x = torch.randn(M, K, device="cuda").bfloat16()
                ref = x.double() @ w_hat.t()
                bf16_us = graph_time([lambda c=c, x=x: F.linear(x, c) for c in bf16s], replays=10)[0]
                calls = [lambda q=q, s=s, x=x, bits=bits, K=K: kernels.linear(x, q, s, None, bits, 128, K, None)
                         for q, s in copies]
                path_us = graph_time(calls, replays=10)[0]
                fast = kernels.supports(bits, 128, None, x.dtype)  # the family as kernels.linear picks it
                path = tuning.path_for(M, fast, fast and kernels._runs_ws(copies[0][0], bits, 128, None, x.dtype))
                with tuner_choices() as asked:
                    path_err = rel_error(calls[0](), ref)
                picked = {config.get("kernel") for config in asked.values()} - {None}  # (None: a family's own key)
                label = f"{path}: {'+'.join(sorted(picked))}" if picked else path
                print(f"{shape:>10} q{bits} M={M:<3} bf16 {bf16_us:7.2f} us | hlwq.linear [{label}] {path_us:7.2f} us "
                      f"(x{bf16_us / path_us:.2f}, err {path_err:.1e})", flush=True)
                yield dict(shape=shape, N=N, K=K, bits=bits, M=M, copies=copies, x=x, ref=ref, bf16_us=bf16_us,
                           path=path, path_us=path_us, path_err=path_err)
            del copies, bf16s


def sweep(args: argparse.Namespace):
    """:func:`linear_cases` for a :func:`sweep_parser`'s arguments on GPU 0, after a line naming it; each case
    also holds ``sm``, the GPU's SM count."""
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, torch {torch.__version__}", flush=True)
    for case in linear_cases(args.shapes, args.bits, args.m, props.L2_cache_size):
        yield case | {"sm": props.multi_processor_count}


def case_record(case: dict, **extra) -> dict:
    """A JSON row: the case's numbers and names (not its tensors) and ``extra``."""
    return {k: v for k, v in case.items() if k not in ("copies", "x", "ref")} | extra


def report_case(rows: list[dict], case: dict, label: str, config: dict, err: float, times: dict[str, float]) -> bool:
    """One case of a diagnostic sweep: a line with ``label``, the checked relative error ``err`` and each variant's
    microseconds in ``times``, and its row appended to ``rows``; whether ``err`` is within 1e-2."""
    print(f"{'':>10} {label} (err {err:.1e}): " + ", ".join(f"{name} {us:.2f} us" for name, us in times.items()),
          flush=True)
    rows.append(case_record(case, config=config, err=err, us=times))
    return err < 1e-2


def save_rows(rows: list[dict], path: str, ok: bool) -> None:
    """End a diagnostic sweep: its rows as JSON at ``path``, then a failing exit if any output was wrong."""
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)
    if not ok:
        raise SystemExit("correctness FAILED")


def kernel_variant(original: ModuleType, name: str, patches: list[tuple[str, str]], folder: Path) -> ModuleType:
    """A diagnostic copy of the kernel module ``original``: its source with each ``(old, new)`` of ``patches``
    replaced (every ``old`` must be there), written to ``folder`` and imported as ``hlwq_ops.kernels.<its
    name>_<name>`` (``diag_splitk.py``, ``diag_reset.py``)."""
    stem = original.__name__.rsplit(".", 1)[-1]
    source = Path(original.__file__).read_text()
    for old, new in patches:
        if old not in source:
            raise SystemExit(f"{stem}.py no longer has the line {old.strip()!r}; update the patch")
        source = source.replace(old, new)
    path = folder / f"{stem}_{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"hlwq_ops.kernels.{stem}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def wsrs_alone(case: dict, config: dict, replays: int = 10, launch: Callable | None = None) -> tuple[float, float]:
    """The register-operand ws kernel in ``config`` on a :func:`linear_cases` case, alone on activations rotated in
    its order: microseconds per call (as :func:`graph_time`) and the relative error of a float32 output, written
    over a NaN-poisoned buffer, against the case's float64 reference. ``launch``: a function with ``wsrs.ws_rs``'s
    arguments to time instead (a modified copy of the kernel, ``diag_splitk.py``)."""
    from hlwq_ops.kernels import wsrs
    from hlwq_ops.kernels.fwht import fwht

    launch = launch or wsrs.ws_rs
    bits, copies = case["bits"], case["copies"]
    xp = fwht(case["x"], 128, torch.bfloat16, 8, wsrs.activation_span(config))
    torch.full((case["M"], case["N"]), float("nan"), device="cuda")  # freed: the output below reuses it
    err = rel_error(launch(xp, *copies[0], None, bits, 128, torch.float32, config), case["ref"])
    calls = [lambda q=q, s=s: launch(xp, q, s, None, bits, 128, torch.bfloat16, config) for q, s in copies]
    return graph_time(calls, replays=replays)[0], err


@contextlib.contextmanager
def forced_path(path: str):
    """Force hlwq's kernel family (``HLWQ_PATH``) while timing."""
    os.environ["HLWQ_PATH"] = path
    try:
        yield
    finally:
        del os.environ["HLWQ_PATH"]


def bench_shape(N: int, K: int, M: int, l2_bytes: int, bw: float, int4_ok: bool, paths: bool,
                sustained: float = 0.0) -> list[dict]:
    """Every method on one (M, N, K); weights are N(0, 0.02) like an LLM's. ``sustained`` > 0: each also timed by
    :func:`sustained_time` for that many seconds."""
    dev = "cuda"
    rows = []
    x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
    w = torch.randn(N, K, device=dev, dtype=torch.bfloat16) * 0.02
    ref = (x.double() @ w.double().t()).float()

    def add(method, calls, weight_bytes, out):
        graph = captured(calls)
        t, spread = burst_time(graph, len(calls))
        moved = weight_bytes + x.numel() * 2 + M * N * 2
        rows.append(
            dict(method=method, M=M, N=N, K=K, us=t, spread_us=spread, gbps=moved / t / 1e3,
                 pct_bw=100 * moved / (t * 1e-6) / bw, rel_err=rel_error(out, ref))
        )
        if sustained > 0:
            us, spread, mhz = sustained_time(graph, len(calls), sustained)
            rows[-1].update(us_sustained=us, spread_us_sustained=spread, sm_mhz_sustained=mhz)

    copies = n_copies(N * K * 2, l2_bytes)
    ws = [w.clone() for _ in range(copies)]
    add("bf16 F.linear", [lambda w=w_: F.linear(x, w) for w_ in ws], N * K * 2, F.linear(x, ws[0]))
    del ws

    if int4_ok:
        from torchao.quantization import Int4WeightOnlyConfig, quantize_

        config = Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")
        lin = torch.nn.Linear(K, N, bias=False, device=dev, dtype=torch.bfloat16)
        lin.weight.data.copy_(w)
        quantize_(lin, config)
        nbytes = tensor_nbytes(lin.weight)
        lins = [lin] + [_quantized_copy(lin) for _ in range(n_copies(nbytes, l2_bytes) - 1)]
        add("torchao int4", [lambda m=m: m(x) for m in lins], nbytes, lin(x))
        del lins, lin

    for bits in (5, 4):
        q = hlwq_ops.HLWQTensor.from_hp(w, bits)
        nbytes = tensor_nbytes(q)
        qs = [q] + [q.clone() for _ in range(n_copies(nbytes, l2_bytes) - 1)]
        with tuner_choices() as asked:
            out = F.linear(x, q)
        add(f"HLWQ Q{bits} F.linear", [lambda q=q_: F.linear(x, q) for q_ in qs], nbytes, out)
        rows[-1]["tuned"] = asked  # (in the JSON only: the tuning key and config the call ran)
        rows[-1]["bits_per_weight"] = 8 * nbytes / (N * K)
        if M == 1:
            xr = torch.ops.hlwq.fwht(x, 128, torch.float32)
            gemv = [
                lambda q=q_: torch.ops.hlwq.linear_rotated(xr, q.qdata, q.scale, None, bits, 128, None, torch.bfloat16)
                for q_ in qs
            ]
            add(f"HLWQ Q{bits} GEMV", gemv, nbytes, gemv[0]())
        elif paths and bits == 5:
            for path in ("gemv", "mma", "dequant"):
                if path == "gemv" and M > 16:
                    continue
                with forced_path(path):
                    add(f"HLWQ Q5 [{path}]", [lambda q=q_: F.linear(x, q) for q_ in qs], nbytes, F.linear(x, q))
        del qs, q

    if M == 1:
        xs = [x.clone() for _ in range(64)]
        t, spread = graph_time([lambda x=x_: torch.ops.hlwq.fwht(x, 128, torch.float32) for x_ in xs])
        rows.append(dict(method="FWHT", M=M, N=N, K=K, us=t, spread_us=spread, gbps=None, pct_bw=None, rel_err=None))
    return rows


def _quantized_copy(lin: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(lin)


def add_ratios(rows: list[dict]) -> None:
    by_key = {(r["M"], r["N"], r["K"], r["method"]): r for r in rows}
    for r in rows:
        key = (r["M"], r["N"], r["K"])
        bf16 = by_key.get((*key, "bf16 F.linear"))
        int4 = by_key.get((*key, "torchao int4"))
        r["vs_bf16"] = bf16["us"] / r["us"] if bf16 and r["method"] != "FWHT" else None
        r["vs_int4"] = int4["us"] / r["us"] if int4 and r["method"] != "FWHT" else None
        if r.get("us_sustained") and bf16 and bf16.get("us_sustained"):
            r["vs_bf16_sustained"] = bf16["us_sustained"] / r["us_sustained"]


def print_table(rows: list[dict]) -> str:
    head = f"{'M':>5} {'N x K':>12} {'method':<20} {'us':>8} {'+-':>5} {'GB/s':>7} {'%BW':>5} {'xbf16':>6} {'xint4':>6} {'relerr':>8}"
    sustained = any("us_sustained" in r for r in rows)
    if sustained:
        head += f" {'sus us':>8} {'+-':>5} {'MHz':>5} {'xbf16':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        def f(v, spec):
            return format(v, spec) if v is not None else "-"

        lines.append(
            f"{r['M']:>5} {str(r['N']) + 'x' + str(r['K']):>12} {r['method']:<20} {r['us']:>8.2f} "
            f"{r['spread_us']:>5.2f} {f(r['gbps'], '7.0f'):>7} {f(r['pct_bw'], '5.1f'):>5} "
            f"{f(r['vs_bf16'], '6.2f'):>6} {f(r['vs_int4'], '6.2f'):>6} {f(r['rel_err'], '8.1e'):>8}"
            + (f" {f(r.get('us_sustained'), '8.2f'):>8} {f(r.get('spread_us_sustained'), '5.2f'):>5} "
               f"{f(r.get('sm_mhz_sustained'), '5.0f'):>5} {f(r.get('vs_bf16_sustained'), '6.2f'):>6}"
               if sustained else "")
        )
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def plot(rows: list[dict], path: str, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "FWHT"]
    ms = sorted({r["M"] for r in rows})
    shapes = list(dict.fromkeys((r["N"], r["K"]) for r in rows))
    if len(ms) == 1:
        fig, ax = plt.subplots(figsize=(10, 4.5))
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            vals = [next((r["us"] for r in rows if (r["N"], r["K"]) == s and r["method"] == method), 0) for s in shapes]
            ax.bar([j + i * width for j in range(len(shapes))], vals, width, label=method)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shapes))], [f"{n}x{k}" for n, k in shapes])
        ax.set_ylabel(f"us per call (M={ms[0]})")
    else:
        fig, axes = plt.subplots(1, len(shapes), figsize=(6 * len(shapes), 4.5), squeeze=False)
        for ax, s in zip(axes[0], shapes):
            for method in methods:
                pts = sorted((r["M"], r["us"]) for r in rows if (r["N"], r["K"]) == s and r["method"] == method)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{s[0]}x{s[1]}")
            ax.set_xlabel("M")
            ax.set_ylabel("us per call")
        ax = axes[0][0]
    ax.legend(fontsize=8)
    fig.suptitle(f"{device} — CUDA graph over weight copies past L2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, nargs="+", default=[1])
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="N x K, e.g. 14336x4096")
    parser.add_argument("--no-int4", action="store_true", help="skip torchao int4 (not installed)")
    parser.add_argument("--paths", action="store_true", help="at M > 1 also time Q5 on each kernel family")
    parser.add_argument("--sustained", type=float, default=0.0, metavar="SECONDS",
                        help="also time each method replayed back to back this long (the power-limited clock)")
    parser.add_argument("--json", default="bench_ops.json")
    parser.add_argument("--plot", default="bench_ops.png")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="time nothing: tabulate and plot these earlier runs' --json files together (a sweep run "
                             "one process per M, so that a timeout keeps the Ms already done), into --json and --plot; "
                             "the merged JSON lists the runs (merged), their dates and their copy bandwidths")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.json, args.plot)
        return

    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    l2 = props.L2_cache_size
    bw = copy_bandwidth("cuda")
    print(f"{props.name}, {props.multi_processor_count} SMs, L2 {l2 / 2**20:.0f} MiB, copy {bw / 1e12:.2f} TB/s, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", flush=True)
    rows = []
    for shape in args.shapes:
        N, K = (int(v) for v in shape.split("x"))
        for M in args.m:
            start = time.perf_counter()
            rows += bench_shape(N, K, M, l2, bw, not args.no_int4, args.paths, args.sustained)
            print(f"  {shape} M={M}: {time.perf_counter() - start:.1f}s", flush=True)
    add_ratios(rows)
    table = print_table(rows)
    with open(args.json, "w") as f:
        json.dump(dict(device=props.name, copy_tbps=bw / 1e12, date=time.strftime("%Y-%m-%d"), rows=rows,
                       table=table), f, indent=1)
    plot(rows, args.plot, props.name)


def merge(paths: list[str], json_path: str, plot_path: str) -> None:
    """One table, JSON and plot from runs of one device (ratios as each run measured them, against its own bf16 and
    int4)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    devices = {run["device"] for run in runs}
    if len(devices) != 1:
        raise SystemExit(f"--merge takes runs of one device; these ran on {sorted(devices)}")
    rows = sorted((r for run in runs for r in run["rows"]), key=lambda r: r["M"])  # (stable: each run's order)
    table = print_table(rows)
    with open(json_path, "w") as f:
        json.dump(dict(device=devices.pop(), merged=paths, dates=sorted({run["date"] for run in runs}),
                       copy_tbps=[run["copy_tbps"] for run in runs], rows=rows, table=table), f, indent=1)
    plot(rows, plot_path, runs[0]["device"])


if __name__ == "__main__":
    main()
