#!/usr/bin/env bash
# The whole GPU check as one prepared command, for a bare GPU machine: Python 3.12 with torch,
# torchvision, timm, numpy and opencv, but no mmcv, mmengine, mmseg or mmdet and no package
# registry. What it installs travels with the working tree in .whl/ (bash tools/gpu_wheels.sh here).
#   1. environment      versions, the GPU and its architecture (environment.json)
#   2. wheels           .whl/ holds every pinned wheel and mmcv's source (offline check)
#   3. install          the carried wheels into a scratch folder (pip --no-index --no-deps --target)
#   4. build            mmcv 2.1.0 from its source with CUDA ops for this GPU's architecture only
#                       (sm_90 on an H100/H200; TORCH_CUDA_ARCH_LIST overrides), C++20, all cores,
#                       and alongside it our deformable attention (ops/)
#   5. imports          mmcv.ops, mmseg, mmdet, mmseg_custom from the scratch folder, CUDA kernels
#   6. gpu tests        pytest -m gpu (gpu_tests.xml)
#   7. benchmark large  ViT-Split-L vs full fine-tuning, bf16 autocast, crop 512, training batch
#   8. benchmark small  8, inference batch 16 and 1 (benchmark_{large,small}.json); the small run
#                       also times slide inference, mmseg's loop vs ours (4 crops at a time)
# Figures and logs go to $OUT when set, else to WORK/results: environment.json, steps.json (each
# step's status and seconds), benchmark_*.json, gpu_tests.xml, logs/STEP.log. It stops at the first
# failing step and names it (--keep-going runs the others too), and stops any step that would end
# past GPU_CHECK_BUDGET_S seconds from its start (default 530). WORK is GPU_CHECK_WORK, default
# /tmp/gpu_check; a second run there reuses the mmcv build.
#   bash tools/gpu_check.sh [--keep-going]
#
# --dry-run, on a CPU, runs every step that needs no GPU, with a work folder of its own:
#   wheels, and install of every carried wheel for CPython 3.12 into a scratch folder (pip's
#   --python-version/--platform, so a wheel that would not install there fails here); then an
#   interpreter with no site-packages of its own that sees only the GPU machine's base packages
#   (this interpreter's installs of them, tools/gpu_env.py) and the carried pure-Python wheels
#   installed for this interpreter (carried CPython 3.12 binaries, mmcv, which is not built here,
#   and our op are stood in for by this interpreter's installs; GPU_CHECK_DRY_BUILD=1 builds the
#   op's CPU kernels with the carried setuptools, minutes on 2 cores): the imports, the GPU tests'
#   collection and the small benchmark at a tiny crop on the CPU (the large one is skipped: over
#   15 minutes there) all run with it. A package our code imports and .whl/ lacks fails here.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dry=0
keep_going=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry=1 ;;
    --keep-going) keep_going=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d;s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument '$arg' (use --dry-run, --keep-going or --help)" >&2
       exit 2 ;;
  esac
done

export MMCV_VERSION=2.1.0
export repo dry
export wheels="${GPU_CHECK_WHEELS:-$repo/.whl}"
if [ "$dry" = 1 ]; then
  if [ -z "${GPU_CHECK_WORK:-}" ]; then
    GPU_CHECK_WORK="$(mktemp -d /tmp/gpu_check_dry.XXXXXX)"
    # A work folder of its own: on exit keep only the results (when $OUT is unset).
    trap 'find "$work" -mindepth 1 -maxdepth 1 ! -name results -exec rm -rf {} +' EXIT
  fi
  export work="$GPU_CHECK_WORK"
  budget="${GPU_CHECK_BUDGET_S:-1200}"
  # The installer: this repository's interpreter; the runner: a bare venv made in step 3.
  export installer="${PYTHON:-$(bash "$repo/tools/launcher_python.sh")}"
  export runner="$work/pyenv/bin/python"
  export run_path="$repo:$work/site:$work/op:$work/base"
else
  export work="${GPU_CHECK_WORK:-/tmp/gpu_check}"
  budget="${GPU_CHECK_BUDGET_S:-530}"
  export installer="${PYTHON:-python3}"
  export runner="$installer"
  export run_path="$repo:$work/mmcv-$MMCV_VERSION:$work/site:$work/op"
