import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # helper modules beside the tests

# Kernels started by the tests run this interpreter: the python3 kernelspec that ipykernel
# installs in this environment comes before any user-wide one.
_kernels = Path(sys.prefix, "share", "jupyter")
if _kernels.is_dir():
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(_kernels), *filter(None, [os.environ.get("JUPYTER_PATH")])]
    )
