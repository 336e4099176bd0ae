"""Handler tables (bunsock._handlers): the mistakes a user makes are named at listen/connect/
udp_socket/reload time, not as a TypeError per event or silently dropped events."""
import pytest

import bunsock


class Echo:
    def data(self, sock, buf):
        sock.write(buf)


def test_a_class_instead_of_an_instance_is_a_type_error_at_once(loop, no_leaks):
    for make in (lambda: bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo, loop=loop),
                 lambda: bunsock.connect(hostname="127.0.0.1", port=9, socket=Echo, loop=loop),
                 lambda: bunsock.udp_socket(hostname="127.0.0.1", socket=Echo, loop=loop)):
        with pytest.raises(TypeError, match=r"class Echo, not an instance: pass Echo\(\)"):
            make()
    with bunsock.listen(hostname="127.0.0.1", port=0, socket=Echo(), loop=loop) as srv:
        with pytest.raises(TypeError, match="not an instance"):
            srv.reload(Echo)


@pytest.mark.parametrize("wrong, meant", [
    ("conect_error", "connect_error"),     # a letter missing
    ("Close", "close"),                    # another case
    ("connectError", "connect_error"),     # Bun's spelling
    ("CONNECT_ERROR", "connect_error"),
    ("darin", "drain"),                    # two letters swapped
    ("timeuot", "timeout"),
    ("handshak", "handshake"),
    ("On_Data", None),                     # not close enough: left alone
])
def test_a_method_named_almost_like_a_handler_is_an_error(loop, wrong, meant):
    table = type("T", (), {"data": lambda self, s, b: None, wrong: lambda self, *a: None})()
    if meant is None:
        bunsock.connect(hostname="127.0.0.1", port=9, socket=table, loop=loop).close()
        return
    with pytest.raises(TypeError, match=r"unknown handler name\(s\) %r \(did you mean %r\?\)"
                       % (wrong, meant)):
        bunsock.connect(hostname="127.0.0.1", port=9, socket=table, loop=loop)


def test_ordinary_helper_methods_are_not_mistaken_for_handlers(loop, no_leaks):
    class Chat(Echo):
        def send(self, sock, text): ...        # one letter from "end"
        def closed(self): ...                  # "close" + d: an ordinary word
        def clone(self): ...                   # one letter from "close"
        def opens(self): ...
        def date(self): ...                    # one letter from "data"
        def errors(self): ...
        def _conect_error(self): ...           # private names are never read
    with bunsock.listen(hostname="127.0.0.1", port=0, socket=Chat(), loop=loop):
        pass


def test_a_near_miss_beside_the_real_handler_is_fine(loop, no_leaks):
    class Both(Echo):
        def close(self, sock, err): ...
        def Close(self): ...                   # the real one exists: nothing was lost
    with bunsock.listen(hostname="127.0.0.1", port=0, socket=Both(), loop=loop):
        pass


def test_the_mapping_form_says_did_you_mean_too(loop, no_leaks):
    with pytest.raises(TypeError, match=r"'connectError' \(did you mean 'connect_error'\?\), "
                                        r"'bogus'; expected some of open, data"):
        bunsock.connect(hostname="127.0.0.1", port=9, loop=loop,
                        socket={"data": print, "connectError": print, "bogus": print})


def test_udp_tables_get_the_same_checks(loop, no_leaks):
    with pytest.raises(TypeError, match=r"unknown UDP handler name\(s\) 'Data' \(did you mean "
                                        r"'data'\?\)"):
        bunsock.udp_socket(hostname="127.0.0.1", loop=loop,
                           socket=type("U", (), {"Data": lambda self, *a: None})())
    with pytest.raises(TypeError, match="async function"):
        async def data(sock, buf, port, address): ...
        bunsock.udp_socket(hostname="127.0.0.1", loop=loop, socket={"data": data})


def test_namespace_tables_and_instance_attributes_are_checked_too(loop, no_leaks):
    import types
    with pytest.raises(TypeError, match=r"'Close' \(did you mean 'close'\?\)"):
        bunsock.connect(hostname="127.0.0.1", port=9, loop=loop,
                        socket=types.SimpleNamespace(data=print, Close=print))
    t = Echo()
    t.conect_error = print                 # set on the instance, not the class
    with pytest.raises(TypeError, match=r"'conect_error' \(did you mean 'connect_error'\?\)"):
        bunsock.connect(hostname="127.0.0.1", port=9, loop=loop, socket=t)
