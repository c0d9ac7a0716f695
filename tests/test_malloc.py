"""jaxreg.runtime.malloc: after keep_freed_memory, a large buffer a thread frees and allocates again is not faulted in
again."""

import platform
import subprocess
import sys

import pytest

# plain malloc and free through ctypes, as XLA:CPU's buffers (numpy would ask for huge pages)
LIBC = """
import ctypes
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
"""

# allocate, touch, free a 256 MiB buffer, then count the minor page faults of doing it a second time
PROBE = LIBC + """
import resource, sys, threading
if sys.argv[1] == "on":
    from jaxreg.runtime import malloc
    assert malloc.keep_freed_memory()
def cycle():
    p = libc.malloc(256 * 2**20)
    ctypes.memset(p, 1, 256 * 2**20)  # every page written
    libc.free(p)
def in_a_thread():  # as XLA's worker threads: without one arena, a thread's own arena always mmaps chunks this large
    t = threading.Thread(target=cycle)
    t.start()
    t.join()
in_a_thread()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
in_a_thread()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(mode):
    r = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.split()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_a_freed_large_buffer_is_reused_not_faulted_in_again():
    pages = 256 * 2**20 // 4096
    assert _faults("off") > pages // 2  # glibc's default: mmap on allocate, munmap on free, fault every page anew
    assert _faults("on") < pages // 20


# free a 2.5 GiB buffer at the heap's top (untouched: virtual memory only) and see whether the break moves back
TRIM_PROBE = LIBC + """
from jaxreg.runtime import malloc
assert malloc.keep_freed_memory()
libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, (ctypes.c_ssize_t,)
p = libc.malloc(5 * 2**29)
grown = libc.sbrk(0)
libc.free(p)
print(grown - libc.sbrk(0))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_more_than_2_gib_freed_at_the_heap_top_is_kept():
    # the largest int mallopt takes as a trim threshold (2 GiB - 1) returned it, so the stride-2 network faulted
    # ~2 GiB in again every step; -1 never trims
    r = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split()[-1]) == 0


def test_elsewhere_it_is_a_no_op(monkeypatch):
    from jaxreg.runtime import malloc

    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert malloc.keep_freed_memory() is False
