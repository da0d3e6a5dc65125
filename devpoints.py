"""Dev timing (not committed): solve_sample_batch B=1 large n through the softmin kernel."""
import sys, time, torch, ot_batch
torch.backends.cuda.matmul.allow_tf32 = False
for n, d in ((10000, 64), (50000, 64), (50000, 3), (20000, 1024)):
    g = torch.Generator(device="cuda").manual_seed(0)
    X = torch.randn(1, n, d, device="cuda", generator=g)
    Y = torch.randn(1, n, d, device="cuda", generator=g)
    kw = dict(reg=0.1 * d, max_iter=10, tol=0.0, lazy=True)
    r = ot_batch.solve_sample_batch(X, Y, **kw)
    torch.cuda.synchronize()
    ts = []
    for _ in range(3):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); r = ot_batch.solve_sample_batch(X, Y, **kw); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    ts.sort()
    print(f"solve_sample_batch B=1 n={n} d={d} 10 it: {ts[1]:.1f} ms value={float(r.value[0]):.6g} n_iter={int(r.log['n_iter'][0])}", flush=True)
