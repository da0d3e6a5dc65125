"""Exact transport between uniform weights, batched: epsilon-scaling auction, one program each.

With uniform weights ``a = 1/n`` and ``b = 1/m`` an optimal plan is found among assignments of
an expanded problem: with ``g = gcd(n, m)``, ``r = m // g`` and ``c = n // g``, ``L = n r = m c``
persons (person ``p`` a copy of row ``p // r``) are assigned to ``L`` objects (object ``q`` a
copy of column ``q // c``) at cost ``C[p // r, q // c]``; each pair carries mass ``1 / L``, so
every row receives ``r / L = 1/n`` and every column ``c / L = 1/m``. The expanded matrix is
never formed: the kernel indexes into ``C``.

The solver is Bertsekas' forward auction in minimisation form, with Jacobi bidding and
epsilon scaling. Objects have prices; an unassigned person ``p`` looks at
``w[q] = cost(p, q) + price[q]``, takes its best object ``q1`` (value ``w1``; lowest index
among ties) and bids ``price[q1] + (w2 - w1) + eps`` where ``w2`` is its second best value. All
unassigned persons bid at once (a round); each object that got bids goes to the highest
bidder (lowest person index among equal bids), at that price, and its previous owner becomes
unassigned. A person who wins an object is within ``eps`` of its best value at the prices of
that moment, and prices only rise, so every assigned person keeps

    cost(p, own(p)) + price[own(p)] <= min_q (cost(p, q) + price[q]) + eps

(epsilon-complementary slackness). Summed over the ``L`` persons of a complete assignment,
this puts its cost within ``L eps`` of the optimal assignment's; with mass ``1 / L`` per pair
the plan's transport cost is within ``eps`` of the optimal transport cost. For integer costs
and ``eps < 1 / L`` the assignment is exactly optimal.

Epsilon scaling: a phase runs rounds at a fixed ``eps`` until every person is assigned; then
``eps`` is divided by ``theta`` (never below ``eps_final``) and the next phase starts from the
same prices, releasing only the persons whose assignment violates epsilon-complementary
slackness at the new ``eps``. Prices from a coarse phase are nearly right for the finer one,
so each phase needs few rounds; the solve ends once the phase at ``eps_final`` has ended.

The whole solve of a problem is one loop inside one program (grid ``(B,)``): no host
synchronisation and no launch per round, and each problem stops on its own. Prices and owners
are vectors over the objects held in registers. A small scratch array in global memory (read
back through L1/L2, ordered by ``tl.debug_barrier``) keeps each person's object, from which a
round lists its unassigned persons (a cumulative sum) and bids in chunks of ``BLOCK_P`` of
them: a ``(BLOCK_P, BLOCK_L)`` tile of costs plus prices, reduced over the objects for each
bidder's best and second best, then over the bidders for each object's best bid. Once at most
``SEQ_BELOW`` persons are unassigned, the phase finishes one bid at a time (Gauss-Seidel: the
person displaced by a bid bids next), a vector operation per bid instead of a round of tiles;
this keeps every property above, and each such bid counts as one round. (Most rounds of a
phase are such chains of single displacements.) All arithmetic is in float64: the increments
``eps`` are tiny next to the prices.

Without scratch (``TUNING["scratch"] = False``) ownership of a chunk of persons is found by
comparing the owner vector with the chunk's indices, every chunk every round: several times
slower on a GPU, kept for comparison.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

# the largest L = n m / gcd(n, m) one program handles, set in the driver (which routes larger
# problems to the host without importing Triton)
from .exact import MAX_SIZE as MAX_L

# Bid one person at a time once at most this many persons are unassigned.
SEQ_BELOW = 4
# Tunables for experiments: "block_p", "warps", "scratch", "seq_below".
TUNING: dict = {}


class AuctionResult(NamedTuple):
    """Outputs of :func:`auction`, each with a leading batch dimension ``B``.

    owner : (B, L) int32, the person owning each object (-1 where a problem did not converge)
    price : (B, L) float64, the final prices of the objects
    rounds : (B,) int32, bidding rounds used, over all phases (a single bid in a phase's
        sequential tail counts as one round)
    converged : (B,) bool, whether the phase at ``eps_final`` ended within ``max_rounds``
    """

    owner: torch.Tensor
    price: torch.Tensor
    rounds: torch.Tensor
    converged: torch.Tensor


def expand(n: int, m: int) -> tuple[int, int, int]:
    """Copies per row and per column of the expanded assignment problem, and its size.

    Parameters
    ----------
    n, m : int
        Rows and columns of the transport problem (uniform weights ``1/n`` and ``1/m``).

    Returns
    -------
    r, c, L : int
        Each row is copied ``r = m // gcd(n, m)`` times and each column ``c = n // gcd(n, m)``
        times, for ``L = n r = m c`` persons and objects.

    Examples
    --------
    >>> expand(4, 6)
    (3, 2, 12)
    >>> expand(5, 5)
    (1, 1, 5)
    """
    n, m = int(n), int(m)
    if n < 1 or m < 1:
        raise ValueError(f"n and m must be >= 1, got n={n}, m={m}")
    g = math.gcd(n, m)
    r, c = m // g, n // g
    return r, c, n * r


@triton.jit
def _cost(Cb, pp, qq, pm, qm, r, c, m):
    """Expanded costs ``C[p // r, q // c]`` of a chunk of persons (float64; 0 outside)."""
    rows = (pp // r).to(tl.int64)
    cols = qq // c
    x = tl.load(Cb + rows[:, None] * m + cols[None, :], mask=pm[:, None] & qm[None, :],
                other=0.0)
    return x.to(tl.float64)


@triton.jit
def _bid(Cb, pp, free, qq, qm, price, eps, r, c, m, maxbid, winner, BLOCK_P: tl.constexpr,
         BLOCK_L: tl.constexpr):
    """Fold the bids of the persons ``pp`` (those with ``free``) into ``maxbid``/``winner``."""
    INF = float("inf")
    w = _cost(Cb, pp, qq, free, qm, r, c, m) + price[None, :]
    w = tl.where(qm[None, :], w, INF)
    w1 = tl.min(w, axis=1)
    q1 = tl.min(tl.where(w == w1[:, None], qq[None, :], BLOCK_L), axis=1)
    w2 = tl.min(tl.where(qq[None, :] == q1[:, None], INF, w), axis=1)
    p1 = tl.sum(tl.where(qq[None, :] == q1[:, None], price[None, :], 0.0), axis=1)
    w2 = tl.where(w2 < INF, w2, w1)  # a single object
    bid = p1 + (w2 - w1) + eps
    bidder = (qq[None, :] == q1[:, None]) & free[:, None]
    bids = tl.where(bidder, bid[:, None], -INF)
    cmax = tl.max(bids, axis=0)
    cwin = tl.min(tl.where(bidder & (bids == cmax[None, :]), pp[:, None], 2147483647), axis=0)
    # chunks come in increasing person order: an earlier (smaller) person keeps a tie
    better = cmax > maxbid
    return tl.where(better, cmax, maxbid), tl.where(better, cwin, winner)


@triton.jit
def _auction_kernel(C, eps0_ptr, epsf_ptr, owner_out, price_out, rounds_out, conv_out,
                    pobj_ptr, list_ptr, n, m, r, c, L, theta, max_rounds, seq_below,
                    BLOCK_P: tl.constexpr, BLOCK_L: tl.constexpr, SCRATCH: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    Cb = C + pid * n * m
    qq = tl.arange(0, BLOCK_L)
    qm = qq < L
    INF = float("inf")
    price = tl.zeros([BLOCK_L], dtype=tl.float64)
    owner = tl.full([BLOCK_L], -1, dtype=tl.int32)
    pobj = pobj_ptr + pid * L  # SCRATCH: the object of each person (-1: unassigned)
    flist = list_ptr + pid * L  # SCRATCH: the unassigned persons of a round, in order
    if SCRATCH:
        tl.store(pobj + qq, owner, mask=qm)
        tl.debug_barrier()
    eps_f = tl.load(epsf_ptr + pid).to(tl.float64)
    eps = tl.maximum(tl.load(eps0_ptr + pid).to(tl.float64), eps_f)
    rounds = 0
    state = 0  # 0: running, 1: converged, 2: out of rounds
    while state == 0:
        nfree = tl.sum((qm & (owner < 0)).to(tl.int32), axis=0)
        if nfree == 0:  # the phase ended: every person (and object) is assigned
            if eps <= eps_f:
                state = 1
            else:
                eps = tl.maximum(eps / theta, eps_f)
                # release the persons violating eps-complementary slackness at the new eps
                release = qq < 0
                for p0 in range(0, L, BLOCK_P):
                    pp = p0 + tl.arange(0, BLOCK_P)
                    pm = pp < L
                    match = (owner[None, :] == pp[:, None]) & pm[:, None]
                    w = _cost(Cb, pp, qq, pm, qm, r, c, m) + price[None, :]
                    w = tl.where(qm[None, :], w, INF)
                    wmin = tl.min(w, axis=1)
                    wown = tl.sum(tl.where(match, w, 0.0), axis=1)
                    viol = wown > wmin + eps
                    rel = tl.max((match & viol[:, None]).to(tl.int32), axis=0)
                    release = release | (rel > 0)
                if SCRATCH:
                    tl.store(pobj + owner, -1, mask=release)
                    tl.debug_barrier()
                owner = tl.where(release, -1, owner)
        elif rounds >= max_rounds:
            state = 2
        elif nfree <= seq_below:  # (seq_below < 0 without SCRATCH)
            # few unassigned persons: one bid at a time (Gauss-Seidel), a vector operation
            # each; the person displaced by a bid bids next. Each bid counts as a round.
            freep = qm & (tl.load(pobj + qq, mask=qm, other=0) < 0)
            p = tl.min(tl.where(freep, qq, BLOCK_L), axis=0)
            while (nfree > 0) & (rounds < max_rounds):
                row = tl.load(Cb + (p // r).to(tl.int64) * m + qq // c, mask=qm, other=0.0)
                w = tl.where(qm, row.to(tl.float64) + price, INF)
                w1 = tl.min(w, axis=0)
                q1 = tl.min(tl.where(w == w1, qq, BLOCK_L), axis=0)
                hit = qq == q1
                w2 = tl.min(tl.where(hit, INF, w), axis=0)
                prev = tl.max(tl.where(hit, owner, -1), axis=0)
                w2 = tl.where(w2 < INF, w2, w1)  # a single object
                price = tl.where(hit, price + (w2 - w1) + eps, price)
                owner = tl.where(hit, p, owner)
                freep = (freep & (qq != p)) | (qq == prev)
                rounds += 1
                if prev >= 0:
                    p = prev
                else:
                    nfree -= 1
                    p = tl.min(tl.where(freep, qq, BLOCK_L), axis=0)
            # every person is owned or unassigned: disjoint stores
            tl.store(pobj + owner, qq, mask=qm & (owner >= 0))
            tl.store(pobj + qq, -1, mask=freep)
            tl.debug_barrier()
        else:  # one round of bids from every unassigned person
            maxbid = tl.full([BLOCK_L], -INF, dtype=tl.float64)
            winner = tl.full([BLOCK_L], -1, dtype=tl.int32)
            if SCRATCH:
                # list the unassigned persons, then bid in chunks of that list only
                unassigned = qm & (tl.load(pobj + qq, mask=qm, other=0) < 0)
                slot = tl.cumsum(unassigned.to(tl.int32), axis=0) - 1
                tl.store(flist + slot, qq, mask=unassigned)
                tl.debug_barrier()
                for k0 in range(0, nfree, BLOCK_P):
                    kk = k0 + tl.arange(0, BLOCK_P)
                    free = kk < nfree
                    pp = tl.load(flist + kk, mask=free, other=0)
                    maxbid, winner = _bid(Cb, pp, free, qq, qm, price, eps, r, c, m, maxbid,
                                          winner, BLOCK_P, BLOCK_L)
            else:
                for p0 in range(0, L, BLOCK_P):
                    pp = p0 + tl.arange(0, BLOCK_P)
                    owned = tl.max((owner[None, :] == pp[:, None]).to(tl.int32), axis=1)
                    free = (pp < L) & (owned == 0)
                    if tl.sum(free.to(tl.int32), axis=0) > 0:
                        maxbid, winner = _bid(Cb, pp, free, qq, qm, price, eps, r, c, m,
                                              maxbid, winner, BLOCK_P, BLOCK_L)
            got = maxbid > -INF
            if SCRATCH:
                # winners were unassigned and the displaced owners were not: disjoint stores
                tl.store(pobj + owner, -1, mask=got & (owner >= 0))
                tl.store(pobj + winner, qq, mask=got)
                tl.debug_barrier()
            price = tl.where(got, maxbid, price)
            owner = tl.where(got, winner, owner)
            rounds += 1
    tl.store(owner_out + pid * L + qq, owner, mask=qm)
    tl.store(price_out + pid * L + qq, price, mask=qm)
    tl.store(rounds_out + pid, rounds)
    tl.store(conv_out + pid, (state == 1).to(tl.int32))


def _config(B: int, L: int) -> tuple[int, int, int]:
    """``(BLOCK_L, BLOCK_P, num_warps)`` for ``B`` problems of size ``L``.

    Measured on an H100 with float64 clouds: 8 warps and chunks of 2048 (BLOCK_L <= 256) or
    4096 elements from L = 128 up; below, 2 warps (4 for fewer than 256 problems, which leave
    SMs idle) and chunks of 512 elements a warp: many problems share an SM.
    """
    BLOCK_L = max(16, triton.next_power_of_2(L))
    if BLOCK_L >= 128:
        warps, tile = 8, (2048 if BLOCK_L <= 256 else 4096)
    else:
        warps = 2 if B >= 256 else 4
        tile = 512 * warps
    warps = TUNING.get("warps") or warps
    BLOCK_P = TUNING.get("block_p") or max(1, min(BLOCK_L, tile // BLOCK_L))
    return BLOCK_L, BLOCK_P, warps


def _eps_arg(x, name: str, B: int, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a float or a floating tensor, got {x.dtype}")
        if x.dim() > 1 or (x.dim() == 1 and x.shape[0] != B):
            raise ValueError(f"{name} must be a float or have shape ({B},), got "
                             f"{tuple(x.shape)}")
        if x.device != device:
            raise ValueError(f"{name} must be on the device of C ({device}), got {x.device}")
        return x.to(torch.float64).expand(B).contiguous()
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a float or a (B,) tensor, got {type(x).__name__}")
    return torch.full((B,), float(x), dtype=torch.float64, device=device)


def _launch(C: torch.Tensor, e0: torch.Tensor, ef: torch.Tensor, theta: float,
            max_rounds: int) -> AuctionResult:
    """Allocate the outputs and run the kernel on checked inputs (``C`` contiguous, ``e0``
    and ``ef`` float64 of shape (B,))."""
    B, n, m = C.shape
    r, c, L = expand(n, m)
    dev = C.device
    owner = torch.empty((B, L), dtype=torch.int32, device=dev)
    price = torch.empty((B, L), dtype=torch.float64, device=dev)
    rounds = torch.empty(B, dtype=torch.int32, device=dev)
    conv = torch.empty(B, dtype=torch.int32, device=dev)
    if B == 0:
        return AuctionResult(owner, price, rounds, conv.bool())
    BLOCK_L, BLOCK_P, warps = _config(B, L)
    scratch = TUNING.get("scratch", True)
    seq = int(TUNING.get("seq_below", SEQ_BELOW)) if scratch else -1
    # per person: its object, and the list of unassigned persons of a round
    work = torch.empty((2, B, L) if scratch else (2, 1), dtype=torch.int32, device=dev)
    _auction_kernel[(B,)](C, e0, ef, owner, price, rounds, conv, work[0], work[1], n, m, r,
                          c, L, float(theta), max_rounds, seq, BLOCK_P=BLOCK_P, BLOCK_L=BLOCK_L,
                          SCRATCH=scratch, num_warps=warps)
    return AuctionResult(owner, price, rounds, conv.bool())


def auction(C: torch.Tensor, eps0, eps_final, *, theta: float = 5.0,
            max_rounds: int = 100_000, check_values: bool = True) -> AuctionResult:
    """Exact transport between uniform weights for a batch of cost matrices (auction).

    Solves, for every problem ``b``, the assignment problem expanded from the transport
    problem with weights ``1/n`` and ``1/m`` (see :func:`expand`) by an epsilon-scaling
    forward auction, one Triton program per problem. The plan
    (:func:`plan_from_owner`) costs at most ``eps_final[b]`` more than the optimal transport
    cost; it is an optimal assignment when ``n == m`` and the costs are integers with
    ``eps_final < 1 / n``.

    Parameters
    ----------
    C : torch.Tensor, shape (B, n, m)
        Costs, float32 or float64, finite, on CUDA (or on the CPU with
        ``TRITON_INTERPRET=1``). Computation is in float64. ``n m / gcd(n, m)`` must be at
        most 4096.
    eps0 : float or torch.Tensor of shape (B,)
        Epsilon of the first phase, per problem (``>= 0``; ``(max C_b - min C_b) / 2`` is a
        good choice). Values below ``eps_final`` are raised to it.
    eps_final : float or torch.Tensor of shape (B,)
        Epsilon of the last phase, per problem (``> 0``); ``1e-12 * max |C_b|`` gives the
        optimum to about float64 precision.
    theta : float, default 5.0
        Factor by which epsilon shrinks from one phase to the next (``> 1``).
    max_rounds : int, default 100000
        Bidding rounds allowed per problem, over all phases (each bid of a phase's
        sequential tail, once at most ``SEQ_BELOW`` persons are unassigned, counts as one).
    check_values : bool, default True
        Check that ``C`` and the epsilons are finite (one device synchronisation); False for
        callers that checked them already.

    Returns
    -------
    AuctionResult
        ``owner`` (B, L) int32, ``price`` (B, L) float64, ``rounds`` (B,) int32 and
        ``converged`` (B,) bool. Where a problem did not converge, some objects have owner -1.

    Examples
    --------
    >>> C = torch.tensor([[[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]],
    ...                  device="cuda")  # doctest: +SKIP
    >>> res = auction(C, eps0=2.5, eps_final=1e-12)  # doctest: +SKIP
    >>> res.owner, res.converged  # doctest: +SKIP
    (tensor([[1, 0, 2]], device='cuda:0', dtype=torch.int32), tensor([True], device='cuda:0'))
    """
    if not isinstance(C, torch.Tensor):
        raise TypeError(f"C must be a torch.Tensor, got {type(C).__name__}")
    if C.dim() != 3:
        raise ValueError(f"C must have shape (B, n, m), got {C.dim()} dimensions")
    if C.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"C must be float32 or float64, got {C.dtype}")
    B, n, m = C.shape
    if n < 1 or m < 1:
        raise ValueError(f"C must have n >= 1 and m >= 1, got shape {tuple(C.shape)}")
    if not C.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"C must be on a CUDA device (or TRITON_INTERPRET=1), got {C.device}")
    r, c, L = expand(n, m)
    if L > MAX_L:
        raise ValueError(f"C of shape {tuple(C.shape)} expands to L = n m / gcd(n, m) = {L} "
                         f"persons and objects; at most {MAX_L} are supported")
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 1:
        raise ValueError(f"theta must be a float > 1, got {theta!r}")
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 0:
        raise ValueError(f"max_rounds must be an int >= 0, got {max_rounds!r}")
    max_rounds = min(max_rounds, 2**31 - 1)
    dev = C.device
    e0 = _eps_arg(eps0, "eps0", B, dev)
    ef = _eps_arg(eps_final, "eps_final", B, dev)
    if B == 0 or not check_values:  # a caller that checked the values spares the sync
        return _launch(C.contiguous(), e0, ef, float(theta), max_rounds)
    # one synchronisation for every value check
    bad = torch.stack([~torch.isfinite(C).all(), ~(torch.isfinite(e0) & (e0 >= 0)).all(),
                       ~(torch.isfinite(ef) & (ef > 0)).all()]).tolist()
    for flag, name, what in zip(bad, ("C", "eps0", "eps_final"),
                                ("finite", "finite and >= 0", "finite and > 0")):
        if flag:
            raise ValueError(f"{name} must be {what}")
    return _launch(C.contiguous(), e0, ef, float(theta), max_rounds)


def plan_from_owner(owner: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The (B, n, m) transport plan of expanded assignments, in float64.

    ``T[b, i, j]`` is the number of objects ``q`` with ``q // c == j`` owned by a person
    ``p = owner[b, q]`` with ``p // r == i``, divided by ``L`` (see :func:`expand`). Objects
    without owner (-1) carry no mass.

    Parameters
    ----------
    owner : torch.Tensor, shape (B, L), integer
        The person of each object, as returned by :func:`auction`.
    n, m : int
        Rows and columns of the transport problem.

    Returns
    -------
    torch.Tensor, shape (B, n, m), float64, on ``owner``'s device

    Examples
    --------
    >>> plan_from_owner(torch.tensor([[1, 0]]), 2, 2)
    tensor([[[0.0000, 0.5000],
             [0.5000, 0.0000]]], dtype=torch.float64)
    >>> plan_from_owner(torch.tensor([[0, 2, 3, 1]]), 2, 4).sum(1)
    tensor([[0.2500, 0.2500, 0.2500, 0.2500]], dtype=torch.float64)
    """
    r, c, L = expand(n, m)
    if not isinstance(owner, torch.Tensor) or owner.dim() != 2 or owner.shape[1] != L:
        raise ValueError(f"owner must be a (B, {L}) tensor for n={n}, m={m}")
    if owner.is_floating_point() or owner.dtype == torch.bool:
        raise TypeError(f"owner must be an integer tensor, got {owner.dtype}")
    B = owner.shape[0]
    p = owner.to(torch.int64)
    valid = p >= 0
    q = torch.arange(L, device=owner.device)
    idx = p.clamp_min(0) // r * m + (q // c)[None, :]
    T = torch.zeros((B, n * m), dtype=torch.float64, device=owner.device)
    T.scatter_add_(1, idx, valid.to(torch.float64) / L)
    return T.view(B, n, m)
