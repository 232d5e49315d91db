#!/usr/bin/env bash
# The SSL-gain measurement (issue: SimCLR): same split (split seed 0), same fine-tuning recipe,
# MobileNetV2 from scratch vs SimCLR-initialised vs ImageNet-initialised, 3 seeds each.
# Defaults are sized for the 2-core CPU (small images, few epochs); override with env variables.
set -euo pipefail
S=${IMG:-96}; E=${EPOCHS:-10}; PE=${PRETRAIN_EPOCHS:-20}; W=${WORKERS:-2}; OUTD=${OUTD:-runs/gain}
DATA=${DATA:-../shared/data/skin8}; UNL=${UNLABELED:-../shared/data/unlabeled}
mpox=${MPOX:-.venv/bin/mpox-aism}
mkdir -p "$OUTD"
[ -f "$OUTD/simclr/encoder.pt" ] || $mpox pretrain --data "$UNL" "$DATA" --arch mobilenet_v2 --epochs "$PE" \
  --batch-size 64 --image-size "$S" --workers "$W" --out "$OUTD/simclr"
for seed in 0 1 2; do
  for init in scratch simclr imagenet; do
    case $init in
      scratch) extra=(--pretrained none);; simclr) extra=(--init "$OUTD/simclr/encoder.pt");; imagenet) extra=(--pretrained imagenet);;
    esac
    [ -f "$OUTD/${init}_s$seed/model.pt" ] || $mpox train --data "$DATA" --arch mobilenet_v2 --epochs "$E" \
      --image-size "$S" --seed "$seed" --split-seed 0 --workers "$W" "${extra[@]}" --out "$OUTD/${init}_s$seed"
  done
done
.venv/bin/python -m research.summarize_gain "$OUTD"
