"""The pipeline's stages (dvc.yaml runs each as ``python -m training.<stage>``).

Importing the package pins NumPy's CPU dispatch for the stage's process, before NumPy is imported: NumPy picks
its SIMD loops by CPU when it loads, and on a CPU with AVX-512 (X86_V4) its float64 ``log``, ``log1p`` and
``arcsin`` come from SVML, which rounds some values differently in the last bit from the C library every other
CPU uses (on the training split: 0.05% of the log incomes, 2% of the log counts, 5-8% of the distances to the
cities). Those features then move LightGBM's bin thresholds by as much, so the same pipeline wrote a model file
of other bytes on such a machine: the champion of dvc.lock at 953671d, 16235a3c..., came out as cf9452ea... on
an AMD EPYC with AVX-512, and as 16235a3c... again with this pin. With X86_V4 and the targets above it off,
NumPy computes those functions with the C library on every x86-64 CPU; AVX2 stays, its loops round as the C
library does. Set NPY_DISABLE_CPU_FEATURES yourself to override; a process that imported NumPy before this
package (a test run) keeps its dispatch.
"""

import os

# NumPy's dispatch targets above AVX2 (numpy >= 2.4 names; older names are ignored with an ImportWarning).
PINNED_CPU_FEATURES = "X86_V4 AVX512_ICL AVX512_SPR"

os.environ.setdefault("NPY_DISABLE_CPU_FEATURES", PINNED_CPU_FEATURES)
