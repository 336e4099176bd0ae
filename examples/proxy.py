"""TCP proxy with backpressure: when one side cannot keep up, stop reading the other.

    python examples/proxy.py LISTEN_PORT TARGET_HOST TARGET_PORT
"""
import sys

import bunsock


class Upstream:
    """The connection to the target; sock.data is the client-side socket."""

    def open(self, sock):
        sock.data.resume()

    def data(self, sock, buf):
        client = sock.data
        client.write(buf)
        if client.buffered_amount > 1 << 20:
            sock.pause()                  # client is slow: stop reading the target

    def drain(self, sock):
        sock.data.resume()

    def close(self, sock, err):
        sock.data.end()

    def connect_error(self, sock, exc):
        sock.data.close()


class Downstream:
    """Accepted client connections; sock.data is the upstream socket."""

    def open(self, sock):
        sock.pause()                      # nothing to forward to until upstream is open
        sock.data = bunsock.connect(hostname=TARGET[0], port=TARGET[1], socket=Upstream(),
                                    data=sock)

    def data(self, sock, buf):
        upstream = sock.data
        upstream.write(buf)
        if upstream.buffered_amount > 1 << 20:
            sock.pause()

    def drain(self, sock):
        sock.data.resume()

    def close(self, sock, err):
        sock.data.end()


if __name__ == "__main__":
    TARGET = (sys.argv[2], int(sys.argv[3]))
    server = bunsock.listen(hostname="127.0.0.1", port=int(sys.argv[1]), socket=Downstream())
    print("proxy :%d -> %s:%d" % (server.port, TARGET[0], TARGET[1]))
    bunsock.run()
