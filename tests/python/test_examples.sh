#!/usr/bin/env bash
# test_examples.sh - the Python examples run as a user runs them: examples/numpy_layer.py whole
# (it saves and reloads a layer and says whether the outputs came back), and
# the README's PyTorch example (3 steps), and
# examples/torch_fashion_mnist.py for one short epoch on 2000 examples, which must print its
# closing line and learn (above 0.5 test accuracy; chance is 0.1). Exits 77 (skipped) without
# numpy, torch or the data set.
# usage: test_examples.sh EXAMPLES_DIR   (MOE_LIBRARY and PYTHONPATH set by ctest)
set -u
ex=$1
. "$(dirname "$0")/../testlib.sh"
py=/usr/bin/python3
if ! $py -c 'import numpy, torch' 2>/dev/null; then echo "skipped: no numpy or torch (scripts/deps.sh --python)"; exit 77; fi
expect 0 "^saved and loaded back: the same outputs$" -- $py "$ex/numpy_layer.py"
# the README's PyTorch example, as printed there but for 3 steps instead of 100
sed -n '/^```python$/,/^```$/p' "$ex/../README.md" | sed '1d;$d' | sed 's/range(100)/range(3)/' > "$tmp/readme.py"
grep -q "range(3)" "$tmp/readme.py" && ok || bad "README.md has no PyTorch example of 100 steps"
expect 0 "^[0-9.e-]+ odict_keys\(\['gate.w_gate', 'gate.w_noise', 'experts.w1', 'experts.w2'\]\)$" -- $py "$tmp/readme.py"
if [[ -d /usr/share/datasets/fashion-mnist ]]; then
  out=$($py "$ex/torch_fashion_mnist.py" --epochs 1 --limit 2000 2>&1); rc=$?
  last=$(tail -1 <<<"$out")
  if [[ $rc -eq 0 && $last =~ ^test\ accuracy:\ (0\.[0-9]{4})$ ]]; then
    awk -v a="${BASH_REMATCH[1]}" 'BEGIN { exit !(a > 0.5) }' && ok || bad "torch_fashion_mnist: test accuracy ${BASH_REMATCH[1]} after one epoch (want > 0.5)"
  else
    bad "torch_fashion_mnist: exit $rc, last line '$last' :: $(tail -c 600 <<<"$out")"
  fi
else
  echo "test_examples: /usr/share/datasets/fashion-mnist missing (scripts/deps.sh): the classifier skipped"
fi
finish test_examples
