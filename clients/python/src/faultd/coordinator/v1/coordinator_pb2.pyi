from faultd.agent.v1 import agent_pb2 as _agent_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PartitionDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTITION_DIRECTION_UNSPECIFIED: _ClassVar[PartitionDirection]
    PARTITION_DIRECTION_BOTH: _ClassVar[PartitionDirection]
    PARTITION_DIRECTION_A_TO_B: _ClassVar[PartitionDirection]

class PartitionAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTITION_ACTION_UNSPECIFIED: _ClassVar[PartitionAction]
    PARTITION_ACTION_DROP: _ClassVar[PartitionAction]
    PARTITION_ACTION_REFUSE_CONNECT: _ClassVar[PartitionAction]

class Comparison(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPARISON_UNSPECIFIED: _ClassVar[Comparison]
    COMPARISON_ABOVE: _ClassVar[Comparison]
    COMPARISON_BELOW: _ClassVar[Comparison]

class ExperimentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATE_UNSPECIFIED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_APPLYING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_RUNNING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_COMPLETED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_STOPPED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_ABORTED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_FAILED: _ClassVar[ExperimentState]

class TargetState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TARGET_STATE_UNSPECIFIED: _ClassVar[TargetState]
    TARGET_STATE_PENDING: _ClassVar[TargetState]
    TARGET_STATE_ACTIVE: _ClassVar[TargetState]
    TARGET_STATE_REFUSED: _ClassVar[TargetState]
    TARGET_STATE_REVERTED: _ClassVar[TargetState]
    TARGET_STATE_LOST: _ClassVar[TargetState]
PARTITION_DIRECTION_UNSPECIFIED: PartitionDirection
PARTITION_DIRECTION_BOTH: PartitionDirection
PARTITION_DIRECTION_A_TO_B: PartitionDirection
PARTITION_ACTION_UNSPECIFIED: PartitionAction
PARTITION_ACTION_DROP: PartitionAction
PARTITION_ACTION_REFUSE_CONNECT: PartitionAction
COMPARISON_UNSPECIFIED: Comparison
COMPARISON_ABOVE: Comparison
COMPARISON_BELOW: Comparison
EXPERIMENT_STATE_UNSPECIFIED: ExperimentState
EXPERIMENT_STATE_APPLYING: ExperimentState
EXPERIMENT_STATE_RUNNING: ExperimentState
EXPERIMENT_STATE_COMPLETED: ExperimentState
EXPERIMENT_STATE_STOPPED: ExperimentState
EXPERIMENT_STATE_ABORTED: ExperimentState
EXPERIMENT_STATE_FAILED: ExperimentState
TARGET_STATE_UNSPECIFIED: TargetState
TARGET_STATE_PENDING: TargetState
TARGET_STATE_ACTIVE: TargetState
TARGET_STATE_REFUSED: TargetState
TARGET_STATE_REVERTED: TargetState
TARGET_STATE_LOST: TargetState

class FaultTemplate(_message.Message):
    __slots__ = ("loss", "syscall", "latency", "bandwidth")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    loss: _agent_pb2.LossFault
    syscall: _agent_pb2.SyscallFault
    latency: _agent_pb2.LatencyFault
    bandwidth: _agent_pb2.BandwidthFault
    def __init__(self, loss: _Optional[_Union[_agent_pb2.LossFault, _Mapping]] = ..., syscall: _Optional[_Union[_agent_pb2.SyscallFault, _Mapping]] = ..., latency: _Optional[_Union[_agent_pb2.LatencyFault, _Mapping]] = ..., bandwidth: _Optional[_Union[_agent_pb2.BandwidthFault, _Mapping]] = ...) -> None: ...

class Selector(_message.Message):
    __slots__ = ("node_names", "node_labels", "targets", "pods")
    class NodeLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_NAMES_FIELD_NUMBER: _ClassVar[int]
    NODE_LABELS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    PODS_FIELD_NUMBER: _ClassVar[int]
    node_names: _containers.RepeatedScalarFieldContainer[str]
    node_labels: _containers.ScalarMap[str, str]
    targets: _containers.RepeatedCompositeFieldContainer[_agent_pb2.TargetPattern]
    pods: PodSelector
    def __init__(self, node_names: _Optional[_Iterable[str]] = ..., node_labels: _Optional[_Mapping[str, str]] = ..., targets: _Optional[_Iterable[_Union[_agent_pb2.TargetPattern, _Mapping]]] = ..., pods: _Optional[_Union[PodSelector, _Mapping]] = ...) -> None: ...

class PodSelector(_message.Message):
    __slots__ = ("namespace", "labels", "container")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    labels: _containers.ScalarMap[str, str]
    container: str
    def __init__(self, namespace: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., container: _Optional[str] = ...) -> None: ...

class ServiceRef(_message.Message):
    __slots__ = ("namespace", "name")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SelectionMode(_message.Message):
    __slots__ = ("all", "one", "fixed", "percent")
    class All(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class One(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    ALL_FIELD_NUMBER: _ClassVar[int]
    ONE_FIELD_NUMBER: _ClassVar[int]
    FIXED_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    all: SelectionMode.All
    one: SelectionMode.One
    fixed: int
    percent: float
    def __init__(self, all: _Optional[_Union[SelectionMode.All, _Mapping]] = ..., one: _Optional[_Union[SelectionMode.One, _Mapping]] = ..., fixed: _Optional[int] = ..., percent: _Optional[float] = ...) -> None: ...

class Partition(_message.Message):
    __slots__ = ("a", "b", "direction", "action")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    a: Selector
    b: Selector
    direction: PartitionDirection
    action: PartitionAction
    def __init__(self, a: _Optional[_Union[Selector, _Mapping]] = ..., b: _Optional[_Union[Selector, _Mapping]] = ..., direction: _Optional[_Union[PartitionDirection, str]] = ..., action: _Optional[_Union[PartitionAction, str]] = ...) -> None: ...

class ExperimentSpec(_message.Message):
    __slots__ = ("id", "faults", "selector", "mode", "duration", "description", "partition", "stop_conditions", "destination", "observe")
    ID_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    STOP_CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_FIELD_NUMBER: _ClassVar[int]
    id: str
    faults: _containers.RepeatedCompositeFieldContainer[FaultTemplate]
    selector: Selector
    mode: SelectionMode
    duration: _duration_pb2.Duration
    description: str
    partition: Partition
    stop_conditions: _containers.RepeatedCompositeFieldContainer[StopCondition]
    destination: Destination
    observe: _containers.RepeatedCompositeFieldContainer[Observe]
    def __init__(self, id: _Optional[str] = ..., faults: _Optional[_Iterable[_Union[FaultTemplate, _Mapping]]] = ..., selector: _Optional[_Union[Selector, _Mapping]] = ..., mode: _Optional[_Union[SelectionMode, _Mapping]] = ..., duration: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., description: _Optional[str] = ..., partition: _Optional[_Union[Partition, _Mapping]] = ..., stop_conditions: _Optional[_Iterable[_Union[StopCondition, _Mapping]]] = ..., destination: _Optional[_Union[Destination, _Mapping]] = ..., observe: _Optional[_Iterable[_Union[Observe, _Mapping]]] = ...) -> None: ...

class Observe(_message.Message):
    __slots__ = ("name", "query")
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    name: str
    query: str
    def __init__(self, name: _Optional[str] = ..., query: _Optional[str] = ...) -> None: ...

class GetExperimentReportRequest(_message.Message):
    __slots__ = ("id", "before", "after", "step")
    ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    id: str
    before: _duration_pb2.Duration
    after: _duration_pb2.Duration
    step: _duration_pb2.Duration
    def __init__(self, id: _Optional[str] = ..., before: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., after: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., step: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ExperimentReport(_message.Message):
    __slots__ = ("experiment", "events", "slis", "window_start", "window_end", "complete")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SLIS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    events: _containers.RepeatedCompositeFieldContainer[ExperimentEvent]
    slis: _containers.RepeatedCompositeFieldContainer[SliReport]
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    complete: bool
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ..., events: _Optional[_Iterable[_Union[ExperimentEvent, _Mapping]]] = ..., slis: _Optional[_Iterable[_Union[SliReport, _Mapping]]] = ..., window_start: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., complete: bool = ...) -> None: ...

class SliReport(_message.Message):
    __slots__ = ("name", "query", "before", "during", "after", "recovery", "samples", "error", "band_low", "band_high")
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    DURING_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BAND_LOW_FIELD_NUMBER: _ClassVar[int]
    BAND_HIGH_FIELD_NUMBER: _ClassVar[int]
    name: str
    query: str
    before: WindowStats
    during: WindowStats
    after: WindowStats
    recovery: _duration_pb2.Duration
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    error: str
    band_low: float
    band_high: float
    def __init__(self, name: _Optional[str] = ..., query: _Optional[str] = ..., before: _Optional[_Union[WindowStats, _Mapping]] = ..., during: _Optional[_Union[WindowStats, _Mapping]] = ..., after: _Optional[_Union[WindowStats, _Mapping]] = ..., recovery: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., error: _Optional[str] = ..., band_low: _Optional[float] = ..., band_high: _Optional[float] = ...) -> None: ...

class WindowStats(_message.Message):
    __slots__ = ("samples", "mean", "min", "max")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    samples: int
    mean: float
    min: float
    max: float
    def __init__(self, samples: _Optional[int] = ..., mean: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("time", "value")
    TIME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    value: float
    def __init__(self, time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[float] = ...) -> None: ...

class Destination(_message.Message):
    __slots__ = ("selector", "cidrs", "port_min", "port_max", "protocol", "service")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    CIDRS_FIELD_NUMBER: _ClassVar[int]
    PORT_MIN_FIELD_NUMBER: _ClassVar[int]
    PORT_MAX_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    selector: Selector
    cidrs: _containers.RepeatedScalarFieldContainer[str]
    port_min: int
    port_max: int
    protocol: _agent_pb2.Protocol
    service: ServiceRef
    def __init__(self, selector: _Optional[_Union[Selector, _Mapping]] = ..., cidrs: _Optional[_Iterable[str]] = ..., port_min: _Optional[int] = ..., port_max: _Optional[int] = ..., protocol: _Optional[_Union[_agent_pb2.Protocol, str]] = ..., service: _Optional[_Union[ServiceRef, _Mapping]] = ...) -> None: ...

class StopCondition(_message.Message):
    __slots__ = ("query", "comparison", "threshold", "hold")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    query: str
    comparison: Comparison
    threshold: float
    hold: _duration_pb2.Duration
    def __init__(self, query: _Optional[str] = ..., comparison: _Optional[_Union[Comparison, str]] = ..., threshold: _Optional[float] = ..., hold: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CreateExperimentRequest(_message.Message):
    __slots__ = ("spec", "dry_run")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    spec: ExperimentSpec
    dry_run: bool
    def __init__(self, spec: _Optional[_Union[ExperimentSpec, _Mapping]] = ..., dry_run: bool = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("states",)
    STATES_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[ExperimentState]
    def __init__(self, states: _Optional[_Iterable[_Union[ExperimentState, str]]] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments",)
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ...) -> None: ...

class StopExperimentRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchExperimentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class HaltAllRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class HaltAllResponse(_message.Message):
    __slots__ = ("stopped", "reverted", "unreachable")
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    REVERTED_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_FIELD_NUMBER: _ClassVar[int]
    stopped: int
    reverted: int
    unreachable: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stopped: _Optional[int] = ..., reverted: _Optional[int] = ..., unreachable: _Optional[_Iterable[str]] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumeResponse(_message.Message):
    __slots__ = ("was_halted",)
    WAS_HALTED_FIELD_NUMBER: _ClassVar[int]
    was_halted: bool
    def __init__(self, was_halted: bool = ...) -> None: ...

class ReloadPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadPolicyResponse(_message.Message):
    __slots__ = ("policy_sha256",)
    POLICY_SHA256_FIELD_NUMBER: _ClassVar[int]
    policy_sha256: str
    def __init__(self, policy_sha256: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TargetStatus(_message.Message):
    __slots__ = ("node", "target", "cgroup_path", "fault_id", "state", "detail", "applied_at", "ended_at", "fault")
    NODE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CGROUP_PATH_FIELD_NUMBER: _ClassVar[int]
    FAULT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    node: str
    target: _agent_pb2.Target
    cgroup_path: str
    fault_id: str
    state: TargetState
    detail: str
    applied_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    fault: FaultTemplate
    def __init__(self, node: _Optional[str] = ..., target: _Optional[_Union[_agent_pb2.Target, _Mapping]] = ..., cgroup_path: _Optional[str] = ..., fault_id: _Optional[str] = ..., state: _Optional[_Union[TargetState, str]] = ..., detail: _Optional[str] = ..., applied_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., fault: _Optional[_Union[FaultTemplate, _Mapping]] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("spec", "state", "created_at", "started_at", "deadline", "ended_at", "end_reason", "targets", "created_by", "matched_targets")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    MATCHED_TARGETS_FIELD_NUMBER: _ClassVar[int]
    spec: ExperimentSpec
    state: ExperimentState
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    deadline: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    end_reason: str
    targets: _containers.RepeatedCompositeFieldContainer[TargetStatus]
    created_by: str
    matched_targets: int
    def __init__(self, spec: _Optional[_Union[ExperimentSpec, _Mapping]] = ..., state: _Optional[_Union[ExperimentState, str]] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., deadline: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., end_reason: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[TargetStatus, _Mapping]]] = ..., created_by: _Optional[str] = ..., matched_targets: _Optional[int] = ...) -> None: ...

class ExperimentEvent(_message.Message):
    __slots__ = ("experiment_id", "seq", "time", "targets_selected", "fault_applied", "fault_refused", "fault_reverted", "fault_lost", "ended")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TARGETS_SELECTED_FIELD_NUMBER: _ClassVar[int]
    FAULT_APPLIED_FIELD_NUMBER: _ClassVar[int]
    FAULT_REFUSED_FIELD_NUMBER: _ClassVar[int]
    FAULT_REVERTED_FIELD_NUMBER: _ClassVar[int]
    FAULT_LOST_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    targets_selected: TargetsSelected
    fault_applied: FaultApplied
    fault_refused: FaultRefused
    fault_reverted: FaultReverted
    fault_lost: FaultLost
    ended: ExperimentEnded
    def __init__(self, experiment_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., targets_selected: _Optional[_Union[TargetsSelected, _Mapping]] = ..., fault_applied: _Optional[_Union[FaultApplied, _Mapping]] = ..., fault_refused: _Optional[_Union[FaultRefused, _Mapping]] = ..., fault_reverted: _Optional[_Union[FaultReverted, _Mapping]] = ..., fault_lost: _Optional[_Union[FaultLost, _Mapping]] = ..., ended: _Optional[_Union[ExperimentEnded, _Mapping]] = ...) -> None: ...

class TargetsSelected(_message.Message):
    __slots__ = ("matched", "selected")
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    matched: int
    selected: _containers.RepeatedCompositeFieldContainer[TargetStatus]
    def __init__(self, matched: _Optional[int] = ..., selected: _Optional[_Iterable[_Union[TargetStatus, _Mapping]]] = ...) -> None: ...

class FaultApplied(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: TargetStatus
    def __init__(self, target: _Optional[_Union[TargetStatus, _Mapping]] = ...) -> None: ...

class FaultRefused(_message.Message):
    __slots__ = ("target", "reason")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    target: TargetStatus
    reason: str
    def __init__(self, target: _Optional[_Union[TargetStatus, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class FaultReverted(_message.Message):
    __slots__ = ("target", "reason")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    target: TargetStatus
    reason: str
    def __init__(self, target: _Optional[_Union[TargetStatus, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class FaultLost(_message.Message):
    __slots__ = ("target", "reason")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    target: TargetStatus
    reason: str
    def __init__(self, target: _Optional[_Union[TargetStatus, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ExperimentEnded(_message.Message):
    __slots__ = ("state", "reason")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    state: ExperimentState
    reason: str
    def __init__(self, state: _Optional[_Union[ExperimentState, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("node", "address", "labels", "reachable", "last_seen", "last_error")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    node: str
    address: str
    labels: _containers.ScalarMap[str, str]
    reachable: bool
    last_seen: _timestamp_pb2.Timestamp
    last_error: str
    def __init__(self, node: _Optional[str] = ..., address: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., reachable: bool = ..., last_seen: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ...) -> None: ...

class CoordinatorStatus(_message.Message):
    __slots__ = ("halted", "halted_reason", "halted_at", "agents", "policy_sha256", "reconcile", "running_experiments")
    HALTED_FIELD_NUMBER: _ClassVar[int]
    HALTED_REASON_FIELD_NUMBER: _ClassVar[int]
    HALTED_AT_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_SHA256_FIELD_NUMBER: _ClassVar[int]
    RECONCILE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    halted: bool
    halted_reason: str
    halted_at: _timestamp_pb2.Timestamp
    agents: _containers.RepeatedCompositeFieldContainer[AgentStatus]
    policy_sha256: str
    reconcile: _containers.RepeatedCompositeFieldContainer[ReconcileFinding]
    running_experiments: int
    def __init__(self, halted: bool = ..., halted_reason: _Optional[str] = ..., halted_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., agents: _Optional[_Iterable[_Union[AgentStatus, _Mapping]]] = ..., policy_sha256: _Optional[str] = ..., reconcile: _Optional[_Iterable[_Union[ReconcileFinding, _Mapping]]] = ..., running_experiments: _Optional[int] = ...) -> None: ...

class ReconcileFinding(_message.Message):
    __slots__ = ("node", "fault_id", "action", "detail")
    NODE_FIELD_NUMBER: _ClassVar[int]
    FAULT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    node: str
    fault_id: str
    action: str
    detail: str
    def __init__(self, node: _Optional[str] = ..., fault_id: _Optional[str] = ..., action: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...
