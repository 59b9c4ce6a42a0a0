"""Stand-alone prototype of the wgmma kernel (Q5, bfloat16, split-K by float32 atomics), kept for diag_wgmma.py."""
import triton, triton.language as tl

@triton.jit
def shfl16(c_lane, code):
    return tl.inline_asm_elementwise("{ .reg .b32 t; shfl.sync.idx.b32 t, $1, $2, 0x1f, 0xffffffff; cvt.u16.u32 $0, t; }",
                                     "=h,r,r", [c_lane, code], dtype=tl.int16, is_pure=True, pack=1)

@triton.jit
def nib(low, high):
    return tl.inline_asm_elementwise("lop3.b32 $0, $1, $2, 0x0F0F0F0F, 0xE4;", "=r,r,r", [low, high], dtype=tl.uint32, is_pure=True, pack=1)

@triton.jit
def k(xp_ptr, q_ptr, s_ptr, out_ptr, M, N, K_PAD, stride_qn, stride_sn,
      BM: tl.constexpr, BN: tl.constexpr, B: tl.constexpr, CB_ASM: tl.constexpr, SPLIT: tl.constexpr):
    C: tl.constexpr = 16
    PW0: tl.constexpr = B * 4 // 32
    WPB: tl.constexpr = B * 5 // 32
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    rows = tl.minimum(n, N - 1)[:, None]
    col = tl.arange(0, C)[None, :]
    kcol = tl.arange(0, C)[:, None]
    m = tl.arange(0, BM)[None, :]
    KW = K_PAD // 8
    acc = tl.zeros([BN, BM], dtype=tl.float32)
    per = KW // C // SPLIT
    for step in range(tl.program_id(1) * per, (tl.program_id(1) + 1) * per):
        word = step * C + col
        blk = step * C // PW0
        w0 = tl.load(q_ptr + rows * stride_qn + blk * WPB + word % PW0).to(tl.uint32, bitcast=True)
        c_lane = tl.inline_asm_elementwise(CB_ASM, "=r,r", [w0], dtype=tl.int32, is_pure=True, pack=1)
        p1 = tl.load(q_ptr.to(tl.pointer_type(tl.uint8)) + (rows * stride_qn + blk * WPB + PW0) * 4 + word % PW0).to(tl.uint32)
        even = nib(w0, (p1 & 0x55) * 0x410410)
        odd = nib(w0 >> 4, (p1 & 0xAA) * 0x208208)
        part = tl.zeros([BN, BM], dtype=tl.float32)
        for a in tl.static_range(8):
            src = even if a % 2 == 0 else odd
            code = src >> (8 * (a // 2)) if a >= 2 else src
            w = shfl16(c_lane, code.to(tl.int32, bitcast=True)).to(tl.bfloat16, bitcast=True)
            xt = tl.load(xp_ptr + m * K_PAD + (a * KW + step * C + kcol), mask=m < M, other=0.0)
            part = tl.dot(w, xt, part)
        scale = tl.load(s_ptr + tl.minimum(n, N - 1) * stride_sn + blk).to(tl.float32)
        acc += part * (scale * (1.0 / tl.sqrt(float(B))))[:, None]
    if SPLIT == 1:
        tl.store(out_ptr + m * N + n[:, None], acc, mask=(m < M) & (n[:, None] < N))
    else:
        tl.atomic_add(out_ptr + m * N + n[:, None], acc, mask=(m < M) & (n[:, None] < N), sem="relaxed")

def cb_asm(bf16=True):
    import torch, struct
    from hlwq_ops.codebook import codebook
    c = codebook(5, torch.device("cpu")).to(torch.bfloat16).view(torch.int16).tolist()
    h = lambda v: "0x%04X" % (v & 0xFFFF)
    lines = ["{ .reg .u32 l; .reg .pred p; mov.u32 l, %laneid;", f"mov.b32 $0, {h(c[0])};"]
    for i in range(1, 32):
        lines.append(f"setp.eq.u32 p, l, {i}; @p mov.b32 $0, {h(c[i])};")
    return " ".join(lines) + " }"

