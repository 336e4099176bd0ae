"""Echo server on uvloop (asyncio.Protocol on libuv): the fast asyncio that bunsock is measured against.

    python echo_uvloop.py [PORT]      (0 or absent: any free port; the bound port is printed)
"""
import os
import sys

import uvloop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echo_asyncio import raise_nofile, serve  # noqa: E402  (the same protocol, only the loop differs)

if __name__ == "__main__":
    raise_nofile()
    uvloop.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
