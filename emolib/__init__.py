"""emolib: EmoDistill as a reproducible research report (see README.md)."""

import os as _os

__version__ = "0.1.0"

#: cuBLAS's deterministic workspace setting (PyTorch: "Reproducibility", CUDA convolution/cuBLAS notes).
#: cuBLAS reads it once, at the process's first CUDA matmul, which in a notebook or a script can come
#: before any run's ``train.setup`` (e.g. caching a backbone's states on the GPU): so it is set when
#: emolib is imported, unless the user set it. It changes nothing on a CPU.
CUBLAS_WORKSPACE = ":4096:8"
_os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)

#: transformers' warnings below errors and no hub download bars in notebooks' logs, unless the user set
#: TRANSFORMERS_VERBOSITY / HF_HUB_DISABLE_PROGRESS_BARS: set at import for the same reason (transformers
#: reads them once). What those reports said that matters, weights a checkpoint lacks, is checked by
#: emolib.pretrained.load_model, which refuses such a folder.
_os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
_os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

#: OpenMP (torch's threads, OpenBLAS's) counts the cores a process may run on, once, when it loads, and
#: not its container's CPU quota (docker run --cpus, a Kubernetes CPU limit): 64 threads on a 64-core
#: host then share 4 CPUs' worth of time. Under such a quota OMP_NUM_THREADS is set to it (rounded up),
#: unless the user set it; without one nothing changes. Processes emolib starts inherit it.
from . import machine as _machine  # noqa: E402 - stdlib only, no heavy imports

if "OMP_NUM_THREADS" not in _os.environ and (_cores := _machine.available_cores()) < _machine.affinity_cores():
    _os.environ["OMP_NUM_THREADS"] = str(_cores)

#: The same floats on every x86-64 CPU with AVX2 (machine.PORTABLE_ENV says which libraries and why), unless
#: EMOLIB_NUMERICS=native or the user set a variable. Each library reads its variable once (torch and oneDNN
#: at their first operation, numpy's OpenBLAS when numpy loads), so it is set here, before emolib imports
#: them; a library that has already read it keeps its own kernels, and a warning says so. Processes emolib
#: starts (workers, notebook kernels) inherit it.
import warnings as _warnings  # noqa: E402

for _late in _machine.apply_portable_numerics():
    _warnings.warn(_late, stacklevel=2)

#: An EMOLIB_ variable that nothing reads is most likely a misspelt one (a misspelt EMOLIB_CACHE would
#: send every feature into the checkout): say so once, when emolib is imported (emolib/envvars.py).
import sys as _sys  # noqa: E402

from . import envvars as _envvars  # noqa: E402 - stdlib only

for _unknown in _envvars.unknown():  # a line as emolib's other warnings (a Python warning would name runpy)
    print(f"warning: {_unknown}", file=_sys.stderr, flush=True)
