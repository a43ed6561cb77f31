from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_EGRESS: _ClassVar[Direction]
    DIRECTION_INGRESS: _ClassVar[Direction]
    DIRECTION_BOTH: _ClassVar[Direction]

class Protocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_ANY: _ClassVar[Protocol]
    PROTOCOL_TCP: _ClassVar[Protocol]
    PROTOCOL_UDP: _ClassVar[Protocol]
    PROTOCOL_ICMP: _ClassVar[Protocol]

class Distribution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISTRIBUTION_UNSPECIFIED: _ClassVar[Distribution]
    DISTRIBUTION_UNIFORM: _ClassVar[Distribution]
    DISTRIBUTION_NORMAL: _ClassVar[Distribution]
    DISTRIBUTION_PARETO: _ClassVar[Distribution]
    DISTRIBUTION_PARETONORMAL: _ClassVar[Distribution]

class SyscallOperation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYSCALL_OPERATION_UNSPECIFIED: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_CONNECT: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_BIND: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_SENDMSG: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_SOCKET: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_OPEN: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_READ: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_WRITE: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_MKDIR: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_UNLINK: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_RENAME: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_EXECVE: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_ACCEPT: _ClassVar[SyscallOperation]
    SYSCALL_OPERATION_RECVMSG: _ClassVar[SyscallOperation]

class FaultState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAULT_STATE_UNSPECIFIED: _ClassVar[FaultState]
    FAULT_STATE_ACTIVE: _ClassVar[FaultState]
    FAULT_STATE_EXPIRED: _ClassVar[FaultState]
    FAULT_STATE_REVERTED: _ClassVar[FaultState]
DIRECTION_UNSPECIFIED: Direction
DIRECTION_EGRESS: Direction
DIRECTION_INGRESS: Direction
DIRECTION_BOTH: Direction
PROTOCOL_ANY: Protocol
PROTOCOL_TCP: Protocol
PROTOCOL_UDP: Protocol
PROTOCOL_ICMP: Protocol
DISTRIBUTION_UNSPECIFIED: Distribution
DISTRIBUTION_UNIFORM: Distribution
DISTRIBUTION_NORMAL: Distribution
DISTRIBUTION_PARETO: Distribution
DISTRIBUTION_PARETONORMAL: Distribution
SYSCALL_OPERATION_UNSPECIFIED: SyscallOperation
SYSCALL_OPERATION_CONNECT: SyscallOperation
SYSCALL_OPERATION_BIND: SyscallOperation
SYSCALL_OPERATION_SENDMSG: SyscallOperation
SYSCALL_OPERATION_SOCKET: SyscallOperation
SYSCALL_OPERATION_OPEN: SyscallOperation
SYSCALL_OPERATION_READ: SyscallOperation
SYSCALL_OPERATION_WRITE: SyscallOperation
SYSCALL_OPERATION_MKDIR: SyscallOperation
SYSCALL_OPERATION_UNLINK: SyscallOperation
SYSCALL_OPERATION_RENAME: SyscallOperation
SYSCALL_OPERATION_EXECVE: SyscallOperation
SYSCALL_OPERATION_ACCEPT: SyscallOperation
SYSCALL_OPERATION_RECVMSG: SyscallOperation
FAULT_STATE_UNSPECIFIED: FaultState
FAULT_STATE_ACTIVE: FaultState
FAULT_STATE_EXPIRED: FaultState
FAULT_STATE_REVERTED: FaultState

