#!/usr/bin/python3
"""A generic gRPC client as a user's tooling would be: Python grpcio with no
faultd code or stubs. It asks an endpoint's health (grpc.health.v1) and, by
server reflection (grpc.reflection.v1), which services it has and the
methods of one, encoding and decoding the few protobuf fields itself.

    grpc_probe.py TARGET SERVICE [--ca CA --cert CERT --key KEY --name NAME]
                  [--call METHOD] [--health-only METHOD]

TARGET is "unix:///path/faultd.sock" or "host:port" (then mutual TLS). The
channel is made with no options: what a new user's first client sends.
Prints one JSON object: {"health": {"": "SERVING", SERVICE: ...},
"services": [...], "methods": [...]}, with "call": {"code": ..., "bytes": N}
when --call asked for one; exits 1 with the gRPC error.
"""

import argparse
import json
import sys

import grpc

STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, payload):
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def fields(data):
    """(number, wire type, value) of each field of a message."""
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 2:
            length, i = read_varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def read_varint(data, i):
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def identity(b):
    return b


def empty_call(channel, method, request=b""):
    """Calls `method` with `request` (raw bytes, empty by default): its
    status code and reply size."""
    call = channel.unary_unary(method, request_serializer=identity, response_deserializer=identity)
    try:
        reply = call(request, timeout=10)
        return {"code": "OK", "bytes": len(reply)}
    except grpc.RpcError as e:
        return {"code": e.code().name, "bytes": 0, "details": e.details()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("service")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--name", help="the server certificate's name")
    p.add_argument("--plaintext", action="store_true", help="no TLS (a probe port)")
    p.add_argument(
        "--health-only",
        metavar="METHOD",
        help="a port of health checking alone: skip reflection, and report the "
        "status code of calling METHOD (/package.Service/Method, empty request)",
    )
    p.add_argument(
        "--call",
        metavar="METHOD",
        help="also call METHOD (/package.Service/Method) with an empty request "
        "and report its status code and the size of its reply",
    )
    p.add_argument(
        "--request-hex",
        default="",
        help="the request --call sends, as hex (default: empty); "
        "'repeat:N' sends a message of N bytes",
    )
    p.add_argument(
        "--max-send",
        type=int,
        default=-1,
        help="grpc.max_send_message_length (for sending oversized requests)",
    )
    a = p.parse_args()
    if a.target.startswith("unix:") or a.plaintext:
        options = [("grpc.max_send_message_length", a.max_send)] if a.max_send != -1 else []
        channel = grpc.insecure_channel(a.target, options)
    else:
        read = lambda path: open(path, "rb").read()
        creds = grpc.ssl_channel_credentials(read(a.ca), read(a.key), read(a.cert))
        options = [("grpc.ssl_target_name_override", a.name)] if a.name else []
        channel = grpc.secure_channel(a.target, creds, options)
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=identity,
        response_deserializer=identity,
    )
    out = {"health": {}, "services": [], "methods": []}
    try:
        for name in ["", a.service, "no.such.Service"]:
            try:
                reply = check(field(1, name.encode()), timeout=10)
                status = next((v for n, w, v in fields(reply) if n == 1), 0)
                out["health"][name] = STATUS.get(status, str(status))
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                out["health"][name] = "NOT_FOUND"
        if a.health_only:
            out["api"] = empty_call(channel, a.health_only)["code"]
            print(json.dumps(out, sort_keys=True))
            return 0
        if a.call:
            if a.request_hex.startswith("repeat:"):
                # A bytes field 1 of N bytes: ApplyFaultRequest.spec, oversized.
                n = int(a.request_hex.split(":")[1])
                request = field(1, b"\x00" * n)
            else:
                request = bytes.fromhex(a.request_hex)
            out["call"] = empty_call(channel, a.call, request)
        reflect = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=identity,
            response_deserializer=identity,
        )
        # ServerReflectionRequest: list_services = 7, file_containing_symbol = 4.
        requests = [field(7, b""), field(4, a.service.encode())]
        for reply in reflect(iter(requests), timeout=10):
            for n, _, v in fields(reply):
                if n == 6:  # list_services_response
                    for _, _, svc in fields(v):
                        name = next(x for k, _, x in fields(svc) if k == 1)
                        out["services"].append(name.decode())
                elif n == 4:  # file_descriptor_response
                    for _, _, proto in fields(v):
                        for k, _, svc in fields(proto):
                            if k != 6:  # FileDescriptorProto.service
                                continue
                            for m, _, method in fields(svc):
                                if m == 2:  # ServiceDescriptorProto.method
                                    name = next(x for j, _, x in fields(method) if j == 1)
                                    out["methods"].append(name.decode())
                elif n == 7:  # error_response
                    raise SystemExit(f"reflection error: {v!r}")
    except grpc.RpcError as e:
        print(f"{e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
