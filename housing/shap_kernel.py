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
scratch of ``hi - lo`` entries. :func:`kernel_ir` builds it with llvmlite's IR builder.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from housing.compiled_forest import LLVM_LOCK

# How far ahead of the leaf being added its run is prefetched: enough misses in flight to hide memory's
# latency, few enough that the prefetched lines are still cached when their leaf comes.
PREFETCH_LEAVES = 16


def kernel_ir() -> Any:
    """The LLVM module of ``shap_values`` (see the module's docstring for it in C)."""
    from llvmlite import ir

    i32, i64, f64 = ir.IntType(32), ir.IntType(64), ir.DoubleType()
    module = ir.Module("shap_kernel")
    byte_pointer = ir.IntType(8).as_pointer()
    prefetch = ir.Function(module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0i8")
    # rows, n_rows, n_features, lo, hi, first, offset, feature, above, at_most, table, out, starts
    arguments = [f64.as_pointer(), *[i64] * 4, *[i64.as_pointer()] * 3, *[f64.as_pointer()] * 4, i64.as_pointer()]
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), arguments), "shap_values")
    for argument in function.args:
        if isinstance(argument.type, ir.PointerType):
            argument.add_attribute("noalias")
    rows, n_rows, n_features, lo, hi, first, offset, feature, above, at_most, table, out, starts = function.args
    b = ir.IRBuilder(function.append_basic_block("entry"))
    pattern = b.alloca(i64)  # a stack slot: the optimiser keeps it in a register
    zero, one = i64(0), i64(1)

    def at(array: Any, index: Any) -> Any:
        return b.load(b.gep(array, [index]))

    def slots(leaf: Any) -> tuple[Any, Any]:
        """Leaf ``leaf``'s first slot and its number of slots."""
        start = at(first, leaf)
        return start, b.sub(at(first, b.add(leaf, one)), start)

    with _loop(b, zero, n_rows) as r:
        x, o = b.gep(rows, [b.mul(r, n_features)]), b.gep(out, [b.mul(r, n_features)])
        with _loop(b, lo, hi) as leaf:  # each leaf's pattern, and where its run starts
            s0, d = slots(leaf)
            b.store(zero, pattern)
            with _loop(b, zero, d) as k:
                s = b.add(s0, k)
                v = at(x, at(feature, s))
                inside = b.and_(b.fcmp_ordered(">", v, at(above, s)), b.fcmp_ordered("<=", v, at(at_most, s)))
                b.store(b.or_(b.load(pattern), b.shl(b.zext(inside, i64), k)), pattern)
            b.store(b.add(at(offset, leaf), b.mul(b.load(pattern), d)), b.gep(starts, [b.sub(leaf, lo)]))
        with _loop(b, lo, hi) as leaf:  # each run added to its features
            ahead = b.add(leaf, i64(PREFETCH_LEAVES))
            with b.if_then(b.icmp_signed("<", ahead, hi)):
                address = b.gep(table, [at(starts, b.sub(ahead, lo))])
                b.call(prefetch, [b.bitcast(address, byte_pointer), i32(0), i32(3), i32(1)])
            s0, d = slots(leaf)
            run = b.gep(table, [at(starts, b.sub(leaf, lo))])
            with _loop(b, zero, d) as k:
                total = b.gep(o, [at(feature, b.add(s0, k))])
                b.store(b.fadd(b.load(total), at(run, k)), total)
    b.ret_void()
    return module


@contextmanager
def _loop(b: Any, start: Any, stop: Any) -> Iterator[Any]:
    """``for (i = start; i < stop; i++)``: yields ``i``; what the ``with`` block builds is the loop's body."""
    entry = b.block
    head, body, after = (b.append_basic_block(name) for name in ("loop", "body", "after"))
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(start.type)
    i.add_incoming(start, entry)
    b.cbranch(b.icmp_signed("<", i, stop), body, after)
    b.position_at_end(body)
    yield i
    i.add_incoming(b.add(i, start.type(1)), b.block)  # from wherever the body ended
    b.branch(head)
    b.position_at_end(after)


_POINTER, _INT = ctypes.c_void_p, ctypes.c_int64
# ctypes releases the GIL for the call, so threads reading ranges of leaves run in parallel.
_SIGNATURE = ctypes.CFUNCTYPE(None, _POINTER, _INT, _INT, _INT, _INT, *[_POINTER] * 8)
_compiled: tuple[object, Callable[..., None]] | None = None


def shap_values_kernel() -> Callable[..., None]:
    """``shap_values`` compiled for this CPU (once per process: milliseconds), as a ctypes function.

    Raises whatever llvmlite raises where it cannot compile; callers keep another way to explain.
    """
    global _compiled
    with LLVM_LOCK:  # also makes the first caller compile and the others wait for it
        if _compiled is None:
            _compiled = _compile()
        return _compiled[1]


def _compile() -> tuple[object, Callable[..., None]]:
    """Compile under ``LLVM_LOCK`` (held by the caller)."""
    import llvmlite.binding as llvm

    llvm.initialize()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    module = llvm.parse_assembly(str(kernel_ir()))
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
