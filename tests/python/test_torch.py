#!/usr/bin/python3
"""test_torch.py - moe.torch.MoE against the pure-PyTorch reference of the paper's layer (the
golden scripts' float64 autograd reference, tests/gen_golden*.py): outputs, the balancing loss,
and every gradient, flat and hierarchical, train and eval, k = 1..4; the aux loss's upstream
gradient; finite differences on x; zero-copy parameters under torch.optim; gradient
accumulation, zero_grad to None, two forwards before one backward; state_dict and files;
seeded noise; errors.

Run by ctest (tests/CMakeLists.txt) with MOE_LIBRARY and PYTHONPATH set; exits 77 (skipped)
when Debian's python3-torch is absent."""
import os
import sys
import tempfile
import unittest

try:
    import numpy as np
    import torch
except ImportError as e:
    print("skipped: %s (scripts/deps.sh --python installs python3-numpy and python3-torch)" % e)
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: the golden generators' reference
import gen_golden  # noqa: E402
import gen_golden_hier  # noqa: E402

import moe  # noqa: E402
import moe.torch as mt  # noqa: E402

torch.set_num_threads(1)


def cfg_of(d, h, n, k, bias, B, groups=0, k_groups=0, w_importance=0.1, w_load=0.05):
    return {"d": d, "h": h, "n": n, "k": k, "bias": bias, "B": B, "groups": groups, "k_groups": k_groups,
            "w_importance": w_importance, "w_load": w_load, "noise_eps": 0.01}


def draw_case(cfg, train, seed):
    """params, inputs and the float64 reference (outputs and gradients of sum(y*dy) + aux)"""
    if cfg["groups"]:
        p, inp, ref, _, _ = gen_golden_hier.draw(cfg, train, seed)
    else:
        p, inp, _, _ = gen_golden.draw(cfg, train, seed)
        ref = gen_golden.reference(p, inp, cfg, train)
    return p, inp, ref


def module_for(cfg, p, seed=0):
    m = mt.MoE(cfg["d"], cfg["h"], cfg["n"], cfg["k"], groups=cfg["groups"], k_groups=cfg["k_groups"],
               bias=bool(cfg["bias"]), w_importance=cfg["w_importance"], w_load=cfg["w_load"],
               noise_eps=cfg["noise_eps"], seed=seed)
    m.load_state_dict({name: torch.from_numpy(v) for name, v in p.items()})
    return m


