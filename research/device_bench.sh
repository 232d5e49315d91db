#!/usr/bin/env bash
# GPU benchmark of the torch backend variants (issue: export and inference backends).
# Run on a CUDA machine from the repo root; writes JSON into ${OUT:-runs/gpu}. The device image
# has torch/torchvision/onnxruntime but not the training stack, which the bench does not need.
set -uo pipefail
out=${OUT:-runs/gpu}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
$py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
variants=(--backend torch:cuda:fp32 --backend torch:cuda:fp16 --backend torch:cuda:fp16:channels_last
          --backend torch:cuda:fp16:channels_last:cuda_graphs)
$py -m mpox_aism.cli bench classifier --arch resnext101_64x4d "${variants[@]}" --batch-sizes 1,8,32 \
    --warmup 10 --iters 50 --min-seconds 1 --json "$out/bench_resnext101_gpu.json"
[ -f models/default/model.pt ] && $py -m mpox_aism.cli bench classifier --model models/default "${variants[@]}" --batch-sizes 1,8,32 \
    --warmup 10 --iters 50 --min-seconds 1 --json "$out/bench_default_gpu.json"
