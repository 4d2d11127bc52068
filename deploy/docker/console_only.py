"""A training script that knows nothing of mltrail: it only prints (stdout and stderr).

The agent of ``compose.logs.yaml`` records its console from the container's
log, through the Docker source.
"""

import sys
import time

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
for step in range(1, steps + 1):
    print(f"epoch {step}/{steps}", flush=True)
    if step % 10 == 0:
        print(f"checkpoint at epoch {step}", file=sys.stderr, flush=True)
    time.sleep(0.02)
print("finished", flush=True)
