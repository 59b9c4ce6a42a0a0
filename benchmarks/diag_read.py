"""How fast can a Triton kernel *read* a packed weight with the GEMV's access pattern?

Reads (and xor-folds, so nothing is optimized away) a weight-sized int32 buffer:

- ``slices``: the GEMV's geometry -- a program reads ``ROWS`` rows of one
  K-slice of ``C`` words, ``R`` rows per iteration;
- ``stream``: a program reads one contiguous range, ``BLOCK`` words per iteration.

Same CUDA-graph timing as the benchmark (copies spanning several L2s). If the
``slices`` pattern reads much slower than ``stream``, the GEMV's geometry, not
its decode, caps it.

    python benchmarks/diag_read.py --shape 14336x4096 --bits 5
"""

from __future__ import annotations

import argparse

import torch
import triton
import triton.language as tl

from bench_ops import copy_bandwidth, graph_time, n_copies


@triton.jit
def _read_slices(q_ptr, out_ptr, N, stride_qn, ROWS, R: tl.constexpr, C: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    r = tl.arange(0, R)[:, None]
    col = pid_k * C + tl.arange(0, C)[None, :]
    acc = tl.zeros([R, C], dtype=tl.int32)
    row_lo = pid_n * ROWS
    row_hi = tl.minimum(row_lo + ROWS, N)
    for row0 in range(row_lo, row_hi, R):
        acc ^= tl.load(q_ptr + tl.minimum(row0 + r, N - 1) * stride_qn + col)
    tl.store(out_ptr + pid_n * tl.num_programs(1) + pid_k, tl.reduce_or(acc, axis=None))


@triton.jit
def _read_stream(q_ptr, out_ptr, n_words, PER_PROGRAM, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    lo = pid * PER_PROGRAM  # PER_PROGRAM and n_words: multiples of BLOCK (the caller checks)
    for j in range(0, tl.minimum(PER_PROGRAM, n_words - lo) // BLOCK):  # so the loads vectorize
        acc ^= tl.load(q_ptr + lo + j * BLOCK + offs)
    tl.store(out_ptr + pid, tl.reduce_or(acc, axis=None))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", nargs="*", default=["14336x4096", "4096x14336", "4096x4096"])
    p.add_argument("--bits", type=int, default=5)
    a = p.parse_args()
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"copy bandwidth {copy_bandwidth(torch.device('cuda')):.2f} TB/s", flush=True)
    for shape in a.shapes:
        N, K = (int(v) for v in shape.split("x"))
        row_words = K * a.bits // 32
        nbytes = N * row_words * 4
        copies = [torch.randint(-2**31, 2**31 - 1, (N, row_words), dtype=torch.int32, device="cuda")
                  for _ in range(n_copies(nbytes, 50 << 20))]
        out = torch.empty(1 << 16, dtype=torch.int32, device="cuda")
        runs = []
        for C in (128, 256):
            slices = triton.cdiv(row_words, C)
            for R in (8, 16, 32):
                for per_sm in (4, 7, 14):
                    rows = max(R, triton.cdiv(triton.cdiv(N * slices, per_sm * sm), R) * R)
                    for stages in (1, 3):
                        grid = (triton.cdiv(N, rows), slices)
                        runs.append((f"slices C={C} R={R} ROWS={rows} stages={stages} programs/SM="
                                     f"{grid[0] * grid[1] / sm:.1f}",
                                     lambda q, grid=grid, rows=rows, R=R, C=C, stages=stages: _read_slices[grid](
                                         q, out, N, q.stride(0), rows, R=R, C=C, num_warps=4, num_stages=stages)))
        n_words = N * row_words
        for BLOCK in (512, 1024, 2048):
            if n_words % BLOCK:
                continue
            for per_sm in (2, 4, 8):
                per_program = triton.cdiv(triton.cdiv(n_words, per_sm * sm), BLOCK) * BLOCK
                grid = (triton.cdiv(n_words, per_program),)
                for warps in (4, 8):
                    runs.append((f"stream BLOCK={BLOCK} programs/SM={grid[0] / sm:.1f} warps={warps}",
                                 lambda q, grid=grid, pp=per_program, BLOCK=BLOCK, warps=warps: _read_stream[grid](
                                     q, out, n_words, pp, BLOCK=BLOCK, num_warps=warps)))
        w16 = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) for _ in range(n_copies(2 * N * K, 50 << 20))]
        x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
        t, _ = graph_time([lambda w=w: torch.nn.functional.linear(x, w) for w in w16], replays=10)
        print(f"{shape} bf16 F.linear {t:7.2f} us {2 * N * K / t / 1e3:6.0f} GB/s", flush=True)
        del w16
        best = None
        for name, fn in runs:
            t, _ = graph_time([lambda q=q, fn=fn: fn(q) for q in copies], replays=10)
            print(f"{shape} q{a.bits} {t:7.2f} us {nbytes / t / 1e3:6.0f} GB/s  {name}", flush=True)
            if best is None or t < best[0]:
                best = (t, name)
        print(f"== {shape} best {best[0]:.2f} us {nbytes / best[0] / 1e3:.0f} GB/s {best[1]}", flush=True)


if __name__ == "__main__":
    main()