fi
export results="${OUT:-$work/results}"
export logs="$results/logs"
export mmcv_src="$work/mmcv-$MMCV_VERSION"
export sdist="$wheels/mmcv-$MMCV_VERSION.tar.gz"
mkdir -p "$work" "$logs"

# Runs the check's Python with the check's packages (and nothing else on the dry run).
run_py() { PYTHONPATH="$run_path" "$runner" "$@"; }
export -f run_py

step_environment() {  # the interpreter alone: on the dry run the check's one is made later
  "$installer" - <<'PY'
import glob, json, os, platform, shutil, subprocess, sys
import torch
dry = os.environ['dry'] == '1'
info = dict(python=sys.version.split()[0], torch=torch.__version__, cuda=torch.version.cuda,
            cpus=os.cpu_count(), dry_run=dry, platform=platform.platform())
# The machine's own packages that the carried ones need (tools/gpu_env.py: GPU_BASE).
for mod in ('torchvision', 'timm', 'numpy', 'cv2', 'scipy'):
    info[mod] = __import__(mod).__version__
if not dry:
    assert torch.cuda.is_available(), 'no CUDA GPU visible to torch'
    props = torch.cuda.get_device_properties(0)
    info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                capability='%d.%d' % (props.major, props.minor))
    nvcc = shutil.which('nvcc')
    assert nvcc, 'nvcc not found: mmcv and our op cannot be built'
    info['nvcc'] = subprocess.run([nvcc, '--version'], capture_output=True,
                                  text=True).stdout.strip().splitlines()[-1]
    # torch takes CUDA_HOME from nvcc's folder, wrong where nvcc is a wrapper in /usr/local/bin.
    from torch.utils.cpp_extension import CUDA_HOME
    homes = [h for h in [CUDA_HOME, *sorted(glob.glob('/usr/local/cuda*'))]
             if h and os.path.isfile(os.path.join(h, 'include', 'cuda_runtime.h'))]
    assert homes, 'no CUDA toolkit with include/cuda_runtime.h found: set CUDA_HOME'
    info['cuda_home'] = homes[0]
    for name, value in (('arch', os.environ.get('TORCH_CUDA_ARCH_LIST') or info['capability']),
                        ('cuda_home', homes[0])):
        with open(os.path.join(os.environ['work'], name), 'w') as f:
            f.write(value)
print(json.dumps(info, indent=1))
with open(os.path.join(os.environ['results'], 'environment.json'), 'w') as f:
    json.dump(info, f, indent=1)
PY
}

step_wheels() {
  PYTHON="$installer" bash "$repo/tools/gpu_wheels.sh" --check "$wheels"
}

