"""Echo server on bunsock, written exactly as API.md shows it.

    python echo_bunsock.py [PORT]     (0 or absent: any free port; the bound port is printed)
"""
import resource
import sys

import bunsock


class Echo:
    def data(self, sock, buf):
        sock.write(buf)


if __name__ == "__main__":
    # 10,000 idle connections need more descriptors than the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = bunsock.listen(hostname="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 0,
                            socket=Echo())
    print(server.port, flush=True)
    bunsock.run()
