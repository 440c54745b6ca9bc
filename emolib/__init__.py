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
