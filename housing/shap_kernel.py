"""The TreeSHAP tables' read, compiled with llvmlite: the compiler lleaves already brings for the forest.

Explaining a house from the tables (:mod:`housing.tree_shap`) reads one short run of values
per leaf, at a place set by the house's bit pattern at that leaf. In NumPy that took one
pass over all the slots per step (bits, patterns, indices, gather, fold), each allocating
arrays of the slots' size. Compiled, it is two passes over the leaves: one finds each
leaf's pattern and where its run starts, the other adds the runs to the features they
belong to, prefetching the runs ``PREFETCH_LEAVES`` leaves ahead, because in tables of
tens of MB nearly every run is a cache miss and the first pass computes all the addresses.

The function, in C::

    void shap_values(const double *rows, int64_t n_rows, int64_t n_features, int64_t lo, int64_t hi,
                     const int64_t *first, const int64_t *offset, const int64_t *feature,
                     const double *above, const double *at_most, const double *table,
                     double *out, int64_t *starts)
    {
        for (int64_t r = 0; r < n_rows; r++) {
            const double *x = rows + r * n_features;
            double *o = out + r * n_features;
            for (int64_t l = lo; l < hi; l++) {  /* each leaf's pattern, and where its run starts */
                int64_t p = 0, d = first[l + 1] - first[l];
                for (int64_t k = 0; k < d; k++) {
                    int64_t s = first[l] + k;
                    p |= (int64_t)(x[feature[s]] > above[s] && x[feature[s]] <= at_most[s]) << k;
                }
                starts[l - lo] = offset[l] + p * d;
            }
            for (int64_t l = lo; l < hi; l++) {  /* each run added to its features */
                if (l + PREFETCH_LEAVES < hi) __builtin_prefetch(table + starts[l + PREFETCH_LEAVES - lo]);
                for (int64_t k = 0; k < first[l + 1] - first[l]; k++)
                    o[feature[first[l] + k]] += table[starts[l - lo] + k];
            }
        }
    }

Leaves ``lo`` to ``hi`` (excluded) of a forest whose leaf ``l`` has slots ``first[l]`` to
``first[l + 1]`` (excluded); ``out`` (n_rows, n_features) is added to, ``starts`` is
scratch of ``hi - lo`` entries. The IR keeps its variables in stack slots, which LLVM's
optimiser promotes to registers.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable

from housing.compiled_forest import LLVM_LOCK

# How far ahead of the leaf being added its run is prefetched: enough misses in flight to hide memory's
# latency, few enough that the prefetched lines are still cached when their leaf comes.
PREFETCH_LEAVES = 16

_IR = """
declare void @llvm.prefetch.p0i8(i8* nocapture readonly, i32, i32, i32)

