"""Session 37: generate() (static cache reused, transformers' CUDA graph trees) on the Llama-3-8B shape, batch 1,
bf16 and HLWQ Q5 in ONE process; Q5 alternating the new HLWQTensor size()/stride()/__tensor_flatten__ with
session 36's (class-level patch, same values: no recompile). Then the op's host time through the dispatcher,
hlwq.linear (custom_op, Python autograd kernel) against hlwq.linear_inference, alternating, on CUDA."""
import statistics
import sys
import time

import torch
from transformers import StaticCache

sys.path.insert(0, "benchmarks")
import bench_decode as B  # noqa: E402

from hlwq_ops import HLWQTensor  # noqa: E402

NEW_SIZE, NEW_STRIDE, NEW_FLAT = HLWQTensor.size, HLWQTensor.stride, HLWQTensor.__tensor_flatten__


def old_flat(self):  # session 36's __tensor_flatten__
    shape, dtype, _ = self._outer
    names = ["qdata", "scale"] if self.codebook is None else ["qdata", "scale", "codebook"]
    attrs = {"bits": self.bits, "block_size": self.block_size, "shape": shape, "dtype": dtype,
             "transposed": self.transposed}
    return names, attrs


def set_mode(old: bool) -> None:
    if old:
        del HLWQTensor.size, HLWQTensor.stride  # torch.Tensor's: through __torch_function__
        HLWQTensor.__tensor_flatten__ = old_flat
    else:
        HLWQTensor.size, HLWQTensor.stride, HLWQTensor.__tensor_flatten__ = NEW_SIZE, NEW_STRIDE, NEW_FLAT


def gen_once(model, ids, cache) -> float:
    cache.reset()
    torch.cuda.synchronize()
    t = time.perf_counter()
    model.generate(ids, max_new_tokens=B.NEW, do_sample=False, past_key_values=cache)
    torch.cuda.synchronize()
    return ids.shape[0] * B.NEW / (time.perf_counter() - t)


def main():
    ids = torch.randint(0, 1000, (1, B.PROMPT), device="cuda")
    models = {}
    for method in ("bf16", "hlwq-q5"):
        model, _ = B.build("llama3-8b", method)
        cache = StaticCache(config=model.config, max_cache_len=B.PROMPT + B.NEW)
        models[method] = (model, cache)
    out = {}
    with torch.no_grad():
        for method, (model, cache) in models.items():
            t = time.perf_counter()
            gen_once(model, ids, cache)
            gen_once(model, ids, cache)
            print(f"warm-up {method}: {time.perf_counter() - t:.1f} s", flush=True)
        # the same tokens both ways? (and each way twice: is generate() deterministic here at all?)
        model, cache = models["hlwq-q5"]
        toks = {}
        for name in ("new", "old", "new", "old"):
            set_mode(name == "old")
            cache.reset()
            toks.setdefault(name, []).append(
                model.generate(ids, max_new_tokens=32, do_sample=False, past_key_values=cache)[0, B.PROMPT:])
        set_mode(False)

        def first_diff(a, b):
            d = (a != b).nonzero()
            return "same" if d.numel() == 0 else f"first differs at token {d[0].item()}"

        bf = []
        for _ in range(2):
            models["bf16"][1].reset()
            bf.append(models["bf16"][0].generate(ids, max_new_tokens=32, do_sample=False,
                                                 past_key_values=models["bf16"][1])[0, B.PROMPT:])
        print("bf16 vs bf16:", first_diff(*bf), flush=True)
        print("new vs new:", first_diff(*toks["new"]), "| old vs old:", first_diff(*toks["old"]),
              "| new vs old:", first_diff(toks["new"][0], toks["old"][0]), flush=True)
        print("recompiles so far:", dict(torch._dynamo.utils.counters["stats"]), flush=True)
        for rnd in range(5):
            for name in ("bf16", "q5-new", "q5-old"):
                method = "bf16" if name == "bf16" else "hlwq-q5"
                set_mode(name == "q5-old")
                model, cache = models[method]
                tps = gen_once(model, ids, cache)
                out.setdefault(name, []).append(tps)
                print(f"round {rnd} {name}: {tps:.1f} tok/s", flush=True)
        set_mode(False)
    print("recompiles after:", dict(torch._dynamo.utils.counters["stats"]), flush=True)
    for name, v in out.items():
        print(f"{name}: median {statistics.median(v):.1f} tok/s (min {min(v):.1f}, max {max(v):.1f}) "
              f"x bf16 {statistics.median(v) / statistics.median(out['bf16']):.3f}", flush=True)
    del models
    torch.cuda.empty_cache()

    # the op through the dispatcher, host time per call (M = 1, Q5 4096 x 4096, no grad)
    w = HLWQTensor.from_hp(torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16) * 0.02)
    x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
    args = (x, w.qdata, w.scale, None, 5, 128, 4096, None)
    ops = {"hlwq.linear": torch.ops.hlwq.linear.default, "hlwq.linear_inference": torch.ops.hlwq.linear_inference.default}
    res = {}
    with torch.no_grad():
        for op in ops.values():
            for _ in range(50):
                op(*args)
        torch.testing.assert_close(ops["hlwq.linear"](*args), ops["hlwq.linear_inference"](*args), rtol=0, atol=0)
        for rnd in range(5):
            for name, op in ops.items():
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(500):
                    op(*args)
                torch.cuda.synchronize()
                res.setdefault(name, []).append((time.perf_counter() - t) / 500 * 1e6)
    for name, v in res.items():
        print(f"{name}: {statistics.median(v):.1f} us a call (rounds: {', '.join(f'{u:.1f}' for u in v)})", flush=True)


if __name__ == "__main__":
    main()
