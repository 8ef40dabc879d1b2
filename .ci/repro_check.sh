#!/usr/bin/env bash
# Reproducibility check: the tiny default pipeline, run twice from scratch in a clean copy of
# the committed tree, must give bit-identical outputs (every md5 in dvc.lock), and
# `dvc status` must be clean afterwards. Uses the .venv that `make test` bootstrapped.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q "$here" "$work/proj"
cd "$work/proj"
export PATH="$here/.venv/bin:$PATH"
dvc config core.analytics false

outs_md5() {  # every output path and md5 recorded in dvc.lock, one per line, sorted
  python - <<'PY'
import yaml
lock = yaml.safe_load(open("dvc.lock"))
for name, stage in sorted(lock["stages"].items()):
    for out in stage.get("outs", []):
        print(f"{name} {out['path']} {out['md5']}")
PY
}

start=$(date +%s)
dvc repro --quiet
first_done=$(date +%s)
outs_md5 > "$work/first.txt"
dvc repro --force --quiet
second_done=$(date +%s)
outs_md5 > "$work/second.txt"

echo "repro-check: first run $((first_done - start)) s, forced second run $((second_done - first_done)) s"
if ! diff -u "$work/first.txt" "$work/second.txt"; then
  echo "repro-check: FAILED: outputs differ between two runs of the pipeline" >&2
  exit 1
fi
status="$(dvc status 2>&1 || true)"
if ! grep -q "Data and pipelines are up to date" <<< "$status"; then
  echo "repro-check: FAILED: dvc status is not clean after the second run:" >&2
  echo "$status" >&2
  exit 1
fi
echo "repro-check: $(wc -l < "$work/first.txt") outputs bit-identical across two full runs; dvc status clean"
