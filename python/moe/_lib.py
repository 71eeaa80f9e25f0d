"""_lib.py - finds libmoe.so, declares the C API's structs and functions for ctypes, and turns
a failing status into a Python exception that carries the library's status and message.

ctypes rather than a C extension: a call costs about a microsecond here (bench/py_overhead.py),
against milliseconds for the smallest useful layer call, and it needs no compiler or Python
headers on the user's machine.
"""
import ctypes
import ctypes.util
import os

# ---- the library --------------------------------------------------------------------------


def _candidates():
    env = os.environ.get("MOE_LIBRARY")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    try:  # written by `make install` / `cmake --install`: the library installed with the package
        from ._install import LIBRARY  # noqa: PLC0415

        yield LIBRARY
    except ImportError:
        pass
    # a source tree: python/moe/ beside build/
    yield os.path.join(here, "..", "..", "build", "libmoe.so")
    found = ctypes.util.find_library("moe")
    if found:
        yield found
    yield "libmoe.so.0"


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (absent)")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("moe: cannot load libmoe.so; build it (make test or cmake --build build), install it "
                      "(make install), or set MOE_LIBRARY to its path. Tried: " + "; ".join(tried))


lib, LIBRARY_PATH = _load()

# ---- errors -------------------------------------------------------------------------------

STATUS_NAMES = {0: "MOE_OK", 1: "MOE_ERR_INVALID_ARG", 2: "MOE_ERR_CONFIG", 3: "MOE_ERR_SHAPE",
                4: "MOE_ERR_NOMEM", 5: "MOE_ERR_IO", 6: "MOE_ERR_TRUNCATED", 7: "MOE_ERR_FORMAT",
                8: "MOE_ERR_DTYPE", 9: "MOE_ERR_MISSING", 10: "MOE_ERR_NONFINITE", 11: "MOE_ERR_STATE",
                12: "MOE_ERR_UNSUPPORTED", 13: "MOE_ERR_COMM", 14: "MOE_ERR_DIVERGED"}


class MoeError(RuntimeError):
    """A call into libmoe failed. `status` is the moe_status code, `status_name` its enum name,
    `reason` the library's words for the status, `message` its sentence about this failure."""

    def __init__(self, status, message, where=""):
        self.status = int(status)
        self.status_name = STATUS_NAMES.get(self.status, "status %d" % self.status)
        self.reason = lib.moe_status_str(self.status).decode()
        self.message = message
        self.where = where
        text = "%s: %s" % (self.reason, message) if message else self.reason
        super().__init__(("%s: " % where if where else "") + text + " [%s]" % self.status_name)


class ConfigError(MoeError, ValueError):
    """Impossible settings (MOE_ERR_CONFIG) or a bad argument (MOE_ERR_INVALID_ARG)."""


class ShapeError(MoeError, ValueError):
    """A tensor's shape does not fit (MOE_ERR_SHAPE)."""


class NonFiniteError(MoeError, ValueError):
    """NaN or Inf in an input (MOE_ERR_NONFINITE)."""


class FileFormatError(MoeError, ValueError):
    """A malformed, truncated or unexpected file (MOE_ERR_FORMAT, _TRUNCATED, _DTYPE, _MISSING)."""


class LibIOError(MoeError, OSError):
    """open/read/write failed (MOE_ERR_IO)."""


class OutOfMemoryError(MoeError, MemoryError):
    """An allocation failed (MOE_ERR_NOMEM)."""


class StateError(MoeError):
    """A call out of order, e.g. backward without a forward (MOE_ERR_STATE)."""


_CLASSES = {1: ConfigError, 2: ConfigError, 3: ShapeError, 4: OutOfMemoryError, 5: LibIOError,
            6: FileFormatError, 7: FileFormatError, 8: FileFormatError, 9: FileFormatError,
            10: NonFiniteError, 11: StateError}


def check(status, where=""):
    """Raises the MoeError subclass of a failing status, with moe_last_error()'s message (read
    at once: it is this thread's, and the next failing call replaces it)."""
    if status != 0:
        msg = lib.moe_last_error().decode(errors="replace")
        raise _CLASSES.get(int(status), MoeError)(status, msg, where)


# ---- structs (include/moe.h) ----------------------------------------------------------------

c_int, c_float, c_double, c_size_t = ctypes.c_int, ctypes.c_float, ctypes.c_double, ctypes.c_size_t
c_i64, c_u64, c_i32 = ctypes.c_int64, ctypes.c_uint64, ctypes.c_int32
P = ctypes.POINTER


