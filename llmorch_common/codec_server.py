"""Temporal's codec-server protocol for operators: the Temporal UI (or `temporal --codec-endpoint`) posts the sealed
payloads of a history here and shows them decoded. It holds the payload keys, so it listens on loopback by default.

python -m llmorch_common.codec_server [--port 8234] [--ui-origin http://localhost:8233]
"""

import argparse
import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from llmorch_common.payload_codec import EncryptionCodec, PayloadSettings, parse_keys


def transform(codec: EncryptionCodec, path: str, body: bytes) -> bytes:
    """`/decode` or `/encode` on a JSON {"payloads": [...]} document, as Temporal's UI sends it."""
    payloads = json_format.Parse(body, Payloads())
    work = codec.open if path == "/decode" else codec.seal
    return json_format.MessageToJson(Payloads(payloads=[work(p) for p in payloads.payloads])).encode()


def make_handler(codec: EncryptionCodec, ui_origin: str) -> type[BaseHTTPRequestHandler]:
    class CodecHandler(BaseHTTPRequestHandler):
        def _cors(self) -> None:
            self.send_header("Access-Control-Allow-Origin", ui_origin)
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "content-type, x-namespace")

        def do_OPTIONS(self) -> None:
            self.send_response(HTTPStatus.OK)
            self._cors()
            self.end_headers()

        def do_POST(self) -> None:
            if self.path not in ("/decode", "/encode"):
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                reply = transform(codec, self.path, body)
            except (json_format.ParseError, ValueError) as error:
                self.send_error(HTTPStatus.BAD_REQUEST, str(error))
                return
            self.send_response(HTTPStatus.OK)
            self._cors()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # payloads are tenant data: keep them out of logs

    return CodecHandler


def serve(port: int, ui_origin: str, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    keys = parse_keys(PayloadSettings().keys)
    return ThreadingHTTPServer((host, port), make_handler(EncryptionCodec(keys), ui_origin))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8234)
    parser.add_argument("--ui-origin", default="http://localhost:8233")
    args = parser.parse_args()
    server = serve(args.port, args.ui_origin)
    print(json.dumps({"codec_endpoint": f"http://127.0.0.1:{server.server_address[1]}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
