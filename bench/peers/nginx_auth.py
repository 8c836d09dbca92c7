#!/usr/bin/env python3
"""auth_http service for the nginx mail proxy in bench/run.sh.

nginx asks this service, for every login, where to send the user. Every request is answered with
    Auth-Status: OK
    Auth-Server: 127.0.0.1
    Auth-Port:   <backend port>
so nginx proxies every user to the one Dovecot backend, which checks the password (nginx passes it through).

A raw asyncio Protocol rather than http.server: nginx opens one HTTP/1.0 connection per login, and the cost of
this helper is counted with nginx's (run.sh passes its pid to the load generator's --pid-tree).

Usage: nginx_auth.py --port PORT --backend-port PORT [--listen 127.0.0.1]
"""
import argparse
import asyncio

MAX_REQUEST = 64 * 1024


class AuthProtocol(asyncio.Protocol):
    reply = b""

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            self.transport.write(self.reply)
            self.transport.close()
        elif len(self.buffer) > MAX_REQUEST:
            self.transport.close()


async def serve(listen, port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(AuthProtocol, listen, port, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend-port", type=int, required=True)
    args = parser.parse_args()
    if not args.listen.startswith("127."):
        parser.error("--listen must be a loopback address")
    AuthProtocol.reply = (
        "HTTP/1.0 200 OK\r\n"
        "Auth-Status: OK\r\n"
        "Auth-Server: 127.0.0.1\r\n"
        f"Auth-Port: {args.backend_port}\r\n"
        "Content-Length: 0\r\n"
        "Connection: close\r\n\r\n").encode("ascii")
    asyncio.run(serve(args.listen, args.port))


if __name__ == "__main__":
    main()