class LayerConfig(ctypes.Structure):
    _fields_ = [("d", c_int), ("h", c_int), ("n", c_int), ("k", c_int), ("bias", c_int),
                ("w_importance", c_float), ("w_load", c_float), ("noise_eps", c_float),
                ("groups", c_int), ("k_groups", c_int)]


class LayerStats(ctypes.Structure):
    _fields_ = [("loss_importance", c_float), ("loss_load", c_float), ("cv_importance", c_float),
                ("cv_load", c_float), ("max_mean_load", c_float), ("B", c_int)]


class Param(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("ndim", c_int), ("shape", c_i64 * 3), ("numel", c_size_t),
                ("data", P(c_float)), ("grad", P(c_float)), ("expert_first", c_int), ("experts", c_int),
                ("data_bf16", P(ctypes.c_uint16))]


class LmConfig(ctypes.Structure):
    _fields_ = [("vocab", c_int), ("d", c_int), ("ffn", c_int), ("n", c_int), ("k", c_int), ("h", c_int),
                ("w_importance", c_float), ("w_load", c_float), ("noise_eps", c_float), ("dropout", c_float),
                ("groups", c_int), ("k_groups", c_int)]


class LmStats(ctypes.Structure):
    _fields_ = [("loss", c_double), ("aux", c_double), ("moe", LayerStats), ("tokens", c_i64),
                ("flops", c_double)]


class BleuStats(ctypes.Structure):
    _fields_ = [("match", c_i64 * 4), ("total", c_i64 * 4), ("hyp_len", c_i64), ("ref_len", c_i64)]


class BleuBootstrap(ctypes.Structure):
    _fields_ = [("bleu_a", c_double), ("bleu_b", c_double), ("a_lo", c_double), ("a_hi", c_double),
                ("b_lo", c_double), ("b_hi", c_double), ("delta_lo", c_double), ("delta_hi", c_double),
                ("p_a_better", c_double), ("p_b_better", c_double), ("resamples", c_int)]


# ---- functions ------------------------------------------------------------------------------

_vp = ctypes.c_void_p
_fp = P(c_float)
_SIGS = {
    "moe_version": (ctypes.c_char_p, []),
    "moe_version_number": (c_int, []),
    "moe_status_str": (ctypes.c_char_p, [c_int]),
    "moe_last_error": (ctypes.c_char_p, []),
    "moe_set_threads": (None, [c_int]),
    "moe_get_threads": (c_int, []),
    # the layer
    "moe_layer_config_default": (LayerConfig, []),
    "moe_layer_config_check": (c_int, [P(LayerConfig)]),
    "moe_layer_create": (c_int, [P(_vp), P(LayerConfig), c_u64]),
    "moe_layer_free": (None, [_vp]),
    "moe_layer_get_config": (LayerConfig, [_vp]),
    "moe_layer_forward": (c_int, [_vp, _fp, _fp, c_int, c_int, _fp, P(LayerStats)]),
    "moe_layer_backward_aux": (c_int, [_vp, _fp, _fp, c_float]),
    "moe_layer_gates": (c_int, [_vp, _fp]),
    "moe_layer_counts": (c_int, [_vp, P(c_int)]),
    "moe_layer_importance": (c_int, [_vp, _fp]),
    "moe_layer_load_vec": (c_int, [_vp, _fp]),
    "moe_layer_num_params": (c_int, [_vp]),
    "moe_layer_param": (c_int, [_vp, c_int, P(Param)]),
    "moe_layer_zero_grad": (None, [_vp]),
    "moe_layer_get_rng": (None, [_vp, P(c_u64), P(c_u64)]),
    "moe_layer_set_rng": (None, [_vp, c_u64, c_u64]),
    "moe_layer_save": (c_int, [_vp, ctypes.c_char_p]),
    "moe_layer_load": (c_int, [P(_vp), ctypes.c_char_p]),
    "moe_layer_set_parallel": (c_int, [_vp, c_int]),
    # the language model, from a checkpoint
    "moe_lm_ckpt_load": (c_int, [P(_vp), ctypes.c_char_p]),
    "moe_lm_ckpt_free": (None, [_vp]),
    "moe_lm_ckpt_model": (_vp, [_vp]),
    "moe_lm_ckpt_meta": (ctypes.c_char_p, [_vp, ctypes.c_char_p]),
    "moe_lm_ckpt_meta_count": (c_int, [_vp]),
    "moe_lm_ckpt_meta_at": (c_int, [_vp, c_int, P(ctypes.c_char_p), P(ctypes.c_char_p)]),
    "moe_lm_ckpt_encode": (c_int, [_vp, ctypes.c_char_p, c_size_t, P(P(c_i32)), P(c_size_t)]),
    "moe_lm_ckpt_decode": (c_int, [_vp, P(c_i32), c_size_t, P(ctypes.c_void_p), P(c_size_t)]),
    "moe_lm_ckpt_sample": (c_int, [_vp, ctypes.c_char_p, c_size_t, c_int, c_double, c_int, c_u64,
                                   P(ctypes.c_void_p), P(c_size_t)]),
    "moe_lm_ckpt_eval": (c_int, [_vp, ctypes.c_char_p, c_int, c_int, c_int, c_i64, P(c_double), P(c_u64)]),
    "moe_lm_get_config": (LmConfig, [_vp]),
    "moe_lm_param_counts": (None, [_vp, P(c_i64), P(c_i64)]),
    "moe_lm_next_logits": (c_int, [_vp, P(c_i32), c_int, _fp]),
    "moe_lm_reset_state": (None, [_vp]),
    "moe_lm_step": (c_int, [_vp, P(c_i32), c_int, c_int, c_int, P(LmStats)]),
    # BLEU
    "moe_bleu_stats_sentence": (c_int, [P(BleuStats), P(c_i32), c_size_t, P(c_i32), c_size_t]),
    "moe_bleu_stats_add": (None, [P(BleuStats), P(BleuStats)]),
    "moe_bleu_score": (c_double, [P(BleuStats), c_int]),
    "moe_bleu_bootstrap_pair": (c_int, [P(BleuStats), P(BleuStats), c_size_t, c_int, c_int, c_u64,
                                        P(BleuBootstrap)]),
    # counter-based random numbers
    "moe_rng_uniform": (c_float, [c_u64, c_u64]),
}

