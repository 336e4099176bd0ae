"""ArrayBufferSink (API.md §8)."""
import array
import gc
import os

import pytest

from bunsock._abs import ArrayBufferSink


def test_unstarted_sink_works_with_defaults():
    s = ArrayBufferSink()
    assert len(s) == 0
    assert s.write(b"abc") == 3
    assert s.flush() == 3  # non-stream: a count, data kept
    assert len(s) == 3
    assert s.end() == b"abc"


def test_non_stream_flush_counts_since_last_flush():
    s = ArrayBufferSink()
    s.start()
    s.write(b"hello ")
    s.write("world")
    assert s.flush() == 11
    assert s.flush() == 0
    s.write(b"!")
    assert s.flush() == 1
    assert len(s) == 12
    out = s.end()
    assert out == b"hello world!" and type(out) is bytes


def test_stream_flush_returns_and_empties():
    s = ArrayBufferSink()
    s.start(stream=True)
    s.write(b"ab")
    s.write(b"cd")
    out = s.flush()
    assert out == b"abcd" and type(out) is bytes
    assert len(s) == 0
    assert s.flush() == b""
    s.write(b"tail")
    assert s.end() == b"tail"


def test_as_bytearray():
    s = ArrayBufferSink()
    s.start(stream=True, as_bytearray=True)
    s.write(b"xy")
    out = s.flush()
    assert out == bytearray(b"xy") and type(out) is bytearray
    s.write(b"z")
    out = s.end()
    assert out == bytearray(b"z") and type(out) is bytearray
    s.start(as_bytearray=True)
    assert type(s.end()) is bytearray


def test_write_accepts_bytes_like_and_str():
    s = ArrayBufferSink()
    assert s.write(b"a") == 1
    assert s.write(bytearray(b"bc")) == 2
    assert s.write(memoryview(b"def")) == 3
    assert s.write(memoryview(b"0123456789")[2:5]) == 3  # contiguous slice
    assert s.write("é€") == 5  # UTF-8 byte count, not characters
    arr = array.array("H", [1, 2])
    assert s.write(arr) == 4  # bytes, not items
    assert s.write(b"") == 0
    assert s.write("") == 0
    assert s.end() == b"abcdef234" + "é€".encode() + arr.tobytes()


def test_write_non_contiguous_memoryview():
    s = ArrayBufferSink()
    data = bytes(range(100))
    view = memoryview(data)[::3]
    assert s.write(view) == len(view.tobytes())
    # A reversed 2-D view and a strided multi-byte one are flattened in C (row-major) order.
    m2 = memoryview(bytearray(range(24))).cast("B", (4, 6))[::-1]
    assert not m2.c_contiguous
    assert s.write(m2) == 24
    m3 = memoryview(array.array("i", range(10)))[::2]
    assert s.write(m3) == 20
    assert s.end() == view.tobytes() + m2.tobytes() + m3.tobytes()


def test_write_str_subclass_and_bytes_subclass():
    class S(str):
        pass

    class B(bytes):
        pass

    s = ArrayBufferSink()
    assert s.write(S("hi")) == 2
    assert s.write(B(b"yo")) == 2
    assert s.end() == b"hiyo"


@pytest.mark.parametrize("bad", [1, 1.5, None, object(), [b"a"], {"a": 1}])
def test_write_rejects_other_types(bad):
    s = ArrayBufferSink()
    with pytest.raises(TypeError, match=type(bad).__name__):
        s.write(bad)
    assert len(s) == 0


def test_write_lone_surrogate_raises_and_appends_nothing():
    s = ArrayBufferSink()
    s.write(b"ok")
    with pytest.raises(UnicodeEncodeError):
        s.write("\ud800")
    assert s.end() == b"ok"


def test_write_and_flush_after_end_raise():
    s = ArrayBufferSink()
    s.write(b"x")
    assert s.end() == b"x"
    with pytest.raises(ValueError, match="ended"):
        s.write(b"y")
    with pytest.raises(ValueError, match="ended"):
        s.flush()
    assert s.end() == b""  # idempotent
    assert len(s) == 0


def test_start_reopens_and_clears():
    s = ArrayBufferSink()
    s.write(b"old")
    s.start(stream=True)
    assert len(s) == 0
    assert s.flush() == b""
    s.write(b"x")
    s.end()
    s.start()
    assert s.write(b"new") == 3
    assert s.flush() == 3  # back to non-stream: count
    assert s.end() == b"new"


def test_start_high_water_mark():
    s = ArrayBufferSink()
    s.start(high_water_mark=1 << 20)
    s.write(b"a" * 1000)
    assert s.end() == b"a" * 1000
    s.start(high_water_mark=0)
    s.start(high_water_mark=None)
    s.write(b"b")
    assert s.end() == b"b"


@pytest.mark.parametrize("bad,exc", [
    (-1, ValueError),
    ("10", TypeError),
    (1.0, TypeError),
    (True, TypeError),
    (b"x", TypeError),
    (1 << 80, OverflowError),
])
def test_start_high_water_mark_rejects(bad, exc):
    s = ArrayBufferSink()
    s.write(b"kept")
    with pytest.raises(exc):
        s.start(high_water_mark=bad)
    assert s.end() == b"kept"  # a rejected start() changes nothing


def test_start_is_keyword_only():
    with pytest.raises(TypeError):
        ArrayBufferSink().start(True)


def test_huge_high_water_mark_is_memory_error():
    s = ArrayBufferSink()
    with pytest.raises(MemoryError):
        s.start(high_water_mark=(1 << 62))


def test_large_and_many_writes():
    s = ArrayBufferSink()
    s.start(stream=True)
    parts = [bytes([i % 251]) * (i * 37 % 5000) for i in range(2000)]
    got = []
    for i, p in enumerate(parts):
        assert s.write(p) == len(p)
        if i % 97 == 0:
            got.append(s.flush())
    got.append(s.end())
    assert b"".join(got) == b"".join(parts)


def test_big_single_write():
    s = ArrayBufferSink()
    blob = bytes(range(256)) * 40000  # 10 MB
    assert s.write(blob) == len(blob)
    assert len(s) == len(blob)
    assert s.end() == blob


def test_exporter_released_after_write():
    buf = bytearray(b"abc")
    s = ArrayBufferSink()
    s.write(buf)
    s.write(memoryview(buf)[::2])
    buf.extend(b"d")  # would raise BufferError if a buffer export leaked
    assert s.end() == b"abcac"


def _asan_allocated():
    """Under AddressSanitizer (scripts/asan-tests.sh preloads its runtime) freed memory sits in
    ASan's quarantine and stays resident, so RSS says nothing about a leak; ASan's own count of
    live heap bytes does. None when ASan is not loaded."""
    import ctypes
    try:
        fn = ctypes.CDLL(None).__sanitizer_get_current_allocated_bytes
    except AttributeError:
        return None
    fn.restype = ctypes.c_size_t
    return fn


def _memory_in_use():
    live = _asan_allocated()
    if live is not None:
        return live()
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pytest.skip("needs /proc/self/statm to read the resident set size")


def test_dealloc_with_data_frees_its_storage():
    chunk = b"x" * (1 << 20)
    gc.collect()
    before = _memory_in_use()
    for _ in range(300):                  # 300 MiB in all if a sink's storage leaked
        s = ArrayBufferSink()
        s.write(chunk)
        s.write(chunk)
        del s
    gc.collect()
    assert _memory_in_use() - before < 64 << 20