define void @shap_values(double* noalias nocapture readonly %rows, i64 %n_rows, i64 %n_features, i64 %lo, i64 %hi,
                         i64* noalias nocapture readonly %first, i64* noalias nocapture readonly %offset,
                         i64* noalias nocapture readonly %feature, double* noalias nocapture readonly %above,
                         double* noalias nocapture readonly %at_most, double* noalias nocapture readonly %table,
                         double* noalias nocapture %out, i64* noalias nocapture %starts) {
entry:
  %r = alloca i64
  %l = alloca i64
  %k = alloca i64
  %p = alloca i64
  store i64 0, i64* %r
  br label %row
row:                                                  ; for (r = 0; r < n_rows; r++)
  %rv = load i64, i64* %r
  %row_more = icmp slt i64 %rv, %n_rows
  br i1 %row_more, label %row_body, label %done
row_body:
  %row_start = mul i64 %rv, %n_features
  %x = getelementptr double, double* %rows, i64 %row_start
  %o = getelementptr double, double* %out, i64 %row_start
  store i64 %lo, i64* %l
  br label %pattern_leaf
pattern_leaf:                                         ; first pass: for (l = lo; l < hi; l++)
  %lv = load i64, i64* %l
  %pattern_more = icmp slt i64 %lv, %hi
  br i1 %pattern_more, label %pattern_body, label %add_start
pattern_body:
  %s0p = getelementptr i64, i64* %first, i64 %lv
  %s0 = load i64, i64* %s0p
  %lv1 = add i64 %lv, 1
  %s1p = getelementptr i64, i64* %first, i64 %lv1
  %s1 = load i64, i64* %s1p
  %d = sub i64 %s1, %s0
  store i64 0, i64* %p
  store i64 0, i64* %k
  br label %bit
bit:                                                  ; for (k = 0; k < d; k++) p |= bit << k
  %kv = load i64, i64* %k
  %bit_more = icmp slt i64 %kv, %d
  br i1 %bit_more, label %bit_body, label %pattern_done
bit_body:
  %s = add i64 %s0, %kv
  %fp = getelementptr i64, i64* %feature, i64 %s
  %f = load i64, i64* %fp
  %vp = getelementptr double, double* %x, i64 %f
  %v = load double, double* %vp
  %ap = getelementptr double, double* %above, i64 %s
  %a = load double, double* %ap
  %bp = getelementptr double, double* %at_most, i64 %s
  %b = load double, double* %bp
  %gt = fcmp ogt double %v, %a
  %le = fcmp ole double %v, %b
  %in = and i1 %gt, %le
  %one = zext i1 %in to i64
  %shifted = shl i64 %one, %kv
  %pv = load i64, i64* %p
  %pn = or i64 %pv, %shifted
  store i64 %pn, i64* %p
  %kn = add i64 %kv, 1
  store i64 %kn, i64* %k
  br label %bit
pattern_done:                                         ; starts[l - lo] = offset[l] + p * d
  %pattern = load i64, i64* %p
  %offp = getelementptr i64, i64* %offset, i64 %lv
  %off = load i64, i64* %offp
  %pd = mul i64 %pattern, %d
  %start = add i64 %off, %pd
  %li = sub i64 %lv, %lo
  %stp = getelementptr i64, i64* %starts, i64 %li
  store i64 %start, i64* %stp
  store i64 %lv1, i64* %l
  br label %pattern_leaf
add_start:
  store i64 %lo, i64* %l
  br label %add_leaf
add_leaf:                                             ; second pass: for (l = lo; l < hi; l++)
  %al = load i64, i64* %l
  %add_more = icmp slt i64 %al, %hi
  br i1 %add_more, label %add_body, label %row_next
add_body:
  %ali = sub i64 %al, %lo
  %ahead = add i64 %al, PREFETCH_LEAVES
  %ahead_in = icmp slt i64 %ahead, %hi
  br i1 %ahead_in, label %prefetch, label %run
prefetch:
  %aheadi = add i64 %ali, PREFETCH_LEAVES
  %pfp = getelementptr i64, i64* %starts, i64 %aheadi
  %pfs = load i64, i64* %pfp
  %pfa = getelementptr double, double* %table, i64 %pfs
  %pfb = bitcast double* %pfa to i8*
  call void @llvm.prefetch.p0i8(i8* %pfb, i32 0, i32 3, i32 1)
  br label %run
run:
  %as0p = getelementptr i64, i64* %first, i64 %al
  %as0 = load i64, i64* %as0p
  %al1 = add i64 %al, 1
  %as1p = getelementptr i64, i64* %first, i64 %al1
  %as1 = load i64, i64* %as1p
  %ad = sub i64 %as1, %as0
  %astp = getelementptr i64, i64* %starts, i64 %ali
  %ast = load i64, i64* %astp
  %t = getelementptr double, double* %table, i64 %ast
  store i64 0, i64* %k
  br label %value
value:                                                ; for (k = 0; k < d; k++) o[feature[s]] += t[k]
  %jv = load i64, i64* %k
  %value_more = icmp slt i64 %jv, %ad
  br i1 %value_more, label %value_body, label %add_next
value_body:
  %js = add i64 %as0, %jv
  %jfp = getelementptr i64, i64* %feature, i64 %js
  %jf = load i64, i64* %jfp
  %tp = getelementptr double, double* %t, i64 %jv
  %tv = load double, double* %tp
  %op = getelementptr double, double* %o, i64 %jf
  %ov = load double, double* %op
  %sum = fadd double %ov, %tv
  store double %sum, double* %op
  %jn = add i64 %jv, 1
  store i64 %jn, i64* %k
  br label %value
add_next:
  store i64 %al1, i64* %l
  br label %add_leaf
row_next:
  %rn = add i64 %rv, 1
  store i64 %rn, i64* %r
  br label %row
done:
  ret void
}
"""

_POINTER, _INT = ctypes.c_void_p, ctypes.c_int64
# ctypes releases the GIL for the call, so threads reading ranges of leaves run in parallel.
_SIGNATURE = ctypes.CFUNCTYPE(None, _POINTER, _INT, _INT, _INT, _INT, *[_POINTER] * 8)
_compiled: tuple[object, Callable[..., None]] | None = None
_compiling = threading.Lock()


def shap_values_kernel() -> Callable[..., None]:
    """``shap_values`` compiled for this CPU (once per process: milliseconds), as a ctypes function.

    Raises whatever llvmlite raises where it cannot compile; callers keep another way to explain.
    """
    global _compiled
    with _compiling:
        if _compiled is None:
            _compiled = _compile()
        return _compiled[1]


def _compile() -> tuple[object, Callable[..., None]]:
    import llvmlite.binding as llvm

    with LLVM_LOCK:
        llvm.initialize()
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        module = llvm.parse_assembly(_IR.replace("PREFETCH_LEAVES", str(PREFETCH_LEAVES)))
        module.verify()
        machine = llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(
            cpu=llvm.get_host_cpu_name(), opt=3
        )
        passes = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(speed_level=3))
        passes.getModulePassManager().run(module, passes)
        engine = llvm.create_mcjit_compiler(module, machine)
        engine.finalize_object()
        # The engine owns the machine code: it is kept beside the function for the life of the process.
        return engine, _SIGNATURE(engine.get_function_address("shap_values"))