def close(test, got, want, what, rtol=2e-4, atol=2e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    test.assertEqual(got.shape, want.shape, what)
    err = np.abs(got - want) - (atol + rtol * np.abs(want))
    test.assertTrue(np.all(err <= 0), "%s: max abs error %.3g (scale %.3g)" %
                    (what, float(np.abs(got - want).max()), float(np.abs(want).max())))


CASES = [  # (d, h, n, k, bias, B, groups, k_groups)
    (6, 7, 5, 1, 0, 9, 0, 0), (6, 7, 5, 2, 1, 9, 0, 0), (5, 6, 6, 3, 0, 11, 0, 0), (5, 6, 6, 4, 1, 11, 0, 0),
    (5, 6, 6, 2, 0, 10, 2, 2), (4, 5, 12, 2, 1, 12, 3, 1),
]


class Reference(unittest.TestCase):
    def run_case(self, case, train, aux_scale=1.0):
        d, h, n, k, bias, B, groups, kg = case
        cfg = cfg_of(d, h, n, k, bias, B, groups, kg)
        p, inp, _ = draw_case(cfg, train, 100 + 7 * n + k + 3 * groups)
        # the reference of sum(y*dy) + s * (L_imp + L_load) is the reference with weights * s
        rc = dict(cfg, w_importance=float(np.float32(cfg["w_importance"]) * aux_scale),
                  w_load=float(np.float32(cfg["w_load"]) * aux_scale))
        ref = (gen_golden_hier.reference if groups else gen_golden.reference)(p, inp, rc, train)
        m = module_for(cfg, p)
        m.train(train)
        x = torch.from_numpy(inp["x"].copy()).requires_grad_(True)
        y, aux = m(x, noise=torch.from_numpy(inp["eps"]) if train else None)
        loss = (y * torch.from_numpy(inp["dy"])).sum() + aux_scale * aux
        loss.backward()
        tag = "%s %s aux*%g" % (case, "train" if train else "eval", aux_scale)
        close(self, y.detach(), ref["y"], tag + " y")
        if aux_scale == 1.0:
            close(self, aux.item(), ref["loss.importance"] + ref["loss.load"], tag + " aux")
        close(self, x.grad, ref["grad.x"], tag + " grad x")
        for name, param in m.named_parameters():
            close(self, param.grad, ref["grad." + name], tag + " grad " + name)
        close(self, m.gates(), ref["gates"], tag + " gates")
        return m

    def test_flat_and_hierarchical_train_and_eval(self):
        for case in CASES:
            for train in (False, True):
                self.run_case(case, train)

    def test_aux_upstream_gradient(self):
        for case in (CASES[1], CASES[4]):
            for s in (0.0, 0.37, -2.0):
                self.run_case(case, True, s)

    def test_aux_value(self):
        cfg = cfg_of(*CASES[1][:6])
        p, inp, ref = draw_case(cfg, True, 5)
        m = module_for(cfg, p)
        _, aux = m(torch.from_numpy(inp["x"]), noise=torch.from_numpy(inp["eps"]))
        close(self, aux.item(), ref["loss.importance"] + ref["loss.load"], "aux = L_importance + L_load")

    def test_finite_differences_on_x(self):
        """eval mode: the directional derivative of sum(y*w) + aux along random v"""
        torch.manual_seed(0)
        m = mt.MoE(6, 8, 5, 2, seed=3, bias=True)
        with torch.no_grad():
            for prm in m.parameters():
                prm.copy_(0.5 * torch.randn_like(prm))
        m.eval()
        x = torch.randn(7, 6)
        w = torch.randn(7, 6)

        def f(t):  # the loss, and which experts each token went to
            y, aux = m(t)
            return float((y.double() * w.double()).sum() + aux.double()), m.gates() > 0

        xg = x.clone().requires_grad_(True)
        y, aux = m(xg)
        ((y * w).sum() + aux).backward()
        route0 = m.gates() > 0
        checked = 0
        for trial in range(8):
            v = torch.randn_like(x)
            hstep = 1e-3
            fp, rp = f(x + hstep * v)
            fm, rm = f(x - hstep * v)
            if not (np.array_equal(rp, route0) and np.array_equal(rm, route0)):
                continue  # the step moved a token to another expert: the layer jumps there
            num, ana = (fp - fm) / (2 * hstep), float((xg.grad * v).sum())
            self.assertLess(abs(num - ana), 3e-2 * max(1.0, abs(ana)), "trial %d: %g vs %g" % (trial, num, ana))
            checked += 1
        self.assertGreaterEqual(checked, 5, "too many trials changed the routing")


class Module(unittest.TestCase):
    def test_names_shapes_and_zero_copy(self):
        m = mt.MoE(8, 16, 6, 2, seed=1, bias=True)
        sd = m.state_dict()
        self.assertEqual(list(sd), ["gate.w_gate", "gate.w_noise", "experts.w1", "experts.b1", "experts.w2",
                                    "experts.b2"])
        self.assertEqual(tuple(sd["experts.w1"].shape), (6, 8, 16))
        for name, prm in m.named_parameters():
            self.assertEqual(prm.data_ptr(), m.layer.params[name].ctypes.data, name)
        x = torch.randn(10, 8)
        m.eval()
        y0, _ = m(x)
        with torch.no_grad():
            m.experts.w2.mul_(2.0)  # all outputs of experts are linear in w2 (no b2 change)
            m.experts.b2.mul_(2.0)
        y1, _ = m(x)
        close(self, y1.detach(), 2 * y0.detach().numpy(), "doubling w2 and b2 from torch doubles the C layer's output")

    def test_optimizer_steps_the_c_layer(self):
        m = mt.MoE(8, 16, 6, 2, seed=2)
        with torch.no_grad():
            m.gate.w_gate.copy_(torch.randn(8, 6))
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        x = torch.randn(32, 8)
        losses = []
        for _ in range(30):
            opt.zero_grad()
            y, aux = m(x)
            loss = ((y - x) ** 2).mean() + aux
            loss.backward()
            opt.step()
            losses.append(loss.item())
        self.assertLess(losses[-1], 0.7 * losses[0], "Adam on the shared parameters learns: %s" % losses[::6])
        # the C layer computes with what the optimiser wrote: a fresh module from its state agrees
        m2 = mt.MoE(8, 16, 6, 2, seed=2)
        m2.load_state_dict(m.state_dict())
        m.eval(), m2.eval()
        self.assertTrue(torch.equal(m(x)[0], m2(x)[0]))

    def grads(self, m):
        return {n: p.grad.clone() for n, p in m.named_parameters()}

    def test_accumulation_and_zero_grad(self):
        m = mt.MoE(6, 8, 5, 2, seed=4)
        with torch.no_grad():
            m.gate.w_gate.copy_(torch.randn(6, 5))
        x = torch.randn(9, 6)
        noise = torch.randn(9, 5)

        def step():
            y, aux = m(x, noise=noise)
            ((y ** 2).sum() + aux).backward()

        step()
        g1 = self.grads(m)
        step()
        for n, g in self.grads(m).items():
            close(self, g, 2 * g1[n].numpy(), "two backwards accumulate: " + n)
        m.zero_grad(set_to_none=True)
        self.assertIsNone(m.experts.w1.grad)
        step()
        for n, g in self.grads(m).items():
            close(self, g, g1[n], "after zero_grad(None), one backward: " + n, rtol=0, atol=0)
        m.zero_grad(set_to_none=False)
        step()
        for n, g in self.grads(m).items():
            close(self, g, g1[n], "after zero_grad(zeros): " + n, rtol=0, atol=0)
        # a .grad that is some other tensor is added into
        other = torch.ones_like(m.experts.w1)
        m.experts.w1.grad = other
        step()
        close(self, m.experts.w1.grad, 1 + g1["experts.w1"].numpy(), "a foreign .grad is added into")
        self.assertIs(m.experts.w1.grad, other)

    def test_two_forwards_one_backward(self):
        """micro-batches: the first forward's backward runs after the second forward"""
        m = mt.MoE(6, 8, 5, 2, seed=5)
        with torch.no_grad():
            m.gate.w_gate.copy_(torch.randn(6, 5))
        xa, xb = torch.randn(7, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
        rng0 = m.layer.rng
        ya, auxa = m(xa)
        yb, auxb = m(xb)
        ((ya ** 2).sum() + (3 * yb).sum() + auxa + 0.5 * auxb).backward()
        together = self.grads(m)
        gxa, gxb = xa.grad.clone(), xb.grad.clone()
        # the same, one at a time, from the same noise stream position
        m.zero_grad()
        m.layer.rng = rng0
        xa.grad = xb.grad = None
        ya, auxa = m(xa)
        ((ya ** 2).sum() + auxa).backward()
        yb, auxb = m(xb)
        ((3 * yb).sum() + 0.5 * auxb).backward()
        for n, g in self.grads(m).items():
            close(self, together[n], g, "replayed forward: " + n, rtol=1e-6, atol=1e-6)
        close(self, gxa, xa.grad, "replayed forward: x_a", rtol=0, atol=0)
        close(self, gxb, xb.grad, "x_b", rtol=0, atol=0)

    def test_seeded_noise(self):
        x = torch.randn(20, 8)
        outs = []
        for seed in (7, 7, 8):
            m = mt.MoE(8, 16, 6, 2, seed=seed)
            with torch.no_grad():
                m.gate.w_gate.copy_(torch.linspace(-1, 1, 48).reshape(8, 6))
            outs.append(m(x)[0])
        self.assertTrue(torch.equal(outs[0], outs[1]), "same seed, same noise")
        self.assertFalse(torch.equal(outs[0], outs[2]), "another seed, other noise")

    def test_state_dict_and_files(self):
        m = mt.MoE(8, 16, 6, 2, groups=2, k_groups=1, seed=9)
        with torch.no_grad():
            for prm in m.parameters():
                prm.copy_(torch.randn_like(prm))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "layer.safetensors")
            m.save(path)
            m2 = mt.MoE.load(path)
            for (n1, a), (n2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
                self.assertEqual(n1, n2)
                self.assertTrue(torch.equal(a, b), n1)
            self.assertEqual(list(m2.state_dict())[-2:], ["gate2.w_gate", "gate2.w_noise"])
            m3 = mt.MoE(8, 16, 6, 2, groups=2, k_groups=1, seed=1)
            m3.load_state_dict(torch.load(self._saved(tmp, m)))
            m.eval(), m3.eval()
            x = torch.randn(5, 8)
            self.assertTrue(torch.equal(m(x)[0], m3(x)[0]))
            with self.assertRaises(RuntimeError):  # torch's own shape check
                mt.MoE(8, 16, 4, 2).load_state_dict(m.state_dict())

    @staticmethod
    def _saved(tmp, m):
        path = os.path.join(tmp, "sd.pt")
        torch.save(m.state_dict(), path)
        return path

    def test_threads_kept_apart(self):
        """the library's thread count and torch's do not change each other (both use libgomp)"""
        before = moe.get_threads()
        try:
            for t in (1, 3):
                torch.set_num_threads(t)
                moe.set_threads(2)
                m = mt.MoE(8, 16, 6, 2, seed=3)
                x = torch.randn(40, 8, requires_grad=True)
                y, aux = m(x)
                (y.square().sum() + aux).backward()
                self.assertEqual(torch.get_num_threads(), t, "torch's count after a forward and backward")
                self.assertEqual(moe.get_threads(), 2, "the library's count after torch.set_num_threads(%d)" % t)
        finally:
            torch.set_num_threads(1)
            moe.set_threads(before)

    def test_errors(self):
        m = mt.MoE(8, 16, 6, 2)
        with self.assertRaises(TypeError):
            m(torch.randn(3, 8, dtype=torch.float64))
        with self.assertRaises(moe.ShapeError):
            m(torch.randn(3, 7))
        x = torch.randn(3, 8)
        x[1, 2] = float("nan")
        with self.assertRaises(moe.NonFiniteError) as cm:
            m(x)
        self.assertEqual(cm.exception.status, 10)
        self.assertIn("NaN", cm.exception.message)
        with self.assertRaises(moe.ConfigError) as cm:
            mt.MoE(8, 16, 4, 5)
        self.assertIn("k=5", str(cm.exception))


if __name__ == "__main__":
    unittest.main(verbosity=1)