class ApplyFaultRequest(_message.Message):
    __slots__ = ("spec", "lease")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    spec: FaultSpec
    lease: Lease
    def __init__(self, spec: _Optional[_Union[FaultSpec, _Mapping]] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("id", "ttl")
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    id: str
    ttl: _duration_pb2.Duration
    def __init__(self, id: _Optional[str] = ..., ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RenewLeaseRequest(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class RenewLeaseResponse(_message.Message):
    __slots__ = ("faults", "expires_at")
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    faults: int
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, faults: _Optional[int] = ..., expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RevertLeaseRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevertLeaseResponse(_message.Message):
    __slots__ = ("reverted",)
    REVERTED_FIELD_NUMBER: _ClassVar[int]
    reverted: int
    def __init__(self, reverted: _Optional[int] = ...) -> None: ...

class TargetPattern(_message.Message):
    __slots__ = ("cgroup_glob", "systemd_unit_glob", "pod_uid")
    CGROUP_GLOB_FIELD_NUMBER: _ClassVar[int]
    SYSTEMD_UNIT_GLOB_FIELD_NUMBER: _ClassVar[int]
    POD_UID_FIELD_NUMBER: _ClassVar[int]
    cgroup_glob: str
    systemd_unit_glob: str
    pod_uid: str
    def __init__(self, cgroup_glob: _Optional[str] = ..., systemd_unit_glob: _Optional[str] = ..., pod_uid: _Optional[str] = ...) -> None: ...

class ListTargetsRequest(_message.Message):
    __slots__ = ("patterns", "with_addresses")
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    WITH_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    patterns: _containers.RepeatedCompositeFieldContainer[TargetPattern]
    with_addresses: bool
    def __init__(self, patterns: _Optional[_Iterable[_Union[TargetPattern, _Mapping]]] = ..., with_addresses: bool = ...) -> None: ...

class MatchedTarget(_message.Message):
    __slots__ = ("target", "resolved", "addresses")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    target: Target
    resolved: ResolvedTarget
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., resolved: _Optional[_Union[ResolvedTarget, _Mapping]] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class ListTargetsResponse(_message.Message):
    __slots__ = ("targets", "protected_excluded")
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    PROTECTED_EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedCompositeFieldContainer[MatchedTarget]
    protected_excluded: int
    def __init__(self, targets: _Optional[_Iterable[_Union[MatchedTarget, _Mapping]]] = ..., protected_excluded: _Optional[int] = ...) -> None: ...

class ApplyFaultResponse(_message.Message):
    __slots__ = ("fault", "updated")
    FAULT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    fault: Fault
    updated: bool
    def __init__(self, fault: _Optional[_Union[Fault, _Mapping]] = ..., updated: bool = ...) -> None: ...

class RevertFaultRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevertFaultResponse(_message.Message):
    __slots__ = ("existed", "fault")
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    fault: Fault
    def __init__(self, existed: bool = ..., fault: _Optional[_Union[Fault, _Mapping]] = ...) -> None: ...

class GetFaultRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListFaultsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFaultsResponse(_message.Message):
    __slots__ = ("faults",)
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    faults: _containers.RepeatedCompositeFieldContainer[Fault]
    def __init__(self, faults: _Optional[_Iterable[_Union[Fault, _Mapping]]] = ...) -> None: ...

class RevertAllRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevertAllResponse(_message.Message):
    __slots__ = ("reverted",)
    REVERTED_FIELD_NUMBER: _ClassVar[int]
    reverted: int
    def __init__(self, reverted: _Optional[int] = ...) -> None: ...

class GetCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FaultSpec(_message.Message):
    __slots__ = ("id", "target", "duration", "loss", "syscall", "latency", "bandwidth")
    ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    id: str
    target: Target
    duration: _duration_pb2.Duration
    loss: LossFault
    syscall: SyscallFault
    latency: LatencyFault
    bandwidth: BandwidthFault
    def __init__(self, id: _Optional[str] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., duration: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., loss: _Optional[_Union[LossFault, _Mapping]] = ..., syscall: _Optional[_Union[SyscallFault, _Mapping]] = ..., latency: _Optional[_Union[LatencyFault, _Mapping]] = ..., bandwidth: _Optional[_Union[BandwidthFault, _Mapping]] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("cgroup_path", "pid", "systemd_unit", "pod")
    CGROUP_PATH_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SYSTEMD_UNIT_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    cgroup_path: str
    pid: int
    systemd_unit: str
    pod: KubernetesPod
    def __init__(self, cgroup_path: _Optional[str] = ..., pid: _Optional[int] = ..., systemd_unit: _Optional[str] = ..., pod: _Optional[_Union[KubernetesPod, _Mapping]] = ...) -> None: ...

class KubernetesPod(_message.Message):
    __slots__ = ("uid", "container_id")
    UID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    uid: str
    container_id: str
    def __init__(self, uid: _Optional[str] = ..., container_id: _Optional[str] = ...) -> None: ...

class PacketFilter(_message.Message):
    __slots__ = ("protocol", "remote_cidr", "remote_port_min", "remote_port_max")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    REMOTE_CIDR_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_MIN_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_MAX_FIELD_NUMBER: _ClassVar[int]
    protocol: Protocol
    remote_cidr: str
    remote_port_min: int
    remote_port_max: int
    def __init__(self, protocol: _Optional[_Union[Protocol, str]] = ..., remote_cidr: _Optional[str] = ..., remote_port_min: _Optional[int] = ..., remote_port_max: _Optional[int] = ...) -> None: ...

class LossFault(_message.Message):
    __slots__ = ("probability_ppm", "direction", "filter")
    PROBABILITY_PPM_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    probability_ppm: int
    direction: Direction
    filter: PacketFilter
    def __init__(self, probability_ppm: _Optional[int] = ..., direction: _Optional[_Union[Direction, str]] = ..., filter: _Optional[_Union[PacketFilter, _Mapping]] = ...) -> None: ...

class LatencyFault(_message.Message):
    __slots__ = ("delay", "jitter", "distribution", "correlation_percent", "direction", "filter")
    DELAY_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    delay: _duration_pb2.Duration
    jitter: _duration_pb2.Duration
    distribution: Distribution
    correlation_percent: float
    direction: Direction
    filter: PacketFilter
    def __init__(self, delay: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., jitter: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., distribution: _Optional[_Union[Distribution, str]] = ..., correlation_percent: _Optional[float] = ..., direction: _Optional[_Union[Direction, str]] = ..., filter: _Optional[_Union[PacketFilter, _Mapping]] = ...) -> None: ...

class BandwidthFault(_message.Message):
    __slots__ = ("rate_bps", "direction", "filter")
    RATE_BPS_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    rate_bps: int
    direction: Direction
    filter: PacketFilter
    def __init__(self, rate_bps: _Optional[int] = ..., direction: _Optional[_Union[Direction, str]] = ..., filter: _Optional[_Union[PacketFilter, _Mapping]] = ...) -> None: ...

class SyscallFault(_message.Message):
    __slots__ = ("operation", "errno", "probability_ppm", "filter", "path_prefix")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    ERRNO_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_PPM_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PATH_PREFIX_FIELD_NUMBER: _ClassVar[int]
    operation: SyscallOperation
    errno: str
    probability_ppm: int
    filter: PacketFilter
    path_prefix: str
    def __init__(self, operation: _Optional[_Union[SyscallOperation, str]] = ..., errno: _Optional[str] = ..., probability_ppm: _Optional[int] = ..., filter: _Optional[_Union[PacketFilter, _Mapping]] = ..., path_prefix: _Optional[str] = ...) -> None: ...

class ResolvedTarget(_message.Message):
    __slots__ = ("cgroup_path", "cgroup_id")
    CGROUP_PATH_FIELD_NUMBER: _ClassVar[int]
    CGROUP_ID_FIELD_NUMBER: _ClassVar[int]
    cgroup_path: str
    cgroup_id: int
    def __init__(self, cgroup_path: _Optional[str] = ..., cgroup_id: _Optional[int] = ...) -> None: ...

class Counters(_message.Message):
    __slots__ = ("matched", "injected")
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    INJECTED_FIELD_NUMBER: _ClassVar[int]
    matched: int
    injected: int
    def __init__(self, matched: _Optional[int] = ..., injected: _Optional[int] = ...) -> None: ...

class Fault(_message.Message):
    __slots__ = ("spec", "target", "state", "applied_at", "deadline", "counters", "backend", "lease_id", "lease_expires_at", "end_reason")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    spec: FaultSpec
    target: ResolvedTarget
    state: FaultState
    applied_at: _timestamp_pb2.Timestamp
    deadline: _timestamp_pb2.Timestamp
    counters: Counters
    backend: str
    lease_id: str
    lease_expires_at: _timestamp_pb2.Timestamp
    end_reason: str
    def __init__(self, spec: _Optional[_Union[FaultSpec, _Mapping]] = ..., target: _Optional[_Union[ResolvedTarget, _Mapping]] = ..., state: _Optional[_Union[FaultState, str]] = ..., applied_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., deadline: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., counters: _Optional[_Union[Counters, _Mapping]] = ..., backend: _Optional[str] = ..., lease_id: _Optional[str] = ..., lease_expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., end_reason: _Optional[str] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("kernel_release", "agent_version", "cgroup2_mount", "features", "programs", "maps", "limits", "qdiscs", "node_name")
    KERNEL_RELEASE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CGROUP2_MOUNT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PROGRAMS_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    QDISCS_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    kernel_release: str
    agent_version: str
    cgroup2_mount: str
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    programs: _containers.RepeatedCompositeFieldContainer[KernelObject]
    maps: _containers.RepeatedCompositeFieldContainer[KernelObject]
    limits: Limits
    qdiscs: _containers.RepeatedCompositeFieldContainer[QdiscChange]
    node_name: str
    def __init__(self, kernel_release: _Optional[str] = ..., agent_version: _Optional[str] = ..., cgroup2_mount: _Optional[str] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., programs: _Optional[_Iterable[_Union[KernelObject, _Mapping]]] = ..., maps: _Optional[_Iterable[_Union[KernelObject, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., qdiscs: _Optional[_Iterable[_Union[QdiscChange, _Mapping]]] = ..., node_name: _Optional[str] = ...) -> None: ...

class QdiscChange(_message.Message):
    __slots__ = ("netns_inode", "device", "replaced", "installed", "faults")
    NETNS_INODE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    netns_inode: int
    device: str
    replaced: str
    installed: str
    faults: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, netns_inode: _Optional[int] = ..., device: _Optional[str] = ..., replaced: _Optional[str] = ..., installed: _Optional[str] = ..., faults: _Optional[_Iterable[str]] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("name", "available", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    available: bool
    detail: str
    def __init__(self, name: _Optional[str] = ..., available: bool = ..., detail: _Optional[str] = ...) -> None: ...

class KernelObject(_message.Message):
    __slots__ = ("name", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_duration", "max_faults", "max_rules_per_cgroup", "max_lease_ttl")
    MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    MAX_FAULTS_FIELD_NUMBER: _ClassVar[int]
    MAX_RULES_PER_CGROUP_FIELD_NUMBER: _ClassVar[int]
    MAX_LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    max_duration: _duration_pb2.Duration
    max_faults: int
    max_rules_per_cgroup: int
    max_lease_ttl: _duration_pb2.Duration
    def __init__(self, max_duration: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_faults: _Optional[int] = ..., max_rules_per_cgroup: _Optional[int] = ..., max_lease_ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...
