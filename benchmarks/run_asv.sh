#!/bin/sh
# Run the asv benchmarks with the current interpreter, record them under the current commit, publish the report.
#
#   benchmarks/run_asv.sh --quick          each benchmark once (what tox's bench env runs)
#   benchmarks/run_asv.sh                  full sampling
#   benchmarks/run_asv.sh --quick --bench AttentionForwardCPU
#
# Arguments go to `asv run`. ASV_MACHINE names the machine the results are filed under (default: the GPU model,
# or the CPU's architecture and core count).
# asv keeps its machine description in $HOME: HOME points into the git-ignored .asv/ so a run writes nothing
# outside the repository. --python=same installs nothing (the benchmarks put the repository root on sys.path),
# and --set-commit-hash is what makes asv save results from such a run; they are filed under HEAD, so commit
# first. Results: benchmarks/results/. Report: reports/out/asv/index.html, which loads only local files (the
# scripts and styles asv takes from CDNs are copied in from vendor/asv-dashboard/ by benchmarks/offline_dashboard.py):
# serve it and open it on localhost (`asv preview`, or `python3 -m http.server -d reports/out/asv`), no network.
set -eu
cd "$(dirname "$0")/.."
HOME="$PWD/.asv/home"
export HOME
mkdir -p "$HOME"
# asv's machine record has no GPU field: the GPU model goes into the machine name, so results from several
# GPUs sit side by side in one dashboard (e.g. gpu-nvidia-h200); a CPU-only machine is named by arch and cores.
default_machine=$(python3 -c '
import os, platform, re, torch
if torch.cuda.is_available():
    print("gpu-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-"))
else:
    print(f"cpu-{platform.machine()}-{os.cpu_count()}core")
')
machine="${ASV_MACHINE:-$default_machine}"

asv machine --yes --machine "$machine" >/dev/null
status=0
asv run --python=same --machine "$machine" --set-commit-hash "$(git rev-parse HEAD)" --show-stderr "$@" || status=$?
python3 benchmarks/portable_results.py  # result files named by the Python version, not the interpreter's path
asv publish  # also after failures: the report shows which benchmarks failed
python3 benchmarks/offline_dashboard.py || status=1  # the CDN scripts and styles -> the vendored copies
exit "$status"
