#!/usr/bin/env bash
# One prepared GPU run for the SimCLR issue: ResNeXt101_64x4d SimCLR-pretrained then fine-tuned vs
# from scratch (same split, same recipe), then — if time is left — the MobileNetV2 SSL gain over
# seeds (scratch vs SimCLR vs ImageNet). Reads the data packed small by research/pack_data.py
# (.pack/, carried), installs the training stack the device image lacks from carried wheels
# (.whl/), stops starting new stages when its time budget is spent, and leaves one tarball of
# logs, histories, metrics and model cards in $OUT. Pretraining makes its SimCLR views on the GPU
# (--views device): per-image CPU augmentation held ResNeXt101 to ~110 img/s on an H100.
set -uo pipefail
out=${OUT:-runs/gpu-ssl}
budget=${BUDGET_S:-520}
mkdir -p "$out" runs/ssl
t0=$(date +%s)
left() { echo $(( budget - ($(date +%s) - t0) )); }
if [ -d .whl ] && [ -z "${NO_WHL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee runs/ssl/gpu.txt
D=${D:-.pack/skin8}; U=${U:-.pack/unlabeled}; W=${WORKERS:-14}; S=${IMG:-224}
cli() { $py -m mpox_aism.cli "$@" 2>&1 | tr '\r' '\n' | grep -v -E 'it/s\]|s/it\]|^\s*$'; }
export -f cli; export py
stage() {  # stage NAME MIN_SECONDS_LEFT command...
  local name=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "SKIP $name: $(left) s left < $need s" | tee -a runs/ssl/skipped.txt; return; fi
  local s=$(date +%s); echo "=== $name ($(left) s left)"
  timeout "$(left)" bash -c '"$@"' _ "$@" > "runs/ssl/$name.log"; tail -n 3 "runs/ssl/$name.log"
  echo "$name $(( $(date +%s) - s )) s" | tee -a runs/ssl/wall.txt
}
FT=(--data $D --epochs ${FT_EPOCHS:-25} --image-size $S --batch-size 64 --workers $W)
stage rx_pretrain 300 cli pretrain --data $U $D --arch resnext101_64x4d --epochs ${RX_SSL_EPOCHS:-40} \
  --batch-size 128 --image-size $S --warmup-epochs 4 --workers $W --views device --out runs/ssl/rx_pretrain
stage rx_ft_simclr 120 cli train --arch resnext101_64x4d --init runs/ssl/rx_pretrain/encoder.pt "${FT[@]}" --out runs/ssl/rx_ft_simclr
stage rx_ft_scratch 100 cli train --arch resnext101_64x4d --pretrained none "${FT[@]}" --out runs/ssl/rx_ft_scratch
stage mb_pretrain 150 cli pretrain --data $U $D --arch mobilenet_v2 --epochs ${MB_SSL_EPOCHS:-60} \
  --batch-size 256 --image-size $S --warmup-epochs 5 --workers $W --views device --out runs/ssl/mb_pretrain
MB=(--data $D --arch mobilenet_v2 --epochs ${MB_EPOCHS:-15} --image-size $S --batch-size 64 --workers $W)
for seed in 0 1 2; do
  stage mb_scratch_s$seed 40 cli train "${MB[@]}" --pretrained none --seed $seed --out runs/ssl/mb_scratch_s$seed
  stage mb_simclr_s$seed 40 cli train "${MB[@]}" --init runs/ssl/mb_pretrain/encoder.pt --seed $seed --out runs/ssl/mb_simclr_s$seed
  stage mb_imagenet_s$seed 40 cli train "${MB[@]}" --pretrained imagenet --seed $seed --out runs/ssl/mb_imagenet_s$seed
done
tar -czf "$out/ssl_runs.tgz" --exclude='*.pt' --exclude='*.onnx' runs/ssl
ls -la "$out"
