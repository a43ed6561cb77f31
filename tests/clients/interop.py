#!/usr/bin/env python3
"""The Python client package (clients/python) against real daemons, as a
user's tooling would use it. Prints one JSON object of what it saw.

    interop.py agent SOCKET CGROUP
        ApplyFault (30% loss on CGROUP), ListFaults, GetFault, RevertFault.
    interop.py coordinator TARGET NAME CA CERT KEY CGROUP_GLOB
        CreateExperiment, WatchExperiment (in a thread), StopExperiment,
        and the events the watch saw until the experiment ended.
"""

import json
import sys
import threading

from google.protobuf import duration_pb2

from faultd.agent.v1 import agent_pb2 as apb
from faultd.coordinator.v1 import coordinator_pb2 as cpb
from faultd_client import agent, coordinator


def loss(ppm):
    return apb.LossFault(probability_ppm=ppm, direction=apb.DIRECTION_EGRESS)


def run_agent(socket, cgroup):
    stub = agent(socket)
    spec = apb.FaultSpec(
        id="py-interop",
        target=apb.Target(cgroup_path=cgroup),
        duration=duration_pb2.Duration(seconds=60),
        loss=loss(300_000),
    )
    applied = stub.ApplyFault(apb.ApplyFaultRequest(spec=spec))
    listed = [f.spec.id for f in stub.ListFaults(apb.ListFaultsRequest()).faults]
    got = stub.GetFault(apb.GetFaultRequest(id="py-interop"))
    reverted = stub.RevertFault(apb.RevertFaultRequest(id="py-interop"))
    after = [f.spec.id for f in stub.ListFaults(apb.ListFaultsRequest()).faults]
    return {
        "applied": applied.fault.spec.id,
        "cgroup": applied.fault.target.cgroup_path,
        "listed": listed,
        "got": got.spec.loss.probability_ppm,
        "existed": reverted.existed,
        "after": after,
    }


def run_coordinator(target, name, ca, cert, key, glob):
    stub = coordinator(target, ca, cert, key, server_name=name)
    spec = cpb.ExperimentSpec(
        id="py-interop",
        faults=[cpb.FaultTemplate(loss=loss(100_000))],
        selector=cpb.Selector(targets=[apb.TargetPattern(cgroup_glob=glob)]),
        mode=cpb.SelectionMode(all=cpb.SelectionMode.All()),
        duration=duration_pb2.Duration(seconds=600),
        description="python interop",
    )
    created = stub.CreateExperiment(cpb.CreateExperimentRequest(spec=spec))
    events = []
    applied = threading.Event()

    def watch():
        for e in stub.WatchExperiment(cpb.WatchExperimentRequest(id="py-interop")):
            events.append(e.WhichOneof("kind"))
            if e.WhichOneof("kind") == "fault_applied":
                applied.set()
            if e.WhichOneof("kind") == "ended":
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    applied.wait(timeout=30)
    stopped = stub.StopExperiment(
        cpb.StopExperimentRequest(id="py-interop", reason="python interop")
    )
    watcher.join(timeout=30)
    return {
        "created": cpb.ExperimentState.Name(created.state),
        "stopped": cpb.ExperimentState.Name(stopped.state),
        "reason": stopped.end_reason,
        "events": events,
    }


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    out = run_agent(*args) if mode == "agent" else run_coordinator(*args)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
