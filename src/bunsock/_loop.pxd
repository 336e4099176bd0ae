# Declarations of the loop types, so other Cython modules (TLS) reach their C-level parts.
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from cpython.ref cimport PyObject
from ._core cimport *

# Socket states, flag bits and binary types, shared with _tls.pyx.
# ready_state values
cdef enum:
    ST_CONNECTING = 0
    ST_OPEN = 1
    ST_CLOSED = 3

# Socket flag bits
cdef enum:
    F_REFED = 1 << 0
    F_PAUSED = 1 << 1
    F_EOF = 1 << 2          # peer's FIN was read
    F_ENDING = 1 << 3       # end() called: FIN follows once the sink has flushed
    F_SHUT_WR = 1 << 4      # our FIN is sent (or write side shut)
    F_DRAIN_OWED = 1 << 5   # a write could not complete at once: `drain` once nothing is pending
    F_CORKED = 1 << 6       # on the loop's cork list
    F_IDLE_FIRED = 1 << 7   # `timeout` fired and no activity since
    F_OPENED = 1 << 8       # `open` fired: `close` must fire exactly once (and only then)
    F_REGISTERED = 1 << 9   # fd is in the poller (and the loop holds a reference)
    F_CLIENT = 1 << 10
    F_UNIX = 1 << 11
    F_USER_TIMEOUT = 1 << 12   # timeout() called while connecting: it wins over connect(timeout=)
    F_BACKED_UP = 1 << 13   # the kernel refused bytes: the sink holds a backlog (buffered_amount)
    F_TLS = 1 << 14         # ext.tls is this socket's TLS layer (a _TlsHook)
    F_WHOLE = 1 << 15       # a whole message in progress (Group, write_frame): the mark must not cut it
    F_LWM_FIRED = 1 << 16   # `drain` fired at low_water_mark: not again at empty (one per episode)
    F_PIPE_SRC = 1 << 17    # ext.pipe_out relays what this socket reads (_relay.pxi)
    F_PIPE_DST = 1 << 18    # ext.pipe_in relays into this socket: its writable event is the relay's
    F_PIPE_HELD = 1 << 19   # reading stopped by the relay (destination over its limit), not pause()
    F_SPARE = 1 << 20       # on loop.spare: an empty sink keeping large storage, freed if it stays so
    F_READ_FIRED = 1 << 21  # idle_timeout_mode="read": `timeout` fired and nothing read since
    F_FRAMED = 1 << 22      # ext.frames is this socket's framing state (_framing.pxi)
    F_CLOSE_AFTER = 1 << 23 # `with` left while connecting: close once the writes and the FIN are out

cdef enum:
    BT_BYTES = 0
    BT_BYTEARRAY = 1
    BT_MEMORYVIEW = 2

@cython.final
cdef class _Ctx:
    cdef object on_open, on_data, on_drain, on_close, on_error, on_end, on_timeout
    cdef object on_connect_error, on_handshake
    # on_data resolved once per table (set_handlers): its function, and the object it is bound
    # to (None unless on_data is a bound method), so each message's call needs no method object
    cdef object data_fn, data_self
    cdef int binary_type
    cdef bint allow_half_open
    cdef Py_ssize_t hwm          # -1: unbounded
    cdef Py_ssize_t lwm          # `drain` once the backlog is at most this (0: once empty)
    cdef uint32_t idle_ms        # 0: no idle timeout
    cdef object tls              # ssl.SSLContext or None
    cdef object tls_server_side
    cdef object server_hostname
    cdef bint pause_on_connect   # sockets start paused: `open` fires, `data` waits for resume()
    cdef bint idle_read          # idle_timeout_mode="read": only reads restart the idle timeout
    cdef object framing          # _FrameRule every socket starts with, or None (_framing.pxi)
    cdef set_handlers(self, tuple h)
    cdef _Ctx copy(self)
    cdef tuple handlers(self)

cdef class _Handle:
    cdef Loop loop
    cdef int fd
    cdef uint32_t mask      # interest currently registered with the poller
    cdef int _on_event(self, uint32_t ev) except -1

@cython.final
cdef class _Waker(_Handle):
    cdef bs_waker w

