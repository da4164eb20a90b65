"""A TLS-terminating TCP proxy, for tests only.

tansu 0.6 accepts --cert/--key but serves plain TCP, so the tests put this in front of it to give
Kafka clients a real TLS listener (security.protocol SSL or SASL_SSL): it accepts TLS on --listen
with --cert/--key and forwards the decrypted bytes to --target.
"""

import argparse
import asyncio
import signal
import ssl


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="host:port to accept TLS on")
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--cert", required=True, help="PEM certificate chain")
    parser.add_argument("--key", required=True, help="PEM private key")
    args = parser.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    target_host, target_port = args.target.rsplit(":", 1)

    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(target_host, int(target_port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port), ssl=context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
