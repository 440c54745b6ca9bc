"""emolib: EmoDistill as a reproducible research report (see README.md)."""

import os as _os

__version__ = "0.1.0"

#: cuBLAS's deterministic workspace setting (PyTorch: "Reproducibility", CUDA convolution/cuBLAS notes).
#: cuBLAS reads it once, at the process's first CUDA matmul, which in a notebook or a script can come
#: before any run's ``train.setup`` (e.g. caching a backbone's states on the GPU): so it is set when
#: emolib is imported, unless the user set it. It changes nothing on a CPU.
CUBLAS_WORKSPACE = ":4096:8"
_os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