step_install() {
  local pip=("$installer" -m pip --disable-pip-version-check)
  rm -rf "$work/site" "$work/site312" "$work/base"
  if [ "$dry" = 0 ]; then
    "${pip[@]}" install -q --no-index --no-deps --target "$work/site" "$wheels"/*.whl
    return
  fi
  echo "every carried wheel, installed as for CPython 3.12 on x86-64 Linux:"
  "${pip[@]}" install -q --no-compile --no-index --no-deps --target "$work/site312" \
    --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 "$wheels"/*.whl
  ls "$work/site312" | grep -c dist-info
  echo "the pure-Python ones for this interpreter, beside links to the GPU machine's base set:"
  local pure
  local link=()
  [ "${GPU_CHECK_DRY_BUILD:-0}" = 1 ] || link=(--link vitsplit-msda-ext)
  pure=$("$installer" "$repo/tools/gpu_env.py" emulate "$wheels" "$work/base" "${link[@]}")
  # shellcheck disable=SC2086  # one wheel path per word
  "${pip[@]}" install -q --no-index --no-deps --target "$work/site" $pure
  ls "$work/site" | grep -c dist-info
  local base_python
  base_python=$("$installer" -c 'import sys; print(sys._base_executable)')
  [ -x "$work/pyenv/bin/python" ] || "$base_python" -m venv --without-pip "$work/pyenv"
  ls "$work/base"
}

build_op() {
  local cuda=$1
  rm -rf "$work/op" "$work/op_build"
  (cd "$repo/ops" && PYTHONPATH="$run_path" FORCE_CUDA="$cuda" MAX_JOBS="$(nproc)" \
     "$runner" setup.py -q build_ext --build-lib "$work/op" --build-temp "$work/op_build")
  run_py -c 'import torch, vitsplit_msda_ext as e
print(f"{e.__file__}: CUDA kernels {e.with_cuda()}")'
}
export -f build_op

step_build() {
  if [ ! -f "$mmcv_src/.built" ]; then
    rm -rf "$mmcv_src"
    tar -xzf "$sdist" -C "$work"
    # torch >= 2.10's headers need C++20; mmcv 2.1.0 asks for C++14/17.
    sed -i -e 's/c++14/c++20/g' -e 's/c++17/c++20/g' "$mmcv_src/setup.py"
    if grep -qE 'c\+\+1[47]' "$mmcv_src/setup.py" || ! grep -q 'c++20' "$mmcv_src/setup.py"; then
      echo "mmcv's setup.py no longer names its C++ standard as expected"
      return 1
    fi
  fi
  if [ "$dry" = 1 ]; then
    echo "mmcv $MMCV_VERSION unpacked and switched to C++20; not built on the dry run (tens of"
    echo "minutes on this CPU): this interpreter's mmcv stands in for it."
    if [ "${GPU_CHECK_DRY_BUILD:-0}" = 1 ]; then
      build_op 0
    else
      echo "our op: this interpreter's build stands in (GPU_CHECK_DRY_BUILD=1 builds it here)"
    fi
    return
  fi
  local arch
  arch=$(cat "$work/arch")
  export TORCH_CUDA_ARCH_LIST="$arch" CUDA_HOME="$(cat "$work/cuda_home")"
  # Our op (one .cu) compiles alongside mmcv's ~100 CUDA sources.
  build_op 1 >"$logs/build_op.log" 2>&1 &
  local op_pid=$!
  trap 'kill "$op_pid" 2>/dev/null || true' EXIT  # when mmcv's build fails first
  if [ -f "$mmcv_src/.built" ]; then
    echo "mmcv already built in $mmcv_src"
  else
    echo "building mmcv $MMCV_VERSION with CUDA ops for sm_${arch/./}, $(nproc) jobs"
    (cd "$mmcv_src" && PYTHONPATH="$work/site" MMCV_WITH_OPS=1 FORCE_CUDA=1 \
       MAX_JOBS="$(nproc)" "$runner" setup.py build_ext --inplace)
    touch "$mmcv_src/.built"
  fi
  if ! wait "$op_pid"; then
    echo "our op (ops/) failed to build:"
    tail -n 40 "$logs/build_op.log"
    return 1
  fi
  cat "$logs/build_op.log"
}

step_imports() {
  run_py - <<'PY'
import os
import mmcv, mmcv.ops, mmdet, mmdet.models, mmengine, mmseg, mmseg.models, torch
import mmseg_custom
from mmseg_custom.ops import compiled_ops_available
dry = os.environ['dry'] == '1'
for mod in (mmcv, mmengine, mmseg, mmdet, mmseg_custom):
    print(f'{mod.__name__} {getattr(mod, "__version__", "")} from {os.path.dirname(mod.__file__)}')
site = os.path.join(os.environ['work'], 'site')
for mod in (mmengine, mmseg, mmdet):
    assert mod.__file__.startswith(site), f'{mod.__name__} is not the carried one'
assert mmseg_custom.__file__.startswith(os.environ['repo'])
assert compiled_ops_available('cpu'), 'vitsplit_msda_ext did not build'
if not dry:
    assert compiled_ops_available('cuda'), 'vitsplit_msda_ext has no CUDA kernels'
    # One mmcv CUDA kernel, so a broken build fails here rather than inside a test; the plain
    # conv it is compared with would otherwise run in TF32.
    torch.backends.cudnn.allow_tf32 = False
    x = torch.randn(1, 4, 8, 8, device='cuda')
    conv = mmcv.ops.DeformConv2d(4, 4, 3, padding=1).cuda()
    out = conv(x, torch.zeros(1, 18, 8, 8, device='cuda'))
    ref = torch.nn.functional.conv2d(x, conv.weight, padding=1)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
    print('mmcv CUDA deformable conv with zero offsets equals a plain conv')
PY
}

step_gpu_tests() {
  cd "$repo"
  if [ "$dry" = 1 ]; then
    run_py -m pytest -p no:cacheprovider -q -m gpu --collect-only tests
  else
    run_py -m pytest -p no:cacheprovider -q -m gpu -rs --junitxml "$results/gpu_tests.xml" tests
  fi
}

benchmark() {  # benchmark SIZE [ARGS]: ViT-Split and full fine-tuning of one size, bf16
  local size=$1 args
  shift
  if [ "$dry" = 1 ]; then  # same configs, on the CPU at a tiny crop
    args=(--device cpu --crop 56 --batch 2 --infer-batch 2 1 --iters 1 --warmup 1)
  else
    args=(--device cuda --crop 512 --batch 8 --infer-batch 16 1 --iters 8 --warmup 2)
  fi
  cd "$repo"
  run_py tools/benchmark.py \
    "configs/ade20k/baselines/linear_dinov2_finetune_${size}_512_40k_ade20k.py" \
    "configs/ade20k/vitsplit/linear_dinov2_vitsplit_${size}_512_20k_ade20k.py" \
    --amp "${args[@]}" "$@" --json "$results/benchmark_$size.json"
}
export -f benchmark
# Large first: most of the figures to beat are ViT-L's.
step_benchmark_large() { benchmark large; }
step_benchmark_small() { benchmark small --slide; }
export -f step_environment step_wheels step_install step_build step_imports step_gpu_tests \
  step_benchmark_small step_benchmark_large

start=$SECONDS
deadline=$((SECONDS + budget))
failed=()
records=()
run_step() {  # run_step NAME FUNCTION LINES [WHY]: run it under the time left, show LINES of its
  # log; WHY, if given, is why the dry run skips it
  local name=$1 fn=$2 show=$3 rc=0 t0=$SECONDS left=$((deadline - SECONDS))
  local log="$logs/${fn#step_}.log"
  if [ "${#failed[@]}" -gt 0 ] && [ "$keep_going" = 0 ]; then
    return
  fi
  if [ "$dry" = 1 ] && [ -n "${4:-}" ]; then
    printf '==> [gpu_check] %s: skipped on the dry run: %s\n' "$name" "$4"
    records+=("{\"step\": \"$name\", \"status\": \"skipped\", \"seconds\": 0}")
    return
  fi
  printf '==> [gpu_check] %s (%ss left)\n' "$name" "$left"
  if [ "$left" -le 0 ]; then
    rc=124
  else
    timeout --kill-after=10 "$left" bash -euo pipefail -c "$fn" >"$log" 2>&1 || rc=$?
  fi
  local took=$((SECONDS - t0)) status=ok
  if [ "$rc" = 0 ]; then
    [ "$show" -gt 0 ] && tail -n "$show" "$log"
  else
    case "$rc" in 124|137) status=timeout ;; *) status=failed ;; esac
    printf '!! [gpu_check] FAILED at step: %s (%s, exit %s, %ss; log %s)\n' \
      "$name" "$status" "$rc" "$took" "$log"
    tail -n 40 "$log"
    failed+=("$name")
  fi
  records+=("{\"step\": \"$name\", \"status\": \"$status\", \"seconds\": $took}")
  printf '==> [gpu_check] %s: %s in %ss\n' "$name" "$status" "$took"
}

[ "$dry" = 1 ] && echo "gpu_check: dry run on the CPU, work folder $work"
run_step environment step_environment 0
run_step wheels step_wheels 1
run_step install step_install 3
run_step build step_build 2
run_step imports step_imports 6
run_step "gpu tests" step_gpu_tests 12
run_step "benchmark large" step_benchmark_large 14 \
  "ViT-L took over 15 minutes on a 2-core CPU; the small step runs the same code"
run_step "benchmark small" step_benchmark_small 18

{
  printf '{"dry_run": %s, "seconds": %s, "budget_s": %s, "steps": [\n' \
    "$([ "$dry" = 1 ] && echo true || echo false)" "$((SECONDS - start))" "$budget"
  (IFS=$'\n'; echo "${records[*]}") | sed '$!s/$/,/'
  printf ']}\n'
} >"$results/steps.json"
if [ "${#failed[@]}" -gt 0 ]; then
  printf '!! [gpu_check] failed: %s; results in %s\n' "$(IFS=,; echo "${failed[*]}")" "$results"
  exit 1
fi
printf '==> [gpu_check] all steps passed in %ss; results in %s\n' "$((SECONDS - start))" "$results"
