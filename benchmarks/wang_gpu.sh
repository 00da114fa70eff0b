#!/usr/bin/env bash
# Wang et al.'s setting (WACV 2017) on a GPU: the demo with ResNet-50 at 224² on 20,000 simulated
# images for 20 epochs of batch 128 (CUDA, bf16 autocast, channels-last), the time of each
# stage and the training speed of each epoch, then the network's own CUDA speeds on random
# tensors (benchmarks/pipeline.py --sections model).
#
#     bash benchmarks/wang_gpu.sh [LOG_FOLDER]
#
# On an H200 with 16 cores the demo prints its held-out AP table about 3.5 minutes in and ends
# about 4 minutes later (its three maps); the speeds take one more minute. Logs go to
# LOG_FOLDER (default: the current folder), written as they come. N, EPOCHS, BATCH, INPUT_SIZE,
# DEVICE and DATA_DIR override the setting (defaults 20000, 20, 128, 224, cuda, data-gpu); PYTHON
# names the interpreter. DEVICE=cpu with a small N and EPOCHS checks the script without a GPU.
set -euo pipefail
logs=${1:-.}
n=${N:-20000} epochs=${EPOCHS:-20} batch=${BATCH:-128} input=${INPUT_SIZE:-224}
device=${DEVICE:-cuda} data=${DATA_DIR:-data-gpu}
python=${PYTHON:-python}
export PYTHONUNBUFFERED=1
mkdir -p "$logs"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$python" -c "import os, torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
      'GPU', torch.cuda.get_device_name() if torch.cuda.is_available() else None,
      'cores', os.cpu_count())"
} 2>&1 | tee "$logs/machine.txt"

# No Dask cluster: a GPU infers in this process, and maps of up to 50,000 images are made whole
# here (reference.REFERENCE_N); a cluster would only start and wait.
"$python" -m pipeline demo --n "$n" --arch resnet50 --input-size "$input" --epochs "$epochs" \
    --batch-size "$batch" --device "$device" --data-dir "$data" --scheduler none 2>&1 \
    | tee "$logs/demo.log"

# Each stage's time, as the run recorded it, and each epoch's training speed, as its checkpoint did.
"$python" - "$data" <<'EOF' 2>&1 | tee "$logs/epochs.txt"
import json
import sys
from pathlib import Path

from pipeline.checkpoints import read_checkpoint

run = max((Path(sys.argv[1]) / "runs").glob("*/model.pt"), key=lambda p: p.stat().st_mtime)
print("stages:", json.loads((run.parent / "run.json").read_text())["timings"])
training = read_checkpoint(run)["training"]
print(f"{run.parent.name}: {training['n_train']} images fitted, {training['n_validation']} "
      f"for thresholds, batch {training['batch_size']}, {training['steps']} steps on "
      f"{training['device']}")
for epoch in training["history"]:
    print(f"epoch {epoch['epoch']:3d}: loss {epoch['loss']:.3f}, {epoch['seconds']:7.1f} s, "
          f"{epoch['images_per_s']:7.0f} images/s")
EOF

"$python" benchmarks/pipeline.py --sections model --device "$device" 2>&1 | tee "$logs/model.log"
