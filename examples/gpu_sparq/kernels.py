"""SparQ decode step on a GPU: Triton kernels for step 1, selection and the gathered attention.

One decode step, ``q (B, H, d)``, caches ``K, V (B, Hkv, S, d)`` and the transposed key copy
``Kt (B, Hkv, d, S)`` (K stored twice), a boolean ``mask (B, S)``:

* ``_prologue_kernel``: components ``i1`` (top-r of the group's summed ``|q|``), the selected
  query values, q restricted to the components, and the temperature ``tau``;
* ``_step1_kernel``: one program per (sequence, KV head, block of positions) loads the ``r``
  selected rows of ``Kt`` in place (``r`` contiguous runs of the block), computes the
  approximate logits in float32 (FMA, ``tl.dot`` or a row loop; ``_step1_chunked_kernel``
  takes the block a chunk at a time), writes the group score (the sum of the heads' logits,
  ``-inf`` where masked, ``+inf`` in the local window), the maximum of the score over each
  run of ``tour`` positions and, per head, the block's softmax statistics (max, sum of exp)
  for ``alpha``; the logits themselves only when asked (``return_steps``), since the checker
  judges them;
* selection: the tournament (:func:`tournament_topk` in torch ops, or ``_tour_kernel`` in
  one program per row): the top-k runs by their maximum, then the exact top-k of their
  entries; or ``torch.topk`` of the group score, or ``_select_kernel`` (radix select);
* ``_attend_kernel``: split over the ``k`` selected slots, one program per (sequence, KV
  head, split) gathers the K and V rows of its slots, online softmax of the exact logits, and
  the selected approximate-softmax mass (the approximate logits recomputed from the gathered K
  rows, so they are never re-read from memory);
* ``_combine_kernel``: merges the splits and the step-1 statistics into ``y``, ``alpha`` and
  ``out = alpha y + (1 - alpha) v_mean``.

``v_mean`` is an input (a running mean kept by the decoder, as the reference allows); when
absent it is computed with torch from V and the mask (a full read of V, as in the reference).
Options the golden suites exercise but the fast path does not fuse (``group_score="probs"``,
``topk="bucketed"``) are computed with torch from the kernel's outputs; see docs/gpu.md.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _prologue_kernel(
    Q, COMP, QS, QM, TAU, R,
    D: tl.constexpr, BD: tl.constexpr, G: tl.constexpr, BG: tl.constexpr, TEMP: tl.constexpr,
    SORT: tl.constexpr,
):  # fmt: skip
    """Per (sequence, selection group): components (top-r of the group's summed |q|, by value
    descending, ties to the lower index), the selected query values, q masked to the
    components, and the temperature of each head. ``SORT``: one sort of unique int64 keys
    (the sum's bits, then the complement of the index) instead of r argmax passes."""
    pid = tl.program_id(0).to(tl.int64)
    gg = tl.arange(0, BG)
    gmask = gg < G
    dd = tl.arange(0, BD)
    dmask = dd < D
    rows = pid * G + gg
    m2 = gmask[:, None] & dmask[None, :]
    qraw = tl.load(Q + rows[:, None] * D + dd[None, :], mask=m2, other=0.0)
    qa = tl.abs(qraw.to(tl.float32))
    a = tl.where(dmask, tl.sum(qa, axis=0), -1.0)
    if SORT:
        # a >= 0 on the valid lanes, so its float bits order like the values; lanes past D
        # get key -1, below every valid key
        bits = a.to(tl.int32, bitcast=True).to(tl.int64)
        key = tl.where(dmask, (bits << 16) | (65535 - dd.to(tl.int64)), -1)
        srt = tl.sort(key, descending=True)
        first = dd < R
        comp = (65535 - (srt & 65535)).to(tl.int32)
        tl.store(COMP + pid * R + dd, comp, mask=first)
        qsel = tl.load(Q + rows[:, None] * D + comp[None, :],
                       mask=gmask[:, None] & first[None, :], other=0.0)  # fmt: skip
        tl.store(QS + rows[:, None] * R + dd[None, :], qsel, mask=gmask[:, None] & first[None, :])
        kth = tl.min(tl.where(first, srt, 9223372036854775807), axis=0)
        sel = dmask & (key >= kth)
    else:
        sel = dd < 0
        for i in range(R):
            m = tl.max(a, axis=0)
            idx = tl.min(tl.where(a == m, dd, BD), axis=0)
            tl.store(COMP + pid * R + i, idx)
            hit = dd == idx
            qcol = tl.sum(tl.where(hit[None, :], qraw.to(tl.float32), 0.0), axis=1)
            tl.store(QS + rows * R + i, qcol.to(qraw.dtype), mask=gmask)
            a = tl.where(hit, -2.0, a)
            sel = sel | hit
    tl.store(QM + rows[:, None] * D + dd[None, :], tl.where(sel[None, :], qraw, 0.0), mask=m2)
    if TEMP == 0:
        den = tl.sum(qa, axis=1)
        num = tl.sum(tl.where(sel[None, :], qa, 0.0), axis=1)
        tau = tl.where(den > 0, tl.sqrt(D * num / tl.where(den > 0, den, 1.0)), tl.sqrt(D * 1.0))
    elif TEMP == 1:
        tau = tl.zeros([BG], dtype=tl.float32) + tl.sqrt(D * 1.0)
    else:
        tau = tl.zeros([BG], dtype=tl.float32) + tl.sqrt(R * 1.0)
    tl.store(TAU + rows, tau, mask=gmask)


@triton.jit
def _step1_kernel(
    Kt, QS, INV, TAU, STATE, SCORE, LOGITS, MPART, LPART, SUBMAX,
    S, NB, Hkv, SROW, NSUB,
    D: tl.constexpr, R: tl.constexpr, BR: tl.constexpr, G: tl.constexpr, BG: tl.constexpr,
    BS: tl.constexpr, WRITE_LOGITS: tl.constexpr, MODE: tl.constexpr, UPCAST: tl.constexpr,
    SUB: tl.constexpr,
):  # fmt: skip
    """MODE 0: FMA over a (r, BS) block; 1: ``tl.dot`` with the heads padded to 16; 2: a
    loop over the r selected rows, one contiguous ``BS`` load each, accumulated per head
    (no cross-thread reduction). ``SUB > 0``: also writes the maximum of the group score
    over each run of ``SUB`` consecutive positions (the tournament selection's first level);
    the score row then has ``SROW = NSUB * SUB >= S`` entries, ``-inf`` past ``S``."""
    pid_bh = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1)
    b = pid_bh // Hkv
    offs = pid_s * BS + tl.arange(0, BS)
    smask = offs < S
    st = tl.load(STATE + b * S + offs, mask=smask, other=0)
    valid = st > 0
    rr = tl.arange(0, BR)
    rmask = rr < R
    gg = tl.arange(0, BG)
    gmask = gg < G
    rows = pid_bh * G + gg
    if MODE != 2:
        ci = tl.load(INV + pid_bh * R + rr, mask=rmask, other=0).to(tl.int64)
        ptrs = Kt + (pid_bh * D + ci[:, None]) * S + offs[None, :]
        # the load is masked by block bounds only (a data-dependent mask would split the
        # vector loads); masked positions are discarded below
        kt = tl.load(ptrs, mask=rmask[:, None] & smask[None, :], other=0.0)
    if MODE == 2:
        dot = tl.zeros([BG, BS], dtype=tl.float32)
        for i in tl.static_range(R):
            c = tl.load(INV + pid_bh * R + i).to(tl.int64)
            row = tl.load(Kt + (pid_bh * D + c) * S + offs, mask=smask, other=0.0)
            qi = tl.load(QS + rows * R + i, mask=gmask, other=0.0)
            dot += qi.to(tl.float32)[:, None] * row.to(tl.float32)[None, :]
    elif MODE == 1:
        qs = tl.load(QS + rows[:, None] * R + rr[None, :], mask=gmask[:, None] & rmask[None, :],
                     other=0.0)  # fmt: skip
        if UPCAST:
            dot = tl.dot(qs.to(tl.float32), kt.to(tl.float32))
        else:
            dot = tl.dot(qs, kt)  # (BG, BS), fp32 accumulation
    else:
        ktf = kt.to(tl.float32)
        dot = tl.zeros([BG, BS], dtype=tl.float32)
        for j in tl.static_range(G):
            qj = tl.load(QS + (pid_bh * G + j) * R + rr, mask=rmask, other=0.0).to(tl.float32)
            dj = tl.sum(qj[:, None] * ktf, axis=0)
            dot = tl.where(gg[:, None] == j, dj[None, :], dot)
    tau = tl.load(TAU + rows, mask=gmask, other=1.0)
    s = tl.where(tau[:, None] > 0, dot / tau[:, None], 0.0)
    s = tl.where(valid[None, :], s, float("-inf"))
    if WRITE_LOGITS:
        tl.store(LOGITS + rows[:, None] * S + offs[None, :], s,
                 mask=gmask[:, None] & smask[None, :])  # fmt: skip
    gs = tl.sum(tl.where(gmask[:, None], s, 0.0), axis=0)
    m = tl.max(s, axis=1)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    lsum = tl.sum(tl.exp(s - m_safe[:, None]), axis=1)
    tl.store(MPART + rows * NB + pid_s, m, mask=gmask)
    tl.store(LPART + rows * NB + pid_s, lsum, mask=gmask)
    gs = tl.where(st == 2, float("inf"), gs)
    tl.store(SCORE + pid_bh * SROW + offs, gs, mask=offs < SROW)
    if SUB > 0:
        sm = tl.max(tl.reshape(gs, [BS // SUB, SUB]), axis=1)
        so = pid_s * (BS // SUB) + tl.arange(0, BS // SUB)
        tl.store(SUBMAX + pid_bh * NSUB + so, sm, mask=so < NSUB)


@triton.jit
def _step1_chunked_kernel(
    Kt, QS, INV, TAU, STATE, SCORE, LOGITS, MPART, LPART, SUBMAX,
    S, NB, Hkv, SROW, NSUB,
    D: tl.constexpr, R: tl.constexpr, BR: tl.constexpr, G: tl.constexpr, BG: tl.constexpr,
    BS: tl.constexpr, WRITE_LOGITS: tl.constexpr, SUB: tl.constexpr, CH: tl.constexpr,
    STAGES: tl.constexpr,
):  # fmt: skip
    """Step 1 with the FMA variant over ``BS`` positions per program, taken ``CH`` at a time
    (a smaller register footprint, so more programs fit on an SM), with the softmax
    statistics of the block merged online. Same outputs as :func:`_step1_kernel`."""
    pid_bh = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1)
    b = pid_bh // Hkv
    rr = tl.arange(0, BR)
    rmask = rr < R
    gg = tl.arange(0, BG)
    gmask = gg < G
    rows = pid_bh * G + gg
    ci = tl.load(INV + pid_bh * R + rr, mask=rmask, other=0).to(tl.int64)
    tau = tl.load(TAU + rows, mask=gmask, other=1.0)
    m_run = tl.full([BG], float("-inf"), dtype=tl.float32)
    l_run = tl.zeros([BG], dtype=tl.float32)
    for c0 in tl.range(0, BS, CH, num_stages=STAGES):
        offs = pid_s * BS + c0 + tl.arange(0, CH)
        smask = offs < S
        st = tl.load(STATE + b * S + offs, mask=smask, other=0)
        kt = tl.load(Kt + (pid_bh * D + ci[:, None]) * S + offs[None, :],
                     mask=rmask[:, None] & smask[None, :], other=0.0).to(tl.float32)  # fmt: skip
        dot = tl.zeros([BG, CH], dtype=tl.float32)
        for j in tl.static_range(G):
            qj = tl.load(QS + (pid_bh * G + j) * R + rr, mask=rmask, other=0.0).to(tl.float32)
            dj = tl.sum(qj[:, None] * kt, axis=0)
            dot = tl.where(gg[:, None] == j, dj[None, :], dot)
        sc = tl.where(tau[:, None] > 0, dot / tau[:, None], 0.0)
        sc = tl.where((st > 0)[None, :], sc, float("-inf"))
        if WRITE_LOGITS:
            tl.store(LOGITS + rows[:, None] * S + offs[None, :], sc,
                     mask=gmask[:, None] & smask[None, :])  # fmt: skip
        m_new = tl.maximum(m_run, tl.max(sc, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_run = l_run * tl.exp(m_run - m_safe) + tl.sum(tl.exp(sc - m_safe[:, None]), axis=1)
        m_run = m_new
        gs = tl.sum(tl.where(gmask[:, None], sc, 0.0), axis=0)
        gs = tl.where(st == 2, float("inf"), gs)
        tl.store(SCORE + pid_bh * SROW + offs, gs, mask=offs < SROW)
        if SUB > 0:
            sm = tl.max(tl.reshape(gs, [CH // SUB, SUB]), axis=1)
            so = (pid_s * BS + c0) // SUB + tl.arange(0, CH // SUB)
            tl.store(SUBMAX + pid_bh * NSUB + so, sm, mask=so < NSUB)
    tl.store(MPART + rows * NB + pid_s, m_run, mask=gmask)
    tl.store(LPART + rows * NB + pid_s, l_run, mask=gmask)


@triton.jit
def _key(x):
    """Order-preserving int64 key of a float32 (in [0, 2**32))."""
    bi = x.to(tl.int32, bitcast=True)
    return tl.where(bi < 0, (~bi).to(tl.int64), bi.to(tl.int64) + 2147483648)


@triton.jit
def _tour_kernel(SCORE, SUBMAX, RUNS, IDX, VALS, SROW, NSUB, KR, KK,
                 SUB: tl.constexpr, NR: tl.constexpr, NC: tl.constexpr):  # fmt: skip
    """The tournament of :func:`tournament_topk` for one row in one program, with exact
    ties: keys ``(order key of the value) << 31 | (2**31 - 1 - index)`` are unique, so one
    sort of the ``NSUB`` run maxima gives the top ``KR`` runs and one sort of their
    ``KR * SUB`` entries the top ``KK`` positions in the reference's order (value
    descending, then index ascending). The chosen runs go through ``RUNS`` (global
    scratch, re-read after a barrier) because a register tensor cannot be indexed."""
    row = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, NR)
    m = tl.load(SUBMAX + row * NSUB + j, mask=j < NSUB, other=float("-inf"))
    key1 = tl.where(j < NSUB, (_key(m) << 31) | (2147483647 - j.to(tl.int64)), -1)
    s1 = tl.sort(key1, descending=True)
    runs = 2147483647 - (s1 & 2147483647)
    tl.store(RUNS + row * KR + j, runs, mask=j < KR)
    tl.debug_barrier()
    c = tl.arange(0, NC)
    cm = c < KR * SUB
    run = tl.load(RUNS + row * KR + c // SUB, mask=cm, other=0)
    pos = run * SUB + c % SUB
    v = tl.load(SCORE + row * SROW + pos, mask=cm, other=float("-inf"))
    key2 = tl.where(cm, (_key(v) << 31) | (2147483647 - pos), -1)
    s2 = tl.sort(key2, descending=True)
    top = 2147483647 - (s2 & 2147483647)
    om = c < KK
    tl.store(IDX + row * KK + c, top, mask=om)
    tl.store(VALS + row * KK + c, tl.load(SCORE + row * SROW + top, mask=om, other=0.0), mask=om)


@triton.jit
def _select_kernel(SCORE, IDX, VALS, S, KK, BLOCK: tl.constexpr):
    """Exact top-k of one row of the group score by radix select: four passes of 8-bit
    histograms find the k-th largest key, a fifth pass compacts the positions above it and the
    first (lowest-index) positions equal to it. Positions come out in index order."""
    row = tl.program_id(0).to(tl.int64)
    base = SCORE + row * S
    prefix = tl.zeros([], dtype=tl.int64)
    need = KK
    bins = tl.arange(0, 512)
    for p in tl.static_range(4):
        shift = 24 - 8 * p
        hist = tl.zeros([512], dtype=tl.int32)
        for off in range(0, S, BLOCK):
            o = off + tl.arange(0, BLOCK)
            key = _key(tl.load(base + o, mask=o < S, other=float("-inf")))
            digit = ((key >> shift) & 255).to(tl.int32)
            if p == 0:
                match = o < S
            else:
                match = (o < S) & ((key >> (shift + 8)) == (prefix >> (shift + 8)))
            hist += tl.histogram(tl.where(match, digit, 256), 512)
        hist = tl.where(bins < 256, hist, 0)
        suffix = tl.sum(hist, axis=0) - tl.cumsum(hist, axis=0) + hist  # count of digits >= t
        t = tl.max(tl.where(suffix >= need, bins, -1), axis=0)
        above = tl.sum(tl.where(bins > t, hist, 0), axis=0)
        need = need - above
        prefix = prefix | (t.to(tl.int64) << shift)
    taken = tl.zeros([], dtype=tl.int32)
    eq_seen = tl.zeros([], dtype=tl.int32)
    for off in range(0, S, BLOCK):
        o = off + tl.arange(0, BLOCK)
        x = tl.load(base + o, mask=o < S, other=float("-inf"))
        key = _key(x)
        inb = o < S
        gt = inb & (key > prefix)
        eq = inb & (key == prefix)
        eq_rank = eq_seen + tl.cumsum(eq.to(tl.int32), axis=0) - 1
        take = gt | (eq & (eq_rank < need))
        slot = taken + tl.cumsum(take.to(tl.int32), axis=0) - 1
        tl.store(IDX + row * KK + slot, o.to(tl.int64), mask=take)
        tl.store(VALS + row * KK + slot, x, mask=take)
        taken += tl.sum(take.to(tl.int32), axis=0)
        eq_seen += tl.sum(eq.to(tl.int32), axis=0)


@triton.jit
def _attend_kernel(
    K, V, Q, QM, TAU, IDX, VALS, MO, LO, ACC, ANUM, MG,
    S, KK, CH, NSPLIT, sm_scale,
    D: tl.constexpr, BD: tl.constexpr, G: tl.constexpr, BG: tl.constexpr, BK: tl.constexpr,
    UPCAST: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0).to(tl.int64)
    sp = tl.program_id(1)
    gg = tl.arange(0, BG)
    gmask = gg < G
    dd = tl.arange(0, BD)
    dmask = dd < D
    qrow = pid_bh * G + gg
    q = tl.load(Q + qrow[:, None] * D + dd[None, :], mask=gmask[:, None] & dmask[None, :],
                other=0.0)  # fmt: skip
    qm = tl.load(QM + qrow[:, None] * D + dd[None, :], mask=gmask[:, None] & dmask[None, :],
                 other=0.0)  # fmt: skip
    tau = tl.load(TAU + qrow, mask=gmask, other=1.0)
    mg = tl.load(MG + qrow, mask=gmask, other=0.0)  # global max of the approximate logits
    m_i = tl.full([BG], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BG], dtype=tl.float32)
    a_i = tl.zeros([BG], dtype=tl.float32)
    acc = tl.zeros([BG, BD], dtype=tl.float32)
    start = sp * CH
    for off in tl.range(start, start + CH, BK, num_stages=STAGES):
        kk = off + tl.arange(0, BK)
        inb = kk < KK
        val = tl.load(VALS + pid_bh * KK + kk, mask=inb, other=float("-inf"))
        ok = inb & (val > float("-inf"))
        pos = tl.load(IDX + pid_bh * KK + kk, mask=ok, other=0).to(tl.int64)
        base = (pid_bh * S + pos) * D
        kr = tl.load(K + base[:, None] + dd[None, :], mask=ok[:, None] & dmask[None, :], other=0.0)
        vr = tl.load(V + base[:, None] + dd[None, :], mask=ok[:, None] & dmask[None, :], other=0.0)
        if UPCAST:  # Triton's interpreter gets bf16 tl.dot wrong: test the logic in fp32
            q = q.to(tl.float32)
            qm = qm.to(tl.float32)
            kr = kr.to(tl.float32)
            vr = vr.to(tl.float32)
        lg = tl.dot(q, tl.trans(kr)) * sm_scale
        lg = tl.where(ok[None, :], lg, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(lg, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(lg - m_safe[:, None])
        corr = tl.exp(m_i - m_safe)
        l_i = l_i * corr + tl.sum(p, axis=1)
        acc = acc * corr[:, None] + tl.dot(p.to(vr.dtype), vr)
        m_i = m_new
        sa = tl.dot(qm, tl.trans(kr))
        sa = tl.where(tau[:, None] > 0, sa / tau[:, None], 0.0)
        a_i += tl.sum(tl.where(ok[None, :], tl.exp(sa - mg[:, None]), 0.0), axis=1)
    out_row = (pid_bh * NSPLIT + sp) * G + gg
    tl.store(MO + out_row, m_i, mask=gmask)
    tl.store(LO + out_row, l_i, mask=gmask)
    tl.store(ANUM + out_row, a_i, mask=gmask)
    tl.store(ACC + out_row[:, None] * D + dd[None, :], acc, mask=gmask[:, None] & dmask[None, :])


@triton.jit
def _combine_kernel(
    MO, LO, ACC, ANUM, Z, VMEAN, Y, ALPHA, OUT,
    NSPLIT, HKVV, GV,
    D: tl.constexpr, BD: tl.constexpr, G: tl.constexpr, BG: tl.constexpr,
    BSP: tl.constexpr, REALLOC: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0).to(tl.int64)
    gg = tl.arange(0, BG)
    gmask = gg < G
    dd = tl.arange(0, BD)
    dmask = dd < D
    qrow = pid_bh * G + gg
    # step-1 statistics, reduced by torch: the global max (as 0 when -inf) and the normaliser
    # of each head's approximate softmax (a loop over the per-block partials here hit a
    # Triton 3.6 compiler failure, TritonGPUOptimizeThreadLocality, at NB >= 64 with g = 4)
    z = tl.load(Z + qrow, mask=gmask, other=1.0)
    # merge the splits of the gathered attention
    ss = tl.arange(0, BSP)
    smk = gmask[:, None] & (ss < NSPLIT)[None, :]
    srow = (pid_bh * NSPLIT + ss[None, :]) * G + gg[:, None]  # (BG, BSP)
    mo = tl.load(MO + srow, mask=smk, other=float("-inf"))
    lo = tl.load(LO + srow, mask=smk, other=0.0)
    an = tl.load(ANUM + srow, mask=smk, other=0.0)
    m = tl.max(mo, axis=1)
    w = tl.exp(mo - m[:, None])
    w = tl.where(smk, w, 0.0)
    lsum = tl.sum(lo * w, axis=1)
    y = tl.zeros([BG, BD], dtype=tl.float32)
    for s in range(0, NSPLIT):
        r = (pid_bh * NSPLIT + s) * G + gg
        ms = tl.load(MO + r, mask=gmask, other=float("-inf"))
        ws = tl.where(ms == float("-inf"), 0.0, tl.exp(ms - m))
        a = tl.load(ACC + r[:, None] * D + dd[None, :], mask=gmask[:, None] & dmask[None, :],
                    other=0.0)  # fmt: skip
        y += a * ws[:, None]
    y = y / lsum[:, None]
    if REALLOC:
        alpha = tl.sum(an, axis=1) / z
    else:
        alpha = tl.full([BG], 1.0, dtype=tl.float32)
    # v_mean row of each head's KV head (per-head selection repeats each KV head GV times)
    hkv_row = (pid_bh // HKVV) * (HKVV // GV) + (pid_bh % HKVV) // GV
    vm = tl.load(VMEAN + hkv_row * D + dd, mask=dmask, other=0.0).to(tl.float32)
    out = alpha[:, None] * y + (1.0 - alpha[:, None]) * vm[None, :]
    om = gmask[:, None] & dmask[None, :]
    tl.store(Y + qrow[:, None] * D + dd[None, :], y, mask=om)
    tl.store(ALPHA + qrow, alpha, mask=gmask)
    tl.store(OUT + qrow[:, None] * D + dd[None, :], out, mask=om)


def _p2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def mask_state(mask: torch.Tensor, local_window: int) -> torch.Tensor:
    """``(B, S)`` int8: 0 masked, 1 valid, 2 one of the ``local_window`` most recent valid."""
    recent = mask.flip(-1).cumsum(-1).flip(-1)
    local = mask & (recent <= local_window)
    return mask.to(torch.int8) + local.to(torch.int8)


def masked_v_mean(V: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask[:, None, :, None].to(torch.float32)
    return (V.float() * w).sum(2) / w.sum(2)


STEP1_MODES = {"fma": 0, "dot": 1, "loop": 2, "fmac": 0}
#: the one-program tournament (select="tourk") sorts at most this many runs or candidates
TOUR_MAX = 4096


class Config:
    """Tuning knobs. The defaults are the benchmark's picks on an H200 (docs/gpu.md): the FMA
    step 1 over 2048 positions per program, the tournament over runs of 8, the sorted
    prologue, three pipeline stages in the gathered attention.

    ``step1``: "fma", "dot", "loop" or "fmac" (FMA over ``s1_chunk`` positions at a time,
    ``s1_stages`` pipeline stages; ``dot=True/False`` is the older spelling), with its block
    of positions ``bs`` and warps ``s1_warps``. ``select``: "topk" (``torch.topk`` of
    the score), "radix" (``_select_kernel``) or "tour" (:func:`tournament_topk` over runs of
    ``tour`` positions; "tourk": the same in one Triton program per row, :func:`_tour_kernel`,
    with runs widened so that at most ``TOUR_MAX`` runs and candidates are sorted). The
    gathered attention: block ``bk``, warps ``at_warps``,
    software-pipeline stages ``at_stages``, about ``target_programs`` programs in all.
    ``prologue``: "sort" (one sort) or "loop" (r argmax passes). ``sort_positions``: the
    gathered attention reads the kept rows in ascending position order (a sort of the k
    indices per row first)."""

    def __init__(self, bs=2048, s1_warps=4, dot=None, bk=32, at_warps=4, target_programs=528,
                 select="tour", sel_block=1024, sel_warps=4, step1=None, tour=8,
                 sort_positions=False, prologue="sort", at_stages=3, s1_chunk=256,
                 s1_stages=1):  # fmt: skip
        self.bs, self.s1_warps, self.bk, self.at_warps = bs, s1_warps, bk, at_warps
        if step1 is None:
            step1 = "fma" if dot is None else ("dot" if dot else "fma")
        self.step1 = step1
        if self.step1 not in STEP1_MODES:
            raise ValueError(f"step1: expected one of {sorted(STEP1_MODES)}, got {step1!r}")
        if select not in ("topk", "radix", "tour", "tourk"):
            raise ValueError(f"select: expected topk, radix, tour or tourk, got {select!r}")
        self.dot = self.step1 == "dot"
        self.select, self.sel_block, self.sel_warps = select, sel_block, sel_warps
        self.target_programs, self.tour = target_programs, int(tour)
        self.sort_positions = bool(sort_positions)
        if prologue not in ("sort", "loop"):
            raise ValueError(f"prologue: expected sort or loop, got {prologue!r}")
        self.prologue, self.at_stages = prologue, int(at_stages)
        self.s1_chunk, self.s1_stages = int(s1_chunk), int(s1_stages)


def tournament_topk(score, submax, sub, k, sorted_out):
    """Exact top-k of each row of ``score (..., n)`` from the maxima ``submax (..., n / sub)``
    of its runs of ``sub`` consecutive entries: the top-k runs by maximum, then the top-k of
    their ``k * sub`` entries.

    Exact (as a set of values; ties at the k-th value may resolve to other, equal entries):
    let T be the k-th largest value. A run whose maximum exceeds T holds an element above T,
    and fewer than k elements exceed T, so fewer than k runs have a maximum above T and all
    of them are among the top-k runs; they contain every element above T. If fewer than k
    runs have a maximum >= T, every element >= T is a candidate; otherwise the top-k runs
    with maximum T (k minus the runs above T of them) each hold an element equal to T, which
    with those above T make at least k candidates >= T. So the candidates hold a top-k of
    the row, and their top-k is one."""
    kr = min(k, submax.shape[-1])
    _, runs = submax.topk(kr, dim=-1, sorted=False)
    cand = (runs[..., None] * sub + torch.arange(sub, device=score.device)).flatten(-2)
    vals, j = score.gather(-1, cand).topk(k, dim=-1, sorted=sorted_out)
    return vals, cand.gather(-1, j)


def sparq_gpu(q, K, Kt, V, mask, *, r, k, local_window=0, reallocate=True, temperature="l1",
              group_score="logits", selection="group", topk="exact", num_buckets=None,
              k_per_bucket=1, interleaved=True, v_mean=None, state=None, return_steps=True,
              config=None, stop_after=None):  # fmt: skip
    """One SparQ decode step. ``q (B, H, d)``, ``K, V (B, Hkv, S, d)``, ``Kt (B, Hkv, d, S)``
    (fp16 or bf16, contiguous, on one CUDA device), ``mask (B, S)`` bool. ``v_mean (B, Hkv,
    d)`` optional (computed from V if None); ``state`` optional precomputed
    :func:`mask_state` (shared by all layers of a decode step). Returns a dict: components,
    positions, alpha, v_mean, y, out (+ approx_logits, temperature when ``return_steps``)."""
    cfg = config or Config()
    B, H, d = q.shape
    Hkv0, S = K.shape[1], K.shape[2]
    dev = q.device
    if v_mean is None:
        v_mean = masked_v_mean(V, mask)
    if state is None:
        state = mask_state(mask, local_window)
    if selection == "head":
        g0 = H // Hkv0
        K = K.repeat_interleave(g0, dim=1)
        V = V.repeat_interleave(g0, dim=1)
        Kt = Kt.repeat_interleave(g0, dim=1)
    Hkv = K.shape[1]
    g = H // Hkv
    BD = max(16, _p2(d))
    f32 = torch.float32
    # prologue: components, selected query values, q restricted to them, temperature
    comp = torch.empty((B, Hkv, r), device=dev, dtype=torch.int32)
    qs = torch.empty((B, Hkv, g, r), device=dev, dtype=q.dtype)
    qm = torch.empty((B, Hkv, g, d), device=dev, dtype=q.dtype)
    tau = torch.empty((B, Hkv, g), device=dev, dtype=f32)
    temp = {"l1": 0, "sqrt_d": 1, "sqrt_r": 2}[temperature]
    _prologue_kernel[(B * Hkv,)](q, comp, qs, qm, tau, r, D=d, BD=BD, G=g, BG=_p2(g), TEMP=temp,
                                 SORT=cfg.prologue == "sort", num_warps=1)  # fmt: skip
    if stop_after == "prologue":
        return tau
    # step 1
    BS = min(cfg.bs, max(16, _p2(S)))
    NB = triton.cdiv(S, BS)
    kk = min(k, S)
    # the tournament pays when the k runs it keeps are a small part of the row
    sub = min(_p2(cfg.tour), BS) if cfg.tour > 0 else 0
    if cfg.select == "tourk" and sub > 0:  # at most TOUR_MAX runs for the one-program sort
        sub = min(max(sub, _p2(triton.cdiv(S, TOUR_MAX))), BS)
    tourk = (cfg.select == "tourk" and _p2(triton.cdiv(S, max(sub, 1))) <= TOUR_MAX
             and _p2(min(kk, triton.cdiv(S, max(sub, 1))) * sub) <= TOUR_MAX)  # fmt: skip
    tour = (cfg.select in ("tour", "tourk") and sub > 0 and kk * sub < S and topk == "exact"
            and (group_score == "logits" or g == 1))  # fmt: skip
    sub = sub if tour else 0
    nsub = triton.cdiv(S, sub) if tour else 1
    srow = nsub * sub if tour else S
    score_full = torch.empty((B, Hkv, srow), device=dev, dtype=f32)
    score = score_full[..., :S]
    submax = torch.empty((B, Hkv, nsub), device=dev, dtype=f32) if tour else score_full
    logits = torch.empty((B, Hkv, g, S), device=dev, dtype=f32) if return_steps else score_full
    mpart = torch.empty((B, Hkv, g, NB), device=dev, dtype=f32)
    lpart = torch.empty_like(mpart)
    if cfg.step1 == "fmac":
        ch = min(max(_p2(cfg.s1_chunk), sub), BS)
        _step1_chunked_kernel[(B * Hkv, triton.cdiv(srow, BS))](
            Kt, qs, comp, tau, state, score_full, logits, mpart, lpart, submax,
            S, NB, Hkv, srow, nsub,
            D=d, R=r, BR=_p2(r), G=g, BG=_p2(g), BS=BS, WRITE_LOGITS=return_steps, SUB=sub,
            CH=ch, STAGES=cfg.s1_stages, num_warps=cfg.s1_warps,
        )  # fmt: skip
    else:
        _step1_kernel[(B * Hkv, triton.cdiv(srow, BS))](
            Kt, qs, comp, tau, state, score_full, logits, mpart, lpart, submax,
            S, NB, Hkv, srow, nsub,
            D=d, R=r, BR=max(16, _p2(r)) if cfg.dot else _p2(r), G=g,
            BG=max(16, _p2(g)) if cfg.dot else _p2(g), BS=BS, WRITE_LOGITS=return_steps,
            MODE=STEP1_MODES[cfg.step1], UPCAST=_INTERPRET, SUB=sub, num_warps=cfg.s1_warps,
        )  # fmt: skip
    if stop_after == "step1":
        return score
    # selection
    if group_score == "probs" and g > 1:
        p = torch.softmax(logits, dim=-1)
        score = p.sum(2).masked_fill(~mask[:, None, :], float("-inf"))
        score = score.masked_fill(state[:, None, :] == 2, float("inf"))
    if topk == "bucketed":
        pos = _bucketed_positions(score, mask, local_window, k, num_buckets, k_per_bucket,
                                  interleaved)  # fmt: skip
        vals = torch.where(pos >= 0, 0.0, float("-inf")).to(f32)
        idx = pos.clamp(min=0)
    elif tour and tourk:
        kr = min(kk, nsub)
        runs = torch.empty((B, Hkv, kr), device=dev, dtype=torch.int64)
        idx = torch.empty((B, Hkv, kk), device=dev, dtype=torch.int64)
        vals = torch.empty((B, Hkv, kk), device=dev, dtype=f32)
        _tour_kernel[(B * Hkv,)](score_full, submax, runs, idx, vals, srow, nsub, kr, kk,
                                 SUB=sub, NR=_p2(nsub), NC=_p2(kr * sub),
                                 num_warps=cfg.sel_warps)  # fmt: skip
    elif tour:
        vals, idx = tournament_topk(score_full, submax, sub, kk, return_steps)
    elif cfg.select == "radix":
        idx = torch.empty((B, Hkv, kk), device=dev, dtype=torch.int64)
        vals = torch.empty((B, Hkv, kk), device=dev, dtype=f32)
        _select_kernel[(B * Hkv,)](score, idx, vals, S, kk, BLOCK=cfg.sel_block,
                                   num_warps=cfg.sel_warps)  # fmt: skip
        if return_steps:  # the reference's order: by score descending, ties by index
            vals, order = vals.sort(dim=-1, descending=True, stable=True)
            idx = idx.gather(-1, order)
    else:
        vals, idx = score.topk(kk, dim=-1, sorted=return_steps)
    if cfg.sort_positions and not return_steps:
        idx, perm = idx.sort(dim=-1)
        vals = vals.gather(-1, perm)
    if stop_after == "select":
        return idx
    # gathered attention, split over the selected slots
    BK = cfg.bk
    nsplit = max(1, min(triton.cdiv(kk, BK), triton.cdiv(cfg.target_programs, B * Hkv), 64))
    CH = triton.cdiv(triton.cdiv(kk, nsplit), BK) * BK
    nsplit = triton.cdiv(kk, CH)
    mo = torch.empty((B, Hkv, nsplit, g), device=dev, dtype=f32)
    lo, anum = torch.empty_like(mo), torch.empty_like(mo)
    acc = torch.empty((B, Hkv, nsplit, g, d), device=dev, dtype=f32)
    mg = mpart.amax(-1)
    mg = torch.where(mg == float("-inf"), 0.0, mg)
    z = (lpart * torch.exp(mpart - mg[..., None])).sum(-1)
    _attend_kernel[(B * Hkv, nsplit)](
        K, V, q, qm, tau, idx, vals, mo, lo, acc, anum, mg,
        S, kk, CH, nsplit, 1.0 / math.sqrt(d),
        D=d, BD=BD, G=g, BG=max(16, _p2(g)), BK=BK, UPCAST=_INTERPRET, STAGES=cfg.at_stages,
        num_warps=cfg.at_warps,
    )  # fmt: skip
    y = torch.empty((B, H, d), device=dev, dtype=f32)
    alpha = torch.empty((B, H), device=dev, dtype=f32)
    out = torch.empty_like(y)
    _combine_kernel[(B * Hkv,)](
        mo, lo, acc, anum, z, v_mean, y, alpha, out,
        nsplit, Hkv, Hkv // Hkv0,
        D=d, BD=BD, G=g, BG=_p2(g), BSP=max(2, _p2(nsplit)),
        REALLOC=bool(reallocate), num_warps=4,
    )  # fmt: skip
    res = dict(components=comp, alpha=alpha, v_mean=v_mean, y=y, out=out)
    if return_steps:
        res["positions"] = torch.where(vals > float("-inf"), idx, torch.full_like(idx, -1))
        res["approx_logits"] = logits.view(B, H, S)
        res["temperature"] = tau.view(B, H)
    else:
        res["positions"], res["valid"] = idx, vals
    return res


def _bucketed_positions(score, mask, local_window, k, num_buckets, k_per_bucket, interleaved):
    """The bucketed top-k on the kernel's group score: a Python loop over rows borrowed from
    the plain PyTorch example (validation only; not fused, not fast)."""
    import importlib.util
    from pathlib import Path

    p = Path(__file__).resolve().parents[1] / "torch_sparq.py"
    spec = importlib.util.spec_from_file_location("torch_sparq", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    B, Hkv, S = score.shape
    kk = min(k, S)
    pos = torch.full((B, Hkv, kk), -1, device=score.device, dtype=torch.int64)
    for b in range(B):
        valid = mask[b].nonzero().flatten()
        n_sel, n_local = min(k, valid.numel()), min(local_window, valid.numel())
        for h in range(Hkv):
            row = mod._bucketed_row(score[b, h], valid, n_local, n_sel, num_buckets,
                                    k_per_bucket, interleaved)  # fmt: skip
            pos[b, h, : row.numel()] = row
    return pos
