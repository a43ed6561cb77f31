"""Channels and stubs for faultd's APIs.

`agent(socket)` reaches a node's agent over its Unix socket; `coordinator(...)`
the coordinator over mutual TLS. Both return the generated stubs
(faultd.agent.v1.agent_pb2_grpc.AgentStub, ...CoordinatorStub).
"""

import grpc

from faultd.agent.v1 import agent_pb2_grpc
from faultd.coordinator.v1 import coordinator_pb2_grpc

__all__ = ["agent", "coordinator", "agent_channel", "coordinator_channel"]

def agent_channel(socket="/run/faultd/faultd.sock"):
    """A channel to the agent's Unix socket."""
    return grpc.insecure_channel(f"unix://{socket}")


def agent(socket="/run/faultd/faultd.sock"):
    """The agent API (faultd.agent.v1.Agent) over its Unix socket."""
    return agent_pb2_grpc.AgentStub(agent_channel(socket))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def coordinator_channel(target, ca, cert, key, server_name=None):
    """A mutual-TLS channel to `target` ("host:port"): `ca` signs the
    server's certificate, `cert`/`key` are this client's (its identity must
    be in the coordinator's operators or readers). `server_name` overrides
    the name checked in the server's certificate."""
    creds = grpc.ssl_channel_credentials(_read(ca), _read(key), _read(cert))
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(target, creds, options=options)


def coordinator(target, ca, cert, key, server_name=None):
    """The coordinator API (faultd.coordinator.v1.Coordinator)."""
    return coordinator_pb2_grpc.CoordinatorStub(
        coordinator_channel(target, ca, cert, key, server_name)
    )