# A receive buffer lent out as memoryviews (_recvbuf.pxi): TCP's, and UDP's slots.
cdef class _LentBuf:
    cdef char *buf
    cdef Py_ssize_t lent           # length of the view being lent
    cdef Py_ssize_t lent_off       # and its offset (framing lends single messages; UDP one slot)
    cdef int exports               # buffer exports alive (memoryviews of it)

@cython.final
cdef class _RecvBuf(_LentBuf):
    cdef int alloc(self, Py_ssize_t size) except -1

@cython.final
cdef class _UdpArea(_LentBuf):
    cdef bs_udp_in *slots          # UDP_BATCH slots of UDP_SLOT bytes in buf

@cython.final
cdef class Timer:
    cdef Loop loop
    cdef bs_timer t
    cdef object fn
    cdef tuple args
    cdef uint64_t interval      # ms; 0 = one-shot
    cdef uint64_t start         # ms; call_every's n-th call is due at start + n * interval
    cdef bint refed
    cdef bint active            # armed in the wheel or waiting in the ready queue
    cdef _deactivate(self)
    cdef int _fire(self) except -1

cdef class Loop:
    cdef bs_poller poller
    cdef bs_event *events
    cdef bs_wheel wheel
    cdef _RecvBuf recv             # owns rbuf
    cdef char *rbuf
    cdef Py_ssize_t rbuf_size
    cdef Py_ssize_t read_budget
    cdef uint64_t now
    cdef Py_ssize_t refs
    cdef int depth                 # handler calls in progress (writes are corked while > 0)
    cdef Socket cork_head          # sockets with corked writes to flush when depth returns to 0
    cdef list dead                 # closed this batch: kept alive until the batch is done
    cdef object ready              # deque of Timer for call_soon
    cdef Py_ssize_t nready         # len(ready), read once per iteration
    # Polling without letting the GIL go first (_poll): how many iterations to skip that try
    # after it found nothing, the current backoff, and tries in a row that found events.
    cdef int try_skip, try_backoff, try_streak
    cdef int64_t gil_since, gil_hold_ms   # Loop._poll: when the GIL was last let go, how long to keep it
    cdef int signal_cap            # run() in the main thread: longest blocking wait (ms), else -1
    cdef bint running, stopping, closed, embedded
    cdef _Waker waker
    cdef object executor
    cdef unsigned long run_thread  # bs_thread_id() of the thread in run()/run_once(); 0: none
    cdef long pid                  # the process that created it (a forked child must not use it)
    cdef set listeners             # its live listeners: serve() workers adopt them after fork
    cdef object __weakref__        # the at-fork hook finds every live loop through a WeakSet
    cdef uint64_t n_send, n_recv, n_poll, n_accept
    cdef _UdpArea udp_rx           # UDP receive slots, made by the first UDP socket
    cdef list spare                # sockets whose emptied sink keeps > BS_SINK_KEEP (_sock_write)
    cdef Timer spare_timer
    cdef _close_c(self)
    cdef _forked(self)
    cdef int _new_rbuf(self) except -1
    cdef int _check_open(self) except -1
    cdef int _uncork(self) except -1
    cdef int _arm(self, bs_timer *t, double delay) except -1
    cdef int _retire(self, object handle) except -1
    cdef Timer _new_timer(self, fn, tuple args)
    cdef Timer _timer(self, double delay, uint64_t interval, fn, tuple args)
    cdef Timer _soon(self, fn, tuple args)
    cdef int _run_ready(self) except -1
    cdef int _run_timers(self) except -1
    cdef int64_t _due(self) noexcept
    cdef int64_t _timeout(self) noexcept
    cdef int _poll(self, int timeout) except? -1
    cdef int _iterate(self, int timeout) except -1
    cdef int _begin(self) except -1
    cdef void _end(self) noexcept

@cython.final
cdef class Listener(_Handle):
    cdef _Ctx ctx
    cdef public object data
    cdef object _hostname, _unix
    cdef bytes _unix_path
    cdef object _unix_id          # (st_dev, st_ino) of the socket file this listener bound
    cdef int _port
    cdef Py_ssize_t _connections
    cdef Socket head              # accepted sockets still open (intrusive list)
    cdef bint refed, stopped
    cdef bint own_nodelay         # its sockopts chose TCP_NODELAY: accepted sockets keep it
    cdef Timer backoff
    cdef Py_ssize_t max_conns     # max_connections (0: no limit)
    cdef bint full                # at max_conns: not accepting until a socket closes
    cdef object _address          # (ip, port) bound, read once at creation
    cdef list _on_closed          # stop(callback=): called once stopped with no live socket
    cdef _closed_now(self)
    @staticmethod
    cdef Listener _new(Loop loop, _Ctx ctx, data, int fd)
    cdef _pause_accept(self)
    cdef int _adopt(self, Loop loop) except -1
    cdef _unlink_own_path(self)
    cdef _link(self, Socket s)
    cdef _unlink(self, Socket s)
    cdef _update_accept(self)

