#!/bin/sh
# Reproduces the shipped starting models of the denoiser (models/README.md): simulated time-lapses,
# `moire train` from scratch with and without temporal context, then the weights embedded into
# Sources/MoireDenoise/Shipped*Model.swift. About 15 minutes on 2 cores. Usage: models/train.sh [DATA_FOLDER]
set -eu
cd "$(dirname "$0")/.."
data=${1:-${TMPDIR:-/tmp}/moire-denoise-training}
python3 models/make_training_data.py --out "$data"
swift build -c release --product moire
moire="$(swift build -c release --show-bin-path)/moire"
"$moire" train "$data"/*.tif --out models/denoise-temporal.bin --overwrite --context history --noise 100,1,1.5 \
  --steps 15000 --steps-per-plane 2 --lr 1e-3 --decay 0.05 --crop 128 --seed 1
"$moire" train "$data"/*.tif --out models/denoise-single-frame.bin --overwrite --context none --noise 100,1,1.5 \
  --steps 15000 --steps-per-plane 2 --lr 1e-3 --decay 0.05 --crop 128 --seed 1
python3 models/embed.py models/denoise-temporal.bin Sources/MoireDenoise/ShippedTemporalModel.swift ShippedTemporalModelData
python3 models/embed.py models/denoise-single-frame.bin Sources/MoireDenoise/ShippedSingleFrameModel.swift \
  ShippedSingleFrameModelData
echo "now rebuild: the binaries carry the new models"
