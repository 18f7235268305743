"""Run by ``test_local.py`` as a script in a fresh process (no pytest threads): how
``launcher.start_method=auto`` starts the workers, and that forked workers train on one or two
threads after the driver has run torch on two (GNU OpenMP's pool, which a forked child cannot
use unless the driver ended it first).

Prints one JSON line: per case, the start method chosen and, per evaluation, whether torch was
already imported in the worker (inherited from the driver: forked) and its status."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass

from nasfw import Result
from nasfw.launchers.local import LocalLauncher, LocalLauncherConfig


@dataclass
class TorchProbe:
    """An evaluation on ``threads`` torch threads (as ``nasfw.Evaluator`` has them)."""

    threads: int

    def __call__(self, item: int) -> Result:
        inherited = "torch" in sys.modules
        import torch

        torch.set_num_threads(self.threads)
        x = torch.randn(64, 3, 32, 32, requires_grad=True)
        torch.nn.functional.conv2d(x, torch.randn(16, 3, 3, 3)).sum().backward()
        return Result(status="ok", metric=float(item), extra={"inherited": inherited})


def case(threads: int) -> dict[str, object]:
    with LocalLauncher(LocalLauncherConfig(workers=2)) as launcher:
        method = launcher.start_method(threads)
        results = launcher.map(TorchProbe(threads), [0, 1, 2, 3])
    return {
        "method": method,
        "inherited": [r.extra.get("inherited") for r in results],
        "status": [r.status for r in results],
    }


def main() -> None:
    import torch

    torch.set_num_threads(2)
    a = torch.randn(512, 512)
    for _ in range(3):
        a @ a  # the driver's OpenMP threads now exist
    out = {"one thread": case(1), "two threads": case(2)}
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    out["a driver thread"] = case(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