# One direction of a relay (a.pipe(b)): _relay.pxi.
@cython.final
cdef class _Pipe:
    cdef Socket src, dst
    cdef Py_ssize_t hi, lo        # stop reading src at hi bytes held for dst, resume at lo
    cdef int rfd, wfd             # the kernel pipe while splicing holds bytes, else -1
    cdef Py_ssize_t inpipe        # bytes in that pipe (read from src, not yet in dst)
    cdef Py_ssize_t pcap          # its capacity
    cdef bint splice              # splice(2) mode (plain TCP to plain TCP, Linux)
    cdef bint adaptive            # splice=None: splice only while reads are large
    cdef bint bulk                # (adaptive) the last read was large: splice the next
    cdef bint eof                 # src's FIN was read while the pipe held bytes: dst.end() after

cdef class _SockExt:
    cdef public object peer, local, addrs, host, local_ip, unix_path, tls, last_exc
    cdef public int port, local_port, addr_index
    cdef list groups              # the Groups this socket is in (None: none)
    cdef public object sockopts       # _OptList applied to each connect attempt, or None
    cdef public object attempts       # Happy Eyeballs: list of _Attempt still connecting
    cdef public object he_timer       # Happy Eyeballs: the next attempt's delay Timer
    cdef public double he_delay       # seconds between attempts (0: one at a time)
    cdef _Pipe pipe_out           # relays what this socket reads (F_PIPE_SRC)
    cdef _Pipe pipe_in            # relays into this socket (F_PIPE_DST)
    cdef object proxy_header      # set by bunsock.proxy_protocol.accept (Socket.proxy_header)
    cdef object frames            # _FrameState while F_FRAMED (_framing.pxi)

cdef class _CorkCtx:
    cdef Socket s

# A Socket's parts, each extending the one before (Cython cannot split one class body across
# files): state and lifecycle, the write path, the events, introspection, options, the public
# write/flow/lifecycle API.
cdef class _SocketBase(_Handle):
    cdef _Ctx ctx
    cdef public object data
    cdef Listener _listener
    cdef Socket lprev, lnext          # listener's list of open sockets
    cdef Socket cork_next             # loop's cork list
    cdef object cork_obj              # the one bytes object written while corked (not copied)
    cdef _SockExt ext
    cdef bs_sink sink
    cdef bs_timer t                   # connect deadline, then idle timeout (TLS: handshake)
    cdef uint64_t bytes_read, bytes_written
    cdef uint32_t timeout_ms
    cdef uint32_t last_active         # loop ms, truncated: idle spans are far below 2^32 ms
    cdef uint32_t last_read           # the same, for reads only (idle_timeout_mode="read")
    cdef uint32_t flags
    cdef uint8_t state
    cdef uint8_t cork_depth
    cdef _SockExt _get_ext(self)
    cdef int _call(self, object h) except -1
    cdef int _report(self, exc) except -1
    cdef int _fire_open(self) except -1
    cdef int _fire_connect_error(self, exc) except -1
    cdef int _set_mask(self, uint32_t mask) except -1
    cdef int _deregister_quiet(self) except -1
    cdef int _teardown(self) except -1
    cdef int _close(self, object err) except -1
    cdef int _close_self(self, object err) except -1
    cdef int _fail(self, int err) except -1