for _name, (_res, _args) in _SIGS.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args

# ---- threads --------------------------------------------------------------------------------
# The library's OpenMP regions take their thread count from the calling thread's OpenMP setting,
# which other libraries in the process share (torch.set_num_threads(1) sets it for libgomp, which
# torch and libmoe both use). So each compute call runs under the library's own count
# (moe.set_threads) and gives the caller's back afterwards: neither setting changes the other.
try:
    _gomp = ctypes.CDLL("libgomp.so.1")
    _gomp.omp_get_max_threads.restype = c_int
    _gomp.omp_set_num_threads.argtypes = [c_int]
except OSError:  # a build without OpenMP
    _gomp = None


def _keep_omp(fn, *args):
    """fn(*args) with the OpenMP thread setting as it was before"""
    saved = _gomp.omp_get_max_threads() if _gomp else None
    try:
        return fn(*args)
    finally:
        if _gomp and _gomp.omp_get_max_threads() != saved:
            _gomp.omp_set_num_threads(saved)


_keep_omp(lib.moe_get_threads)  # the library's count (all cores) fixed now, the caller's kept
_threads = [lib.moe_get_threads()]


def set_threads(n):
    _keep_omp(lib.moe_set_threads, int(n))
    _threads[0] = lib.moe_get_threads()


def threaded(fn, *args):
    """fn(*args) (a compute call) on the library's thread count"""
    if _gomp is None:
        return fn(*args)
    saved = _gomp.omp_get_max_threads()
    if saved == _threads[0]:
        return fn(*args)
    _gomp.omp_set_num_threads(_threads[0])
    try:
        return fn(*args)
    finally:
        _gomp.omp_set_num_threads(saved)


libc = ctypes.CDLL(None)
libc.free.argtypes = [ctypes.c_void_p]
libc.free.restype = None


def float_ptr(a):
    """A float* to a C-contiguous float32 numpy array (None for None)."""
    return None if a is None else a.ctypes.data_as(_fp)


def view(ptr, shape, owner, dtype=c_float):
    """A numpy array over `ptr` (no copy) that keeps `owner` (the object whose memory it is)
    alive while the array or anything made from it exists."""
    import numpy as np  # noqa: PLC0415

    count = 1
    for s in shape:
        count *= int(s)
    addr = ctypes.cast(ptr, ctypes.c_void_p).value
    buf = (dtype * count).from_address(addr)
    buf._owner = owner  # the array's base is a memoryview of buf, which holds buf
    return np.ctypeslib.as_array(buf).reshape(shape)


class Handle:
    """Owns one C object (a layer, a checkpoint): frees it when the last reference goes, so
    numpy views of its memory (which refer to the handle, not to the Python wrapper) stay valid
    for as long as they exist, with no reference cycle."""

    __slots__ = ("ptr", "_free")

    def __init__(self, ptr, free):
        self.ptr = ptr
        self._free = free

    def __del__(self):
        if self.ptr:
            self._free(self.ptr)
            self.ptr = None
