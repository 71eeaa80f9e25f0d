#!/usr/bin/python3
"""numpy_layer.py - the MoE layer from numpy (moe.Layer): fit y = a random teacher's output with
a hand-written Adam over the layer's own parameter and gradient views (no copies), then save it
in the safetensors layout that `moe layer` reads.

    PYTHONPATH=python MOE_LIBRARY=build/libmoe.so /usr/bin/python3 examples/numpy_layer.py
"""
import os
import sys
import tempfile

import numpy as np

import moe

rng = np.random.default_rng(0)
d, B = 32, 512
layer = moe.Layer(d=d, h=64, n=16, k=2, seed=1)
print(layer, "parameters:", {name: p.shape for name, p in layer.params.items()})

teacher = rng.standard_normal((d, d)).astype(np.float32) / np.sqrt(d)
x = rng.standard_normal((B, d)).astype(np.float32)
target = np.tanh(x @ teacher)

# Adam over the views: layer.params[name] and layer.grads[name] are the C layer's memory
m = {k: np.zeros_like(v) for k, v in layer.params.items()}
v = {k: np.zeros_like(p) for k, p in layer.params.items()}
lr, b1, b2 = 3e-3, 0.9, 0.999
for step in range(1, 301):
    y = layer.forward(x, train=True)           # noisy gating, from the layer's seeded stream
    err = y - target
    loss = float((err ** 2).mean())
    layer.zero_grad()
    layer.backward(2 * err / err.size)         # d(mse)/dy, plus the balancing losses' gradient
    for k, p in layer.params.items():
        g = layer.grads[k]
        m[k] = b1 * m[k] + (1 - b1) * g
        v[k] = b2 * v[k] + (1 - b2) * g * g
        p -= lr * (m[k] / (1 - b1 ** step)) / (np.sqrt(v[k] / (1 - b2 ** step)) + 1e-8)  # in place: C sees it
    if step % 50 == 0 or step == 1:
        s = layer.stats
        print("step %3d  mse %.4f  L_importance %.4f  L_load %.4f  max/mean load %.2f" %
              (step, loss, s["loss_importance"], s["loss_load"], s["max_mean_load"]))

y = layer.forward(x)  # evaluation: no noise
print("eval mse %.4f; tokens per expert %s" % (float(((y - target) ** 2).mean()), layer.counts().tolist()))
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "layer.safetensors")
    layer.save(path)
    again = moe.Layer.load(path)
    same = np.array_equal(again.forward(x), y)
    print("saved and loaded back:", "the same outputs" if same else "DIFFERENT outputs")
    sys.exit(0 if same else 1)