cdef class _SocketWriter(_SocketBase):
    cdef Py_ssize_t _pending(self) noexcept
    cdef Py_ssize_t _tls_held(self) noexcept
    cdef Py_ssize_t _held(self) noexcept
    cdef Py_ssize_t _backlog(self) noexcept
    cdef Py_ssize_t _hwm_room(self, Py_ssize_t n) noexcept
    cdef bint _whole_room(self, Py_ssize_t n) except -1
    cdef bint _wants_writable(self)
    cdef int _check(self) except -1
    cdef int _spill_cork(self) except -1
    cdef int _settle(self) except -1
    cdef int _owe_drain(self) except -1
    cdef int _backlog_grew(self) except -1
    cdef int _pipe_ended(self) except -1
    cdef int _drop_pending(self) except -1
    cdef int _on_writable(self) except -1
    cdef Py_ssize_t _buffer(self, const char *p, Py_ssize_t n) except -2
    cdef Py_ssize_t _write(self, const char *p, Py_ssize_t n, object keep) except -2
    cdef Py_ssize_t _write_raw(self, const char *p, Py_ssize_t n, object keep) except -2
    cdef int _flush(self) except -1
    cdef int _drained(self) except -1
    cdef int _finish_end(self) except -1
    cdef int _end(self) except -1
    cdef Py_ssize_t _writev(self, list bufs) except -2

cdef class _SocketReader(_SocketWriter):
    cdef int _on_readable(self) except -1
    cdef int _deliver(self, Py_ssize_t n) except -1
    cdef int _on_eof(self) except -1
    cdef int _on_timer(self) except -1
    cdef int _arm_idle(self) except -1

cdef class _SocketInfo(_SocketReader):
    cdef object _addr(self, bint peer)
    cdef object _tls(self)

cdef class _SocketControl(_SocketInfo):
    cdef int _setopts(self, tuple opts) except -1

@cython.final
cdef class Socket(_SocketControl):
    cdef _Ctx _own_ctx(self)


cdef class _TlsHook:
    # The loop calls these on sock.ext.tls (a bunsock._tls.TLSState) instead of its plaintext paths.
    cdef int feed(self, Socket s, char *p, Py_ssize_t n) except -1      # raw bytes read
    cdef int eof(self, Socket s) except -1                              # peer FIN, before `end`
    cdef Py_ssize_t write(self, Socket s, const char *p, Py_ssize_t n, object keep) except -2
    cdef int closed(self, Socket s, object err) except -1               # after teardown
    cdef int before_fin(self, Socket s) except -1                       # 1: FIN now, 0: not yet
    cdef int resumed(self, Socket s) except -1
    cdef Py_ssize_t buffered(self) noexcept                             # plaintext held back
    cdef bint handshaking(self) noexcept
    cdef int timed_out(self, Socket s) except -1                        # the handshake's deadline
    cdef int seal_corked(self, Socket s) except -1      # plaintext corked by a handler -> records
    cdef Py_ssize_t corked_len(self) noexcept           # plaintext corked, not yet sealed


# Every handler call goes through here (the error policy and the cork scope): _loop.pyx.
cdef int call_handler(Loop loop, object h, object owner, object on_error, int nargs,
                      object a=*, object b=*, object c=*) except -1


# UDP (_udp.pxi) and broadcast groups (_group.pxi)

ctypedef struct _AddrEntry:
    bs_addr a
    int port
    PyObject *py_port     # strong references while set
    PyObject *host

@cython.final
cdef class UdpSocket(_Handle):
    cdef object on_data, on_drain, on_error, on_close
    cdef public object data
    cdef int binary_type
    cdef int fam                  # BS_AF_INET / BS_AF_INET6 (BS_AF_UNIX: adopted by tests)
    cdef uint32_t uflags
    cdef object _hostname
    cdef object _local, _remote   # (address, port) cached
    cdef _AddrEntry cache[8]      # recent peers: sockaddr <-> (port, address) both ways
    cdef int _on_readable(self) except -1
    cdef int _deliver(self, _UdpArea area, Py_ssize_t i) except -1
    cdef int _report(self, object exc) except -1
    cdef const bs_addr *_dest(self, object port, object address, bs_addr *tmp) except NULL
    cdef int _owe_drain(self) except -1
    cdef int _check_open(self) except -1
    cdef object _name(self, bint peer)

@cython.final
cdef class Group:
    cdef list members             # Socket, or None for a member that left during write()
    cdef dict index               # Socket -> position in members
    cdef Loop loop
    cdef int busy                 # write() calls in progress
    cdef Py_ssize_t holes
    cdef int _remove(self, Socket s) except -1
    cdef int _end_write(self) except -1
    cdef int _compact(self) except -1
