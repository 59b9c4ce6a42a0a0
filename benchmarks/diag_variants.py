"""Where does the GEMV's time go? Time copies of it with one stage taken out.

Each variant is the current source of ``hlwq_ops/kernels/*.py``
with one textual change, imported as its own package (``/tmp/hlwq_variants``),
timed like the benchmark (CUDA graph over weight copies, M = 1, raw bfloat16
activations rotated in the kernel). Results are wrong by design except for
``base``; only their times mean something.

    python benchmarks/diag_variants.py --shapes 14336x4096 4096x4096 --bits 5
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import re
import sys

import torch

from bench_ops import graph_time, n_copies
from hlwq_ops.format import quantize_ref

SRC = pathlib.Path(__file__).resolve().parent.parent / "hlwq_ops" / "kernels"
ROOT = pathlib.Path("/tmp/hlwq_variants")

# name -> [(file, old, new)]
VARIANTS = {
    "base": [],
    # the codebook lookup costs nothing: the code's bits reinterpreted as a float (no shuffle)
    "no_lookup": [("decode.py", "    if SHUFFLE and not INTERPRET:\n        v = tl.inline_asm_elementwise(",
                   "    if SHUFFLE and not INTERPRET:\n        return code.to(tl.float32, bitcast=True)\n"
                   "        v = tl.inline_asm_elementwise(")],
    # no weight loads in the loop: the first rows' words, changed per iteration by one xor
    "no_loads": [("gemv.py", "            ahead = fetch_rows(q_ptr, q_base, s_base, rows_next, stride_qn, stride_sn, "
                  "word_off, p1_off, p2_off, blk,\n                               W1, W2, WIDE, INTERPRET)",
                  "            ahead = (ahead[0] ^ row0, ahead[1] ^ row0, ahead[2] ^ row0, ahead[3])")],
    # plane 1 and the scales not gathered (plane 0 stands in for plane 1, the scale is 1)
    "no_gathers": [("decode.py", "    if W1 > 0:\n        w1 = gather32(q_base, row_word + p1_off, INTERPRET)\n",
                    "    if W1 > 0:\n        w1 = w0 ^ 0x5A5A5A5A\n"),
                   ("decode.py", "    return w0, w1, w2, gather16(s_base, rows * stride_sn + blk, INTERPRET)",
                    "    return w0, w1, w2, (w0 & 0x3C00).to(tl.int16)")],
    # the split-K partials stored, never summed (no arrival counter, no last-program reduction)
    "no_epilogue": [("gemv.py", "        if arrive(counter, tl.num_programs(1)):", "        if pid_k < 0:")],
    # the arrival kept (the CTA barrier and the acq_rel atomic), the last program's sum not done
    "no_sum": [("gemv.py", "        if arrive(counter, tl.num_programs(1)):",
                "        if arrive(counter, tl.num_programs(1)) and pid_k < 0:")],
}


def build(name: str, edits) -> object:
    missing = {file for file, _, _ in edits} - {path.name for path in SRC.glob("*.py")}
    if missing:
        raise SystemExit(f"variant {name}: no such kernel file {sorted(missing)}")
    pkg = ROOT / name
    (pkg / "kernels").mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for path in sorted(SRC.glob("*.py")):
        f = path.name
        text = path.read_text()
        for file, old, new in edits:
            if file == f:
                if old not in text:
                    raise SystemExit(f"variant {name}: text not found in {f}: {old[:60]!r}")
                text = text.replace(old, new)
        # the copies import the real package's modules outside kernels/ (at the top and inside functions)
        text = re.sub(r"^(\s*)from \.\.(\w+) import", r"\1from hlwq_ops.\2 import", text, flags=re.M)
        text = re.sub(r"^(\s*)from \.\. import", r"\1from hlwq_ops import", text, flags=re.M)
        (pkg / "kernels" / f).write_text(text)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"{name}.kernels.gemv")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", nargs="*", default=["14336x4096", "4096x4096"])
    p.add_argument("--bits", nargs="*", type=int, default=[5])
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--config", default='{"VEC": 4, "R": 8, "ROWS": 64, "num_warps": 4}')
    a = p.parse_args()
    import json

    mods = {name: build(name, VARIANTS[name]) for name in a.variants}
    for shape in a.shapes:
        N, K = (int(v) for v in shape.split("x"))
        w = torch.randn(N, K, device="cuda") * 0.02
        x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
        config = json.loads(a.config)
        if N * K < 14336 * 4096:
            config["ROWS"] = 32
        for bits in a.bits:
            qdata, scale = quantize_ref(w, bits, 128)
            nbytes = qdata.numel() + 2 * scale.numel()
            copies = [(qdata, scale)] + [(qdata.clone(), scale.clone()) for _ in range(n_copies(nbytes, 50 << 20) - 1)]
            for name, mod in mods.items():
                for rotate in (True, False):
                    xin = x if rotate else x.float()
                    calls = [lambda q=q, s=s, mod=mod, xin=xin, rotate=rotate: mod.gemv(
                        xin, q, s, None, bits, 128, None, torch.bfloat16, config, rotate=rotate) for q, s in copies]
                    t, _ = graph_time(calls, replays=10)
                    print(f"{shape} q{bits} {name:12s} rotate={rotate!s:5s} {t:7.2f} us  {nbytes / t / 1e3:5.0f} GB/s"
                          f"  {config}", flush=True)


if __name__ == "__main__":
    main()
