#!/usr/bin/python3
"""test_numpy.py - the numpy API of the Python package: moe.Layer against the golden files
(the same files `moe layer` reads), zero-copy parameter and gradient views, statistics,
save/load, the error mapping (status and message of the library in the exception);
moe.LanguageModel against the CLI on a checkpoint trained here (eval loss, sample text,
next-token log-probabilities); moe.bleu against nltk's scores (tests/golden/bleu_nltk.txt).

Usage (ctest does this): test_numpy.py MOE_BINARY GOLDEN_DIR; exits 77 (skipped) without
Debian's python3-numpy."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

try:
    import numpy as np
except ImportError as e:
    print("skipped: %s (scripts/deps.sh --python installs python3-numpy)" % e)
    sys.exit(77)

import moe  # noqa: E402

MOE_BIN = GOLDEN = None


def st_read(path):
    """safetensors -> (dict of float32 arrays, metadata), with numpy only"""
    with open(path, "rb") as f:
        buf = f.read()
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = buf[8 + n:]
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"]).copy()
    return out, meta


def golden(case):
    p = os.path.join(GOLDEN, case)
    return (st_read(p + ".params.safetensors")[0], st_read(p + ".input.safetensors"),
            st_read(p + ".expected.safetensors")[0], p + ".params.safetensors")


def close(test, got, want, what, tol=1e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    test.assertEqual(got.shape, want.shape, what)
    err = float(np.max(np.abs(got - want) / (1.0 + np.abs(want)))) if got.size else 0.0
    test.assertLessEqual(err, tol, "%s: error %.3g" % (what, err))


class LayerTests(unittest.TestCase):
    def check_golden(self, case):
        p, (inp, meta), want, path = golden(case)
        layer = moe.Layer.load(path)
        train = meta["mode"] == "train"
        y = layer.forward(inp["x"], train=train, noise=inp.get("eps"))
        close(self, y, want["y"], case + " y")
        close(self, layer.gates(), want["gates"], case + " gates")
        close(self, layer.stats["loss_importance"], want["loss.importance"], case + " L_importance")
        close(self, layer.stats["loss_load"], want["loss.load"], case + " L_load")
        layer.zero_grad()
        dx = layer.backward(inp["dy"])
        close(self, dx, want["grad.x"], case + " grad x")
        for name in p:
            close(self, layer.grads[name], want["grad." + name], case + " grad " + name)
        counts = layer.counts()
        self.assertEqual(int(counts.sum()), inp["x"].shape[0] * layer.k * (layer.k_groups or 1))
        close(self, layer.importance(), want["gates"].sum(0), case + " importance")

    def test_golden_flat_and_hierarchical(self):
        cases = sorted({f.split(".")[0] for f in os.listdir(GOLDEN) if f.endswith(".params.safetensors")
                        and not f.startswith("n1024")})
        self.assertGreaterEqual(len(cases), 10)
        for case in cases:
            self.check_golden(case)

    def test_views_are_the_layers_memory(self):
        layer = moe.Layer(d=8, h=16, n=4, k=2, bias=True, seed=3)
        x = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)
        y0 = layer.forward(x)
        layer.params["experts.w2"] *= 3.0  # in place: the C layer's weights
        layer.params["experts.b2"] *= 3.0
        close(self, layer.forward(x), 3 * y0, "tripled w2 and b2 through the views")
        w = layer.params["experts.w1"]
        del layer  # the view keeps the C layer alive
        self.assertEqual(w.shape, (4, 8, 16))
        self.assertTrue(np.isfinite(w).all())
        layer = moe.Layer(d=8, h=16, n=4, k=2, seed=3)
        layer.params["gate.w_gate"][:] = np.random.default_rng(2).standard_normal((8, 4))
        layer.forward(x, train=True)
        layer.zero_grad()
        g = layer.grads["experts.w1"]
        layer.backward(np.ones((6, 8), np.float32))
        self.assertGreater(float(np.abs(g).sum()), 0.0, "the gradient view sees what backward added")
        layer.zero_grad()
        self.assertEqual(float(np.abs(g).sum()), 0.0, "and what zero_grad cleared")

    def test_noise_stream_and_replay(self):
        layer = moe.Layer(d=8, h=16, n=6, k=2, seed=11)
        layer.params["gate.w_gate"][:] = np.random.default_rng(3).standard_normal((8, 6))
        x = np.random.default_rng(4).standard_normal((10, 8)).astype(np.float32)
        rng = layer.rng
        y1 = layer.forward(x, train=True)
        y2 = layer.forward(x, train=True)
        self.assertFalse(np.array_equal(y1, y2), "each training forward draws new noise")
        layer.rng = rng
        self.assertTrue(np.array_equal(layer.forward(x, train=True), y1), "the stream replays")

    def test_save_load_and_cli(self):
        layer = moe.Layer(d=8, h=16, n=4, k=2, groups=2, k_groups=1, seed=5)
        layer.params["gate.w_gate"][:] = 1.0
        x = np.random.default_rng(5).standard_normal((7, 8)).astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            path, xin, out = (os.path.join(tmp, f) for f in ("l.safetensors", "x.safetensors", "y.safetensors"))
            layer.save(path)
            back = moe.Layer.load(path)
            for name, v in layer.params.items():
                self.assertTrue(np.array_equal(back.params[name], v), name)
            # the CLI reads the same file: `moe layer` gives the same y
            hjson = json.dumps({"x": {"dtype": "F32", "shape": [7, 8], "data_offsets": [0, 224]}}).encode()
            hjson += b" " * ((-(8 + len(hjson))) % 8)
            with open(xin, "wb") as f:
                f.write(len(hjson).to_bytes(8, "little") + hjson + x.tobytes())
            subprocess.run([MOE_BIN, "layer", "--params", path, "--input", xin, "--out", out], check=True,
                           stdout=subprocess.DEVNULL)
            close(self, st_read(out)[0]["y"], back.forward(x), "moe layer and moe.Layer", tol=0)

    def test_errors_carry_status_and_message(self):
        with self.assertRaises(moe.ConfigError) as cm:
            moe.Layer(d=8, h=16, n=4, k=5)
        e = cm.exception
        self.assertEqual((e.status, e.status_name), (2, "MOE_ERR_CONFIG"))
        self.assertIn("k=5", e.message)
        self.assertIsInstance(e, ValueError)
        with self.assertRaises(moe.LibIOError) as cm:
            moe.Layer.load("/nonexistent/layer.safetensors")
        self.assertEqual(cm.exception.status, 5)
        self.assertIn("/nonexistent/layer.safetensors", str(cm.exception))
        with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
            f.flush()
            with self.assertRaises(moe.FileFormatError) as cm:
                moe.Layer.load(f.name)
            self.assertEqual(cm.exception.status, 7)
        layer = moe.Layer(d=4, h=4, n=3, k=1)
        with self.assertRaises(moe.StateError):
            layer.backward(np.zeros((2, 4), np.float32))
        with self.assertRaises(moe.ShapeError):
            layer.forward(np.zeros((2, 5), np.float32))
        with self.assertRaises(moe.NonFiniteError) as cm:
            layer.forward(np.full((2, 4), np.inf, np.float32))
        self.assertIn("NaN or Inf", cm.exception.message)
        self.assertTrue(issubclass(moe.NonFiniteError, moe.MoeError))


class LanguageModelTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.data = os.path.join(d, "text.txt")
        with open(cls.data, "w") as f:
            for i in range(600):
                f.write("the quick brown fox %d jumps over the lazy dog. " % (i % 17))
        cls.ckpt = os.path.join(d, "lm", "model.safetensors")
        subprocess.run([MOE_BIN, "train", "--data", cls.data, "--d", "16", "--h", "16", "--experts", "4",
                        "--k", "2", "--batch", "4", "--bptt", "16", "--steps", "30", "--eval-every", "0",
                        "--log-every", "100", "--threads", "1", "--out", os.path.join(d, "lm")],
                       check=True, stdout=subprocess.DEVNULL)
        cls.lm = moe.LanguageModel.load(cls.ckpt)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_eval_matches_cli(self):
        got = self.lm.eval(self.data, split="valid", batch=4, bptt=16)
        out = subprocess.run([MOE_BIN, "eval", "--model", self.ckpt, "--data", self.data, "--split", "valid",
                              "--batch", "4", "--bptt", "16", "--json"], check=True, capture_output=True,
                             text=True).stdout
        want = json.loads(out.strip().splitlines()[-1])
        self.assertAlmostEqual(got["loss"], want["loss"], places=6)
        self.assertGreater(got["tokens"], 0)

    def test_sample_matches_cli(self):
        got = self.lm.sample("the ", length=40, temperature=0.7, top_k=5, seed=4)
        want = subprocess.run([MOE_BIN, "sample", "--model", self.ckpt, "--prompt", "the ", "--length", "40",
                               "--temperature", "0.7", "--top-k", "5", "--seed", "4"], check=True,
                              capture_output=True).stdout.decode(errors="replace")
        self.assertEqual(got + "\n", want)
        self.assertTrue(got.startswith("the "))

    def test_next_logits_and_tokenizer(self):
        ids = self.lm.encode("the fox")
        self.assertEqual(self.lm.decode(ids), "the fox")
        self.lm.reset_state()
        logits = None
        for t in ids:
            logits = self.lm.next_logits([t, t])
        self.assertEqual(logits.shape, (2, self.lm.vocab))
        self.assertTrue(np.array_equal(logits[0], logits[1]))
        self.assertAlmostEqual(float(np.log(np.exp(logits[0].astype(np.float64)).sum())), 0.0, places=4)
        self.assertEqual(self.lm.meta["step"], "30")
        self.assertGreater(self.lm.num_params, self.lm.active_params)

    def test_errors(self):
        with self.assertRaises(moe.FileFormatError) as cm:
            moe.LanguageModel.load(os.path.join(GOLDEN, "n16_k1_bias0_eval.params.safetensors"))
        self.assertIn("not a moe language-model checkpoint", cm.exception.message)
        with self.assertRaises(moe.ConfigError):
            self.lm.sample("x", temperature=0)
        with self.assertRaises(moe.ConfigError):
            self.lm.eval(self.data, split="dev")


class BleuTests(unittest.TestCase):
    def test_against_nltk(self):
        sm = [0, 1, 2, 3, "plus1"]
        refs, hyps = [], []
        with open(os.path.join(GOLDEN, "bleu_nltk.txt")) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if parts[0] == "S":
                    hyp, ref = parts[1].split(), parts[2].split()
                    hyps.append(hyp)
                    refs.append(ref)
                    if len(hyps) <= 300:
                        for s, want in zip(sm, map(float, parts[3].split())):
                            self.assertAlmostEqual(moe.sentence_bleu(ref, hyp, smooth=s), want, delta=1e-9)
                elif parts[0] == "C":
                    count = int(parts[1])
                    for s, want in zip(sm, map(float, parts[2].split())):
                        self.assertAlmostEqual(moe.bleu(refs[:count], hyps[:count], smooth=s), want, delta=1e-9)
        self.assertEqual(len(hyps), 1500)
        self.assertEqual(moe.bleu(["a b c d"], ["a b c d"]), 1.0)
        with self.assertRaises(moe.ShapeError):
            moe.bleu(["a"], ["a", "b"])
        with self.assertRaises(moe.ConfigError):
            moe.bleu(["a"], ["a"], smooth=7)

    def test_bootstrap_against_cli(self):
        """moe.bleu_bootstrap gives what `moe bleu --hyp2 --bootstrap --json` gives"""
        refs, hyps = [], []
        with open(os.path.join(GOLDEN, "bleu_nltk.txt")) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if parts[0] == "S":
                    hyps.append(" ".join("w" + t for t in parts[1].split()))
                    refs.append(" ".join("w" + t for t in parts[2].split()))
        hyps2 = [h if i % 3 else r for i, (r, h) in enumerate(zip(refs, hyps))]  # a better system
        got = moe.bleu_bootstrap(refs, hyps, hyps2, resamples=150, smooth=3, seed=7)
        with tempfile.TemporaryDirectory() as tmp:
            for name, lines in (("r", refs), ("a", hyps), ("b", hyps2)):
                with open(os.path.join(tmp, name), "w") as f:
                    f.write("\n".join(lines) + "\n")
            out = subprocess.run([MOE_BIN, "bleu", "--ref", os.path.join(tmp, "r"), "--hyp", os.path.join(tmp, "a"),
                                  "--hyp2", os.path.join(tmp, "b"), "--bootstrap", "150", "--smooth", "3", "--seed",
                                  "7", "--json"], check=True, capture_output=True, text=True).stdout
        want = json.loads(out)
        for k in ("a_lo", "a_hi", "b_lo", "b_hi", "delta_lo", "delta_hi", "p_a_better", "p_b_better"):
            self.assertAlmostEqual(got[k], want[k], delta=1e-6, msg=k)
        self.assertAlmostEqual(got["bleu_a"], want["a"]["bleu"], delta=1e-9)
        self.assertGreater(got["p_b_better"], 0.95)
        self.assertEqual(got["resamples"], 150)
        alone = moe.bleu_bootstrap(refs, hyps, resamples=100)
        self.assertLess(alone["a_lo"], alone["bleu_a"])
        self.assertLess(alone["bleu_a"], alone["a_hi"])
        with self.assertRaises(moe.MoeError) as cm:
            moe.bleu_bootstrap(refs, hyps, hyps2, resamples=1)
        self.assertIn("resamples=1", cm.exception.message)
        with self.assertRaises(moe.ShapeError):
            moe.bleu_bootstrap(refs, hyps[:-1])


if __name__ == "__main__":
    MOE_BIN, GOLDEN = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=1)
