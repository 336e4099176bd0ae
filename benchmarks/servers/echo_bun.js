// Echo server on Bun.listen (run only when a `bun` binary is found).
//
//   bun echo_bun.js [PORT]           (0 or absent: any free port; the bound port is printed)
//
// Bun's socket.write() returns a short count when the kernel buffer is full and does NOT keep
// the tail, so a correct echo must hold the rest itself and send it from `drain` (the 1 MiB
// scenario hits this; a naive `socket.write(data)` fails the load generator's content check).
const port = parseInt(process.argv[2] || "0", 10);

function flush(socket) {
  const st = socket.data;
  while (st.queue.length) {
    const buf = st.queue[0];
    const n = socket.write(buf);
    if (n < buf.length) {
      st.queue[0] = buf.subarray(Math.max(n, 0));
      return;
    }
    st.queue.shift();
  }
}

const server = Bun.listen({
  hostname: "127.0.0.1",
  port,
  socket: {
    open(socket) {
      socket.data = { queue: [] };
    },
    data(socket, data) {
      const st = socket.data;
      if (st.queue.length) {
        st.queue.push(Buffer.from(data)); // keep order behind what is already waiting
        return;
      }
      const n = socket.write(data);
      if (n < data.length) st.queue.push(Buffer.from(data.subarray(Math.max(n, 0))));
    },
    drain(socket) {
      flush(socket);
    },
  },
});
console.log(server.port);
