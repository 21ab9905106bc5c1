#!/usr/bin/env python3
"""Peer for `moire bench denoise`: the same U-Net (16/32/64, additive skips, residual, 2 input channels: the
frame and its temporal context) and adaptation step in PyTorch on the CPU. Prints one JSON line: inference_fps and
adapted_fps (2 steps of 2 crops of 64² per frame) at 512×512. With --serve, runs one `inference` or one
`adapted` frame per line read (interleave.py)."""
import json, os, sys, time
try:
    import torch, torch.nn as nn, torch.nn.functional as F
except ImportError:
    print(json.dumps({"error": "torch is not installed"})); sys.exit(0)
torch.set_num_threads(2)
class UNet(nn.Module):
    def __init__(s):
        super().__init__()
        c = lambda i, o, k=3, st=1: nn.Conv2d(i, o, k, st, k // 2)
        s.c = nn.ModuleList([c(2, 16), c(16, 16), c(16, 32, 3, 2), c(32, 32), c(32, 64, 3, 2), c(64, 64),
                             c(64, 32, 1), c(32, 32), c(32, 16, 1), c(16, 16), c(16, 1, 1)])
    def forward(s, x):
        a = lambda i, t: F.leaky_relu(s.c[i](t), 0.1)
        e1 = a(1, a(0, x)); e2 = a(3, a(2, e1)); b = a(5, a(4, e2))
        d2 = a(7, F.interpolate(s.c[6](b), scale_factor=2) + e2)
        d1 = a(9, F.interpolate(s.c[8](d2), scale_factor=2) + e1)
        return x[:, :1] + s.c[10](d1)
net = UNet(); opt = torch.optim.Adam(net.parameters(), 1e-3)
frame = torch.rand(1, 2, 512, 512)
def step():
    x = torch.rand(2, 2, 64, 64); t = torch.rand(2, 1, 64, 64)
    opt.zero_grad(); loss = F.mse_loss(net(x), t); loss.backward(); opt.step()
with torch.no_grad(): net(frame)
step()
def inference():
    with torch.no_grad(): net(frame)
def adapted():
    step(); step(); inference()
if sys.argv[1:] == ["--serve"]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from interleave import serve
    serve({"inference": inference, "adapted": adapted},
          {"peer": f"PyTorch {torch.__version__} (CPU, {torch.get_num_threads()} threads, same network and step)"})
    sys.exit(0)
n = 10
t0 = time.perf_counter()
with torch.no_grad():
    for _ in range(n): net(frame)
inf = n / (time.perf_counter() - t0)
t0 = time.perf_counter()
for _ in range(n):
    step(); step()
    with torch.no_grad(): net(frame)
print(json.dumps({"inference_fps": inf, "adapted_fps": n / (time.perf_counter() - t0)}))
