#!/usr/bin/env bash
# Models placed across GPUs (`--device-map`, docs/scaling.md), checked on a machine with CUDA GPUs (2+ for the
# split across GPUs; with one GPU the map spreads the blocks over the GPU, CPU memory and disk):
#   - a saved own GPT and a saved Hugging Face GPT-2 (from_pretrained(device_map=…)), placed `balanced` and by a
#     JSON map splitting the blocks over cuda:0, cuda:1 (when present), cpu and disk: hidden states and logits
#     equal the plain model on cuda:0 (atol 1e-5: same kernels, other devices);
#   - `layerwise analyze --device-map` against the plain analysis (within 1e-6).
#   bash tools/gpu-check-device-map.sh            # prints PASS or FAIL lines, exits 1 on any failure
# Environment: PYTHON (default python), LAYERWISE_DATA for the analyze check's corpus (tinyshakespeare).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/layerwise-gpu-map.XXXXXX)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
"${PYTHON:-python}" - "$work" <<'PY'
import json, sys
from pathlib import Path

import torch

from layerwise.checkpoints import load_model, save_model
from layerwise.checkpoints.dispatch import spread_blocks

work = Path(sys.argv[1])
assert torch.cuda.is_available(), "no CUDA GPU: run this on a GPU machine"
gpus = torch.cuda.device_count()
failed = False


def report(name: str, diff: float, tol: float) -> None:
    global failed
    ok = diff <= tol
    failed |= not ok
    print(f"{'PASS' if ok else 'FAIL'} {name}: max |diff| {diff:.2e} (tolerance {tol:.0e})")


for builtin in ("gpt-tiny", "gpt2-tiny"):
    folder = work / builtin
    save_model(load_model(builtin), folder)
    plain = load_model(str(folder))
    plain.model.to("cuda:0").eval()
    spots = ["cuda:0", "cuda:1" if gpus > 1 else "cpu", "cpu", "disk"]
    placement = spread_blocks(plain.model, plain.stack.blocks, spots)
    (work / f"{builtin}.json").write_text(json.dumps(placement))
    ids = torch.randint(0, 200, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = plain.stack.hidden_states({"input_ids": ids.to("cuda:0")})
        want_logits = plain.stack({"input_ids": ids.to("cuda:0")})
    for how in (["balanced"] if gpus > 1 else []) + [str(work / f"{builtin}.json")]:
        try:
            placed = load_model(str(folder), device_map=how, offload_folder=work / "offload" / builtin)
        except Exception as e:  # reported, not raised: the other checks still run
            print(f"FAIL {builtin} {Path(how).name}: {type(e).__name__}: {e}")
            failed = True
            continue
        placed.model.eval()
        with torch.no_grad():
            got = placed.stack.hidden_states({"input_ids": ids.to("cuda:0")})
            logits = placed.stack({"input_ids": ids.to("cuda:0")})
        devices = sorted({str(h.device) for h in got})
        diff = max((a.to("cuda:0") - b).abs().max().item() for a, b in zip(got, want))
        diff = max(diff, (logits.to("cuda:0") - want_logits).abs().max().item())
        report(f"{builtin} placed {Path(how).name} (states on {', '.join(devices)})", diff, 1e-5)

from layerwise.commands.analyze import AnalyzeOptions, run

folder = work / "gpt-tiny"
common = dict(model=str(folder), data="tinyshakespeare", split="test", limit=64, batch_size=16,
              measures="cka_linear,cos", device="cuda:0", probe=False)
a = run(AnalyzeOptions(**common, out=work / "plain"))
b = run(AnalyzeOptions(**common, out=work / "placed", device_map=str(work / "gpt-tiny.json"),
                       offload_folder=work / "offload" / "analyze"))
diff = max(float(abs(torch.as_tensor(a[k], dtype=torch.float64) - torch.as_tensor(b[k], dtype=torch.float64)).max())
           for k in ("cka_linear", "cos", "loss"))
report("analyze --device-map against the plain analysis", diff, 1e-6)
sys.exit(1 if failed else 0)
PY
